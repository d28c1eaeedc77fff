//! Discovery and the applier against real targets: routing by slot, MOVED and ASK during
//! slot moves, OOM that pauses and then finishes, errors that name the key.

use std::time::Duration;

use bytes::Bytes;
use ferry_engine::apply::{Applier, ApplyConfig, ApplyError, WriteGroup};
use ferry_engine::deployment::{Deployment, Family};
use ferry_engine::endpoint::Endpoint;
use ferry_engine::resp::Command;
use ferry_engine::route::Slot;
use ferry_fixtures::{Deployment as _, LocalCluster, LocalServer, Node, ServerBinary};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn discover(node: &dyn Node) -> Deployment {
    let endpoint = Endpoint::parse(&node.addr().url()).unwrap();
    Deployment::discover(&endpoint, TIMEOUT).await.unwrap()
}

fn list_group(key: &str, items: &[&str]) -> WriteGroup {
    let mut rpush = Command::new("RPUSH").arg(Bytes::copy_from_slice(key.as_bytes()));
    for item in items {
        rpush = rpush.arg(Bytes::copy_from_slice(item.as_bytes()));
    }
    WriteGroup::new(
        Bytes::copy_from_slice(key.as_bytes()),
        vec![
            Command::new("DEL").arg(Bytes::copy_from_slice(key.as_bytes())),
            rpush,
            Command::new("PEXPIREAT")
                .arg(Bytes::copy_from_slice(key.as_bytes()))
                .arg("4102444800000"),
        ],
    )
}

fn owner_of<'a>(cluster: &'a LocalCluster, key: &str) -> &'a dyn Node {
    let topology = cluster.topology().unwrap();
    let slot = Slot::of_key(key.as_bytes());
    cluster
        .node(&topology.shard_for_slot(slot).unwrap().master)
        .unwrap()
}

fn node_id(node: &dyn Node) -> String {
    node.query(redis::cmd("CLUSTER").arg("MYID")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_tells_cluster_from_standalone_and_names_the_build() {
    let cluster = LocalCluster::builder()
        .masters(3)
        .replicas(1)
        .start()
        .unwrap();
    let deployment = discover(cluster.nodes()[0]).await;
    assert!(deployment.topology.cluster);
    assert_eq!(deployment.topology.shards.len(), 3);
    assert_eq!(deployment.topology.uncovered(), 0);
    // CLUSTER SLOTS lists a replica only once it reports a replication offset (Redis 7's
    // isReplicaAvailable), so a fresh empty cluster may show none yet.
    assert!(deployment
        .topology
        .shards
        .iter()
        .all(|s| s.replicas.len() <= 1));
    assert_eq!(
        (deployment.server.family, deployment.server.version.0),
        (Family::Redis, 7)
    );

    let valkey = LocalServer::builder()
        .binary(ServerBinary::cached("valkey-9.1.2").unwrap())
        .start()
        .unwrap();
    let deployment = discover(valkey.master()).await;
    assert!(!deployment.topology.cluster);
    assert_eq!(deployment.server.family, Family::Valkey);
    assert_eq!(deployment.server.version, (9, 1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_land_on_the_master_owning_their_slot() {
    let cluster = LocalCluster::builder().masters(3).start().unwrap();
    let mut applier = Applier::new(discover(cluster.nodes()[0]).await, ApplyConfig::default());
    let keys: Vec<String> = (0..3000).map(|i| format!("list:{i}")).collect();
    let groups = keys
        .iter()
        .map(|k| list_group(k, &["a", "b", "c"]))
        .collect();
    applier.apply(groups).await.unwrap();
    assert_eq!(applier.stats().groups, 3000);
    assert_eq!(applier.stats().commands, 9000);
    assert_eq!(applier.stats().redirects, 0);
    for key in keys.iter().step_by(97) {
        let owner = owner_of(&cluster, key);
        let items: Vec<String> = owner
            .query(redis::cmd("LRANGE").arg(key).arg(0).arg(-1))
            .unwrap();
        assert_eq!(items, ["a", "b", "c"], "{key}");
        let pttl: i64 = owner.query(redis::cmd("PTTL").arg(key)).unwrap();
        assert!(pttl > 0, "{key}");
    }
    let total: u64 = cluster
        .masters()
        .unwrap()
        .iter()
        .map(|m| m.query::<u64>(&redis::cmd("DBSIZE")).unwrap())
        .sum();
    assert_eq!(total, 3000);
    // Applying the same groups again changes nothing: they are idempotent units.
    let again = keys
        .iter()
        .map(|k| list_group(k, &["a", "b", "c"]))
        .collect();
    applier.apply(again).await.unwrap();
    let items: Vec<String> = owner_of(&cluster, "list:7")
        .query(redis::cmd("LRANGE").arg("list:7").arg(0).arg(-1))
        .unwrap();
    assert_eq!(items, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_after_discovery_is_followed() {
    let cluster = LocalCluster::builder().masters(3).start().unwrap();
    let mut applier = Applier::new(discover(cluster.nodes()[0]).await, ApplyConfig::default());
    let key = "{moved}:0";
    let slot = Slot::of_key(key.as_bytes()).get();
    let from = owner_of(&cluster, key);
    let masters = cluster.masters().unwrap();
    let to = *masters.iter().find(|m| m.addr() != from.addr()).unwrap();
    let to_id = node_id(to);
    for node in std::iter::once(to).chain(masters.iter().copied()) {
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
    let groups = (0..50)
        .map(|i| list_group(&format!("{{moved}}:{i}"), &["x"]))
        .collect();
    applier.apply(groups).await.unwrap();
    assert!(applier.stats().redirects >= 1, "{:?}", applier.stats());
    assert!(applier.stats().topology_refreshes >= 1);
    let size: u64 = to
        .query(redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot))
        .unwrap();
    assert_eq!(size, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_migrating_slot_follow_ask_to_the_importing_node() {
    let cluster = LocalCluster::builder().masters(2).start().unwrap();
    let mut applier = Applier::new(discover(cluster.nodes()[0]).await, ApplyConfig::default());
    let key = "{asked}:0";
    let slot = Slot::of_key(key.as_bytes()).get();
    let from = owner_of(&cluster, key);
    let masters = cluster.masters().unwrap();
    let to = *masters.iter().find(|m| m.addr() != from.addr()).unwrap();
    let _: () = to
        .query(
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(node_id(from)),
        )
        .unwrap();
    let _: () = from
        .query(
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(node_id(to)),
        )
        .unwrap();
    let groups = (0..20)
        .map(|i| list_group(&format!("{{asked}}:{i}"), &["y"]))
        .collect();
    applier.apply(groups).await.unwrap();
    assert!(applier.stats().redirects >= 20, "{:?}", applier.stats());
    let mut conn = to.connect().unwrap();
    let (_, items): ((), Vec<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(items, ["y"]);
    let on_source: u64 = from
        .query(redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot))
        .unwrap();
    assert_eq!(on_source, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_pauses_the_apply_until_memory_is_raised() {
    let server = LocalServer::builder().start().unwrap();
    let node: &dyn Node = server.master();
    let used: u64 = ferry_fixtures::conn::info(&node.addr(), "memory").unwrap()["used_memory"]
        .parse()
        .unwrap();
    let _: () = node
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg(used + 512 * 1024),
        )
        .unwrap();
    let config = ApplyConfig {
        max_backoff: Duration::from_millis(200),
        ..ApplyConfig::default()
    };
    let mut applier = Applier::new(discover(node).await, config);
    let value = Bytes::from(vec![b'v'; 100 * 1024]);
    let groups: Vec<WriteGroup> = (0..60)
        .map(|i| {
            let key = Bytes::from(format!("big:{i}"));
            WriteGroup::new(
                key.clone(),
                vec![Command::new("SET").arg(key).arg(value.clone())],
            )
        })
        .collect();
    let task = tokio::spawn(async move {
        applier
            .apply(groups)
            .await
            .map(|()| applier.stats().clone())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "the apply should be waiting for memory"
    );
    let _: () = node
        .query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0))
        .unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the apply never finished after memory was raised")
        .unwrap()
        .unwrap();
    assert!(stats.retries > 0, "{stats:?}");
    let size: u64 = node.query(&redis::cmd("DBSIZE")).unwrap();
    assert_eq!(size, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_names_the_key_and_the_command() {
    let server = LocalServer::builder().start().unwrap();
    let node: &dyn Node = server.master();
    let _: () = node
        .query(redis::cmd("SET").arg("a\x00key").arg("string"))
        .unwrap();
    let mut applier = Applier::new(discover(node).await, ApplyConfig::default());
    let group = WriteGroup::new(
        Bytes::from_static(b"a\x00key"),
        vec![Command::new("RPUSH")
            .arg(Bytes::from_static(b"a\x00key"))
            .arg("x")],
    );
    let err = applier.apply(vec![group]).await.unwrap_err();
    assert!(matches!(err, ApplyError::Rejected { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("RPUSH") && text.contains("a\\x00key") && text.contains("WRONGTYPE"),
        "{text}"
    );
}
