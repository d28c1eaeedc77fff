//! `ferry sync` (full+incr) as a process: SIGKILLed at seeded random points under a workload
//! of unique RPUSHes and increments, then run again until caught up. Exactly-once ends exact;
//! the at-least-once control ends with duplicated list entries, which shows these tests can
//! see what exactly-once prevents. `ferry cleanup` then removes the checkpoints.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_fixtures::data::OpKind;
use ferry_fixtures::exact::{await_equal, fingerprints};
use ferry_fixtures::{Dataset, Deployment, LocalCluster, Workload};

fn url(deployment: &dyn Deployment) -> String {
    deployment.nodes()[0].addr().url()
}

fn spawn_sync(source: &str, target: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["sync", "--source", source, "--target", target])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ferry")
}

/// Runs `ferry sync` and SIGKILLs it at seeded points, `rounds` times, under unique writes;
/// then lets one run catch up and exit (`--until-caught-up`).
fn kill_repeatedly(
    source: &LocalCluster,
    target: &LocalCluster,
    extra: &[&str],
    rounds: usize,
    seed: u64,
) {
    let (s, t) = (url(source), url(target));
    let writes = Workload::new(seed)
        .key_space(100)
        .only(&[OpKind::RPush, OpKind::LPush, OpKind::Incr, OpKind::HIncrBy])
        .rate(3_000)
        .spawn(source)
        .unwrap();
    let mut state = seed | 1;
    for _ in 0..rounds {
        let mut child = spawn_sync(&s, &t, extra);
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(300 + state % 1200));
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "ferry exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let report = writes.stop().unwrap();
    assert!(report.count(OpKind::RPush) > 500, "{report:?}");
    let started = Instant::now();
    let out = spawn_sync(&s, &t, &[extra, &["--until-caught-up", "1"]].concat())
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn exactly_once_survives_ten_sigkills() {
    let source = LocalCluster::builder().masters(2).start().unwrap();
    let target = LocalCluster::builder().masters(3).start().unwrap();
    Dataset::new(41).scale(1_000).load(&source).unwrap();
    kill_repeatedly(&source, &target, &[], 10, 42);
    let diff = await_equal(&source, &target, Duration::from_secs(10)).unwrap();
    assert!(
        diff.is_empty(),
        "{} differences: {:?}",
        diff.len(),
        &diff[..diff.len().min(10)]
    );

    // After the cutover, `ferry cleanup` removes the checkpoints and nothing else.
    let keys = |d: &dyn Deployment| -> u64 {
        d.masters()
            .unwrap()
            .iter()
            .map(|m| m.query::<u64>(&redis::cmd("DBSIZE")).unwrap())
            .sum()
    };
    let before = keys(&target);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["cleanup", "--target", &url(&target)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("removed 3 ferry keys"),
        "one checkpoint per target master: {stdout}"
    );
    assert_eq!(keys(&target), before - 3);
    assert_eq!(keys(&target) as usize, fingerprints(&target).unwrap().len());
}

#[test]
fn at_least_once_control_duplicates_list_entries_after_sigkills() {
    let source = LocalCluster::builder().masters(2).start().unwrap();
    let target = LocalCluster::builder().masters(2).start().unwrap();
    kill_repeatedly(&source, &target, &["--apply", "at-least-once"], 6, 43);
    let diff = await_equal(&source, &target, Duration::from_secs(3)).unwrap();
    assert!(
        !diff.is_empty(),
        "at-least-once replays writes after a SIGKILL: the copy must differ"
    );
    // The lists the replay doubled are longer on the target.
    let (source_keys, target_keys) = (
        fingerprints(&source).unwrap(),
        fingerprints(&target).unwrap(),
    );
    let longer = source_keys
        .iter()
        .filter(|(_, f)| f.kind == "list")
        .filter(|(key, _)| {
            let len = |d: &dyn Deployment| -> u64 {
                let slot = ferry_engine::route::Slot::of_key(key);
                let owner = d
                    .topology()
                    .unwrap()
                    .shard_for_slot(slot)
                    .unwrap()
                    .master
                    .clone();
                d.node(&owner)
                    .unwrap()
                    .query(redis::cmd("LLEN").arg(key.as_slice()))
                    .unwrap()
            };
            target_keys.contains_key(*key) && len(&target) > len(&source)
        })
        .count();
    assert!(longer > 0, "no list got longer: {diff:?}");
}
