//! Redis's glob patterns (`stringmatchlen`), as `KEYS`, `SCAN MATCH` and `PSUBSCRIBE` read
//! them, and the key-name filters `ferry sync` and `ferry verify` share.

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: pattern position after it, text position it took.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((after, taken)) => {
                p = after;
                t = taken + 1;
                star = Some((after, taken + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`; returns whether it
/// matched and where the pattern continues, or `None` for an unterminated class.
fn class_match(pattern: &[u8], open: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = pattern.get(i)?;
        if b == b']' && !first {
            break;
        }
        first = false;
        if b == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (b.min(pattern[i + 2]), b.max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
    Some((matched != negate, i + 1))
}

/// Which key names are selected: a name is in when it starts with one of `prefixes` (or any,
/// when empty), matches one of `patterns` (or any, when empty), and starts with none of
/// `exclude_prefixes` and matches none of `exclude_patterns`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub prefixes: Vec<Vec<u8>>,
    pub patterns: Vec<Vec<u8>>,
    pub exclude_prefixes: Vec<Vec<u8>>,
    pub exclude_patterns: Vec<Vec<u8>>,
}

impl KeyFilter {
    pub fn selects(&self, key: &[u8]) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p)))
            && (self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, key)))
            && !self.exclude_prefixes.iter().any(|p| key.starts_with(p))
            && !self.exclude_patterns.iter().any(|p| glob_match(p, key))
    }

    /// Whether it selects every name.
    pub fn is_empty(&self) -> bool {
        self == &KeyFilter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("user:*", "user:42", true),
            ("user:*", "session:1", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("*:*:1", "a:b:1", true),
            ("*:1", "a:b:2", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*", "xxaxxbxx", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                *expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn filters_combine_includes_and_excludes() {
        let filter = KeyFilter {
            prefixes: vec![b"a:".to_vec(), b"b:".to_vec()],
            exclude_patterns: vec![b"*:tmp".to_vec()],
            ..KeyFilter::default()
        };
        assert!(filter.selects(b"a:1"));
        assert!(!filter.selects(b"c:1"));
        assert!(!filter.selects(b"b:tmp"));
        assert!(KeyFilter::default().selects(b"anything"));
    }
}
