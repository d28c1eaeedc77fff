//! Inline commands: `PING`, `SET key "hello world"` typed on one line, as `telnet` sends them.
//!
//! Redis reads any request that does not start with `*` this way (`processInlineBuffer`): one
//! line ended by `\n` (a `\r` before it is dropped), at most `PROTO_INLINE_MAX_SIZE` long, split
//! into arguments by `sdssplitargs`. A master never sends one, but a replica of Redis would
//! execute it, so the command decoder reads it the same way.

use bytes::Bytes;

use super::parse::Parsed;
use super::DecodeError;

/// Reads the inline command at `at` and returns its arguments (none for a blank line) and the
/// position after its `\n`.
pub(super) fn command(input: &[u8], at: usize, max: usize) -> Parsed<Vec<Bytes>> {
    let rest = input.get(at..).unwrap_or_default();
    let window = &rest[..rest.len().min(max.saturating_add(1))];
    let Some(newline) = memchr::memchr(b'\n', window) else {
        return if rest.len() > max {
            Err(DecodeError::LineTooLong {
                offset: at as u64,
                max,
            })
        } else {
            Ok(None)
        };
    };
    let line = &rest[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let argv = split_args(line).ok_or(DecodeError::UnbalancedQuotes { offset: at as u64 })?;
    Ok(Some((
        argv.into_iter().map(Bytes::from).collect(),
        at + newline + 1,
    )))
}

/// Splits a line into arguments as Redis's `sdssplitargs` does: arguments are separated by
/// spaces; `"..."` may hold spaces and the escapes `\n \r \t \b \a \xHH` (any other escaped
/// character stands for itself); `'...'` may hold spaces and `\'`. A closing quote must be
/// followed by a space or the end of the line. `None` for unbalanced quotes. The line ends at
/// its first NUL byte, since Redis reads it as a C string.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = &line[..memchr::memchr(0, line).unwrap_or(line.len())];
    let at = |i: usize| line.get(i).copied();
    let is_space =
        |c: Option<u8>| matches!(c, Some(b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'));
    let mut argv = Vec::new();
    let mut p = 0;
    loop {
        while is_space(at(p)) {
            p += 1;
        }
        if p >= line.len() {
            return Some(argv);
        }
        let mut arg = Vec::new();
        let (mut in_double, mut in_single, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_double {
                let hex_escape = match (c, at(p + 1)) {
                    (Some(b'\\'), Some(b'x')) => hex(at(p + 2)).zip(hex(at(p + 3))),
                    _ => None,
                };
                match (c, at(p + 1), hex_escape) {
                    (None, _, _) => return None,
                    (_, _, Some((high, low))) => {
                        arg.push(high * 16 + low);
                        p += 3;
                    }
                    (Some(b'\\'), Some(escaped), None) => {
                        arg.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => b'\x08',
                            b'a' => b'\x07',
                            other => other,
                        });
                        p += 1;
                    }
                    (Some(b'"'), next, None) => {
                        if next.is_some() && !is_space(next) {
                            return None;
                        }
                        done = true;
                    }
                    (Some(other), _, None) => arg.push(other),
                }
            } else if in_single {
                match (c, at(p + 1)) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'\'')) => {
                        arg.push(b'\'');
                        p += 1;
                    }
                    (Some(b'\''), next) => {
                        if next.is_some() && !is_space(next) {
                            return None;
                        }
                        done = true;
                    }
                    (Some(other), _) => arg.push(other),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => done = true,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => arg.push(other),
                }
            }
            if p < line.len() {
                p += 1;
            }
        }
        argv.push(arg);
    }
}

fn hex(c: Option<u8>) -> Option<u8> {
    match c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Option<Vec<String>> {
        split_args(line.as_bytes()).map(|argv| {
            argv.into_iter()
                .map(|arg| String::from_utf8_lossy(&arg).into_owned())
                .collect()
        })
    }

    #[test]
    fn splits_like_sdssplitargs() {
        assert_eq!(split("PING"), Some(vec!["PING".into()]));
        assert_eq!(
            split("  set  k\tv  "),
            Some(vec!["set".into(), "k".into(), "v".into()])
        );
        assert_eq!(split(""), Some(Vec::new()));
        assert_eq!(split("   "), Some(Vec::new()));
        assert_eq!(
            split(r#"SET "hello world" 'it\'s'"#),
            Some(vec!["SET".into(), "hello world".into(), "it's".into()])
        );
        assert_eq!(
            split(r#""a\nb\x41\x4a\"\\" """#),
            Some(vec!["a\nbAJ\"\\".into(), "".into()])
        );
        assert_eq!(split(r#"foo"bar baz""#), Some(vec!["foobar baz".into()]));
        assert_eq!(split(r#""\xZZ""#), Some(vec!["xZZ".into()]));
        assert_eq!(split("a\0b c"), Some(vec!["a".into()]));
    }

    #[test]
    fn unbalanced_quotes_are_refused() {
        for line in [r#""abc"#, "'abc", r#""abc"def"#, "'a'b", r#""abc\"#] {
            assert_eq!(split(line), None, "{line}");
        }
    }

    #[test]
    fn reads_a_line_ended_by_newline() {
        let (argv, end) = command(b"GET k\r\nrest", 0, 64).unwrap().unwrap();
        assert_eq!(argv, [Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(end, 7);
        let (argv, end) = command(b"x\nPING\n", 2, 64).unwrap().unwrap();
        assert_eq!(argv, [Bytes::from("PING")]);
        assert_eq!(end, 7);
        assert_eq!(command(b"\n", 0, 64), Ok(Some((Vec::new(), 1))));
        assert_eq!(command(b"GET k", 0, 64), Ok(None));
        assert_eq!(
            command(b"GET key", 0, 4),
            Err(DecodeError::LineTooLong { offset: 0, max: 4 })
        );
        assert_eq!(
            command(b"GET \"k\n", 0, 64),
            Err(DecodeError::UnbalancedQuotes { offset: 0 })
        );
    }
}
