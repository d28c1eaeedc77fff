//! Streams: entries in windows of `XRANGE`, the stream's own fields (`XINFO STREAM`),
//! consumer groups (`XINFO GROUPS`), their consumers (`XINFO CONSUMERS`) and pending entries
//! (`XPENDING`, in windows). Times that only say when something was last seen (`idle`,
//! `seen-time`) are not compared: they differ between any two servers.

use std::collections::BTreeMap;

use redis::Value;

use super::{Fingerprint, Pair};
use crate::diff::{Change, Detail, EntryChange, Listing};
use crate::error::Result;
use crate::key::{text, Excerpt};
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

pub(super) fn compare(p: &mut Pair) -> Result<Option<Detail>> {
    let (slen, tlen) = p.lens;
    let mut meta = Listing::default();
    let src_info = info(p.src, "STREAM", p.key)?;
    let tgt_info = info(p.tgt, "STREAM", p.key)?;
    let src_info = src_info.into_iter().next().unwrap_or_default();
    let tgt_info = tgt_info.into_iter().next().unwrap_or_default();
    compare_fields(
        &STREAM_FIELDS,
        "",
        &src_info,
        &tgt_info,
        &mut meta,
        p.src_fp,
        p.tgt_fp,
    );
    let entries = entries(p)?;
    let groups = groups(p)?;
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

/// Compares entries window by window; the first differing one, if any.
fn entries(p: &mut Pair) -> Result<Option<EntryChange>> {
    let mut start = "-".to_string();
    let mut index = 0u64;
    loop {
        let s = xrange(p.src, p.key, &start, p.windows)?;
        let t = xrange(p.tgt, p.key, &start, p.windows)?;
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
        match s.last() {
            Some((id, _)) if s.len() == p.windows => start = next_id(id),
            _ => return Ok(None),
        }
        index += s.len() as u64;
    }
}

/// Compares the consumer groups, their consumers and their pending entries.
fn groups(p: &mut Pair) -> Result<Listing<Change>> {
    let mut changes = Listing::default();
    let named =
        |groups: Vec<BTreeMap<String, String>>| -> BTreeMap<String, BTreeMap<String, String>> {
            groups
                .into_iter()
                .filter_map(|g| Some((g.get("name")?.clone(), g)))
                .collect()
        };
    let src = named(info(p.src, "GROUPS", p.key)?);
    let tgt = named(info(p.tgt, "GROUPS", p.key)?);
    let names: std::collections::BTreeSet<&String> = src.keys().chain(tgt.keys()).collect();
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
        consumers(p, name, &mut changes)?;
        pending(p, name, &mut changes)?;
    }
    Ok(changes)
}

/// Compares the consumers of a group by name and pending count.
fn consumers(p: &mut Pair, group: &str, changes: &mut Listing<Change>) -> Result<()> {
    let src = consumer_pending(p.src, p.key, group)?;
    let tgt = consumer_pending(p.tgt, p.key, group)?;
    p.src_fp.add(&src);
    p.tgt_fp.add(&tgt);
    let names: std::collections::BTreeSet<&String> = src.keys().chain(tgt.keys()).collect();
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
    Ok(())
}

/// `XINFO CONSUMERS key group` as consumer name → pending count.
fn consumer_pending(link: &mut Link, key: &[u8], group: &str) -> Result<BTreeMap<String, String>> {
    let value: Value = link.query(redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(group))?;
    let consumers = reply::items(value.clone())
        .and_then(|items| {
            items
                .into_iter()
                .map(scalar_map)
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| link.unexpected("XINFO CONSUMERS", &value))?;
    Ok(consumers
        .into_iter()
        .filter_map(|c| Some((c.get("name")?.clone(), c.get("pending")?.clone())))
        .collect())
}

/// Compares a group's pending entries (ID, consumer, delivery count) window by window.
fn pending(p: &mut Pair, group: &str, changes: &mut Listing<Change>) -> Result<()> {
    let mut start = "-".to_string();
    let mut index = 0u64;
    loop {
        let s = xpending(p.src, p.key, group, &start, p.windows)?;
        let t = xpending(p.tgt, p.key, group, &start, p.windows)?;
        p.src_fp.add(&s);
        p.tgt_fp.add(&t);
        for j in 0..s.len().max(t.len()) {
            if s.get(j) != t.get(j) {
                let show = |e: Option<&(String, String, i64)>| {
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
        match s.last() {
            Some((id, _, _)) if s.len() == p.windows => start = next_id(id),
            _ => return Ok(()),
        }
        index += s.len() as u64;
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

/// `XINFO <sub> key`: one map of scalar fields for `STREAM`, one per group for `GROUPS`.
fn info(link: &mut Link, sub: &'static str, key: &[u8]) -> Result<Vec<BTreeMap<String, String>>> {
    let name = if sub == "STREAM" {
        "XINFO STREAM"
    } else {
        "XINFO GROUPS"
    };
    let value: Value = link.query(redis::cmd("XINFO").arg(sub).arg(key))?;
    let parsed = if sub == "STREAM" {
        scalar_map(value.clone()).map(|m| vec![m])
    } else {
        reply::items(value.clone()).and_then(|items| {
            items
                .into_iter()
                .map(scalar_map)
                .collect::<Option<Vec<_>>>()
        })
    };
    parsed.ok_or_else(|| link.unexpected(name, &value))
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

fn xrange(link: &mut Link, key: &[u8], start: &str, count: usize) -> Result<Vec<Entry>> {
    let value: Value = link.query(
        redis::cmd("XRANGE")
            .arg(key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count),
    )?;
    reply::items(value.clone())
        .and_then(|items| {
            items
                .into_iter()
                .map(|entry| {
                    let mut parts = reply::items(entry)?.into_iter();
                    let id = reply::text(&parts.next()?)?;
                    let fields = reply::pairs(parts.next()?)?
                        .iter()
                        .map(|(f, v)| Some((reply::bytes(f)?, reply::bytes(v)?)))
                        .collect::<Option<Vec<_>>>()?;
                    Some((id, fields))
                })
                .collect()
        })
        .ok_or_else(|| link.unexpected("XRANGE", &value))
}

fn xpending(
    link: &mut Link,
    key: &[u8],
    group: &str,
    start: &str,
    count: usize,
) -> Result<Vec<(String, String, i64)>> {
    let value: Value = link.query(
        redis::cmd("XPENDING")
            .arg(key)
            .arg(group)
            .arg(start)
            .arg("+")
            .arg(count),
    )?;
    reply::items(value.clone())
        .and_then(|items| {
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
        })
        .ok_or_else(|| link.unexpected("XPENDING", &value))
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
