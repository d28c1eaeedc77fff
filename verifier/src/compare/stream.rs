//! Streams: entries in windows of `XRANGE`, the stream's own fields (`XINFO STREAM`),
//! consumer groups (`XINFO GROUPS`), their consumers (`XINFO CONSUMERS`) and pending entries
//! (`XPENDING`, in windows). Times that only say when something was last seen (`idle`,
//! `seen-time`) are not compared: they differ between any two servers.
//!
//! The first reads of every stream of a batch go in the batch's pipelines: the [`Head`]
//! (`XINFO STREAM`, a first window of entries, `XINFO GROUPS`) with the other keys' values,
//! then a [`GroupHead`] per group both sides have. Only a stream with more entries (or
//! pending entries) than the first window is read further, window by window.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;

use super::{Bad, Fingerprint, Pair};
use crate::diff::{Change, Detail, EntryChange, Listing};
use crate::error::Result;
use crate::key::{text, Excerpt};
use crate::pipe::Pipeline;
use crate::reply;
use crate::side::Link;

/// `XINFO STREAM` fields compared when both servers report them.
const STREAM_FIELDS: [&str; 5] = [
    "length",
    "last-generated-id",
    "max-deleted-entry-id",
    "entries-added",
    "recorded-first-entry-id",
];

/// `XINFO GROUPS` fields compared when both servers report them.
const GROUP_FIELDS: [&str; 5] = [
    "consumers",
    "pending",
    "last-delivered-id",
    "entries-read",
    "lag",
];

type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// A pending entry: its ID, consumer and delivery count.
type Pel = (String, String, i64);

/// What the batch's second pipeline reads of a stream on one side.
pub(super) struct Head {
    /// `XINFO STREAM`'s scalar fields.
    info: BTreeMap<String, String>,
    /// The first window of entries.
    entries: Vec<Entry>,
    /// How many entries the first window asked for.
    window: usize,
    /// `XINFO GROUPS`'s scalar fields, by group name.
    groups: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the third step reads of one consumer group on one side.
pub(super) struct GroupHead {
    /// Consumer name → pending count (`XINFO CONSUMERS`).
    consumers: BTreeMap<String, String>,
    /// The first window of pending entries (`XPENDING`).
    pending: Vec<Pel>,
    /// How many pending entries the first window asked for.
    window: usize,
}

/// Adds the commands of a stream's [`Head`], with a first window of `window` entries.
pub(super) fn head_commands(pipe: &mut Pipeline, key: &[u8], window: usize) {
    pipe.cmd("XINFO").arg("STREAM").arg(key);
    pipe.cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(window);
    pipe.cmd("XINFO").arg("GROUPS").arg(key);
}

/// Reads the replies of [`head_commands`].
pub(super) fn parse_head(
    replies: &mut impl Iterator<Item = Value>,
    window: usize,
) -> Result<Head, Bad> {
    // Every reply is taken before any is checked: the next key's come after them.
    let (info, entries, groups) = (replies.next(), replies.next(), replies.next());
    let (info, entries, groups) = (checked(info)?, checked(entries)?, checked(groups)?);
    let info = scalar_map(info).ok_or(Bad::Unexpected("XINFO STREAM"))?;
    let entries = parse_entries(entries)?;
    let groups = reply::items(groups)
        .and_then(|items| {
            items
                .into_iter()
                .map(scalar_map)
                .collect::<Option<Vec<_>>>()
        })
        .ok_or(Bad::Unexpected("XINFO GROUPS"))?
        .into_iter()
        .filter_map(|g| Some((g.get("name")?.clone(), g)))
        .collect();
    Ok(Head {
        info,
        entries,
        window,
        groups,
    })
}

impl Head {
    /// How many entries the first window asked for (and each group's first window of
    /// pending entries asks for).
    pub(super) fn window(&self) -> usize {
        self.window
    }

    /// The number of entries (`XINFO STREAM`'s `length`, which `XLEN` also answers).
    pub(super) fn len(&self) -> u64 {
        self.info
            .get("length")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The groups both sides have, in name order: those whose consumers and pending entries
/// are read.
pub(super) fn common_groups(src: &Head, tgt: &Head) -> Vec<String> {
    src.groups
        .keys()
        .filter(|name| tgt.groups.contains_key(*name))
        .cloned()
        .collect()
}

/// Adds the commands of a [`GroupHead`], with a first window of `window` pending entries.
pub(super) fn group_commands(pipe: &mut Pipeline, key: &[u8], group: &str, window: usize) {
    pipe.cmd("XINFO").arg("CONSUMERS").arg(key).arg(group);
    pipe.cmd("XPENDING")
        .arg(key)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(window);
}

/// Reads the replies of [`group_commands`].
pub(super) fn parse_group(
    replies: &mut impl Iterator<Item = Value>,
    window: usize,
) -> Result<GroupHead, Bad> {
    let (consumers, pending) = (replies.next(), replies.next());
    let (consumers, pending) = (checked(consumers)?, checked(pending)?);
    Ok(GroupHead {
        consumers: parse_consumers(consumers)?,
        pending: parse_pending(pending)?,
        window,
    })
}

/// Compares a stream from both sides' heads and group heads (one per name of
/// [`common_groups`], in that order), reading further windows where the first were full.
pub(super) fn compare(
    p: &mut Pair,
    src: Head,
    tgt: Head,
    src_groups: Vec<GroupHead>,
    tgt_groups: Vec<GroupHead>,
) -> Result<Option<Detail>> {
    let (slen, tlen) = p.lens;
    let mut meta = Listing::default();
    compare_fields(
        &STREAM_FIELDS,
        "",
        &src.info,
        &tgt.info,
        &mut meta,
        p.src_fp,
        p.tgt_fp,
    );
    let entries = entries(p, src.entries, tgt.entries, src.window)?;
    let groups = groups(p, &src.groups, &tgt.groups, src_groups, tgt_groups)?;
    if entries.is_none() && meta.is_empty() && groups.is_empty() && slen == tlen {
        return Ok(None);
    }
    Ok(Some(Detail::Stream {
        source_len: slen,
        target_len: tlen,
        entries,
        meta,
        groups,
    }))
}

/// Compares entries window by window from the first windows `s` and `t` (of `window`
/// entries asked); the first differing one, if any.
fn entries(
    p: &mut Pair,
    mut s: Vec<Entry>,
    mut t: Vec<Entry>,
    mut window: usize,
) -> Result<Option<EntryChange>> {
    let mut index = 0u64;
    loop {
        p.src_fp.add(&s);
        p.tgt_fp.add(&t);
        for j in 0..s.len().max(t.len()) {
            if s.get(j) != t.get(j) {
                return Ok(Some(EntryChange {
                    index: index + j as u64,
                    source: s.get(j).map(show_entry),
                    target: t.get(j).map(show_entry),
                }));
            }
        }
        let start = match s.last() {
            Some((id, _)) if s.len() == window => next_id(id),
            _ => return Ok(None),
        };
        index += s.len() as u64;
        window = p.windows;
        s = xrange(p.src, p.key, &start, window)?;
        t = xrange(p.tgt, p.key, &start, window)?;
    }
}

/// Compares the consumer groups, their consumers and their pending entries.
fn groups(
    p: &mut Pair,
    src: &BTreeMap<String, BTreeMap<String, String>>,
    tgt: &BTreeMap<String, BTreeMap<String, String>>,
    src_groups: Vec<GroupHead>,
    tgt_groups: Vec<GroupHead>,
) -> Result<Listing<Change>> {
    let mut changes = Listing::default();
    let mut heads = src_groups.into_iter().zip(tgt_groups);
    let names: BTreeSet<&String> = src.keys().chain(tgt.keys()).collect();
    for name in names {
        let (s, t) = match (src.get(name), tgt.get(name)) {
            (Some(s), Some(t)) => (s, t),
            (s, t) => {
                changes.push(Change {
                    what: format!("group {name}"),
                    source: presence(s.is_some()),
                    target: presence(t.is_some()),
                });
                p.src_fp.add(&(name, s.is_some()));
                p.tgt_fp.add(&(name, t.is_some()));
                continue;
            }
        };
        let prefix = format!("group {name} ");
        compare_fields(
            &GROUP_FIELDS,
            &prefix,
            s,
            t,
            &mut changes,
            p.src_fp,
            p.tgt_fp,
        );
        let (s, t) = heads.next().expect("a group head per group on both sides");
        consumers(p, name, &s.consumers, &t.consumers, &mut changes);
        pending(p, name, s, t, &mut changes)?;
    }
    Ok(changes)
}

/// Compares the consumers of a group by name and pending count.
fn consumers(
    p: &mut Pair,
    group: &str,
    src: &BTreeMap<String, String>,
    tgt: &BTreeMap<String, String>,
    changes: &mut Listing<Change>,
) {
    p.src_fp.add(src);
    p.tgt_fp.add(tgt);
    let names: BTreeSet<&String> = src.keys().chain(tgt.keys()).collect();
    for name in names {
        let (s, t) = (src.get(name), tgt.get(name));
        if s != t {
            changes.push(Change {
                what: format!("group {group} consumer {name} pending"),
                source: s.cloned().unwrap_or_else(|| "-".into()),
                target: t.cloned().unwrap_or_else(|| "-".into()),
            });
        }
    }
}

/// Compares a group's pending entries (ID, consumer, delivery count) window by window,
/// from the first windows of the group heads.
fn pending(
    p: &mut Pair,
    group: &str,
    src: GroupHead,
    tgt: GroupHead,
    changes: &mut Listing<Change>,
) -> Result<()> {
    let (mut s, mut t, mut window) = (src.pending, tgt.pending, src.window);
    let mut index = 0u64;
    loop {
        p.src_fp.add(&s);
        p.tgt_fp.add(&t);
        for j in 0..s.len().max(t.len()) {
            if s.get(j) != t.get(j) {
                let show = |e: Option<&Pel>| {
                    e.map_or("-".to_string(), |(id, consumer, deliveries)| {
                        format!("{id} {consumer} delivered {deliveries}")
                    })
                };
                changes.push(Change {
                    what: format!("group {group} pending entry {}", index + j as u64),
                    source: show(s.get(j)),
                    target: show(t.get(j)),
                });
                return Ok(());
            }
        }
        let start = match s.last() {
            Some((id, _, _)) if s.len() == window => next_id(id),
            _ => return Ok(()),
        };
        index += s.len() as u64;
        window = p.windows;
        s = xpending(p.src, p.key, group, &start, window)?;
        t = xpending(p.tgt, p.key, group, &start, window)?;
    }
}

/// Pushes a change for every field of `fields` both maps know with different values.
fn compare_fields(
    fields: &[&str],
    prefix: &str,
    src: &BTreeMap<String, String>,
    tgt: &BTreeMap<String, String>,
    changes: &mut Listing<Change>,
    src_fp: &mut Fingerprint,
    tgt_fp: &mut Fingerprint,
) {
    for field in fields {
        // A nil (`-`) is Redis not knowing (`entries-read` and `lag` after some
        // commands, on replicas too), not a value to compare.
        if let (Some(s), Some(t)) = (src.get(*field), tgt.get(*field)) {
            if s == "-" || t == "-" {
                continue;
            }
            src_fp.add(s);
            tgt_fp.add(t);
            if s != t {
                changes.push(Change {
                    what: format!("{prefix}{field}"),
                    source: s.clone(),
                    target: t.clone(),
                });
            }
        }
    }
}

fn presence(present: bool) -> String {
    if present { "present" } else { "-" }.to_string()
}

/// A reply that is not an error reply (which means the key changed or vanished meanwhile).
fn checked(value: Option<Value>) -> Result<Value, Bad> {
    match value {
        Some(Value::ServerError(error)) => {
            Err(Bad::Unreadable(redis::RedisError::from(error).to_string()))
        }
        Some(value) => Ok(value),
        None => Err(Bad::Unexpected("a stream read")),
    }
}

/// A flat `[name, value, ...]` (or map) reply as name → value, scalar values only (a nil
/// becomes `-`).
fn scalar_map(value: Value) -> Option<BTreeMap<String, String>> {
    Some(
        reply::pairs(value)?
            .into_iter()
            .filter_map(|(k, v)| {
                let v = match v {
                    Value::Nil => "-".to_string(),
                    v => reply::text(&v)?,
                };
                Some((reply::text(&k)?, v))
            })
            .collect(),
    )
}

/// `XRANGE` entries.
fn parse_entries(value: Value) -> Result<Vec<Entry>, Bad> {
    let entries = reply::items(value).and_then(|items| {
        items
            .into_iter()
            .map(|entry| {
                let mut parts = reply::items(entry)?.into_iter();
                let id = reply::text(&parts.next()?)?;
                let fields = reply::into_byte_pairs(parts.next()?)?;
                Some((id, fields))
            })
            .collect()
    });
    entries.ok_or(Bad::Unexpected("XRANGE"))
}

/// `XINFO CONSUMERS key group` as consumer name → pending count.
fn parse_consumers(value: Value) -> Result<BTreeMap<String, String>, Bad> {
    let consumers = reply::items(value)
        .and_then(|items| {
            items
                .into_iter()
                .map(scalar_map)
                .collect::<Option<Vec<_>>>()
        })
        .ok_or(Bad::Unexpected("XINFO CONSUMERS"))?;
    Ok(consumers
        .into_iter()
        .filter_map(|c| Some((c.get("name")?.clone(), c.get("pending")?.clone())))
        .collect())
}

/// `XPENDING key group start + count` entries.
fn parse_pending(value: Value) -> Result<Vec<Pel>, Bad> {
    let pending = reply::items(value).and_then(|items| {
        items
            .into_iter()
            .map(|pel| {
                let parts = reply::items(pel)?;
                Some((
                    reply::text(parts.first()?)?,
                    reply::text(parts.get(1)?)?,
                    reply::int(parts.get(3)?)?,
                ))
            })
            .collect()
    });
    pending.ok_or(Bad::Unexpected("XPENDING"))
}

/// One window read by itself. An error reply is an error of the read (which the caller
/// turns into a difference to re-check), a reply of the wrong shape fails the run.
fn windowed<T>(
    link: &mut Link,
    command: &'static str,
    cmd: &redis::Cmd,
    parse: impl FnOnce(Value) -> Result<T, Bad>,
) -> Result<T> {
    let value: Value = link.query(cmd)?;
    parse(value).map_err(|_| link.malformed(command))
}

fn xrange(link: &mut Link, key: &[u8], start: &str, count: usize) -> Result<Vec<Entry>> {
    windowed(
        link,
        "XRANGE",
        redis::cmd("XRANGE")
            .arg(key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count),
        parse_entries,
    )
}

fn xpending(
    link: &mut Link,
    key: &[u8],
    group: &str,
    start: &str,
    count: usize,
) -> Result<Vec<Pel>> {
    windowed(
        link,
        "XPENDING",
        redis::cmd("XPENDING")
            .arg(key)
            .arg(group)
            .arg(start)
            .arg("+")
            .arg(count),
        parse_pending,
    )
}

/// `<id> field=value ...` for reports.
fn show_entry(entry: &Entry) -> Excerpt {
    let mut line = entry.0.clone().into_bytes();
    for (field, value) in &entry.1 {
        line.push(b' ');
        line.extend_from_slice(field);
        line.push(b'=');
        line.extend_from_slice(value);
    }
    Excerpt::new(text(&line).as_bytes())
}

/// The smallest stream ID after `id` (`ms-seq`), for the next window's start.
fn next_id(id: &str) -> String {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    let (ms, seq): (u64, u64) = (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0));
    match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_ids_step_the_sequence_then_the_time() {
        assert_eq!(next_id("5-3"), "5-4");
        assert_eq!(next_id(&format!("5-{}", u64::MAX)), "6-0");
    }

    #[test]
    fn an_error_reply_makes_the_head_unreadable_and_leaves_the_next_key_in_place() {
        let error = || redis::parse_redis_value(b"-ERR no such key\r\n").unwrap();
        let next = Value::BulkString(b"next key".to_vec());
        let mut replies = [
            error(),
            Value::Array(vec![]),
            Value::Array(vec![]),
            next.clone(),
        ]
        .into_iter();
        assert!(matches!(
            parse_head(&mut replies, 10),
            Err(Bad::Unreadable(_))
        ));
        assert_eq!(replies.next(), Some(next.clone()));
        let mut replies = [error(), Value::Array(vec![]), next.clone()].into_iter();
        assert!(matches!(
            parse_group(&mut replies, 10),
            Err(Bad::Unreadable(_))
        ));
        assert_eq!(replies.next(), Some(next));
    }

    #[test]
    fn flat_info_replies_keep_scalars() {
        let reply = Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(3),
            Value::BulkString(b"first-entry".to_vec()),
            Value::Array(vec![]),
            Value::BulkString(b"lag".to_vec()),
            Value::Nil,
        ]);
        let map = scalar_map(reply).unwrap();
        assert_eq!(map["length"], "3");
        assert_eq!(map["lag"], "-");
        assert!(!map.contains_key("first-entry"));
    }
}
