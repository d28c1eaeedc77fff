//! The regression suite: a source and a target Redis Cluster in containers, a dataset, a live
//! workload, `ferry sync` while a source master is killed and its replica promoted, then
//! `ferry verify` as the gate, its JUnit report kept for the CI system.

use std::time::Duration;

use ferry_ci_regression::{ferry, skip_without_containers, spawn_ferry};
use ferry_fixtures::{ContainerCluster, Dataset, Deployment, Workload};

#[test]
fn a_live_migration_through_a_source_failover_verifies_exact() {
    if skip_without_containers("a_live_migration_through_a_source_failover_verifies_exact") {
        return;
    }
    let source = ContainerCluster::builder()
        .masters(3)
        .replicas(1)
        .node_timeout(Duration::from_millis(2000))
        .start()
        .expect("source cluster");
    let target = ContainerCluster::builder()
        .masters(3)
        .start()
        .expect("target cluster");
    let source_url = source.nodes()[0].addr().url();
    let target_url = target.nodes()[0].addr().url();

    Dataset::new(7)
        .scale(20_000)
        .load(&source)
        .expect("loading the dataset");
    let writes = Workload::new(7)
        .rate(1_000)
        .duration(Duration::from_secs(10))
        .spawn(&source)
        .expect("starting the workload");

    let mut sync = spawn_ferry(&["sync", "--source", &source_url, "--target", &target_url]);
    // The fault: a source master dies mid-sync and its replica takes over.
    std::thread::sleep(Duration::from_secs(3));
    let master = source.topology().expect("source topology").shards[0]
        .master
        .clone();
    source
        .kill_master_and_await_promotion(&master)
        .expect("failover of a source master");
    // The lost machine comes back and rejoins as a replica.
    source
        .node(&master)
        .expect("the killed node")
        .restart()
        .expect("restarting the killed node");
    let sent = writes.join().expect("workload");
    assert!(sent.ops > 0, "the workload wrote nothing");

    // The gate: verify while the sync still follows the source (differing keys are
    // re-checked over rounds, so the last milliseconds of lag do not count).
    let report = std::env::temp_dir().join(format!("ferry-verify-{}.xml", std::process::id()));
    let verify = ferry(&[
        "verify",
        "--source",
        &source_url,
        "--target",
        &target_url,
        "--format",
        "junit",
        "--output",
        report.to_str().expect("utf-8 path"),
    ]);
    let _ = sync.kill();
    let _ = sync.wait();
    let junit = std::fs::read_to_string(&report).unwrap_or_default();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "ferry verify did not find the copy exact:\n{}{}\n{junit}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(junit.contains("<testsuite"), "not a JUnit report: {junit}");
    if let Some(dir) = std::env::var_os("FERRY_REPORT_DIR") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&report, std::path::Path::new(&dir).join("ferry-verify.xml"));
    }
    let _ = std::fs::remove_file(&report);
}
