//! Big values compared in windows, so that memory holds a window, never a whole value:
//! strings by `GETRANGE`, lists by `LRANGE`, and hashes, sets and sorted sets by scanning
//! the source (`HSCAN`/`SSCAN`/`ZSCAN`) and looking each window up on the target (`HMGET`,
//! `SMISMEMBER`, `ZMSCORE`); the target is scanned the other way only when its length says
//! it holds members the source lacks.

use redis::Value;

use super::whole::{
    first_difference, list_detail, list_window_range, string_detail, string_excerpt_range,
};
use super::{Coll, CollDiff, Pair};
use crate::diff::{Cause, Detail};
use crate::error::Result;
use crate::pipe::Pipeline;
use crate::reply;
use crate::side::Link;

/// Compares a string in windows of `window` bytes.
pub(super) fn string(p: &mut Pair, window: usize) -> Result<Option<Detail>> {
    let (slen, tlen) = p.lens;
    let mut at = None;
    let mut offset = 0u64;
    while offset < slen.max(tlen) {
        let last = offset + window as u64 - 1;
        let s = getrange(p.src, p.key, offset, last)?;
        let t = getrange(p.tgt, p.key, offset, last)?;
        p.src_fp.add(&s);
        p.tgt_fp.add(&t);
        if at.is_none() {
            at = first_difference(&s, &t).map(|d| offset + d as u64);
        }
        offset += window as u64;
    }
    let Some(at) = at else {
        return Ok(None);
    };
    let (start, end) = string_excerpt_range(at);
    let s = getrange(p.src, p.key, start, end - 1)?;
    let t = getrange(p.tgt, p.key, start, end - 1)?;
    Ok(Some(string_detail(
        &s,
        &t,
        start,
        slen as usize,
        tlen as usize,
        at as usize,
    )))
}

/// Compares a list in windows of elements, in order; a longer target that repeats the
/// source's last elements is a duplicated tail.
pub(super) fn list(p: &mut Pair) -> Result<(Option<Detail>, Option<Cause>)> {
    let (slen, tlen) = p.lens;
    let window = p.windows as u64;
    let mut at = None;
    let mut index = 0u64;
    while index < slen.max(tlen) {
        let last = index + window - 1;
        let s = lrange(p.src, p.key, index, last)?;
        let t = lrange(p.tgt, p.key, index, last)?;
        p.src_fp.add(&s);
        p.tgt_fp.add(&t);
        if at.is_none() {
            at = first_difference(&s, &t).map(|d| index + d as u64);
        }
        index += window;
    }
    let Some(at) = at else {
        return Ok((None, None));
    };
    let (start, end) = list_window_range(at);
    let s = lrange(p.src, p.key, start, end - 1)?;
    let t = lrange(p.tgt, p.key, start, end - 1)?;
    let detail = list_detail(&s, &t, start, slen, tlen, at);
    let extra = tlen.saturating_sub(slen);
    let cause = if at == slen && extra > 0 && extra <= slen && duplicated(p, slen, extra)? {
        Some(Cause::DuplicatedListTail { duplicated: extra })
    } else {
        None
    };
    Ok((Some(detail), cause))
}

/// Whether the target's elements `slen..slen + extra` equal the source's last `extra`.
fn duplicated(p: &mut Pair, slen: u64, extra: u64) -> Result<bool> {
    let window = p.windows as u64;
    let mut done = 0;
    while done < extra {
        let n = window.min(extra - done);
        let s = lrange(
            p.src,
            p.key,
            slen - extra + done,
            slen - extra + done + n - 1,
        )?;
        let t = lrange(p.tgt, p.key, slen + done, slen + done + n - 1)?;
        if s != t {
            return Ok(false);
        }
        done += n;
    }
    Ok(true)
}

/// Compares a hash, set or sorted set member by member, without regard to order.
pub(super) fn collection(p: &mut Pair, coll: Coll) -> Result<Option<Detail>> {
    let (slen, tlen) = p.lens;
    let mut diff = CollDiff::default();
    let mut cursor = 0;
    loop {
        let (next, members) = scan(p.src, coll, p.key, cursor, p.windows)?;
        let names: Vec<&[u8]> = members.iter().map(|(m, _)| m.as_slice()).collect();
        let found = lookup(p.tgt, coll, p.key, &names, p.multi.1)?;
        for ((member, value), target) in members.iter().zip(found) {
            p.src_fp.add_unordered(&(member, value));
            p.tgt_fp.add_unordered(&(member, &target));
            match target {
                None => diff.missing(member, value),
                Some(t) if !coll.same(value, &t) => diff.changed(member, value, &t),
                Some(_) => {}
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // |target| = |common| + |extra|, and |common| = |source| - |missing|.
    let common = slen.saturating_sub(diff.missing.total);
    if tlen > common {
        let extra = tlen - common;
        let mut cursor = 0;
        loop {
            let (next, members) = scan(p.tgt, coll, p.key, cursor, p.windows)?;
            let names: Vec<&[u8]> = members.iter().map(|(m, _)| m.as_slice()).collect();
            let found = lookup(p.src, coll, p.key, &names, p.multi.0)?;
            for ((member, value), source) in members.iter().zip(found) {
                if source.is_none() {
                    diff.extra(member, value);
                }
            }
            if next == 0 || diff.extra.total >= extra {
                break;
            }
            cursor = next;
        }
    }
    Ok(diff.detail(coll, slen, tlen))
}

fn getrange(link: &mut Link, key: &[u8], first: u64, last: u64) -> Result<Vec<u8>> {
    let value: Value = link.query(redis::cmd("GETRANGE").arg(key).arg(first).arg(last))?;
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        other => Err(link.unexpected("GETRANGE", &other)),
    }
}

fn lrange(link: &mut Link, key: &[u8], first: u64, last: u64) -> Result<Vec<Vec<u8>>> {
    let value: Value = link.query(redis::cmd("LRANGE").arg(key).arg(first).arg(last))?;
    reply::into_byte_items(value).ok_or_else(|| link.malformed("LRANGE"))
}

/// Members with their values (empty for a set; the score as text for a sorted set).
type Members = Vec<(Vec<u8>, Vec<u8>)>;

/// One `HSCAN`/`SSCAN`/`ZSCAN` step: the next cursor and (member, value) pairs (the value
/// of a set member is empty; a sorted-set member's is its score as text).
fn scan(
    link: &mut Link,
    coll: Coll,
    key: &[u8],
    cursor: u64,
    count: usize,
) -> Result<(u64, Members)> {
    let (name, cmd) = match coll {
        Coll::Hash => ("HSCAN", "HSCAN"),
        Coll::Set => ("SSCAN", "SSCAN"),
        Coll::Zset => ("ZSCAN", "ZSCAN"),
    };
    let value: Value = link.query(redis::cmd(cmd).arg(key).arg(cursor).arg("COUNT").arg(count))?;
    let parsed = reply::scan(value).and_then(|(next, items)| {
        let members = if coll == Coll::Set {
            items
                .into_iter()
                .map(|m| Some((reply::into_bytes(m)?, Vec::new())))
                .collect::<Option<Vec<_>>>()?
        } else {
            reply::into_byte_pairs(Value::Array(items))?
        };
        Some((next, members))
    });
    parsed.ok_or_else(|| link.malformed(name))
}

/// Looks `members` up: a hash field's value, `Some(empty)` for a set member that is there,
/// a sorted-set member's score as text; `None` where absent.
fn lookup(
    link: &mut Link,
    coll: Coll,
    key: &[u8],
    members: &[&[u8]],
    multi: bool,
) -> Result<Vec<Option<Vec<u8>>>> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let (name, replies): (&'static str, Vec<Value>) = match (coll, multi) {
        (Coll::Hash, _) => {
            let value: Value = link.query(redis::cmd("HMGET").arg(key).arg(members))?;
            ("HMGET", reply::items(value).unwrap_or_default())
        }
        (Coll::Set, true) => {
            let value: Value = link.query(redis::cmd("SMISMEMBER").arg(key).arg(members))?;
            ("SMISMEMBER", reply::items(value).unwrap_or_default())
        }
        (Coll::Zset, true) => {
            let value: Value = link.query(redis::cmd("ZMSCORE").arg(key).arg(members))?;
            ("ZMSCORE", reply::items(value).unwrap_or_default())
        }
        (Coll::Set, false) | (Coll::Zset, false) => {
            let cmd = if coll == Coll::Set {
                "SISMEMBER"
            } else {
                "ZSCORE"
            };
            let mut pipe = Pipeline::new();
            for member in members {
                pipe.cmd(cmd).arg(key).arg(*member);
            }
            (cmd, link.pipeline(&pipe)?)
        }
    };
    if replies.len() != members.len() {
        return Err(link.unexpected(name, &Value::Array(replies)));
    }
    Ok(replies
        .into_iter()
        .map(|r| match (coll, r) {
            (_, Value::Nil) => None,
            (Coll::Set, r) => (reply::int(&r) == Some(1)).then(Vec::new),
            (_, r) => reply::into_bytes(r),
        })
        .collect())
}
