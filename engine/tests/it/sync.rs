//! Full sync against real deployments: every key of the fixtures dataset arrives with the
//! same type, value (`DEBUG DIGEST-VALUE`) and expiry, across shard counts and versions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ferry_engine::apply::{Applier, ApplyConfig, Part, WriteGroup};
use ferry_engine::deployment::Deployment as EngineDeployment;
use ferry_engine::endpoint::Endpoint;
use ferry_engine::rdb::{self, Parser};
use ferry_engine::sync::{Phase, Selection, SnapshotSink, Sync, SyncOptions, ValueMode};
use ferry_fixtures::data::{BigKeys, Kind};
use ferry_fixtures::{Dataset, Deployment, LocalCluster, LocalServer, Node, ServerBinary};

fn endpoint(deployment: &dyn Deployment) -> Endpoint {
    Endpoint::parse(&deployment.nodes()[0].addr().url()).unwrap()
}

/// Reads keys where they live on one deployment, one connection per master.
struct Reader<'a> {
    deployment: &'a dyn Deployment,
    topology: ferry_fixtures::Topology,
    connections: HashMap<ferry_fixtures::NodeAddr, redis::Connection>,
}

impl<'a> Reader<'a> {
    fn new(deployment: &'a dyn Deployment) -> Self {
        Reader {
            deployment,
            topology: deployment.topology().unwrap(),
            connections: HashMap::new(),
        }
    }

    /// Type, digest of the value and expiry (PTTL rounded to seconds, -1 without) of `key`.
    fn fingerprint(&mut self, key: &[u8]) -> (String, String, i64) {
        let slot = ferry_engine::route::Slot::of_key(key);
        let owner = self.topology.shard_for_slot(slot).unwrap().master.clone();
        let deployment = self.deployment;
        let conn = self
            .connections
            .entry(owner.clone())
            .or_insert_with(|| deployment.node(&owner).unwrap().connect().unwrap());
        let (kind, digest, pttl): (String, Vec<String>, i64) = redis::pipe()
            .cmd("TYPE")
            .arg(key)
            .cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .query(conn)
            .unwrap();
        // PTTL is relative: round to seconds so both reads agree.
        let expiry = if pttl < 0 { pttl } else { (pttl + 500) / 1000 };
        (kind, digest.concat(), expiry)
    }
}

/// Every key of `dataset` (except `skip` kinds) is on the target as on the source, and the
/// target holds nothing else.
fn assert_same(source: &dyn Deployment, target: &dyn Deployment, dataset: &Dataset, skip: &[Kind]) {
    let mut checked = 0;
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    let (mut source_reader, mut target_reader) = (Reader::new(source), Reader::new(target));
    for spec in dataset.keys().filter(|s| !skip.contains(&s.kind)) {
        let expected = source_reader.fingerprint(&spec.key);
        if expected.0 == "none" {
            continue;
        }
        let got = target_reader.fingerprint(&spec.key);
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
    options: SyncOptions,
) -> ferry_engine::sync::SyncReport {
    let sync = Sync::prepare(&endpoint(source), &endpoint(target), options)
        .await
        .unwrap();
    let progress = sync.progress().to_vec();
    let report = sync.run().await.unwrap();
    assert!(progress.iter().all(|p| p.phase() == Phase::Done));
    assert_eq!(
        progress.iter().map(|p| p.applied_keys()).sum::<u64>(),
        report.keys()
    );
    // Every snapshot announced its keys (RESIZEDB), and all of them were read: what the
    // progress bars and their ETA are made of.
    for shard in &report.shards {
        let p = progress.iter().find(|p| p.source == shard.source).unwrap();
        let (read, expected) = p.snapshot_keys();
        assert_eq!(read, shard.snapshot.keys, "{}", shard.source);
        assert_eq!(expected, shard.snapshot.keys, "{}", shard.source);
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_into_four_restores_every_key() {
    let source = LocalCluster::builder().masters(3).start().unwrap();
    let target = LocalCluster::builder().masters(4).start().unwrap();
    let dataset = Dataset::new(7).scale(20_000);
    dataset.load(&source).unwrap();
    let report = sync(&source, &target, SyncOptions::default()).await;
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
    let options = SyncOptions {
        rewrite: true,
        ..SyncOptions::default()
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
    let report = sync(&redis7, &redis5, SyncOptions::default()).await;
    assert!(report.keys() > 1_500);
    assert!(report.shards[0].snapshot.restored == 0 && report.shards[0].snapshot.rewritten > 0);
    assert_same(&redis7, &redis5, &dataset, &[]);

    // And back: 5.0's RDB 9 restores into 7.0.
    let fresh = LocalServer::builder().start().unwrap();
    let report = sync(&redis5, &fresh, SyncOptions::default()).await;
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
    sync(&redis, &valkey, SyncOptions::default()).await;
    assert_same(&redis, &valkey, &dataset, &[]);

    let back = LocalCluster::builder().masters(2).start().unwrap();
    sync(&valkey, &back, SyncOptions::default()).await;
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
    let options = SyncOptions {
        snapshot_from_replica: true,
        max_snapshots_per_host: 1,
        ..SyncOptions::default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_target_master_and_a_slot_moved_mid_sync_still_give_an_exact_copy() {
    let source = LocalCluster::builder().masters(3).start().unwrap();
    let target = LocalCluster::builder().masters(3).start().unwrap();
    let dataset = Dataset::new(13).scale(30_000);
    dataset.load(&source).unwrap();
    let sync = Sync::prepare(
        &endpoint(&source),
        &endpoint(&target),
        SyncOptions::default(),
    )
    .await
    .unwrap();
    let progress = sync.progress().to_vec();
    let running = tokio::spawn(sync.run());
    // Once keys are landing: pause one target master for a second, and move an empty slot
    // from one target master to another (MOVED for the writers that knew the old owner).
    ferry_fixtures::conn::poll("keys to land", std::time::Duration::from_secs(30), || {
        (progress.iter().map(|p| p.applied_keys()).sum::<u64>() > 0).then_some(())
    })
    .unwrap();
    let masters = target.masters().unwrap();
    let paused = masters[1];
    paused.pause().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    paused.resume().unwrap();
    // Migrate the busiest slot of the first target master to the third one while the sync
    // writes into it, as `redis-cli --cluster reshard` does: IMPORTING, MIGRATING, MIGRATE
    // the keys already there, then SETSLOT NODE. Writers meet ASK and MOVED on the way.
    let mut per_slot: HashMap<u16, usize> = HashMap::new();
    for key in dataset.keys() {
        *per_slot.entry(key.slot().get()).or_default() += 1;
    }
    let slot = (0u16..5461)
        .max_by_key(|s| per_slot.get(s).copied().unwrap_or(0))
        .unwrap();
    let (from, to) = (masters[0], masters[2]);
    let id = |node: &dyn ferry_fixtures::Node| -> String {
        node.query(redis::cmd("CLUSTER").arg("MYID")).unwrap()
    };
    let (from_id, to_id) = (id(from), id(to));
    let _: () = to
        .query(
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(&from_id),
        )
        .unwrap();
    let _: () = from
        .query(
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(&to_id),
        )
        .unwrap();
    let to_addr = to.addr();
    loop {
        let keys: Vec<Vec<u8>> = from
            .query(
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg(&to_addr.host)
            .arg(to_addr.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("REPLACE")
            .arg("KEYS")
            .arg(keys);
        let _: () = from.query(&migrate).unwrap();
    }
    for node in [to, from, masters[1]] {
        let _: () = node
            .query(
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id),
            )
            .unwrap();
    }
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.keys(), 30_000);
    target
        .wait_healthy(std::time::Duration::from_secs(30))
        .unwrap();
    assert_same(&source, &target, &dataset, &[]);
}

/// Big values of every splittable type, a few MiB each.
fn big_values(seed: u64) -> Dataset {
    Dataset::new(seed).scale(100).big_keys(BigKeys {
        hash_fields: 60_000,
        string_bytes: 3 << 20,
        list_elements: 100_000,
        set_members: 60_000,
        zset_members: 60_000,
    })
}

/// A value too big to hold whole goes in parts, and each part can be sent again, alone or
/// with the part before it (a lost reply, a refused part resent with what followed it), and
/// still leaves the exact value: strings by offset, lists trimmed back before they grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_values_go_in_parts_that_can_each_be_sent_again() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let dataset = big_values(23);
    dataset.load(&source).unwrap();
    let node = source.master();
    let _: () = (node as &dyn Node).query(&redis::cmd("SAVE")).unwrap();
    let file = std::fs::read(node.dir().join("dump.rdb")).unwrap();
    let deployment = EngineDeployment::discover(&endpoint(&target), Duration::from_secs(5))
        .await
        .unwrap();
    for rewrite in [false, true] {
        let target_node: &dyn Node = target.master();
        let _: () = target_node.query(&redis::cmd("FLUSHALL")).unwrap();
        let mode = ValueMode::for_target(&deployment.server, rewrite);
        let mut sink = SnapshotSink::new(mode, 0, Selection::default());
        let mut parser = Parser::new(rdb::Config {
            max_raw_value: 256 << 10,
            ..rdb::Config::default()
        });
        parser.feed(&file, &mut sink).unwrap();
        parser.finish().unwrap();
        let groups = sink.take_groups();
        let split: HashSet<&[u8]> = groups
            .iter()
            .filter(|g| g.part != Part::Whole)
            .map(|g| g.key())
            .collect();
        assert_eq!(
            split.len(),
            5,
            "every big value is split (rewrite {rewrite})"
        );
        assert!(groups.len() > 100 + 5 * 3, "{} groups", groups.len());

        let mut applier = Applier::new(deployment.clone(), ApplyConfig::default());
        let mut previous: Option<WriteGroup> = None;
        for group in groups {
            applier.apply(vec![group.clone()]).await.unwrap();
            if !group.starts_key() {
                applier.apply(vec![group.clone()]).await.unwrap();
                let before = previous
                    .clone()
                    .expect("a part follows the key's first part");
                applier.apply(vec![before, group.clone()]).await.unwrap();
            }
            previous = Some(group);
        }
        assert_same(&source, &target, &dataset, &[]);
    }
}

/// A full sync hands big values out in parts, RESTORE allowed or not, into a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_copies_big_values_in_parts() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalCluster::builder().masters(3).start().unwrap();
    let dataset = big_values(24);
    dataset.load(&source).unwrap();
    for rewrite in [false, true] {
        for master in target.masters().unwrap() {
            let _: () = master.query(&redis::cmd("FLUSHALL")).unwrap();
        }
        let options = SyncOptions {
            rewrite,
            restore_max_bytes: 256 << 10,
            ..SyncOptions::default()
        };
        let report = sync(&source, &target, options).await;
        assert_eq!(report.keys(), dataset.len());
        let groups: u64 = report.shards.iter().map(|s| s.apply.groups).sum();
        assert!(groups > dataset.len() + 5 * 3, "{groups} groups");
        assert_same(&source, &target, &dataset, &[]);
    }
}
