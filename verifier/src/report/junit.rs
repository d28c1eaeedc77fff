//! JUnit XML for CI: one test case per kind of key difference and one for function libraries
//! (failing when there is any), and one for unstable keys (never failing).

use std::fmt::Write;

use super::Report;
use crate::diff::DiffKind;

/// Keys named in one failure message.
const NAMED: usize = 20;

pub(super) fn render(r: &Report) -> String {
    let mut out = String::new();
    let failures = DiffKind::ALL.iter().filter(|k| r.count(**k) > 0).count()
        + usize::from(!r.functions.differences.is_empty());
    // One case per kind of key difference, one for function libraries, one for unstable
    // keys.
    let tests = DiffKind::ALL.len() + 2;
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<testsuites name="ferry verify" tests="{tests}" failures="{failures}" time="{:.3}">"#,
        r.elapsed_ms as f64 / 1_000.0
    );
    let _ = writeln!(
        out,
        r#"  <testsuite name="ferry verify" tests="{tests}" failures="{failures}" errors="0" time="{:.3}">"#,
        r.elapsed_ms as f64 / 1_000.0
    );
    out.push_str("    <properties>\n");
    for (name, value) in [
        ("source", r.source.url.clone()),
        ("target", r.target.url.clone()),
        ("keys_compared", r.counts.keys_compared.to_string()),
        (
            "clock_skew_ms",
            format!("{:.1}", r.clock.target_minus_source_ms),
        ),
    ] {
        let _ = writeln!(
            out,
            r#"      <property name="{name}" value="{}"/>"#,
            escape(&value)
        );
    }
    out.push_str("    </properties>\n");
    for kind in DiffKind::ALL {
        let name = match kind {
            DiffKind::Missing => "no key is missing on the target",
            DiffKind::Extra => "no key exists only on the target",
            DiffKind::Type => "every key has the same type",
            DiffKind::Ttl => "every key has the same TTL",
            DiffKind::Value => "every key has the same value",
        };
        let count = r.count(kind);
        let _ = write!(
            out,
            r#"    <testcase classname="ferry.verify" name="{name}""#
        );
        if count == 0 {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        let mut body = String::new();
        for d in r.differences.iter().filter(|d| d.kind == kind).take(NAMED) {
            let _ = writeln!(
                body,
                "{} {} (db {}, slot {}): {}{}",
                d.key_type,
                d.key,
                d.db,
                d.slot,
                d.summary(),
                d.cause
                    .as_ref()
                    .map(|x| format!(" [likely cause: {x}]"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            r#"      <failure type="{kind}" message="{count} {kind} difference{}">{}</failure>"#,
            if count == 1 { "" } else { "s" },
            escape(&body)
        );
        out.push_str("    </testcase>\n");
    }
    let _ = write!(
        out,
        r#"    <testcase classname="ferry.verify" name="every target master holds the source's function libraries""#
    );
    let libraries = &r.functions.differences;
    let warnings = r.functions.warnings();
    if libraries.is_empty() && warnings.is_empty() {
        out.push_str("/>\n");
    } else {
        out.push_str(">\n");
        if !libraries.is_empty() {
            let body: String = libraries
                .iter()
                .map(|d| format!("{}\n", d.summary()))
                .collect();
            let _ = writeln!(
                out,
                r#"      <failure type="functions" message="{} function library difference{}">{}</failure>"#,
                libraries.len(),
                if libraries.len() == 1 { "" } else { "s" },
                escape(&body)
            );
        }
        if !warnings.is_empty() {
            let _ = writeln!(
                out,
                "      <system-out>{}</system-out>",
                escape(&warnings.join("\n"))
            );
        }
        out.push_str("    </testcase>\n");
    }
    let _ = write!(
        out,
        r#"    <testcase classname="ferry.verify" name="unstable keys are reported, not judged""#
    );
    if r.unstable.is_empty() {
        out.push_str("/>\n");
    } else {
        let keys: Vec<String> = r
            .unstable
            .iter()
            .take(NAMED)
            .map(|u| u.key.to_string())
            .collect();
        let _ = writeln!(
            out,
            ">\n      <system-out>{} unstable keys: {}</system-out>\n    </testcase>",
            r.unstable.len(),
            escape(&keys.join(", "))
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Text as XML character data or attribute value.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Characters XML 1.0 cannot hold at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}
