//! Helpers for a migration regression suite in CI: find the `ferry` binary, run its
//! commands, and skip loudly when no container engine is there. The suite itself is
//! `tests/regression.rs`; copy this crate into your repository and point `ferry-fixtures` at
//! ferry's repository (see the README section "Use ferry in your CI").

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// Environment variable naming the `ferry` binary to run.
pub const FERRY_BIN_ENV: &str = "FERRY_BIN";

/// The `ferry` binary: `$FERRY_BIN`; else the one cargo built beside this test
/// (`target/<profile>/ferry`, when the suite lives in ferry's workspace); else `ferry` on
/// `PATH` (`cargo install --path .` from ferry's repository).
pub fn ferry_bin() -> PathBuf {
    if let Some(path) = std::env::var_os(FERRY_BIN_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let beside = std::env::current_exe().ok().and_then(|exe| {
        // target/<profile>/deps/<test> -> target/<profile>/ferry
        let profile_dir = exe.parent()?.parent()?;
        let ferry = profile_dir.join("ferry");
        ferry.is_file().then_some(ferry)
    });
    beside.unwrap_or_else(|| PathBuf::from("ferry"))
}

/// Runs `ferry ARGS` to completion.
pub fn ferry(args: &[&str]) -> Output {
    let bin = ferry_bin();
    Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): set {FERRY_BIN_ENV}", bin.display()))
}

/// Starts `ferry ARGS` in the background (its output discarded); kill it when done.
pub fn spawn_ferry(args: &[&str]) -> Child {
    let bin = ferry_bin();
    Command::new(&bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): set {FERRY_BIN_ENV}", bin.display()))
}

/// `true` (after printing a loud `SKIPPED` line) when containers of the configured image
/// cannot run here: no Docker engine answers, or the image is missing.
pub fn skip_without_containers(test: &str) -> bool {
    match ferry_fixtures::container::unavailable(None) {
        Some(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            true
        }
        None => false,
    }
}
