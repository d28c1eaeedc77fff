//! Values read whole, many keys to a pipeline, and compared in memory: in the batch's second
//! pipeline whatever fits in one reply of a bounded size (see [`First`]), then the other
//! small values.

use redis::Value;

use super::{Bad, Coll, CollDiff, Fingerprint, Read};
use crate::diff::{Cause, Detail};
use crate::key::{Excerpt, KeyType};
use crate::pipe::Pipeline;
use crate::reply;

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
    /// The length as the length commands count it: bytes, or elements (0 when unreadable).
    pub(super) fn len(&self) -> u64 {
        match self {
            Whole::String(bytes) => bytes.len() as u64,
            Whole::List(items) => items.len() as u64,
            Whole::Members(_, members) => members.len() as u64,
            Whole::Unreadable(_) => 0,
        }
    }

    pub(super) fn fingerprint(&self, fp: &mut Fingerprint) {
        match self {
            Whole::String(bytes) => fp.add(bytes),
            Whole::List(items) => fp.add(items),
            Whole::Members(_, members) => members.iter().for_each(|m| fp.add_unordered(m)),
            Whole::Unreadable(reason) => fp.add(reason),
        }
    }
}

/// What the batch's second pipeline reads of a key on one side. Reads that stop at a size
/// ([`Shares`]) have the whole value, and so its length, when they come back shorter than
/// that size; otherwise the third step reads the length and the value again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum First {
    /// The length only: in length mode, and for hash tables, whose size only the length
    /// tells (`HRANDFIELD` with a count below it copies the hash).
    Len,
    /// `GET` of a string the server keeps short (`int`, `embstr`).
    Get,
    /// `GETRANGE 0 n-1`.
    Prefix,
    /// The `DUMP` payload of a small encoding (`listpack`, `intset`...) on both sides:
    /// equal payloads are equal values, with no element to parse.
    Dump,
    /// `LRANGE`/`ZRANGE ... WITHSCORES` from 0 to n-1.
    Range,
    /// `SRANDMEMBER key n` or `HRANDFIELD key n WITHVALUES`: with a count above the
    /// cardinality they return every member, as `SMEMBERS`/`HGETALL` do.
    Sample,
    /// `HSCAN` from cursor 0 with `COUNT n`, before 6.2 (no `HRANDFIELD`): the whole hash
    /// when the cursor comes back 0 (always for small encodings).
    Scan,
    /// The head of a stream (see [`super::stream::Head`]); its length is `XINFO STREAM`'s.
    Stream,
}

/// How much the reads of the second pipeline that stop at a size may read of each key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shares {
    /// Bytes of a string.
    pub(super) bytes: u64,
    /// Elements of a list, set, sorted set or hash.
    pub(super) elements: u64,
    /// Entries of a stream's first window (and pending entries of a group's).
    pub(super) entries: u64,
}

/// The command that reads the length of a key of type `ty`.
pub(super) fn len_command(ty: KeyType) -> &'static str {
    match ty {
        KeyType::String => "STRLEN",
        KeyType::List => "LLEN",
        KeyType::Set => "SCARD",
        KeyType::Zset => "ZCARD",
        KeyType::Hash => "HLEN",
        KeyType::Stream => "XLEN",
        KeyType::Other => "EXISTS",
    }
}

/// Adds the commands of `first` for `key`, of type `ty`.
pub(super) fn first_commands(
    pipe: &mut Pipeline,
    key: &[u8],
    ty: KeyType,
    first: First,
    shares: Shares,
) {
    let elements = shares.elements;
    match (first, ty) {
        (First::Len, _) => {
            pipe.cmd(len_command(ty)).arg(key);
        }
        (First::Get, _) => {
            pipe.cmd("GET").arg(key);
        }
        (First::Prefix, _) => {
            pipe.cmd("GETRANGE").arg(key).arg(0).arg(shares.bytes - 1);
        }
        (First::Dump, _) => {
            pipe.cmd("DUMP").arg(key);
        }
        (First::Range, KeyType::Zset) => {
            pipe.cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(elements - 1)
                .arg("WITHSCORES");
        }
        (First::Range, _) => {
            pipe.cmd("LRANGE").arg(key).arg(0).arg(elements - 1);
        }
        (First::Sample, KeyType::Hash) => {
            pipe.cmd("HRANDFIELD")
                .arg(key)
                .arg(elements)
                .arg("WITHVALUES");
        }
        (First::Sample, _) => {
            pipe.cmd("SRANDMEMBER").arg(key).arg(elements);
        }
        (First::Scan, _) => {
            pipe.cmd("HSCAN").arg(key).arg(0).arg("COUNT").arg(elements);
        }
        (First::Stream, _) => super::stream::head_commands(pipe, key, shares.entries as usize),
    }
}

/// Reads the replies of [`first_commands`]: the length when it is known, and the value
/// when the read got all of it ([`Read::Nothing`] when it did not).
pub(super) fn parse_first(
    replies: &mut impl Iterator<Item = Value>,
    ty: KeyType,
    first: First,
    shares: Shares,
) -> Result<(Option<u64>, Read), Bad> {
    let whole = |value: Whole| (Some(value.len()), Read::Whole(value));
    Ok(match first {
        First::Len => (Some(int(next(replies))), Read::Nothing),
        First::Get => whole(parse(ty, next(replies))),
        First::Prefix => match parse(ty, next(replies)) {
            // Empty is ambiguous (a key that vanished reads as empty): `GET` tells.
            Whole::String(bytes) if !bytes.is_empty() && (bytes.len() as u64) < shares.bytes => {
                whole(Whole::String(bytes))
            }
            Whole::Unreadable(reason) => whole(Whole::Unreadable(reason)),
            _ => (None, Read::Nothing),
        },
        // The length is read in the third step when it is needed: for a value to read
        // again, or a key that differs (reports show lengths).
        First::Dump => match next(replies) {
            Value::BulkString(payload) => (None, Read::Dump(payload)),
            _ => (None, Read::Nothing),
        },
        First::Range | First::Sample => match parse(ty, next(replies)) {
            value @ Whole::Unreadable(_) => whole(value),
            value if (value.len()) < shares.elements => whole(value),
            _ => (None, Read::Nothing),
        },
        First::Scan => {
            let value = next(replies);
            if let Some(error) = reply::error(&value) {
                whole(Whole::Unreadable(error))
            } else {
                match reply::scan(value) {
                    Some((0, items)) => members(Coll::Hash, Value::Array(items))
                        .map_or((None, Read::Nothing), |m| {
                            whole(Whole::Members(Coll::Hash, m))
                        }),
                    _ => (None, Read::Nothing),
                }
            }
        }
        First::Stream => match super::stream::parse_head(replies, shares.entries as usize) {
            Ok(head) => (Some(head.len()), Read::Stream(Box::new(head))),
            Err(Bad::Unreadable(reason)) => whole(Whole::Unreadable(reason)),
            Err(bad) => return Err(bad),
        },
    })
}

/// A length reply (0 for a key that vanished or changed type meanwhile).
fn int(value: Value) -> u64 {
    reply::int(&value).unwrap_or(0).max(0) as u64
}

/// The next reply (a nil when the pipeline came back short, which parsing then rejects).
fn next(replies: &mut impl Iterator<Item = Value>) -> Value {
    replies.next().unwrap_or_default()
}

/// Adds the command reading a whole value of type `ty`.
pub(super) fn command(pipe: &mut Pipeline, key: &[u8], ty: KeyType) {
    match ty {
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

/// A whole value of type `ty` from its reply.
pub(super) fn parse(ty: KeyType, value: Value) -> Whole {
    if let Some(error) = reply::error(&value) {
        return Whole::Unreadable(error);
    }
    let unreadable = || Whole::Unreadable(format!("unexpected reply for a {ty}"));
    match ty {
        KeyType::String => match value {
            Value::Nil => Whole::Unreadable("the key vanished while it was read".into()),
            v => reply::into_bytes(v).map_or_else(unreadable, Whole::String),
        },
        KeyType::List => reply::into_byte_items(value).map_or_else(unreadable, Whole::List),
        KeyType::Set => {
            members(Coll::Set, value).map_or_else(unreadable, |m| Whole::Members(Coll::Set, m))
        }
        KeyType::Zset => {
            members(Coll::Zset, value).map_or_else(unreadable, |m| Whole::Members(Coll::Zset, m))
        }
        KeyType::Hash => {
            members(Coll::Hash, value).map_or_else(unreadable, |m| Whole::Members(Coll::Hash, m))
        }
        KeyType::Stream | KeyType::Other => unreadable(),
    }
}

/// Members of a set (with empty values), or pairs of a hash or sorted set.
fn members(coll: Coll, value: Value) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    match coll {
        Coll::Set => reply::items(value)?
            .into_iter()
            .map(|m| Some((reply::into_bytes(m)?, Vec::new())))
            .collect(),
        // RESP3 gives [member, score] pairs for ZRANGE; RESP2 a flat array.
        Coll::Zset | Coll::Hash => match value {
            Value::Array(items)
                if !items.is_empty() && items.iter().all(|i| matches!(i, Value::Array(_))) =>
            {
                items
                    .into_iter()
                    .map(|pair| {
                        let mut it = reply::items(pair)?.into_iter();
                        Some((
                            reply::into_bytes(it.next()?)?,
                            reply::into_bytes(it.next()?)?,
                        ))
                    })
                    .collect()
            }
            other => reply::into_byte_pairs(other),
        },
    }
}

/// Compares two whole values of the same type (sorting the members of collections).
pub(super) fn compare_mut(
    source: &mut Whole,
    target: &mut Whole,
) -> (Option<Detail>, Option<Cause>) {
    match (source, target) {
        (Whole::Unreadable(reason), _) | (_, Whole::Unreadable(reason)) => (
            Some(Detail::Unreadable {
                reason: reason.clone(),
            }),
            None,
        ),
        (Whole::String(s), Whole::String(t)) => (
            first_difference(s, t).map(|at| string_detail(s, t, 0, s.len(), t.len(), at)),
            None,
        ),
        (Whole::List(s), Whole::List(t)) => match first_difference(s, t) {
            None => (None, None),
            Some(at) => {
                let detail = list_detail(s, t, 0, s.len() as u64, t.len() as u64, at as u64);
                let duplicated = duplicated_tail(s, t).map(|n| Cause::DuplicatedListTail {
                    duplicated: n as u64,
                });
                (Some(detail), duplicated)
            }
        },
        (Whole::Members(coll, s), Whole::Members(_, t)) => {
            let coll = *coll;
            s.sort_unstable();
            t.sort_unstable();
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
    if a == b {
        return None;
    }
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

    fn compare(mut source: Whole, mut target: Whole) -> (Option<Detail>, Option<Cause>) {
        compare_mut(&mut source, &mut target)
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    const SHARES: Shares = Shares {
        bytes: 8,
        elements: 3,
        entries: 3,
    };

    /// Parses one key's replies followed by the next key's, which must be left in place.
    fn first(ty: KeyType, first: First, replies: Vec<Value>) -> (Option<u64>, Read) {
        let mut replies = replies.into_iter().chain([bulk("next key")]);
        let parsed = parse_first(&mut replies, ty, first, SHARES).unwrap_or_else(|_| panic!());
        assert_eq!(replies.next(), Some(bulk("next key")));
        parsed
    }

    fn complete(read: (Option<u64>, Read)) -> u64 {
        match read {
            (Some(len), Read::Whole(_)) => len,
            (len, _) => panic!("not read whole ({len:?})"),
        }
    }

    fn incomplete(read: (Option<u64>, Read)) {
        assert!(matches!(read, (None, Read::Nothing)), "read whole");
    }

    #[test]
    fn reads_that_stop_at_a_size_are_whole_only_below_it() {
        assert_eq!(
            complete(first(KeyType::String, First::Prefix, vec![bulk("abc")])),
            3
        );
        incomplete(first(
            KeyType::String,
            First::Prefix,
            vec![bulk("abcdefgh")],
        ));
        // Empty may be a key that vanished: GET tells in the third step.
        incomplete(first(KeyType::String, First::Prefix, vec![bulk("")]));
        let list = |n: usize| Value::Array((0..n).map(|i| bulk(&i.to_string())).collect());
        assert_eq!(
            complete(first(KeyType::List, First::Range, vec![list(2)])),
            2
        );
        incomplete(first(KeyType::List, First::Range, vec![list(3)]));
        let fields = Value::Array(vec![bulk("f"), bulk("v"), bulk("g"), bulk("w")]);
        assert_eq!(
            complete(first(KeyType::Hash, First::Sample, vec![fields])),
            2
        );
        let scan = |cursor: &str| {
            Value::Array(vec![bulk(cursor), Value::Array(vec![bulk("f"), bulk("v")])])
        };
        assert_eq!(
            complete(first(KeyType::Hash, First::Scan, vec![scan("0")])),
            1
        );
        incomplete(first(KeyType::Hash, First::Scan, vec![scan("17")]));
    }

    #[test]
    fn payloads_lengths_and_vanished_keys() {
        match first(KeyType::Hash, First::Dump, vec![bulk("payload")]) {
            (None, Read::Dump(payload)) => assert_eq!(payload, b"payload"),
            _ => panic!("no payload"),
        }
        // A key that vanished after `TYPE`: no payload, its value is read again.
        assert!(matches!(
            first(KeyType::Hash, First::Dump, vec![Value::Nil]),
            (None, Read::Nothing)
        ));
        assert!(matches!(
            first(KeyType::String, First::Get, vec![Value::Nil]),
            (Some(0), Read::Whole(Whole::Unreadable(_)))
        ));
        assert!(matches!(
            first(KeyType::Set, First::Len, vec![Value::Int(7)]),
            (Some(7), Read::Nothing)
        ));
    }

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
