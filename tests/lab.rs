//! `ferry --version` and `ferry lab up|status|down` as a person runs them.

use std::path::Path;
use std::process::{Command, Output};

fn ferry(lab_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_LAB_DIR", lab_dir)
        .output()
        .expect("running ferry")
}

/// Runs `ferry lab down` when dropped, so a failing test leaves no server behind.
struct LabGuard<'a>(&'a Path);

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        let _ = ferry(self.0, &["lab", "down"]);
    }
}

#[test]
fn version_names_the_package_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(dir.path(), &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ferry {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn lab_up_status_down_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let _guard = LabGuard(&lab);

    let up = ferry(
        &lab,
        &[
            "lab",
            "up",
            "--source-masters",
            "2",
            "--source-replicas",
            "1",
            "--target-masters",
            "0",
        ],
    );
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(stdout.contains("source: redis://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("target: redis://127.0.0.1:"), "{stdout}");

    let status = ferry(&lab, &["lab", "status", "--json"]);
    assert!(status.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        rows.len(),
        5,
        "2 masters + 2 replicas + 1 standalone target"
    );
    assert!(rows.iter().all(|r| r["running"] == true));
    let roles: Vec<&str> = rows.iter().filter_map(|r| r["role"].as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "master").count(),
        3,
        "{roles:?}"
    );
    let pids: Vec<u32> = rows
        .iter()
        .map(|r| r["pid"].as_u64().unwrap() as u32)
        .collect();

    // A second lab in the same place is refused, and the first one is left alone.
    let again = ferry(&lab, &["lab", "up"]);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.starts_with("error: a lab is already running"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    assert!(pids.iter().all(|&p| ferry_fixtures::pid_alive(p)));

    let down = ferry(&lab, &["lab", "down"]);
    assert!(down.status.success());
    assert!(String::from_utf8_lossy(&down.stdout).contains("stopped 5 servers"));
    for pid in pids {
        // Killed servers are reparented, so give their new parent a moment to reap them.
        ferry_fixtures::conn::poll(
            "lab server to go",
            std::time::Duration::from_secs(5),
            || (ferry_fixtures::process_state(pid).is_none_or(|state| state == 'Z')).then_some(()),
        )
        .unwrap();
    }
    assert!(!lab.exists());

    let gone = ferry(&lab, &["lab", "status"]);
    assert_eq!(gone.status.code(), Some(2));
}

#[test]
fn a_bad_server_path_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(
        dir.path(),
        &["lab", "up", "--server", "/nonexistent/redis-server"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot run /nonexistent/redis-server"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
