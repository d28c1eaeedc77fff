//! The Markdown report: a summary table, the breakdown, the top differences.

use std::fmt::Write;

use super::{duration, Report, Verdict};
use crate::diff::DiffKind;

/// Differences listed.
const TOP: usize = 50;

pub(super) fn render(r: &Report) -> String {
    let mut out = String::new();
    let c = &r.counts;
    let verdict = match r.verdict {
        Verdict::Consistent => "✅ consistent",
        Verdict::Inconsistent => "❌ inconsistent",
    };
    let _ = writeln!(out, "# ferry verify: {verdict}\n");
    out.push_str("| | |\n|---|---|\n");
    let rows: Vec<(&str, String)> = vec![
        ("source", format!("`{}`", r.source.url)),
        ("target", format!("`{}`", r.target.url)),
        ("keys compared", c.keys_compared.to_string()),
        ("differing keys", c.differing_keys.to_string()),
        ("differences", c.differences.to_string()),
        (
            "function library differences",
            r.functions.differences.len().to_string(),
        ),
        ("function libraries", r.functions.summary()),
        ("unstable keys", c.unstable_keys.to_string()),
        ("resolved on re-check", c.resolved_on_recheck.to_string()),
        (
            "census (source / target keys)",
            format!("{} / {}", r.census.source_keys, r.census.target_keys),
        ),
        (
            "clock skew (target − source)",
            format!(
                "{:+.1} ms ± {:.1} ms",
                r.clock.target_minus_source_ms, r.clock.uncertainty_ms
            ),
        ),
        ("took", duration(r.elapsed_ms)),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    if let Some(s) = &r.sample {
        let _ = writeln!(
            out,
            "| sample estimate | {:.4}% differ (95%: {:.4}%–{:.4}%), about {} keys |",
            s.share * 100.0,
            s.share_low * 100.0,
            s.share_high * 100.0,
            s.estimated_differing_keys
        );
    }
    if !r.breakdown.is_empty() {
        out.push_str("\n## Differences by type and kind\n\n| type |");
        for kind in DiffKind::ALL {
            let _ = write!(out, " {kind} |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(DiffKind::ALL.len()));
        out.push('\n');
        for (ty, kinds) in r.table() {
            let _ = write!(out, "| {ty} |");
            for kind in DiffKind::ALL {
                let _ = write!(out, " {} |", kinds.get(&kind).copied().unwrap_or(0));
            }
            out.push('\n');
        }
    }
    if !r.differences.is_empty() {
        let _ = writeln!(
            out,
            "\n## Top differences\n\n| key | db | slot | kind | type | detail | likely cause |\n|---|---:|---:|---|---|---|---|"
        );
        for d in r.top(TOP) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                cell(&d.key.to_string()).replace('`', "\\`"),
                d.db,
                d.slot,
                d.kind,
                d.key_type,
                cell(&d.summary()),
                cell(&d.cause.as_ref().map(|x| x.to_string()).unwrap_or_default())
            );
        }
        if r.differences.len() > TOP {
            let _ = writeln!(
                out,
                "\n… and {} more (the JSON report lists them all).",
                r.differences.len() - TOP
            );
        }
    }
    let warnings = r.functions.warnings();
    if !r.functions.differences.is_empty() || !warnings.is_empty() {
        out.push_str("\n## Function libraries\n\n");
        for warning in &warnings {
            let _ = writeln!(out, "> ⚠️ {}\n", cell(warning));
        }
        if !r.functions.differences.is_empty() {
            out.push_str("| library | kind | target masters |\n|---|---|---|\n");
            for d in &r.functions.differences {
                let targets: Vec<String> = d.targets.iter().map(|t| t.to_string()).collect();
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} |",
                    cell(&d.library).replace('`', "\\`"),
                    d.kind.as_str(),
                    cell(&targets.join(", "))
                );
            }
        }
    }
    if !r.unstable.is_empty() {
        out.push_str(
            "\n## Unstable keys\n\nChanged in every re-check round: being written, not judged.\n\n",
        );
        for u in r.unstable.iter().take(TOP) {
            let _ = writeln!(
                out,
                "- `{}` (db {}, slot {})",
                cell(&u.key.to_string()),
                u.db,
                u.slot
            );
        }
    }
    out
}

/// Text that is safe in a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
