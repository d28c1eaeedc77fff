//! The consistency report: what was compared, what differs, and the verdict; rendered as
//! text, JSON, JUnit XML, Markdown or one self-contained HTML page.
//!
//! # JSON schema (`"schema": 1`)
//!
//! The JSON report is [`Report`] serialized with serde; every field is documented on the
//! types below. In brief:
//!
//! ```text
//! {
//!   "schema": 1,
//!   "verdict": "consistent" | "inconsistent",
//!   "mode": "outline" | "length" | "full",
//!   "started_at_ms": <unix ms>, "elapsed_ms": <ms>,
//!   "source": Side, "target": Side,
//!   "scope": { "dbs": [0], "slots": "0-16383" | null, "sample": 0.1 | null, "filter": {...} },
//!   "clock": { "target_minus_source_ms": f64, "uncertainty_ms": f64 },
//!   "census": { "method": "slots" | "keyspace", "source_keys", "target_keys",
//!               "dbs": [{ "db", "source", "target" }], "slots_differing",
//!               "top_slots": [{ "slot", "source", "target" }] },
//!   "counts": { "source_keys_scanned", "target_keys_scanned", "target_keys_counted",
//!               "keys_compared",
//!               "out_of_scope", "reserved_ignored", "differing_keys", "differences",
//!               "unstable_keys", "resolved_on_recheck", "differences_not_kept" },
//!   "rounds": [{ "round", "rechecked", "resolved", "changed", "differing", "caught_up_ms"? }],
//!   "breakdown": [{ "type", "kind", "count" }],
//!   "differences": [Difference],
//!   "functions": { "source_libraries", "target_libraries",
//!                  "differences": [{ "library", "kind": "missing" | "extra" | "different",
//!                                    "targets": [addr], "source_code"?, "target_code"? }],
//!                  "source_masters_differ"?: "<addr> [names]; ...",
//!                  "not_compared"?: ["<side> <addr>: <why>"] },
//!   "unstable": [{ "key", "key_escaped"?, "db", "slot", "kinds": [kind], "rounds_changed" }],
//!   "sample": null | { "rate", "keys_sampled", "differing", "share", "share_low",
//!                      "share_high", "estimated_differing_keys", "confidence" }
//! }
//! Side = { "url" (no password), "cluster", "read_from": "master" | "replica",
//!          "masters": [{ "addr", "version", "valkey_version"?, "evicted_keys",
//!                        "expired_keys", "maxmemory_policy", "keys": { "<db>": n },
//!                        "clock_offset_ms", "clock_uncertainty_ms" }] }
//! Difference = { "key", "key_escaped"?, "db", "slot",
//!                "kind": "missing" | "extra" | "type" | "ttl" | "value",
//!                "type": "string" | "list" | "set" | "zset" | "hash" | "stream" | "other",
//!                "source": Facts | null, "target": Facts | null,
//!                "detail"?: { "of": "type" | "ttl" | "length" | "string" | "list" | "hash"
//!                                   | "set" | "zset" | "stream" | "unreadable", ... },
//!                "cause"?: { "cause": "evicted" | "expired_in_flight"
//!                                     | "duplicated_list_tail" | "clock_skew", ... } }
//! Facts = { "type", "expire_at_ms": <unix ms on that server's clock> | null, "len"? }
//! ```
//!
//! Keys are JSON strings: the name itself when it is valid UTF-8; otherwise every
//! non-printable byte is escaped (`\x00`, `\xff`, `\n`, `\\`) and `"key_escaped": true` is
//! set. Values in details are excerpts: text, escaped the same way when not UTF-8, cut after
//! 200 bytes with `…(+N bytes)`. Scores are strings as `ZSCORE` replies them (`"inf"`,
//! `"-inf"`, `"1.5"`). Listings of members are `{ "total": n, "shown": [...] }` with at most
//! 20 shown.

mod html;
mod junit;
mod markdown;
mod text;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::census::Census;
use crate::config::{Filter, Mode};
use crate::diff::{DiffKind, Difference};
use crate::functions::Functions;
use crate::key::{Key, KeyType};
use crate::side::SideSummary;

/// Version of the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No difference in keys nor in function libraries (unstable keys, which changed in
    /// every round, do not count).
    Consistent,
    Inconsistent,
}

/// Everything a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub verdict: Verdict,
    pub mode: Mode,
    pub started_at_ms: u64,
    pub elapsed_ms: u64,
    pub source: SideSummary,
    pub target: SideSummary,
    pub scope: Scope,
    pub clock: Clock,
    pub census: Census,
    pub counts: Counts,
    pub rounds: Vec<Round>,
    pub breakdown: Vec<BreakdownRow>,
    /// Differences with details, keys in order; at most `max_differences` keys.
    pub differences: Vec<Difference>,
    /// Function libraries compared on every master of both sides; a difference there makes
    /// the verdict inconsistent too.
    pub functions: Functions,
    pub unstable: Vec<Unstable>,
    pub sample: Option<SampleEstimate>,
}

/// Which keys were in scope.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    pub dbs: Vec<u32>,
    pub slots: Option<String>,
    pub sample: Option<f64>,
    pub filter: Filter,
    pub ttl_tolerance_ms: u64,
}

/// The clocks of the two sides, measured with `TIME` and reported apart from TTLs: TTLs are
/// compared as the absolute expiry times each server stores.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Clock {
    /// Mean target master clock minus mean source master clock.
    pub target_minus_source_ms: f64,
    /// How far off that may be (half the slowest `TIME` round trip on each side).
    pub uncertainty_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Keys listed on the source (`SCAN`, or `CLUSTER GETKEYSINSLOT` slot by slot), before
    /// filters.
    pub source_keys_scanned: u64,
    /// Keys listed on the target.
    pub target_keys_scanned: u64,
    /// Target keys accounted for by slot counts instead of being listed: when every key is
    /// in scope, a slot where the target holds as many keys (`CLUSTER COUNTKEYSINSLOT`) as
    /// the source keys found on it holds no others.
    pub target_keys_counted: u64,
    /// Keys in scope that were compared: every source key, plus target keys absent on the
    /// source.
    pub keys_compared: u64,
    /// Keys left out by the type filter.
    pub out_of_scope: u64,
    /// `__ferry__:` keys skipped.
    pub reserved_ignored: u64,
    /// Keys with at least one difference at the end.
    pub differing_keys: u64,
    /// Differences at the end (a key may have a `ttl` and a `value` one).
    pub differences: u64,
    /// Keys that changed in every re-check round: being written, not judged.
    pub unstable_keys: u64,
    /// Keys that differed at first and were equal when re-checked.
    pub resolved_on_recheck: u64,
    /// Differing keys beyond `max_differences`: counted, not kept nor re-checked.
    pub differences_not_kept: u64,
}

/// One re-check round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub rechecked: u64,
    pub resolved: u64,
    /// Keys read differently than in the round before (they are being written).
    pub changed: u64,
    pub differing: u64,
    /// When the target holds ferry's checkpoints and applied everything the source had
    /// before the round re-read: how long that took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_up_ms: Option<u64>,
}

/// Differences of one type and kind.
#[derive(Debug, Clone, Serialize)]
pub struct BreakdownRow {
    #[serde(rename = "type")]
    pub key_type: KeyType,
    pub kind: DiffKind,
    pub count: u64,
}

/// A key that changed in every re-check round.
#[derive(Debug, Clone, Serialize)]
pub struct Unstable {
    pub key: Key,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub key_escaped: bool,
    pub db: u32,
    pub slot: u16,
    /// The kinds of difference it had in the last round.
    pub kinds: Vec<DiffKind>,
    pub rounds_changed: u32,
}

/// With `--sample R`: the share of differing keys among all, from the sampled keys, with a
/// 95% Wilson score interval.
#[derive(Debug, Clone, Serialize)]
pub struct SampleEstimate {
    pub rate: f64,
    pub keys_sampled: u64,
    pub differing: u64,
    pub share: f64,
    pub share_low: f64,
    pub share_high: f64,
    /// `share` times the source's key count from the census.
    pub estimated_differing_keys: u64,
    pub confidence: f64,
}

impl SampleEstimate {
    pub(crate) fn new(rate: f64, sampled: u64, differing: u64, population: u64) -> Self {
        const Z: f64 = 1.959_963_984_540_054;
        let n = sampled.max(1) as f64;
        let p = differing as f64 / n;
        let denom = 1.0 + Z * Z / n;
        let centre = (p + Z * Z / (2.0 * n)) / denom;
        let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / denom;
        SampleEstimate {
            rate,
            keys_sampled: sampled,
            differing,
            share: p,
            share_low: if differing == 0 {
                0.0
            } else {
                (centre - half).max(0.0)
            },
            share_high: if differing == sampled {
                1.0
            } else {
                (centre + half).min(1.0)
            },
            estimated_differing_keys: (p * population as f64).round() as u64,
            confidence: 0.95,
        }
    }
}

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
    Markdown,
    Html,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "text" => Format::Text,
            "json" => Format::Json,
            "junit" => Format::Junit,
            "markdown" | "md" => Format::Markdown,
            "html" => Format::Html,
            _ => return None,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Junit => "junit",
            Format::Markdown => "markdown",
            Format::Html => "html",
        })
    }
}

impl Report {
    /// The report in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => text::render(self),
            Format::Json => {
                let mut json = serde_json::to_string_pretty(self).expect("reports serialize");
                json.push('\n');
                json
            }
            Format::Junit => junit::render(self),
            Format::Markdown => markdown::render(self),
            Format::Html => html::render(self),
        }
    }

    pub fn is_consistent(&self) -> bool {
        self.verdict == Verdict::Consistent
    }

    /// Differences of `kind`.
    pub fn count(&self, kind: DiffKind) -> u64 {
        self.breakdown
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.count)
            .sum()
    }

    /// The breakdown as a table: type → kind → count, every type and kind present.
    pub(crate) fn table(&self) -> BTreeMap<KeyType, BTreeMap<DiffKind, u64>> {
        let mut table: BTreeMap<KeyType, BTreeMap<DiffKind, u64>> = BTreeMap::new();
        for row in &self.breakdown {
            *table
                .entry(row.key_type)
                .or_default()
                .entry(row.kind)
                .or_default() += row.count;
        }
        table
    }

    /// The differences that the summaries list first: those with a cause last, by kind.
    pub(crate) fn top(&self, n: usize) -> Vec<&Difference> {
        let mut top: Vec<&Difference> = self.differences.iter().collect();
        top.sort_by_key(|d| (d.kind, d.key_type, d.db, d.key.clone()));
        top.truncate(n);
        top
    }
}

/// A duration in milliseconds as people read it.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_hold_the_share() {
        let e = SampleEstimate::new(0.1, 1_000, 10, 100_000);
        assert!((e.share - 0.01).abs() < 1e-9);
        assert!(e.share_low < 0.01 && e.share_high > 0.01);
        assert_eq!(e.estimated_differing_keys, 1_000);
        let none = SampleEstimate::new(0.1, 1_000, 0, 100_000);
        assert_eq!(none.share_low, 0.0);
        assert!(none.share_high > 0.0 && none.share_high < 0.01);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(12), "12 ms");
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(61_000), "1m01s");
    }
}
