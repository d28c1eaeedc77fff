//! The HTML report: one self-contained page (inline CSS, no script, nothing fetched) with
//! the summary, the breakdown by type and kind, the top differences with their diffs, and the
//! function libraries that differ.

use std::fmt::Write;

use similar::{ChangeTag, TextDiff};

use super::junit::escape;
use super::text::lines;
use super::{duration, Report, Verdict};
use crate::diff::{DiffKind, Difference};

/// Differences shown.
const TOP: usize = 100;

const STYLE: &str = r#"
:root { --ok: #1a7f37; --bad: #cf222e; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; }
header { padding: 24px 32px; color: #fff; }
header.consistent { background: var(--ok); }
header.inconsistent { background: var(--bad); }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; opacity: .9; }
main { padding: 16px 32px 48px; max-width: 1200px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px; min-width: 150px; background: var(--bg); }
.card .n { font-size: 22px; font-weight: 600; }
.card .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.zero { color: #8c959f; }
td.hot { background: #ffebe9; font-weight: 600; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre { background: var(--bg); border: 1px solid var(--line); padding: 8px; overflow-x: auto; margin: 6px 0 0; }
.del { color: var(--bad); } .ins { color: var(--ok); } .ctx { color: var(--muted); }
.kind { font-weight: 600; text-transform: uppercase; font-size: 11px; }
.cause { color: #9a6700; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dt { color: var(--muted); }
"#;

pub(super) fn render(r: &Report) -> String {
    let c = &r.counts;
    let (class, verdict) = match r.verdict {
        Verdict::Consistent => ("consistent", "Consistent".to_string()),
        Verdict::Inconsistent => (
            "inconsistent",
            format!(
                "Inconsistent: {} differences{}",
                c.differences,
                match r.functions.differences.len() {
                    0 => String::new(),
                    n => format!(", {n} in function libraries"),
                }
            ),
        ),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>ferry verify: {verdict}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header class=\"{class}\"><h1 id=\"verdict\">{verdict}</h1>\
         <p><code>{}</code> → <code>{}</code> · {} mode · took {}</p></header>\n<main>\n",
        escape(&r.source.url),
        escape(&r.target.url),
        serde_json::to_value(r.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        duration(r.elapsed_ms),
    );
    out.push_str("<section class=\"cards\">\n");
    for (id, label, n) in [
        ("keys-compared", "keys compared", c.keys_compared),
        ("differing-keys", "differing keys", c.differing_keys),
        ("differences", "differences", c.differences),
        (
            "library-differences",
            "function library differences",
            r.functions.differences.len() as u64,
        ),
        ("unstable-keys", "unstable keys", c.unstable_keys),
        ("resolved", "resolved on re-check", c.resolved_on_recheck),
        ("source-keys", "source keys (census)", r.census.source_keys),
        ("target-keys", "target keys (census)", r.census.target_keys),
    ] {
        let _ = writeln!(
            out,
            "<div class=\"card\"><div class=\"n\" id=\"{id}\">{n}</div><div class=\"l\">{label}</div></div>"
        );
    }
    out.push_str("</section>\n");

    out.push_str("<h2>Run</h2>\n<dl>\n");
    let dbs: Vec<String> = r.scope.dbs.iter().map(u32::to_string).collect();
    let mut facts = vec![
        ("source", side(&r.source)),
        ("target", side(&r.target)),
        ("dbs", dbs.join(", ")),
        ("TTL tolerance", format!("{} ms", r.scope.ttl_tolerance_ms)),
        (
            "clock skew",
            format!(
                "target − source {:+.1} ms (± {:.1} ms), reported apart from TTLs",
                r.clock.target_minus_source_ms, r.clock.uncertainty_ms
            ),
        ),
        ("function libraries", r.functions.summary()),
        (
            "keys scanned",
            format!(
                "{} on the source, {} on the target{}; {} out of scope; {} of ferry's own skipped",
                c.source_keys_scanned,
                c.target_keys_scanned,
                super::text::counted(c),
                c.out_of_scope,
                c.reserved_ignored
            ),
        ),
        (
            "re-checks",
            r.rounds
                .iter()
                .map(|x| {
                    format!(
                        "round {}: {} rechecked, {} resolved, {} changed, {} differing",
                        x.round, x.rechecked, x.resolved, x.changed, x.differing
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ];
    if let Some(slots) = &r.scope.slots {
        facts.push(("slots", slots.clone()));
    }
    if let Some(s) = &r.sample {
        facts.push((
            "sample",
            format!(
                "rate {}: {} of {} sampled keys differ, {:.4}% (95%: {:.4}%–{:.4}%), about {} keys in all",
                s.rate,
                s.differing,
                s.keys_sampled,
                s.share * 100.0,
                s.share_low * 100.0,
                s.share_high * 100.0,
                s.estimated_differing_keys
            ),
        ));
    }
    if r.census.method == "slots" {
        facts.push((
            "census",
            format!(
                "{} slots with different key counts{}",
                r.census.slots_differing,
                r.census
                    .top_slots
                    .iter()
                    .take(5)
                    .map(|s| format!("; slot {}: {} → {}", s.slot, s.source, s.target))
                    .collect::<String>()
            ),
        ));
    }
    for (name, value) in facts {
        let _ = writeln!(out, "<dt>{name}</dt><dd>{}</dd>", escape(&value));
    }
    out.push_str("</dl>\n");

    out.push_str("<h2>Differences by type and kind</h2>\n");
    if r.breakdown.is_empty() {
        out.push_str("<p id=\"breakdown\">No difference.</p>\n");
    } else {
        out.push_str("<table id=\"breakdown\">\n<tr><th>type</th>");
        for kind in DiffKind::ALL {
            let _ = write!(out, "<th>{kind}</th>");
        }
        out.push_str("<th>total</th></tr>\n");
        for (ty, kinds) in r.table() {
            let _ = write!(out, "<tr><th>{ty}</th>");
            for kind in DiffKind::ALL {
                let n = kinds.get(&kind).copied().unwrap_or(0);
                let class = if n == 0 { "n zero" } else { "n hot" };
                let _ = write!(out, "<td class=\"{class}\">{n}</td>");
            }
            let _ = writeln!(
                out,
                "<td class=\"n\">{}</td></tr>",
                kinds.values().sum::<u64>()
            );
        }
        out.push_str("</table>\n");
    }

    if !r.differences.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Top differences</h2>\n<table id=\"differences-table\">\n\
             <tr><th>kind</th><th>type</th><th>key</th><th>db</th><th>slot</th><th>what differs</th></tr>"
        );
        for d in r.top(TOP) {
            difference(&mut out, d);
        }
        out.push_str("</table>\n");
        if r.differences.len() > TOP {
            let _ = writeln!(
                out,
                "<p>… and {} more: the JSON report lists them all.</p>",
                r.differences.len() - TOP
            );
        }
    }
    let warnings = r.functions.warnings();
    if !r.functions.differences.is_empty() || !warnings.is_empty() {
        out.push_str("<h2>Function libraries</h2>\n");
        for warning in &warnings {
            let _ = writeln!(out, "<p class=\"cause\">{}</p>", escape(warning));
        }
        if !r.functions.differences.is_empty() {
            out.push_str(
                "<table id=\"library-differences-table\">\n<tr><th>kind</th><th>library</th><th>what differs</th></tr>\n",
            );
            for d in &r.functions.differences {
                library(&mut out, d);
            }
            out.push_str("</table>\n");
        }
    }
    if !r.unstable.is_empty() {
        out.push_str(
            "<h2>Unstable keys</h2>\n<p>Changed in every re-check round: being written, not judged.</p>\n<ul id=\"unstable\">\n",
        );
        for u in r.unstable.iter().take(TOP) {
            let _ = writeln!(
                out,
                "<li><code>{}</code> (db {}, slot {})</li>",
                escape(&u.key.to_string()),
                u.db,
                u.slot
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn side(s: &crate::side::SideSummary) -> String {
    format!(
        "{} ({}, {} master(s), {})",
        s.url,
        if s.cluster { "cluster" } else { "standalone" },
        s.masters.len(),
        s.versions()
    )
}

fn library(out: &mut String, d: &crate::functions::LibraryDifference) {
    let _ = write!(
        out,
        "<tr><td class=\"kind\">{}</td><td><code>{}</code></td><td>{}",
        d.kind.as_str(),
        escape(&d.library),
        escape(&d.summary())
    );
    if let (Some(s), Some(t)) = (&d.source_code, &d.target_code) {
        diff_lines(out, s, t);
    }
    out.push_str("</td></tr>\n");
}

/// A line diff of `s` (source) and `t` (target) as a `<pre>` block.
fn diff_lines(out: &mut String, s: &str, t: &str) {
    out.push_str("<pre>");
    for change in TextDiff::from_lines(s, t).iter_all_changes() {
        let (class, sign) = match change.tag() {
            ChangeTag::Delete => ("del", '-'),
            ChangeTag::Insert => ("ins", '+'),
            ChangeTag::Equal => ("ctx", ' '),
        };
        let _ = writeln!(
            out,
            "<span class=\"{class}\">{sign} {}</span>",
            escape(change.value().trim_end_matches('\n'))
        );
    }
    out.push_str("</pre>");
}

fn difference(out: &mut String, d: &Difference) {
    let summary = d.summary();
    let _ = write!(
        out,
        "<tr><td class=\"kind\">{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}",
        d.kind,
        d.key_type,
        escape(&d.key.to_string()),
        d.db,
        d.slot,
        escape(&summary)
    );
    if let Some(cause) = &d.cause {
        let _ = write!(
            out,
            "<div class=\"cause\">likely cause: {}</div>",
            escape(&cause.to_string())
        );
    }
    if let Some(detail) = &d.detail {
        let (s, t) = detail.sides();
        diff_lines(out, &lines(&s), &lines(&t));
    }
    out.push_str("</td></tr>\n");
}
