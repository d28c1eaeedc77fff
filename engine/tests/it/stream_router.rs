//! What the stream router makes of replication-stream commands, with the key specs of a real
//! server and the slots of a real 3-master target.

use std::time::Duration;

use bytes::Bytes;
use ferry_engine::deployment::Deployment as Discovered;
use ferry_engine::endpoint::Endpoint;
use ferry_engine::link::Link;
use ferry_engine::resp::Command;
use ferry_engine::route::{CommandTable, KeyFilter};
use ferry_engine::sync::{Routed, StreamRouter};
use ferry_fixtures::{Deployment, LocalCluster, LocalServer, Node, ServerBinary};

fn command(line: &str) -> Command {
    Command::from_argv(
        line.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect(),
    )
    .unwrap()
}

/// Each write as (first key, relative, command lines).
fn writes(routed: Routed) -> Vec<(String, bool, Vec<String>)> {
    let Routed::Writes(writes) = routed else {
        panic!("expected writes, got {routed:?}");
    };
    writes
        .into_iter()
        .map(|w| {
            let lines = w
                .commands
                .iter()
                .map(|c| {
                    c.argv()
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            (
                String::from_utf8_lossy(&w.key).into_owned(),
                w.relative,
                lines,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_commands_become_routed_writes() {
    let server = LocalServer::builder().start().unwrap();
    let target = LocalCluster::builder().masters(3).start().unwrap();
    let addr = (server.master() as &dyn Node).addr();
    let mut link = Link::connect(
        &addr.host,
        addr.port,
        &ferry_engine::endpoint::Endpoint::plain(&addr.host, addr.port),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let table = CommandTable::from_reply(&link.call(&["COMMAND"]).await.unwrap()).unwrap();
    let seed = Endpoint::parse(&target.nodes()[0].addr().url()).unwrap();
    let topology = Discovered::discover(&seed, Duration::from_secs(5))
        .await
        .unwrap()
        .topology;
    let filter = KeyFilter {
        exclude_prefixes: vec![b"skip:".to_vec()],
        ..KeyFilter::default()
    };
    let mut router = StreamRouter::new(table, topology, filter, 0);
    let mut route = |line: &str| router.route(command(line));

    assert_eq!(route("PING").unwrap(), Routed::Nothing);
    assert_eq!(
        writes(route("SET a 1").unwrap()),
        [("a".into(), false, vec!["SET a 1".into()])]
    );
    assert!(writes(route("INCR a").unwrap())[0].1, "INCR is relative");
    assert!(writes(route("ZADD z INCR 1 m").unwrap())[0].1);
    assert!(!writes(route("ZREM z m").unwrap())[0].1);
    // A transaction comes out whole at EXEC, relative.
    assert_eq!(route("MULTI").unwrap(), Routed::Nothing);
    assert_eq!(route("SET {t}x 1").unwrap(), Routed::Nothing);
    assert_eq!(route("RPUSH {t}y v").unwrap(), Routed::Nothing);
    assert_eq!(
        writes(route("EXEC").unwrap()),
        [(
            "{t}x".into(),
            true,
            vec!["SET {t}x 1".into(), "RPUSH {t}y v".into()]
        )]
    );
    // Other dbs are not copied; the copied one again after SELECT 0.
    assert_eq!(route("SELECT 3").unwrap(), Routed::Nothing);
    assert_eq!(route("SET b 1").unwrap(), Routed::Nothing);
    assert_eq!(route("FLUSHDB").unwrap(), Routed::Nothing);
    assert_eq!(route("FLUSHALL").unwrap(), Routed::Clear);
    assert_eq!(route("SELECT 0").unwrap(), Routed::Nothing);
    assert_eq!(route("FLUSHDB").unwrap(), Routed::Clear);
    // Keys of several target masters are split where the meaning allows.
    let split = writes(route("DEL a b c d e f").unwrap());
    assert_eq!(split.len(), 6, "{split:?}");
    assert!(split.iter().all(|(k, _, c)| c == &[format!("DEL {k}")]));
    let split = writes(route("MSET a 1 skip:b 2 c 3").unwrap());
    assert_eq!(
        split.iter().map(|w| w.2[0].clone()).collect::<Vec<_>>(),
        ["MSET a 1", "MSET c 3"],
        "left-out keys are dropped from a split command"
    );
    let error = route("RENAME a b").unwrap_err();
    assert!(
        error.to_string().contains("different target masters"),
        "{error}"
    );
    let error = route("RENAME {x}a skip:{x}b").unwrap_err();
    assert!(error.to_string().contains("only some"), "{error}");
    assert_eq!(route("SET skip:a 1").unwrap(), Routed::Nothing);
    assert_eq!(
        route("SET __ferry__:{t}:heartbeat 1").unwrap(),
        Routed::Nothing
    );
    // Function management goes everywhere; LOAD replaces what a replay loaded.
    let Routed::Everywhere(load) = route("FUNCTION LOAD code").unwrap() else {
        panic!("FUNCTION LOAD not broadcast");
    };
    assert_eq!(load.argv()[2].as_ref(), b"REPLACE");
    let error = route("NOSUCHCOMMAND x").unwrap_err();
    assert!(error.to_string().contains("COMMAND table"), "{error}");
    assert_eq!(route("PUBLISH ch hi").unwrap(), Routed::Nothing);

    // A transaction open when the source link broke is read again whole on the new link.
    assert_eq!(router.route(command("MULTI")).unwrap(), Routed::Nothing);
    assert_eq!(router.route(command("INCR {x}n")).unwrap(), Routed::Nothing);
    assert!(router.in_transaction());
    router.restart();
    assert!(!router.in_transaction());
    assert_eq!(router.route(command("MULTI")).unwrap(), Routed::Nothing);
    assert_eq!(router.route(command("INCR {x}n")).unwrap(), Routed::Nothing);
    let exec = writes(router.route(command("EXEC")).unwrap());
    assert_eq!(exec.len(), 1);
    assert_eq!(exec[0].2, ["INCR {x}n"], "the dropped half is not applied");

    // A target older than 6.2 gets SET ... PXAT as SET then PEXPIREAT.
    router.set_target_server(&ferry_engine::deployment::ServerInfo {
        family: ferry_engine::deployment::Family::Redis,
        version: (5, 0, 10),
    });
    assert_eq!(
        writes(
            router
                .route(command("SET k v NX PXAT 1700000000000"))
                .unwrap()
        )[0]
        .2,
        ["SET k v NX", "PEXPIREAT k 1700000000000"]
    );
    assert_eq!(
        writes(
            router
                .route(command("SET k v EXAT 1700000000 GET"))
                .unwrap()
        )[0]
        .2,
        ["SET k v", "PEXPIREAT k 1700000000000"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movable_key_commands_of_a_source_without_key_specs_route_by_their_keys() {
    let Some(redis5) = ServerBinary::cached_or_skip(
        "redis-5.0.10",
        "routing by its COMMAND table (no key specs)",
    ) else {
        return;
    };
    let server = LocalServer::builder().binary(redis5).start().unwrap();
    let target = LocalCluster::builder().masters(3).start().unwrap();
    let addr = (server.master() as &dyn Node).addr();
    let mut link = Link::connect(
        &addr.host,
        addr.port,
        &Endpoint::plain(&addr.host, addr.port),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let table = CommandTable::from_reply(&link.call(&["COMMAND"]).await.unwrap()).unwrap();
    let seed = Endpoint::parse(&target.nodes()[0].addr().url()).unwrap();
    let topology = Discovered::discover(&seed, Duration::from_secs(5))
        .await
        .unwrap()
        .topology;
    let mut router = StreamRouter::new(table, topology, KeyFilter::default(), 0);
    let mut route = |line: &str| router.route(command(line));

    for (line, key) in [
        ("ZUNIONSTORE {z}d 2 {z}a {z}b WEIGHTS 1 2", "{z}a"),
        ("ZINTERSTORE {z}d 1 {z}a AGGREGATE MAX", "{z}a"),
        ("SORT {o}in BY w GET store STORE {o}out", "{o}in"),
        ("GEORADIUS {g}a 15 37 200 km STORE {g}s", "{g}a"),
        ("GEORADIUSBYMEMBER {g}a m 200 km STOREDIST {g}d", "{g}a"),
    ] {
        assert_eq!(
            writes(route(line).unwrap()),
            [(key.into(), true, vec![line.into()])],
            "{line}"
        );
    }
    // Keys of different target masters are refused, as for commands with fixed keys.
    let error = route("ZUNIONSTORE d 2 a b").unwrap_err();
    assert!(
        error.to_string().contains("different target masters"),
        "{error}"
    );
}

/// A source before 7.0 (here 5.0, with its own key specs): relative expiries come out
/// absolute and as absolute writes, counted from the arrival or read from the source in
/// place (also inside a transaction); a target before 6.2 gets `SET ... PXAT` split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_source_expiries_become_absolute_writes() {
    use ferry_engine::deployment::{Family, ServerInfo};
    use ferry_engine::sync::Arrival;
    let Ok(binary) = ferry_fixtures::ServerBinary::cached("redis-5.0.10") else {
        println!("SKIPPED: redis-5.0.10 is not built (run ci/setup.sh)");
        return;
    };
    let source = LocalServer::builder().binary(binary).start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let seed = Endpoint::parse(&(source.master() as &dyn Node).addr().url()).unwrap();
    let mut link = Link::connect(&seed.host, seed.port, &seed, Duration::from_secs(5))
        .await
        .unwrap();
    let table = CommandTable::from_reply(&link.call(&["COMMAND"]).await.unwrap()).unwrap();
    let discovered = Discovered::discover(&seed, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(discovered.server.version, (5, 0, 10));
    let target_seed = Endpoint::parse(&(target.master() as &dyn Node).addr().url()).unwrap();
    let topology = Discovered::discover(&target_seed, Duration::from_secs(5))
        .await
        .unwrap()
        .topology;
    let mut router = StreamRouter::new(table, topology, KeyFilter::default(), 0);
    router.set_source_server(&discovered.server);
    assert!(router.source_forms().relative_expiry && router.source_forms().float_as_set);
    let live = Arrival {
        ms: 1_700_000_000_000,
        replayed: false,
    };
    let replayed = Arrival {
        replayed: true,
        ..live
    };
    let mut route = |line: &str, at: Arrival| router.route_at(command(line), at).unwrap();
    assert_eq!(
        writes(route("EXPIRE k 10", live)),
        [("k".into(), false, vec!["PEXPIREAT k 1700000010000".into()])]
    );
    assert_eq!(
        writes(route("SETEX k 10 v", live)),
        [("k".into(), false, vec!["SET k v PXAT 1700000010000".into()])]
    );
    let Routed::Writes(probed) = route("PEXPIRE k 10", replayed) else {
        panic!("no write");
    };
    assert_eq!(probed[0].probes.len(), 1);
    assert!(!probed[0].relative, "a probed expiry is absolute");
    // In a transaction, each probe names its own place among the unit's commands.
    for (line, at) in [
        ("MULTI", live),
        ("INCR {t}n", live),
        ("SET {t}f 2.5", live),
        ("SET {t}w text", live),
        ("EXPIRE {t}w 10", replayed),
    ] {
        assert_eq!(route(line, at), Routed::Nothing, "{line}");
    }
    let Routed::Writes(unit) = route("EXEC", live) else {
        panic!("no unit");
    };
    let lines = writes(Routed::Writes(unit.clone()));
    assert_eq!(
        lines,
        [(
            "{t}n".into(),
            true,
            vec![
                "INCR {t}n".into(),
                "SET {t}f 2.5".into(),
                "PTTL {t}f".into(),
                "SET {t}w text".into(),
                "PTTL {t}w".into(),
            ]
        )]
    );
    let places: Vec<(usize, Option<u64>)> = unit[0]
        .probes
        .iter()
        .map(|p| (p.at, p.fallback_ms))
        .collect();
    assert_eq!(places, [(2, None), (4, Some(1_700_000_010_000))]);

    // A target before 6.2 takes the absolute SET as SET, then PEXPIREAT.
    router.set_target_server(&ServerInfo {
        family: Family::Redis,
        version: (5, 0, 10),
    });
    assert_eq!(
        writes(router.route_at(command("SET k v PX 10"), live).unwrap())[0].2,
        ["SET k v", "PEXPIREAT k 1700000000010"]
    );
}
