//! `ferry demo`, the README's main command, end to end on a small dataset with live writes.

use std::process::Command;

#[test]
fn the_demo_syncs_and_verifies_a_consistent_copy() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "demo",
            "--keys",
            "3000",
            "--seed",
            "5",
            "--live-seconds",
            "2",
        ])
        .output()
        .expect("running ferry demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("snapshots applied: "), "{stdout}");
    assert!(stdout.contains("caught up on every shard"), "{stdout}");
    // The workload's writes went through the stream, and the copy is exact.
    let applied: u64 = stdout
        .lines()
        .filter_map(|l| l.split("stream writes applied:").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0);
    assert!(applied > 1_000, "{stdout}");
    assert!(stdout.contains("ferry verify: CONSISTENT"), "{stdout}");
    assert!(stdout.contains("no difference"), "{stdout}");
    assert!(stdout.contains("stopping the clusters"), "{stdout}");
}
