//! Every report format from one run with a difference of each kind, compared with snapshots
//! (`insta`) after the run-dependent parts (addresses, clocks, durations, versions) are set
//! to fixed values; and the HTML page opened in a real headless browser.

use std::process::Command;
use std::sync::OnceLock;

use ferry_fixtures::{LocalServer, Node as _};
use ferry_verifier::{Format, Report};

use crate::copy::{copy, Nodes};
use crate::shared::{config, run};

/// Far expiry times, so TTLs are the same on every run (2100-01-01 and a minute later).
const AT: i64 = 4_102_444_800_000;

/// The report of a fixed scenario on two fresh standalone servers (keys and function
/// libraries), normalised.
fn report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let source = LocalServer::builder().start().unwrap();
        let target = LocalServer::builder().start().unwrap();
        let mut src = Nodes::new(&source);
        let cmds: Vec<redis::Cmd> = vec![
            redis::cmd("SET")
                .arg("rep:string")
                .arg("hello world")
                .clone(),
            redis::cmd("SET").arg("rep:missing").arg("gone").clone(),
            redis::cmd("SET")
                .arg(b"rep:bin\x00\xff")
                .arg("binary name")
                .clone(),
            redis::cmd("SET").arg("rep:type").arg("a string").clone(),
            redis::cmd("SET")
                .arg("rep:ttl")
                .arg("v")
                .arg("PXAT")
                .arg(AT)
                .clone(),
            redis::cmd("RPUSH")
                .arg("rep:list")
                .arg("a")
                .arg("b")
                .arg("c")
                .clone(),
            redis::cmd("ZADD")
                .arg("rep:zset")
                .arg("inf")
                .arg("top")
                .arg("1.5")
                .arg("mid")
                .clone(),
            redis::cmd("HSET")
                .arg("rep:hash")
                .arg("f1")
                .arg("one")
                .arg("f2")
                .arg("two")
                .clone(),
            redis::cmd("SADD").arg("rep:set").arg("x").arg("y").clone(),
            redis::cmd("XADD")
                .arg("rep:stream")
                .arg("1-1")
                .arg("n")
                .arg("1")
                .clone(),
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg("rep:stream")
                .arg("g")
                .arg("0")
                .clone(),
            redis::cmd("SET").arg("rep:equal").arg("same").clone(),
        ];
        for cmd in &cmds {
            let _: redis::Value = src.run(b"x", cmd);
        }
        copy(&source, &target, "rep:*");
        let library = |name: &str, value: &str| {
            format!("#!lua name={name}\nredis.register_function('{name}', function() return '{value}' end)\n")
        };
        let load = |server: &LocalServer, code: String| {
            let _: String = redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg(code)
                .query(&mut server.master().connect().unwrap())
                .unwrap();
        };
        // One library alike, one missing, one with other code, one extra on the target.
        for (name, value) in [("rep_same", "1"), ("rep_missing", "2"), ("rep_changed", "3")] {
            load(&source, library(name, value));
        }
        for (name, value) in [("rep_same", "1"), ("rep_changed", "three"), ("rep_extra", "4")] {
            load(&target, library(name, value));
        }
        let mut tgt = Nodes::new(&target);
        let changes: Vec<redis::Cmd> = vec![
            redis::cmd("SETRANGE")
                .arg("rep:string")
                .arg(6)
                .arg("there")
                .clone(),
            redis::cmd("DEL").arg("rep:missing").clone(),
            redis::cmd("DEL").arg(b"rep:bin\x00\xff").clone(),
            redis::cmd("DEL").arg("rep:type").clone(),
            redis::cmd("SADD").arg("rep:type").arg("now a set").clone(),
            redis::cmd("PEXPIREAT")
                .arg("rep:ttl")
                .arg(AT + 60_000)
                .clone(),
            redis::cmd("RPUSH").arg("rep:list").arg("c").clone(),
            redis::cmd("ZADD")
                .arg("rep:zset")
                .arg("-inf")
                .arg("top")
                .clone(),
            redis::cmd("HSET")
                .arg("rep:hash")
                .arg("f2")
                .arg("TWO")
                .clone(),
            redis::cmd("SREM").arg("rep:set").arg("y").clone(),
            redis::cmd("XGROUP")
                .arg("SETID")
                .arg("rep:stream")
                .arg("g")
                .arg("$")
                .clone(),
            redis::cmd("SET").arg("rep:extra").arg("only here").clone(),
        ];
        for cmd in &changes {
            let _: redis::Value = tgt.run(b"x", cmd);
        }
        let mut report = run(&config(&source, &target, "rep:*"));
        normalise(&mut report);
        report
    })
}

/// Fixes what differs from run to run.
fn normalise(report: &mut Report) {
    report.started_at_ms = 0;
    report.elapsed_ms = 1_234;
    report.clock.target_minus_source_ms = 0.0;
    report.clock.uncertainty_ms = 0.0;
    for (side, name) in [
        (&mut report.source, "source"),
        (&mut report.target, "target"),
    ] {
        side.url = format!("redis://{name}:6379");
        for (i, m) in side.masters.iter_mut().enumerate() {
            m.addr = ferry_verifier::NodeAddr {
                host: name.to_string(),
                port: 6379 + i as u16,
            };
            m.version = "7.x".into();
            m.valkey_version = None;
            m.clock_offset_ms = 0.0;
            m.clock_uncertainty_ms = 0.0;
            m.expired_keys = 0;
        }
    }
    for d in &mut report.functions.differences {
        for t in &mut d.targets {
            *t = ferry_verifier::NodeAddr {
                host: "target".into(),
                port: 6379,
            };
        }
    }
}

#[test]
fn the_text_report_matches_its_snapshot() {
    insta::assert_snapshot!("text", report().render(Format::Text));
}

#[test]
fn the_json_report_matches_its_snapshot() {
    let json = report().render(Format::Json);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["schema"], 1);
    assert_eq!(parsed["verdict"], "inconsistent");
    insta::assert_snapshot!("json", json);
}

#[test]
fn the_junit_report_matches_its_snapshot() {
    insta::assert_snapshot!("junit", report().render(Format::Junit));
}

#[test]
fn the_markdown_report_matches_its_snapshot() {
    insta::assert_snapshot!("markdown", report().render(Format::Markdown));
}

#[test]
fn the_html_report_matches_its_snapshot() {
    insta::assert_snapshot!("html", report().render(Format::Html));
}

/// Headless chromium renders the page: the DOM it builds holds the summary numbers and the
/// breakdown, and a screenshot is written.
#[test]
fn the_html_report_renders_in_a_headless_browser() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        eprintln!(
            "\n!!! SKIPPED the headless-browser check of the HTML report: chromium is not \
             installed (ci/setup.sh installs it with apt-get install chromium) !!!\n"
        );
        return;
    };
    let report = report();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let page = dir.join("report.html");
    std::fs::write(&page, report.render(Format::Html)).unwrap();
    let url = format!("file://{}", page.display());
    let browse = |extra: &[&str]| {
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                &format!("--user-data-dir={}", dir.join("profile").display()),
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("running chromium");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = browse(&["--dump-dom"]);
    let c = &report.counts;
    for (id, n) in [
        ("keys-compared", c.keys_compared),
        ("differing-keys", c.differing_keys),
        ("differences", c.differences),
        ("unstable-keys", c.unstable_keys),
    ] {
        let element = format!("id=\"{id}\">{n}<");
        assert!(
            dom.contains(&element),
            "{element} not in the rendered DOM:\n{dom}"
        );
    }
    assert!(dom.contains("id=\"breakdown\""));
    assert!(
        dom.contains("Inconsistent: 11 differences, 3 in function libraries"),
        "{dom}"
    );
    assert!(dom.contains("id=\"library-differences\">3<"), "{dom}");
    assert!(dom.contains("rep:bin\\x00\\xff"));
    let shot = dir.join("report.png");
    browse(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,2000",
    ]);
    let png = std::fs::read(&shot).expect("a screenshot");
    if let Ok(keep) = std::env::var("FERRY_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a screenshot of {} bytes is blank",
        png.len()
    );
}
