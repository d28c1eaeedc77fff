//! Small values read whole, many keys to a pipeline, and compared in memory.

use ferry_engine::route::Slot;
use redis::Value;

use super::{route, Coll, CollDiff, Fingerprint};
use crate::diff::{Cause, Detail};
use crate::error::Result;
use crate::key::{Excerpt, KeyType};
use crate::reply;
use crate::side::Links;

/// A whole value as read.
pub(super) enum Whole {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    /// Members, or fields with values, or members with scores as text.
    Members(Coll, Vec<(Vec<u8>, Vec<u8>)>),
    /// The read failed: the key changed type or vanished after it was probed.
    Unreadable(String),
}

impl Whole {
    pub(super) fn fingerprint(&self, fp: &mut Fingerprint) {
        match self {
            Whole::String(bytes) => fp.add(bytes),
            Whole::List(items) => fp.add(items),
            Whole::Members(_, members) => members.iter().for_each(|m| fp.add_unordered(m)),
            Whole::Unreadable(reason) => fp.add(reason),
        }
    }
}

/// Reads the values `plan` lists (index, type, length), one pipeline per node.
pub(super) fn read(
    links: &mut Links,
    db: u32,
    keys: &[Vec<u8>],
    slots: &[Slot],
    plan: &[(usize, KeyType, u64)],
) -> Result<Vec<Whole>> {
    let side = links.side;
    let position: Vec<usize> = plan.iter().map(|p| p.0).collect();
    // Key index → position in `plan`.
    let mut planned = vec![usize::MAX; keys.len()];
    for (n, p) in plan.iter().enumerate() {
        planned[p.0] = n;
    }
    let mut out: Vec<Option<Whole>> = (0..plan.len()).map(|_| None).collect();
    for (addr, group) in route(side, slots, &position)? {
        let link = links.to(&addr, db)?;
        let mut pipe = redis::pipe();
        for &i in &group {
            let key = &keys[i];
            match plan[planned[i]].1 {
                KeyType::String => pipe.cmd("GET").arg(key),
                KeyType::List => pipe.cmd("LRANGE").arg(key).arg(0).arg(-1),
                KeyType::Set => pipe.cmd("SMEMBERS").arg(key),
                KeyType::Zset => pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES"),
                KeyType::Hash => pipe.cmd("HGETALL").arg(key),
                KeyType::Stream | KeyType::Other => {
                    unreachable!("streams and module types are not read whole")
                }
            };
        }
        for (&i, value) in group.iter().zip(link.pipeline(&mut pipe)?) {
            out[planned[i]] = Some(parse(plan[planned[i]].1, value));
        }
    }
    Ok(out
        .into_iter()
        .map(|w| w.expect("every planned key was read"))
        .collect())
}

fn parse(ty: KeyType, value: Value) -> Whole {
    if let Some(error) = reply::error(&value) {
        return Whole::Unreadable(error);
    }
    let unreadable = || Whole::Unreadable(format!("unexpected reply for a {ty}"));
    match ty {
        KeyType::String => match value {
            Value::Nil => Whole::Unreadable("the key vanished while it was read".into()),
            v => reply::bytes(&v).map_or_else(unreadable, Whole::String),
        },
        KeyType::List => reply::items(value)
            .and_then(|items| items.iter().map(reply::bytes).collect::<Option<Vec<_>>>())
            .map_or_else(unreadable, Whole::List),
        KeyType::Set => reply::items(value)
            .and_then(|items| {
                items
                    .iter()
                    .map(|m| Some((reply::bytes(m)?, Vec::new())))
                    .collect::<Option<Vec<_>>>()
            })
            .map_or_else(unreadable, |m| Whole::Members(Coll::Set, m)),
        KeyType::Zset | KeyType::Hash => {
            let coll = if ty == KeyType::Zset {
                Coll::Zset
            } else {
                Coll::Hash
            };
            // RESP3 gives [member, score] pairs for ZRANGE; RESP2 a flat array.
            let pairs = match value {
                Value::Array(items) if items.iter().all(|i| matches!(i, Value::Array(_))) => items
                    .into_iter()
                    .map(|pair| {
                        let mut it = reply::items(pair)?.into_iter();
                        Some((it.next()?, it.next()?))
                    })
                    .collect::<Option<Vec<_>>>(),
                other => reply::pairs(other),
            };
            pairs
                .and_then(|pairs| {
                    pairs
                        .iter()
                        .map(|(m, v)| Some((reply::bytes(m)?, reply::bytes(v)?)))
                        .collect::<Option<Vec<_>>>()
                })
                .map_or_else(unreadable, |m| Whole::Members(coll, m))
        }
        KeyType::Stream | KeyType::Other => unreadable(),
    }
}

/// Compares two whole values of the same type.
pub(super) fn compare(source: Whole, target: Whole) -> (Option<Detail>, Option<Cause>) {
    match (source, target) {
        (Whole::Unreadable(reason), _) | (_, Whole::Unreadable(reason)) => {
            (Some(Detail::Unreadable { reason }), None)
        }
        (Whole::String(s), Whole::String(t)) => (
            first_difference(&s, &t).map(|at| string_detail(&s, &t, 0, s.len(), t.len(), at)),
            None,
        ),
        (Whole::List(s), Whole::List(t)) => match first_difference(&s, &t) {
            None => (None, None),
            Some(at) => {
                let detail = list_detail(&s, &t, 0, s.len() as u64, t.len() as u64, at as u64);
                let duplicated = duplicated_tail(&s, &t).map(|n| Cause::DuplicatedListTail {
                    duplicated: n as u64,
                });
                (Some(detail), duplicated)
            }
        },
        (Whole::Members(coll, mut s), Whole::Members(_, mut t)) => {
            s.sort();
            t.sort();
            let mut diff = CollDiff::default();
            let (mut i, mut j) = (0, 0);
            while i < s.len() || j < t.len() {
                let order = match (s.get(i), t.get(j)) {
                    (Some(a), Some(b)) => a.0.cmp(&b.0),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        diff.missing(&s[i].0, &s[i].1);
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        diff.extra(&t[j].0, &t[j].1);
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        if !coll.same(&s[i].1, &t[j].1) {
                            diff.changed(&s[i].0, &s[i].1, &t[j].1);
                        }
                        i += 1;
                        j += 1;
                    }
                }
            }
            (diff.detail(coll, s.len() as u64, t.len() as u64), None)
        }
        _ => (
            Some(Detail::Unreadable {
                reason: "the key changed type while it was read".into(),
            }),
            None,
        ),
    }
}

/// Index of the first difference of two sequences (the shorter length when one is a
/// prefix of the other), or `None` when they are equal.
pub(super) fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    (common < a.len().max(b.len())).then_some(common)
}

/// Bytes of context shown before the first differing byte.
const STRING_BEFORE: usize = 32;
/// Bytes shown from the first differing byte on.
const STRING_AFTER: usize = 96;
/// Elements of context shown before the first differing element.
const LIST_BEFORE: u64 = 3;
/// Elements shown from the first differing element on.
const LIST_AFTER: u64 = 7;

/// The range of bytes excerpts show around the first difference at `at`.
pub(super) fn string_excerpt_range(at: u64) -> (u64, u64) {
    let start = at.saturating_sub(STRING_BEFORE as u64);
    (start, at + STRING_AFTER as u64)
}

/// The range of elements list windows show around the first difference at `at`.
pub(super) fn list_window_range(at: u64) -> (u64, u64) {
    (at.saturating_sub(LIST_BEFORE), at + LIST_AFTER)
}

/// The detail of two strings whose bytes from `base` on are `s` and `t` (at least the
/// excerpt range), of lengths `slen` and `tlen`, first differing at `at`.
pub(super) fn string_detail(
    s: &[u8],
    t: &[u8],
    base: u64,
    slen: usize,
    tlen: usize,
    at: usize,
) -> Detail {
    let (start, end) = string_excerpt_range(at as u64);
    let cut = |bytes: &[u8]| {
        let from = (start - base) as usize;
        let to = ((end - base) as usize).min(bytes.len());
        Excerpt::new(bytes.get(from.min(to)..to).unwrap_or_default())
    };
    Detail::String {
        source_len: slen as u64,
        target_len: tlen as u64,
        first_difference_at: at as u64,
        excerpt_at: start,
        source_excerpt: cut(s),
        target_excerpt: cut(t),
    }
}

/// The detail of two lists whose elements from `base` on are `s` and `t`.
pub(super) fn list_detail(
    s: &[Vec<u8>],
    t: &[Vec<u8>],
    base: u64,
    slen: u64,
    tlen: u64,
    at: u64,
) -> Detail {
    let (start, end) = list_window_range(at);
    let cut = |items: &[Vec<u8>]| {
        let from = (start - base) as usize;
        let to = ((end - base) as usize).min(items.len());
        items
            .get(from.min(to)..to)
            .unwrap_or_default()
            .iter()
            .map(|e| Excerpt::new(e))
            .collect()
    };
    Detail::List {
        source_len: slen,
        target_len: tlen,
        first_difference_at: at,
        window_at: start,
        source_window: cut(s),
        target_window: cut(t),
    }
}

/// How many of the source's last elements the target repeats after a full copy of the
/// source (`target == source + source[len - n..]`), if that is what it holds.
pub(super) fn duplicated_tail(s: &[Vec<u8>], t: &[Vec<u8>]) -> Option<usize> {
    let n = t
        .len()
        .checked_sub(s.len())
        .filter(|&n| n > 0 && n <= s.len())?;
    (t[..s.len()] == *s && t[s.len()..] == s[s.len() - n..]).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_duplicated_tail_is_recognised_and_a_reordering_is_not() {
        let s = list(&["a", "b", "c", "d"]);
        assert_eq!(
            duplicated_tail(&s, &list(&["a", "b", "c", "d", "c", "d"])),
            Some(2)
        );
        assert_eq!(duplicated_tail(&s, &list(&["a", "b", "c", "d", "x"])), None);
        assert_eq!(duplicated_tail(&s, &s), None);
        let (detail, cause) = compare(
            Whole::List(s.clone()),
            Whole::List(list(&["a", "b", "c", "d", "d"])),
        );
        assert_eq!(cause, Some(Cause::DuplicatedListTail { duplicated: 1 }));
        match detail {
            Some(Detail::List {
                first_difference_at,
                ..
            }) => assert_eq!(first_difference_at, 4),
            other => panic!("{other:?}"),
        }
        let (detail, _) = compare(
            Whole::List(s.clone()),
            Whole::List(list(&["a", "c", "b", "d"])),
        );
        assert!(detail.is_some());
    }

    #[test]
    fn members_compare_without_order_and_scores_as_doubles() {
        let zset = |items: &[(&str, &str)]| {
            Whole::Members(
                Coll::Zset,
                items
                    .iter()
                    .map(|(m, s)| (m.as_bytes().to_vec(), s.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let (same, _) = compare(
            zset(&[("a", "1"), ("b", "inf")]),
            zset(&[("b", "inf"), ("a", "1.0")]),
        );
        assert_eq!(same, None);
        let (changed, _) = compare(
            zset(&[("a", "1"), ("b", "inf")]),
            zset(&[("a", "1"), ("b", "-inf")]),
        );
        match changed {
            Some(Detail::Zset { changed, .. }) => {
                assert_eq!(changed.total, 1);
                assert_eq!(changed.shown[0].target.to_string(), "-inf");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strings_report_the_first_differing_byte_with_context() {
        let s = vec![b'x'; 100];
        let mut t = s.clone();
        t[60] = b'y';
        match compare(Whole::String(s.clone()), Whole::String(t)).0 {
            Some(Detail::String {
                first_difference_at,
                excerpt_at,
                source_excerpt,
                target_excerpt,
                ..
            }) => {
                assert_eq!(first_difference_at, 60);
                assert_eq!(excerpt_at, 28);
                assert_eq!(source_excerpt.0.len(), 72);
                assert_eq!(&target_excerpt.0[32..33], "y");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(compare(Whole::String(s.clone()), Whole::String(s)).0, None);
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
    }
}
