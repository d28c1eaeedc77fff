//! The terminal report: a summary, the breakdown, and per-key diffs rendered with `similar`.

use std::fmt::Write;

use similar::TextDiff;

use super::{duration, Counts, Report, Verdict};
use crate::diff::{DiffKind, Difference};
use crate::functions::LibraryDifference;
use crate::side::SideSummary;

/// Differences shown with their diffs; the JSON report has them all.
const SHOWN: usize = 100;

pub(super) fn render(r: &Report) -> String {
    let mut out = String::new();
    let c = &r.counts;
    let _ = match r.verdict {
        Verdict::Consistent => writeln!(
            out,
            "ferry verify: CONSISTENT, {} keys compared, no difference",
            c.keys_compared
        ),
        Verdict::Inconsistent => writeln!(
            out,
            "ferry verify: INCONSISTENT, {} differences in {} of {} keys{}",
            c.differences,
            c.differing_keys,
            c.keys_compared,
            match r.functions.differences.len() {
                0 => String::new(),
                1 => ", 1 function library difference".into(),
                n => format!(", {n} function library differences"),
            }
        ),
    };
    let _ = writeln!(out, "source   {}", side(&r.source));
    let _ = writeln!(out, "target   {}", side(&r.target));
    let dbs: Vec<String> = r.scope.dbs.iter().map(u32::to_string).collect();
    let _ = writeln!(
        out,
        "mode     {} · db {} · TTL tolerance {} ms{}{} · took {}",
        serde_json::to_value(r.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        dbs.join(","),
        r.scope.ttl_tolerance_ms,
        r.scope
            .slots
            .as_ref()
            .map(|s| format!(" · slots {s}"))
            .unwrap_or_default(),
        r.scope
            .sample
            .map(|s| format!(" · sample {s}"))
            .unwrap_or_default(),
        duration(r.elapsed_ms)
    );
    let _ = writeln!(
        out,
        "clock    target − source {:+.1} ms (± {:.1} ms), reported apart from TTLs",
        r.clock.target_minus_source_ms, r.clock.uncertainty_ms
    );
    let census = &r.census;
    let _ = write!(
        out,
        "census   {} source keys, {} target keys",
        census.source_keys, census.target_keys
    );
    if census.method == "slots" {
        let _ = write!(
            out,
            ", {} slots with different counts",
            census.slots_differing
        );
    }
    out.push('\n');
    for slot in census.top_slots.iter().take(5) {
        let _ = writeln!(
            out,
            "           slot {}: {} on the source, {} on the target",
            slot.slot, slot.source, slot.target
        );
    }
    let _ = writeln!(
        out,
        "keys     {} scanned on the source, {} on the target{}; {} compared, {} out of scope, {} of ferry's own skipped",
        c.source_keys_scanned, c.target_keys_scanned, counted(c), c.keys_compared, c.out_of_scope, c.reserved_ignored
    );
    let _ = writeln!(out, "libs     {}", r.functions.summary());
    for warning in r.functions.warnings() {
        let _ = writeln!(out, "           warning: {warning}");
    }
    let _ = writeln!(
        out,
        "rechecks {} round{}: {} resolved, {} unstable",
        r.rounds.len(),
        if r.rounds.len() == 1 { "" } else { "s" },
        c.resolved_on_recheck,
        c.unstable_keys
    );
    for round in &r.rounds {
        let _ = writeln!(
            out,
            "           round {}: {} rechecked, {} resolved, {} changed, {} differing",
            round.round, round.rechecked, round.resolved, round.changed, round.differing
        );
    }
    if let Some(s) = &r.sample {
        let _ = writeln!(
            out,
            "sample   {} of {} sampled keys differ: {:.4}% (95%: {:.4}%–{:.4}%), about {} keys in all",
            s.differing,
            s.keys_sampled,
            s.share * 100.0,
            s.share_low * 100.0,
            s.share_high * 100.0,
            s.estimated_differing_keys
        );
    }
    if !r.breakdown.is_empty() {
        out.push_str("\ndifferences by type and kind\n");
        let _ = write!(out, "  {:<8}", "type");
        for kind in DiffKind::ALL {
            let _ = write!(out, "{:>9}", kind.as_str());
        }
        out.push('\n');
        for (ty, kinds) in r.table() {
            let _ = write!(out, "  {:<8}", ty.as_str());
            for kind in DiffKind::ALL {
                let _ = write!(out, "{:>9}", kinds.get(&kind).copied().unwrap_or(0));
            }
            out.push('\n');
        }
    }
    if !r.differences.is_empty() {
        out.push_str("\ndifferences\n");
        for d in r.top(SHOWN) {
            difference(&mut out, d);
        }
        if r.differences.len() > SHOWN {
            let _ = writeln!(
                out,
                "  ... and {} more (--format json lists them all)",
                r.differences.len() - SHOWN
            );
        }
    }
    if !r.functions.differences.is_empty() {
        out.push_str("\nfunction library differences\n");
        for d in &r.functions.differences {
            library(&mut out, d);
        }
    }
    if c.differences_not_kept > 0 {
        let _ = writeln!(
            out,
            "  {} more differing keys were counted but not kept (max_differences)",
            c.differences_not_kept
        );
    }
    if !r.unstable.is_empty() {
        out.push_str("\nunstable keys (changed in every round: being written, not judged)\n");
        for u in r.unstable.iter().take(SHOWN) {
            let kinds: Vec<&str> = u.kinds.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(
                out,
                "  {} (db {}, slot {}): {}",
                u.key,
                u.db,
                u.slot,
                kinds.join(", ")
            );
        }
    }
    out
}

fn side(s: &SideSummary) -> String {
    format!(
        "{} ({}, {} master{}, {}, read from {})",
        s.url,
        if s.cluster { "cluster" } else { "standalone" },
        s.masters.len(),
        if s.masters.len() == 1 { "" } else { "s" },
        s.versions(),
        match s.read_from {
            crate::config::ReadFrom::Master => "masters",
            crate::config::ReadFrom::Replica => "replicas",
        }
    )
}

fn difference(out: &mut String, d: &Difference) {
    let _ = writeln!(
        out,
        "  {:<7} {:<6} {} (db {}, slot {}): {}",
        d.kind.as_str(),
        d.key_type.as_str(),
        d.key,
        d.db,
        d.slot,
        d.summary()
    );
    if let Some(cause) = &d.cause {
        let _ = writeln!(out, "          likely cause: {cause}");
    }
    let Some(detail) = &d.detail else {
        return;
    };
    let (s, t) = detail.sides();
    let (s, t) = (lines(&s), lines(&t));
    let diff = TextDiff::from_lines(&s, &t);
    let unified = diff
        .unified_diff()
        .context_radius(3)
        .header("source", "target")
        .to_string();
    for line in unified.lines() {
        let _ = writeln!(out, "          {line}");
    }
}

fn library(out: &mut String, d: &LibraryDifference) {
    let _ = writeln!(out, "  {:<9} {}", d.kind.as_str(), d.summary());
    if let (Some(s), Some(t)) = (&d.source_code, &d.target_code) {
        let diff = TextDiff::from_lines(s.as_str(), t.as_str());
        let unified = diff
            .unified_diff()
            .context_radius(3)
            .header("source", "target")
            .to_string();
        for line in unified.lines() {
            let _ = writeln!(out, "          {line}");
        }
    }
}

/// Lines joined with a newline after each, as line diffs want them.
pub(super) fn lines(lines: &[String]) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The target keys that slot counts accounted for, when there were any.
pub(crate) fn counted(c: &Counts) -> String {
    if c.target_keys_counted == 0 {
        String::new()
    } else {
        format!(
            " (and {} accounted for by slot counts)",
            c.target_keys_counted
        )
    }
}
