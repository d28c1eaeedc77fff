//! Sources without key specs (Redis before 7.0): commands whose keys move with their
//! arguments (`movablekeys`) stream into a Redis 7.0 target, standalone or cluster, exactly.
//! (Their keys spanning several target masters is refused as for any other command.)

use std::time::Duration;

use ferry_engine::endpoint::Endpoint;
use ferry_engine::sync::SyncMode;
use ferry_fixtures::{Dataset, Deployment, LocalCluster, LocalServer, ServerBinary};

use super::incr::{assert_exact, options, Running};

/// Writes with movable keys, each command's keys under one hash tag (one target master).
const MOVABLE_WRITES: &[&[&str]] = &[
    &["ZADD", "{z}a", "1", "a", "2", "b", "3", "c"],
    &["ZADD", "{z}b", "1", "x", "2", "b"],
    &[
        "ZUNIONSTORE",
        "{z}u",
        "2",
        "{z}a",
        "{z}b",
        "WEIGHTS",
        "1",
        "2",
    ],
    &["ZUNIONSTORE", "{z}u1", "1", "{z}a"],
    &[
        "ZINTERSTORE",
        "{z}i",
        "2",
        "{z}a",
        "{z}b",
        "AGGREGATE",
        "MAX",
    ],
    &[
        "ZINTERSTORE",
        "{z}i3",
        "3",
        "{z}a",
        "{z}b",
        "{z}u",
        "WEIGHTS",
        "1",
        "2",
        "3",
    ],
    &[
        "GEOADD",
        "{g}a",
        "13.361389",
        "38.115556",
        "Palermo",
        "15.087269",
        "37.502669",
        "Catania",
    ],
    &[
        "GEORADIUS",
        "{g}a",
        "15",
        "37",
        "300",
        "km",
        "STORE",
        "{g}s",
    ],
    &[
        "GEORADIUS",
        "{g}a",
        "15",
        "37",
        "200",
        "km",
        "ASC",
        "COUNT",
        "1",
        "STOREDIST",
        "{g}d",
    ],
    &[
        "GEORADIUSBYMEMBER",
        "{g}a",
        "Palermo",
        "200",
        "km",
        "STORE",
        "{g}m",
    ],
    &["RPUSH", "{o}in", "3", "1", "2"],
    &["SORT", "{o}in", "STORE", "{o}out"],
    &[
        "SORT", "{o}in", "DESC", "LIMIT", "0", "2", "STORE", "{o}out2",
    ],
    &["XADD", "{x}a", "*", "f", "1"],
    &["XADD", "{x}a", "*", "f", "2"],
    &["XADD", "{x}b", "*", "f", "3"],
    &["XGROUP", "CREATE", "{x}a", "g", "0"],
    &["XGROUP", "CREATE", "{x}b", "g", "0"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "COUNT",
        "1",
        "STREAMS",
        "{x}a",
        ">",
    ],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c2",
        "STREAMS",
        "{x}a",
        "{x}b",
        ">",
        ">",
    ],
    &["ZADD", "{e}z", "1", "m"],
    // The script's effects (MULTI, INCR, ZUNIONSTORE, EXEC) are what replicates.
    &[
        "EVAL",
        "redis.call('INCR', KEYS[1]); return redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[3])",
        "3",
        "{e}n",
        "{e}u",
        "{e}z",
    ],
];

fn endpoint(deployment: &dyn Deployment) -> Endpoint {
    Endpoint::parse(&deployment.nodes()[0].addr().url()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movable_key_writes_of_redis_5_and_6_2_sources_stream_into_standalone_and_cluster_targets()
{
    let sources: Vec<ServerBinary> = ["redis-5.0.10", "redis-6.2.16"]
        .iter()
        .filter_map(|name| {
            ServerBinary::cached_or_skip(name, "streaming movable-key writes from it")
        })
        .collect();
    for binary in sources {
        let standalone = LocalServer::builder().start().unwrap();
        let cluster = LocalCluster::builder().masters(3).start().unwrap();
        for target in [&standalone as &dyn Deployment, &cluster] {
            stream_movable_writes(&binary, target).await;
        }
    }
}

/// A `binary` source with a small dataset, synced into `target`; then [`MOVABLE_WRITES`] on
/// the source, which must reach the target through the live stream.
async fn stream_movable_writes(binary: &ServerBinary, target: &dyn Deployment) {
    let source = LocalServer::builder()
        .binary(binary.clone())
        .start()
        .unwrap();
    Dataset::new(41).scale(300).load(&source).unwrap();
    let mut sync = Running::start_endpoints(
        &endpoint(&source),
        &endpoint(target),
        options(SyncMode::FullIncr),
    )
    .await;
    sync.caught_up(Duration::from_secs(20)).await;
    let mut conn = source.masters().unwrap()[0].connect().unwrap();
    for args in MOVABLE_WRITES {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let reply: redis::RedisResult<redis::Value> = cmd.query(&mut conn);
        assert!(reply.is_ok(), "{binary}: {args:?}: {reply:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Panics with the sync's error if a command stopped it.
    sync.caught_up(Duration::from_secs(20)).await;
    assert_exact(&source, target).await;
    // The stored results arrived through the stream (the snapshot held none of them).
    let count = |key: &str, cmd: &str| -> i64 {
        let slot = ferry_engine::route::Slot::of_key(key.as_bytes());
        let topology = target.topology().unwrap();
        let owner = target
            .node(&topology.shard_for_slot(slot).unwrap().master)
            .unwrap();
        owner.query(redis::cmd(cmd).arg(key)).unwrap()
    };
    assert_eq!(count("{z}u", "ZCARD"), 4, "{binary}");
    assert_eq!(count("{z}i3", "ZCARD"), 1, "{binary}");
    assert_eq!(count("{g}s", "ZCARD"), 2, "{binary}");
    assert_eq!(count("{g}d", "ZCARD"), 1, "{binary}");
    assert_eq!(count("{o}out2", "LLEN"), 2, "{binary}");
    assert_eq!(count("{e}u", "ZCARD"), 1, "{binary}");
    assert_eq!(count("{x}a", "XLEN"), 2, "{binary}");
    sync.stop().await;
}
