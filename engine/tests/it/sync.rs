//! Full sync against real deployments: every key of the fixtures dataset arrives with the
//! same type, value (`DEBUG DIGEST-VALUE`) and expiry, across shard counts and versions.

use std::collections::HashMap;

use ferry_engine::endpoint::Endpoint;
use ferry_engine::sync::{FullSync, FullSyncOptions, Phase};
use ferry_fixtures::data::Kind;
use ferry_fixtures::{Dataset, Deployment, LocalCluster, LocalServer, ServerBinary};

fn endpoint(deployment: &dyn Deployment) -> Endpoint {
    Endpoint::parse(&deployment.nodes()[0].addr().url()).unwrap()
}

/// Type, digest of the value and absolute expiry (ms, -1 without) of `key` on `deployment`.
fn fingerprint(deployment: &dyn Deployment, key: &[u8]) -> (String, String, i64) {
    let topology = deployment.topology().unwrap();
    let owner = deployment
        .node(
            &topology
                .shard_for_slot(ferry_engine::route::Slot::of_key(key))
                .unwrap()
                .master,
        )
        .unwrap();
    let mut conn = owner.connect().unwrap();
    let kind: String = redis::cmd("TYPE").arg(key).query(&mut conn).unwrap();
    let digest: Vec<String> = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(&mut conn)
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
    // PTTL is relative: round to seconds so both reads agree.
    let expiry = if pttl < 0 { pttl } else { (pttl + 500) / 1000 };
    (kind, digest.concat(), expiry)
}

/// Every key of `dataset` (except `skip` kinds) is on the target as on the source, and the
/// target holds nothing else.
fn assert_same(source: &dyn Deployment, target: &dyn Deployment, dataset: &Dataset, skip: &[Kind]) {
    let mut checked = 0;
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    for spec in dataset.keys().filter(|s| !skip.contains(&s.kind)) {
        let expected = fingerprint(source, &spec.key);
        if expected.0 == "none" {
            continue;
        }
        let got = fingerprint(target, &spec.key);
        assert_eq!(got.0, expected.0, "type of {}", spec.name());
        assert_eq!(
            got.1,
            expected.1,
            "value of {} ({:?})",
            spec.name(),
            spec.kind
        );
        assert!(
            (got.2 - expected.2).abs() <= 1,
            "expiry of {}: {} vs {}",
            spec.name(),
            got.2,
            expected.2
        );
        *by_kind.entry(expected.0).or_default() += 1;
        checked += 1;
    }
    let total = |d: &dyn Deployment| -> u64 {
        d.masters()
            .unwrap()
            .iter()
            .map(|m| m.query::<u64>(&redis::cmd("DBSIZE")).unwrap())
            .sum()
    };
    assert_eq!(total(target), checked as u64, "keys on the target");
    assert!(by_kind.len() >= 5, "{by_kind:?}");
}

async fn sync(
    source: &dyn Deployment,
    target: &dyn Deployment,
    options: FullSyncOptions,
) -> ferry_engine::sync::SyncReport {
    let sync = FullSync::prepare(&endpoint(source), &endpoint(target), options)
        .await
        .unwrap();
    let progress = sync.progress().to_vec();
    let report = sync.run().await.unwrap();
    assert!(progress.iter().all(|p| p.phase() == Phase::Done));
    assert_eq!(
        progress.iter().map(|p| p.applied_keys()).sum::<u64>(),
        report.keys()
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_into_four_restores_every_key() {
    let source = LocalCluster::builder().masters(3).start().unwrap();
    let target = LocalCluster::builder().masters(4).start().unwrap();
    let dataset = Dataset::new(7).scale(20_000);
    dataset.load(&source).unwrap();
    let report = sync(&source, &target, FullSyncOptions::default()).await;
    assert_eq!(report.shards.len(), 3);
    assert_eq!(report.keys(), 20_000);
    assert!(
        report.shards.iter().all(|s| s.snapshot.rewritten == 0),
        "same version: RESTORE only"
    );
    assert_same(&source, &target, &dataset, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_into_a_standalone_server_by_command_rewrite() {
    let source = LocalCluster::builder().masters(2).start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let dataset = Dataset::new(8).scale(3_000);
    dataset.load(&source).unwrap();
    let options = FullSyncOptions {
        rewrite: true,
        ..FullSyncOptions::default()
    };
    let report = sync(&source, &target, options).await;
    assert!(report.shards.iter().all(|s| s.snapshot.restored == 0));
    assert_same(&source, &target, &dataset, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_into_older_servers_rewrites_and_older_into_newer_restores() {
    let redis7 = LocalServer::builder().start().unwrap();
    let redis5 = LocalServer::builder()
        .binary(ServerBinary::cached("redis-5.0.10").unwrap())
        .start()
        .unwrap();
    let dataset = Dataset::new(9).scale(2_000);
    dataset.load(&redis7).unwrap();
    // 7.0 writes RDB 10, which 5.0 cannot read: every value is rewritten.
    let report = sync(&redis7, &redis5, FullSyncOptions::default()).await;
    assert!(report.keys() > 1_500);
    assert!(report.shards[0].snapshot.restored == 0 && report.shards[0].snapshot.rewritten > 0);
    assert_same(&redis7, &redis5, &dataset, &[]);

    // And back: 5.0's RDB 9 restores into 7.0.
    let fresh = LocalServer::builder().start().unwrap();
    let report = sync(&redis5, &fresh, FullSyncOptions::default()).await;
    assert!(report.shards[0].snapshot.rewritten == 0 && report.shards[0].snapshot.restored > 0);
    assert_same(&redis5, &fresh, &dataset, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_and_redis_sync_both_ways() {
    let valkey = LocalCluster::builder()
        .binary(ServerBinary::cached("valkey-9.1.2").unwrap())
        .masters(2)
        .start()
        .unwrap();
    let redis = LocalCluster::builder().masters(3).start().unwrap();
    let dataset = Dataset::new(10).scale(2_000);
    dataset.load(&redis).unwrap();
    sync(&redis, &valkey, FullSyncOptions::default()).await;
    assert_same(&redis, &valkey, &dataset, &[]);

    let back = LocalCluster::builder().masters(2).start().unwrap();
    sync(&valkey, &back, FullSyncOptions::default()).await;
    assert_same(&valkey, &back, &dataset, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_can_come_from_replicas_one_host_at_a_time() {
    let source = LocalCluster::builder()
        .masters(2)
        .replicas(1)
        .start()
        .unwrap();
    let target = LocalCluster::builder().masters(2).start().unwrap();
    let dataset = Dataset::new(12).scale(2_000);
    dataset.load(&source).unwrap();
    let sync_full = |node: &dyn ferry_fixtures::Node| -> u64 {
        ferry_fixtures::conn::info(&node.addr(), "stats").unwrap()["sync_full"]
            .parse()
            .unwrap()
    };
    // Wait until CLUSTER SLOTS lists the replicas (they must have reported an offset).
    let endpoint = endpoint(&source);
    ferry_fixtures::conn::poll(
        "replicas in CLUSTER SLOTS",
        std::time::Duration::from_secs(30),
        || {
            let rt = tokio::runtime::Handle::current();
            let deployment = tokio::task::block_in_place(|| {
                rt.block_on(ferry_engine::deployment::Deployment::discover(
                    &endpoint,
                    std::time::Duration::from_secs(5),
                ))
            })
            .ok()?;
            deployment
                .topology
                .shards
                .iter()
                .all(|s| !s.replicas.is_empty())
                .then_some(())
        },
    )
    .unwrap();
    let masters = source.masters().unwrap();
    let before: Vec<u64> = masters.iter().map(|m| sync_full(*m)).collect();
    let options = FullSyncOptions {
        snapshot_from_replica: true,
        max_snapshots_per_host: 1,
        ..FullSyncOptions::default()
    };
    sync(&source, &target, options).await;
    let after: Vec<u64> = masters.iter().map(|m| sync_full(*m)).collect();
    assert_eq!(before, after, "the masters served no snapshot");
    let served: u64 = masters
        .iter()
        .flat_map(|m| source.replicas_of(&m.addr()).unwrap())
        .map(sync_full)
        .sum();
    assert_eq!(served, 2, "each replica served one snapshot");
    assert_same(&source, &target, &dataset, &[]);
}
