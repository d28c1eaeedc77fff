//! `ferry chaos` as CI runs it: the whole catalogue at small scale must reach every expected
//! verdict, and a deliberately weakened engine (`--apply at-least-once`) must turn a scenario
//! red, which shows the catalogue can fail.

use std::process::Command;

fn ferry(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("running ferry");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_whole_catalogue_reaches_its_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("chaos.xml");
    let (code, text) = ferry(&[
        "chaos",
        "run",
        "--all",
        "--report",
        report.to_str().unwrap(),
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    let junit = std::fs::read_to_string(&report).unwrap_or_default();
    assert_eq!(
        code,
        Some(0),
        "{text}\n{junit}\n{}",
        engine_errors(dir.path())
    );
    let listed = ferry(&["chaos", "list"]).1.lines().count();
    assert!(listed >= 15, "{listed} scenarios");
    assert!(
        junit.contains(&format!("tests=\"{listed}\" failures=\"0\"")),
        "{junit}"
    );
}

#[test]
fn a_weakened_engine_turns_the_sigkill_scenario_red() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = ferry(&[
        "chaos",
        "run",
        "sigkill-engine-repeatedly",
        "--sync-arg=--apply",
        "--sync-arg=at-least-once",
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL sigkill-engine-repeatedly"), "{text}");
    assert!(
        text.contains("value"),
        "the replayed pushes show as value differences: {text}"
    );
}

#[test]
fn random_fault_schedules_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = ferry(&[
        "chaos",
        "fuzz",
        "--cases",
        "2",
        "--seed",
        "3",
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("2 random schedules, every one exact"),
        "{text}"
    );
}

#[test]
fn scenarios_run_on_containers_too() {
    if let Some(why) = ferry_fixtures::container::unavailable(None) {
        eprintln!("SKIPPED: scenarios_run_on_containers_too: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("chaos.json");
    // A failover, a partition behind a proxy and engine SIGKILLs, on containers.
    let (code, text) = ferry(&[
        "chaos",
        "run",
        "kill-source-master-while-streaming",
        "partition-from-a-source-node",
        "sigkill-engine-repeatedly",
        "--backend",
        "docker",
        "--report",
        report.to_str().unwrap(),
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let scenarios = json["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 3);
    assert!(scenarios.iter().all(|s| s["passed"] == true), "{json}");
}

/// The error lines of every engine log the runner kept, for a failure's message: the log
/// directory is gone once the test ends.
fn engine_errors(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains("ERROR") || l.starts_with("error:"))
            {
                out.push_str(&format!("{}: {line}\n", path.display()));
            }
        }
    }
    out
}
