//! Chaos results as Markdown (for people and CHAOS.md), JSON, or JUnit XML (for CI).

use std::fmt::Write as _;

use crate::runner::ScenarioReport;

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
    Junit,
}

impl Format {
    /// From a name, or from a file's extension (`.md`, `.json`, `.xml`).
    pub fn parse(name: &str) -> Option<Self> {
        let ext = name.rsplit('.').next().unwrap_or(name);
        match ext {
            "md" | "markdown" => Some(Format::Markdown),
            "json" => Some(Format::Json),
            "xml" | "junit" => Some(Format::Junit),
            _ => None,
        }
    }
}

pub fn render(reports: &[ScenarioReport], format: Format) -> String {
    match format {
        Format::Markdown => markdown(reports),
        Format::Json => {
            let passed = reports.iter().all(|r| r.passed);
            let json = serde_json::json!({ "passed": passed, "scenarios": reports });
            serde_json::to_string_pretty(&json).expect("reports serialize") + "\n"
        }
        Format::Junit => junit(reports),
    }
}

fn markdown(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    let passed = reports.iter().filter(|r| r.passed).count();
    let _ = writeln!(out, "{passed} of {} scenarios passed.\n", reports.len());
    let _ = writeln!(
        out,
        "| scenario | result | expected | verdict | full resyncs | resumes | max lag | duration |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} ms | {:.1} s |",
            r.name,
            if r.passed { "pass" } else { "FAIL" },
            r.expected,
            r.verdict.replace('|', "/"),
            r.full_resyncs,
            r.resumes,
            r.max_lag_ms,
            r.duration_s
        );
    }
    for r in reports {
        let _ = writeln!(out, "\n### {}\n\n{}\n", r.name, r.about);
        for e in &r.events {
            let _ = writeln!(out, "- {:>6.2} s {}", e.at_s, e.what);
        }
        if let Some(error) = &r.error {
            let _ = writeln!(out, "\n**error:** {}", error.replace('\n', " / "));
        }
    }
    out
}

fn junit(reports: &[ScenarioReport]) -> String {
    let failures = reports.iter().filter(|r| !r.passed).count();
    let total: f64 = reports.iter().map(|r| r.duration_s).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"ferry chaos\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">",
        reports.len()
    );
    for r in reports {
        let _ = write!(
            out,
            "  <testcase classname=\"chaos\" name=\"{}\" time=\"{:.3}\"",
            xml(&r.name),
            r.duration_s
        );
        if r.passed {
            let _ = writeln!(out, "/>");
        } else {
            let message = format!(
                "expected {}, got {}{}",
                r.expected,
                r.verdict,
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                out,
                ">\n    <failure message=\"{}\"/>\n  </testcase>",
                xml(&message)
            );
        }
    }
    out.push_str("</testsuite>\n");
    out
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
