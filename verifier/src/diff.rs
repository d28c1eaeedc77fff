//! One difference between the source and the target, with what it is and what likely
//! caused it.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::key::{Excerpt, Key, KeyType};

/// What kind of difference a key has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// A different type on each side.
    Type,
    /// A different expiry: lost, added, or more than the tolerance apart.
    Ttl,
    /// The same type with a different value (or length).
    Value,
}

impl DiffKind {
    pub const ALL: [DiffKind; 5] = [
        DiffKind::Missing,
        DiffKind::Extra,
        DiffKind::Type,
        DiffKind::Ttl,
        DiffKind::Value,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Type => "type",
            DiffKind::Ttl => "ttl",
            DiffKind::Value => "value",
        }
    }
}

impl fmt::Display for DiffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was read of a key on one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// Absolute expiry as Unix milliseconds on that server's clock; `None`: no TTL.
    pub expire_at_ms: Option<i64>,
    /// `STRLEN`, `LLEN`, `SCARD`, `ZCARD`, `HLEN` or `XLEN`, when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
}

/// One difference of one key. A key can have a `ttl` and a `value` difference at once.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub key: Key,
    /// Set when the name is not valid UTF-8 and `key` shows it escaped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub key_escaped: bool,
    pub db: u32,
    pub slot: u16,
    pub kind: DiffKind,
    /// The source's type (the target's for an `extra` key).
    #[serde(rename = "type")]
    pub key_type: KeyType,
    pub source: Option<Facts>,
    pub target: Option<Facts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

impl Difference {
    /// One line saying what differs.
    pub fn summary(&self) -> String {
        match (&self.detail, self.kind) {
            (Some(detail), _) => detail.summary(),
            (None, DiffKind::Missing) => "on the source only".into(),
            (None, DiffKind::Extra) => "on the target only".into(),
            (None, kind) => kind.to_string(),
        }
    }
}

/// How a TTL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TtlChange {
    /// The source key has a TTL, the target key none.
    Lost,
    /// The target key has a TTL, the source key none.
    Added,
    /// Both have one, further apart than the tolerance.
    Changed,
}

/// The details of a difference, by what differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "of", rename_all = "snake_case")]
pub enum Detail {
    Type {
        source: KeyType,
        target: KeyType,
    },
    Ttl {
        change: TtlChange,
        source_expire_at_ms: Option<i64>,
        target_expire_at_ms: Option<i64>,
        /// Target minus source.
        #[serde(skip_serializing_if = "Option::is_none")]
        delta_ms: Option<i64>,
    },
    /// Only lengths were compared (`--mode length`), or they are all that is known.
    Length {
        source_len: u64,
        target_len: u64,
    },
    String {
        source_len: u64,
        target_len: u64,
        /// Offset of the first differing byte (the shorter length when one is a prefix).
        first_difference_at: u64,
        /// Offset where the excerpts start.
        excerpt_at: u64,
        source_excerpt: Excerpt,
        target_excerpt: Excerpt,
    },
    List {
        source_len: u64,
        target_len: u64,
        /// Index of the first differing element (the shorter length when one is a prefix).
        first_difference_at: u64,
        /// Index where the windows start.
        window_at: u64,
        source_window: Vec<Excerpt>,
        target_window: Vec<Excerpt>,
    },
    Hash {
        source_len: u64,
        target_len: u64,
        /// Fields only on the source.
        missing: Listing<FieldValue>,
        /// Fields only on the target.
        extra: Listing<FieldValue>,
        changed: Listing<FieldChange>,
    },
    Set {
        source_len: u64,
        target_len: u64,
        missing: Listing<Excerpt>,
        extra: Listing<Excerpt>,
    },
    Zset {
        source_len: u64,
        target_len: u64,
        missing: Listing<Member>,
        extra: Listing<Member>,
        changed: Listing<ScoreChange>,
    },
    Stream {
        source_len: u64,
        target_len: u64,
        /// The first entry that differs, when entries differ.
        #[serde(skip_serializing_if = "Option::is_none")]
        entries: Option<EntryChange>,
        /// `XINFO STREAM` fields that differ (`last-generated-id`, `entries-added`, ...).
        meta: Listing<Change>,
        /// Consumer groups, their consumers and pending entries that differ.
        groups: Listing<Change>,
    },
    /// The key changed type or vanished while its value was read.
    Unreadable {
        reason: String,
    },
}

impl Detail {
    /// One line saying what differs.
    pub fn summary(&self) -> String {
        let both = |what: &str, total: u64| -> Option<String> {
            (total > 0).then(|| format!("{total} {what}"))
        };
        let join = |parts: Vec<Option<String>>| {
            let parts: Vec<String> = parts.into_iter().flatten().collect();
            if parts.is_empty() {
                "same members, different lengths".to_string()
            } else {
                parts.join(", ")
            }
        };
        match self {
            Detail::Type { source, target } => format!("type {source} → {target}"),
            Detail::Ttl {
                change: TtlChange::Lost,
                ..
            } => "TTL lost on the target".into(),
            Detail::Ttl {
                change: TtlChange::Added,
                ..
            } => "TTL added on the target".into(),
            Detail::Ttl { delta_ms, .. } => {
                format!("expiry {:+} ms on the target", delta_ms.unwrap_or(0))
            }
            Detail::Length {
                source_len,
                target_len,
            } => format!("length {source_len} → {target_len}"),
            Detail::String {
                source_len,
                target_len,
                first_difference_at,
                ..
            } => format!(
                "first difference at byte {first_difference_at} (length {source_len} → {target_len})"
            ),
            Detail::List {
                source_len,
                target_len,
                first_difference_at,
                ..
            } => format!(
                "first difference at index {first_difference_at} (length {source_len} → {target_len})"
            ),
            Detail::Hash {
                missing,
                extra,
                changed,
                ..
            } => format!(
                "fields: {}",
                join(vec![
                    both("missing", missing.total),
                    both("extra", extra.total),
                    both("changed", changed.total)
                ])
            ),
            Detail::Set { missing, extra, .. } => format!(
                "members: {}",
                join(vec![both("missing", missing.total), both("extra", extra.total)])
            ),
            Detail::Zset {
                missing,
                extra,
                changed,
                ..
            } => format!(
                "members: {}",
                join(vec![
                    both("missing", missing.total),
                    both("extra", extra.total),
                    both("with another score", changed.total)
                ])
            ),
            Detail::Stream {
                source_len,
                target_len,
                entries,
                meta,
                groups,
            } => {
                let mut parts = Vec::new();
                if let Some(e) = entries {
                    parts.push(format!("entries differ from #{}", e.index));
                }
                if source_len != target_len {
                    parts.push(format!("length {source_len} → {target_len}"));
                }
                parts.extend(both("stream fields", meta.total));
                parts.extend(both("group differences", groups.total));
                parts.join(", ")
            }
            Detail::Unreadable { reason } => format!("unreadable: {reason}"),
        }
    }

    /// The difference as lines of each side, for a line diff.
    pub fn sides(&self) -> (Vec<String>, Vec<String>) {
        let mut s = Vec::new();
        let mut t = Vec::new();
        let expiry = |at: &Option<i64>| at.map_or("none".to_string(), |ms| format!("{ms} ms"));
        match self {
            Detail::Type { source, target } => {
                s.push(format!("type {source}"));
                t.push(format!("type {target}"));
            }
            Detail::Ttl {
                source_expire_at_ms,
                target_expire_at_ms,
                ..
            } => {
                s.push(format!("expire at {}", expiry(source_expire_at_ms)));
                t.push(format!("expire at {}", expiry(target_expire_at_ms)));
            }
            Detail::Length {
                source_len,
                target_len,
            } => {
                s.push(format!("length {source_len}"));
                t.push(format!("length {target_len}"));
            }
            Detail::String {
                excerpt_at,
                source_excerpt,
                target_excerpt,
                ..
            } => {
                // Short lines, so that the line diff points near the change.
                for (lines, excerpt) in [(&mut s, source_excerpt), (&mut t, target_excerpt)] {
                    let chars: Vec<char> = excerpt.0.chars().collect();
                    for (n, chunk) in chars.chunks(32).enumerate() {
                        let line: String = chunk.iter().collect();
                        lines.push(format!("@{} {line}", excerpt_at + 32 * n as u64));
                    }
                }
            }
            Detail::List {
                window_at,
                source_window,
                target_window,
                source_len,
                target_len,
                ..
            } => {
                for (lines, window, len) in [
                    (&mut s, source_window, source_len),
                    (&mut t, target_window, target_len),
                ] {
                    lines.push(format!("length {len}"));
                    for (n, e) in window.iter().enumerate() {
                        lines.push(format!("[{}] {e}", window_at + n as u64));
                    }
                }
            }
            Detail::Hash {
                missing,
                extra,
                changed,
                ..
            } => {
                let mut rows: Vec<(String, Option<String>, Option<String>)> = Vec::new();
                rows.extend(
                    missing
                        .shown
                        .iter()
                        .map(|f| (f.field.0.clone(), Some(f.value.0.clone()), None)),
                );
                rows.extend(
                    extra
                        .shown
                        .iter()
                        .map(|f| (f.field.0.clone(), None, Some(f.value.0.clone()))),
                );
                rows.extend(changed.shown.iter().map(|f| {
                    (
                        f.field.0.clone(),
                        Some(f.source.0.clone()),
                        Some(f.target.0.clone()),
                    )
                }));
                push_rows(rows, " = ", &mut s, &mut t);
            }
            Detail::Set { missing, extra, .. } => {
                s.extend(missing.shown.iter().map(|m| m.0.clone()));
                t.extend(extra.shown.iter().map(|m| m.0.clone()));
                s.sort();
                t.sort();
            }
            Detail::Zset {
                missing,
                extra,
                changed,
                ..
            } => {
                let mut rows: Vec<(String, Option<String>, Option<String>)> = Vec::new();
                rows.extend(
                    missing
                        .shown
                        .iter()
                        .map(|m| (m.member.0.clone(), Some(m.score.to_string()), None)),
                );
                rows.extend(
                    extra
                        .shown
                        .iter()
                        .map(|m| (m.member.0.clone(), None, Some(m.score.to_string()))),
                );
                rows.extend(changed.shown.iter().map(|c| {
                    (
                        c.member.0.clone(),
                        Some(c.source.to_string()),
                        Some(c.target.to_string()),
                    )
                }));
                push_rows(rows, " ", &mut s, &mut t);
            }
            Detail::Stream {
                source_len,
                target_len,
                entries,
                meta,
                groups,
            } => {
                s.push(format!("length {source_len}"));
                t.push(format!("length {target_len}"));
                if let Some(e) = entries {
                    let show =
                        |x: &Option<Excerpt>| x.as_ref().map_or("-".to_string(), |e| e.0.clone());
                    s.push(format!("entry #{} {}", e.index, show(&e.source)));
                    t.push(format!("entry #{} {}", e.index, show(&e.target)));
                }
                for change in meta.shown.iter().chain(&groups.shown) {
                    s.push(format!("{}: {}", change.what, change.source));
                    t.push(format!("{}: {}", change.what, change.target));
                }
            }
            Detail::Unreadable { reason } => {
                t.push(format!("unreadable: {reason}"));
            }
        }
        (s, t)
    }
}

/// A bounded list of items and how many there were in all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing<T> {
    pub total: u64,
    pub shown: Vec<T>,
}

/// Rows of members shown on either side (name, source value, target value), sorted by name,
/// as `name<sep>value` lines on each side that has the member.
fn push_rows(
    mut rows: Vec<(String, Option<String>, Option<String>)>,
    sep: &str,
    s: &mut Vec<String>,
    t: &mut Vec<String>,
) {
    rows.sort();
    for (name, sv, tv) in rows {
        if let Some(v) = sv {
            s.push(format!("{name}{sep}{v}"));
        }
        if let Some(v) = tv {
            t.push(format!("{name}{sep}{v}"));
        }
    }
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            total: 0,
            shown: Vec::new(),
        }
    }
}

impl<T> Listing<T> {
    /// Items kept per listing.
    pub const SHOWN: usize = 20;

    pub fn push(&mut self, item: T) {
        self.total += 1;
        if self.shown.len() < Self::SHOWN {
            self.shown.push(item);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldValue {
    pub field: Excerpt,
    pub value: Excerpt,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: Excerpt,
    pub source: Excerpt,
    pub target: Excerpt,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub member: Excerpt,
    pub score: Score,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreChange {
    pub member: Excerpt,
    pub source: Score,
    pub target: Score,
}

/// One differing property: what it is and its value on each side (`-` when absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub what: String,
    pub source: String,
    pub target: String,
}

/// The first differing stream entry, as `<id> field=value ...` on each side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryChange {
    /// Position of the entry from the start of the stream.
    pub index: u64,
    pub source: Option<Excerpt>,
    pub target: Option<Excerpt>,
}

/// A sorted-set score; JSON shows it as a string as `ZSCORE` replies it (`inf`, `-inf`,
/// `1.5`), since JSON numbers have no infinities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Score {
    /// Equal as doubles (`inf == inf`; `-0 == 0`, as Redis orders them).
    pub fn same(a: f64, b: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == f64::INFINITY {
            f.write_str("inf")
        } else if self.0 == f64::NEG_INFINITY {
            f.write_str("-inf")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for Score {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The likely cause of a difference, with the evidence for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cause {
    /// The target node may have evicted the key: it reports evicted keys, or its policy
    /// may evict this key.
    Evicted {
        node: String,
        evicted_keys: u64,
        maxmemory_policy: String,
    },
    /// The key was about to expire when it was read: one side expired it first.
    ExpiredInFlight { remaining_ttl_ms: i64 },
    /// The target list is the source list with its last elements repeated, as a replay of
    /// the last pushes after a resync leaves it.
    DuplicatedListTail { duplicated: u64 },
    /// The expiry times are apart by about the measured clock skew: a copy that carried
    /// TTLs as relative times.
    ClockSkew { skew_ms: i64 },
}

impl Cause {
    pub fn name(&self) -> &'static str {
        match self {
            Cause::Evicted { .. } => "evicted",
            Cause::ExpiredInFlight { .. } => "expired in flight",
            Cause::DuplicatedListTail { .. } => "duplicated list tail",
            Cause::ClockSkew { .. } => "clock skew",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Evicted {
                node,
                evicted_keys,
                maxmemory_policy,
            } => write!(
                f,
                "evicted (target {node}: evicted_keys {evicted_keys}, maxmemory-policy {maxmemory_policy})"
            ),
            Cause::ExpiredInFlight { remaining_ttl_ms } => {
                write!(f, "expired in flight ({remaining_ttl_ms} ms of TTL left when read)")
            }
            Cause::DuplicatedListTail { duplicated: 1 } => write!(
                f,
                "duplicated list tail (the last element appears twice on the target)"
            ),
            Cause::DuplicatedListTail { duplicated } => write!(
                f,
                "duplicated list tail (the last {duplicated} elements appear twice on the target)"
            ),
            Cause::ClockSkew { skew_ms } => {
                write!(f, "clock skew (the clocks are {skew_ms} ms apart)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_show_as_zscore_replies_them() {
        assert_eq!(Score(f64::INFINITY).to_string(), "inf");
        assert_eq!(Score(f64::NEG_INFINITY).to_string(), "-inf");
        assert_eq!(Score(-2.5).to_string(), "-2.5");
        assert_eq!(serde_json::to_string(&Score(3.0)).unwrap(), "\"3\"");
        assert!(Score::same(f64::INFINITY, f64::INFINITY));
        assert!(!Score::same(1.0, 1.0000000000000002));
    }

    #[test]
    fn listings_keep_a_bounded_sample_and_the_total() {
        let mut listing = Listing::default();
        for i in 0..100 {
            listing.push(i);
        }
        assert_eq!(listing.total, 100);
        assert_eq!(listing.shown.len(), Listing::<i32>::SHOWN);
    }
}
