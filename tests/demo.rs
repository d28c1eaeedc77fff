//! `ferry demo`, the README's main command, end to end on a small dataset.

use std::process::Command;

#[test]
fn the_demo_syncs_and_verifies_a_consistent_copy() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["demo", "--keys", "3000", "--seed", "5"])
        .output()
        .expect("running ferry demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("full sync: 3000 keys"), "{stdout}");
    assert!(
        stdout.contains("ferry verify: CONSISTENT, 3000 keys compared, no difference"),
        "{stdout}"
    );
    assert!(stdout.contains("stopping the clusters"), "{stdout}");
}
