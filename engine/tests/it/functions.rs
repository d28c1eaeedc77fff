//! Function libraries travel with the snapshot: a library loaded on the source before the sync
//! is on every target master afterwards, a library deleted on the source while ferry was away
//! is gone from the target after the full resync, and a target that cannot hold functions is
//! refused before anything is written.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_engine::endpoint::Endpoint;
use ferry_engine::precheck::{self, Options, Status};
use ferry_engine::sync::{load_file, Sync, SyncError, SyncMode, SyncOptions};
use ferry_fixtures::{Deployment, LocalCluster, LocalServer, Node, ServerBinary};

use super::incr::{options, Running};

fn node(server: &LocalServer) -> &dyn Node {
    server.master()
}

fn endpoint(deployment: &dyn Deployment) -> Endpoint {
    Endpoint::parse(&deployment.nodes()[0].addr().url()).unwrap()
}

/// A library named `name` with one function `f_<name>` returning `value`.
fn library(name: &str, value: &str) -> String {
    format!(
        "#!lua name={name}\nredis.register_function('f_{name}', function(keys, args) return '{value}' end)"
    )
}

fn load(node: &dyn Node, code: &str) {
    let _: String = node
        .query(redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(code))
        .unwrap();
}

/// Library name to code on one node (`FUNCTION LIST WITHCODE`).
fn libraries(node: &dyn Node) -> BTreeMap<String, String> {
    let reply: Vec<Vec<redis::Value>> = node
        .query(redis::cmd("FUNCTION").arg("LIST").arg("WITHCODE"))
        .unwrap();
    reply
        .into_iter()
        .map(|fields| {
            let mut name = String::new();
            let mut code = String::new();
            for pair in fields.chunks(2) {
                let field: String = redis::from_redis_value(pair[0].clone()).unwrap();
                match field.as_str() {
                    "library_name" => name = redis::from_redis_value(pair[1].clone()).unwrap(),
                    "library_code" => code = redis::from_redis_value(pair[1].clone()).unwrap(),
                    _ => {}
                }
            }
            (name, code)
        })
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), library(name, value)))
        .collect()
}

fn set(node: &dyn Node, key: &str) {
    let _: () = node.query(redis::cmd("SET").arg(key).arg("v")).unwrap();
}

async fn full_sync(source: &dyn Deployment, target: &dyn Deployment) {
    let options = SyncOptions {
        mode: SyncMode::Full,
        ..SyncOptions::default()
    };
    let sync = Sync::prepare(&endpoint(source), &endpoint(target), options)
        .await
        .unwrap();
    let report = sync.run().await.unwrap();
    assert!(report.shards.iter().all(|s| s.snapshot.libraries > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_loads_the_sources_libraries_and_drops_the_targets_others() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    load(node(&source), &library("kept", "1"));
    load(node(&source), &library("changed", "new"));
    set(node(&source), "k");
    // The target holds an older version of one library, one the source does not have, and
    // one whose function the source has in another library.
    load(node(&target), &library("changed", "old"));
    load(node(&target), &library("stale", "x"));
    load(
        node(&target),
        "#!lua name=moved\nredis.register_function('f_kept', function() return 0 end)",
    );

    full_sync(&source, &target).await;

    assert_eq!(
        libraries(node(&target)),
        expected(&[("kept", "1"), ("changed", "new")])
    );
    assert_eq!(libraries(node(&target)), libraries(node(&source)));
    let called: String = node(&target)
        .query(redis::cmd("FCALL").arg("f_changed").arg(0))
        .unwrap();
    assert_eq!(called, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_master_gets_the_union_of_the_source_masters_libraries() {
    let source = LocalCluster::builder().masters(3).start().unwrap();
    let target = LocalCluster::builder().masters(2).start().unwrap();
    let masters = source.masters().unwrap();
    for master in &masters {
        load(*master, &library("shared", "s"));
    }
    // One source master alone holds a library: no other shard's snapshot may delete it.
    load(masters[1], &library("only_one", "o"));
    full_sync(&source, &target).await;

    let want = expected(&[("shared", "s"), ("only_one", "o")]);
    for master in target.masters().unwrap() {
        assert_eq!(libraries(master), want, "{}", master.addr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_resync_brings_libraries_changed_while_ferry_was_away() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let master = node(&source);
    load(master, &library("old", "1"));
    set(master, "k");
    let (s, t) = (endpoint(&source), endpoint(&target));
    let mut sync = Running::start_endpoints(&s, &t, options(SyncMode::FullIncr)).await;
    sync.caught_up(Duration::from_secs(20)).await;
    assert_eq!(libraries(node(&target)), expected(&[("old", "1")]));
    sync.stop().await;

    // While ferry is away: the library is replaced by another and the backlog overflows, so
    // the next start gets a full resync, not these commands.
    let _: () = master
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("repl-backlog-size")
                .arg("16384"),
        )
        .unwrap();
    let _: String = master
        .query(redis::cmd("FUNCTION").arg("DELETE").arg("old"))
        .unwrap();
    load(master, &library("new", "2"));
    let filler = vec![b'x'; 64 * 1024];
    for i in 0..40 {
        let _: () = master
            .query(redis::cmd("SET").arg(format!("burst:{i}")).arg(&filler))
            .unwrap();
    }

    let mut sync = Running::start_endpoints(&s, &t, options(SyncMode::FullIncr)).await;
    sync.caught_up(Duration::from_secs(20)).await;
    assert_eq!(sync.full_resyncs(), 1, "the backlog overflowed");
    assert_eq!(libraries(node(&target)), expected(&[("new", "2")]));
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rdb_file_brings_its_libraries_and_only_them() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    load(node(&source), &library("from_file", "f"));
    set(node(&source), "k");
    let _: () = node(&source).query(&redis::cmd("SAVE")).unwrap();
    load(node(&target), &library("stale", "x"));

    let file = source.master().dir().join("dump.rdb");
    let report = load_file(&file, &endpoint(&target), &SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(report.snapshot.libraries, 1);
    assert_eq!((report.functions.loaded, report.functions.deleted), (1, 1));
    assert_eq!(libraries(node(&target)), expected(&[("from_file", "f")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_functions_is_refused_by_the_precheck_and_the_sync() {
    let Ok(redis5) = ServerBinary::cached("redis-5.0.10") else {
        println!("SKIPPED: redis-5.0.10 is not under ~/.cache/ferry/servers");
        return;
    };
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().binary(redis5).start().unwrap();
    load(node(&source), &library("mylib", "1"));
    load(node(&source), &library("otherlib", "2"));
    set(node(&source), "k");
    let (s, t) = (endpoint(&source), endpoint(&target));

    let report = precheck::run(&s, &t, &Options::default()).await;
    let item = report.item("functions").unwrap();
    assert_eq!(item.status, Status::Fail, "{item:?}");
    assert!(
        item.detail.contains("mylib, otherlib") && item.detail.contains("redis 5.0.10"),
        "{item:?}"
    );
    assert!(!report.passed());

    // Run anyway, the sync stops at the first library (in the file's order), before any key
    // is written.
    let sync = Sync::prepare(&s, &t, SyncOptions::default()).await.unwrap();
    let error = sync.run().await.unwrap_err();
    assert!(
        matches!(error, SyncError::Snapshot { .. })
            && ["mylib", "otherlib"]
                .iter()
                .any(|l| error.to_string().contains(l)),
        "{error}"
    );
    let keys: u64 = node(&target).query(&redis::cmd("DBSIZE")).unwrap();
    assert_eq!(keys, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_libraries_passes_and_valkey_holds_and_sends_them() {
    let Ok(valkey) = ServerBinary::cached("valkey-9.1.2") else {
        println!("SKIPPED: valkey-9.1.2 is not under ~/.cache/ferry/servers");
        return;
    };
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().binary(valkey).start().unwrap();
    let (s, t) = (endpoint(&source), endpoint(&target));
    let item = precheck::run(&s, &t, &Options::default())
        .await
        .item("functions")
        .unwrap()
        .clone();
    assert_eq!(item.status, Status::Pass, "{item:?}");

    // A library only the target holds is deleted by the sync: a warning naming it.
    load(node(&target), &library("target_only", "t"));
    let item = precheck::run(&s, &t, &Options::default())
        .await
        .item("functions")
        .unwrap()
        .clone();
    assert_eq!(item.status, Status::Warn, "{item:?}");
    assert!(item.detail.contains("(target_only)"), "{item:?}");

    load(node(&source), &library("lib", "v"));
    load(node(&source), &library("target_only", "t"));
    let item = precheck::run(&s, &t, &Options::default())
        .await
        .item("functions")
        .unwrap()
        .clone();
    assert_eq!(item.status, Status::Pass, "{item:?}");
    full_sync(&source, &target).await;
    let both = expected(&[("lib", "v"), ("target_only", "t")]);
    assert_eq!(libraries(node(&target)), both);

    // And back: Valkey 9's own snapshot format carries them too.
    let back = LocalServer::builder().start().unwrap();
    full_sync(&target, &back).await;
    assert_eq!(libraries(node(&back)), both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_user_without_function_rights_still_gets_a_source_without_libraries() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    set(node(&source), "k");
    let _: () = node(&target)
        .query(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("nofn")
                .arg("on")
                .arg(">pw")
                .arg("~*")
                .arg("+@all")
                .arg("-function"),
        )
        .unwrap();
    let addr = node(&target).addr();
    let t = Endpoint::parse(&format!("redis://nofn:pw@{}:{}", addr.host, addr.port)).unwrap();
    let sync = Sync::prepare(&endpoint(&source), &t, SyncOptions::default())
        .await
        .unwrap();
    let report = sync.run().await.unwrap();
    assert_eq!(report.keys(), 1);

    // With a library to load, the precheck fails, and the refusal stops the sync.
    load(node(&source), &library("needed", "1"));
    let item = precheck::run(&endpoint(&source), &t, &Options::default())
        .await
        .item("functions")
        .unwrap()
        .clone();
    assert_eq!(item.status, Status::Fail, "{item:?}");
    assert!(
        item.detail.contains("needed") && item.detail.contains("NOPERM"),
        "{item:?}"
    );
    let sync = Sync::prepare(&endpoint(&source), &t, SyncOptions::default())
        .await
        .unwrap();
    let error = sync.run().await.unwrap_err().to_string();
    assert!(
        error.contains("target rejected FUNCTION LIST") && error.contains("NOPERM"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shards_full_resync_keeps_libraries_another_source_master_holds() {
    let source = LocalCluster::builder().masters(2).start().unwrap();
    let target = LocalCluster::builder().masters(2).start().unwrap();
    let topology = source.topology().unwrap();
    let masters = source.masters().unwrap();
    for master in &masters {
        load(*master, &library("old", "1"));
    }
    // Only the second master holds this one.
    load(masters[1], &library("second_only", "2"));
    let (s, t) = (endpoint(&source), endpoint(&target));
    let mut sync = Running::start_endpoints(&s, &t, options(SyncMode::FullIncr)).await;
    sync.caught_up(Duration::from_secs(20)).await;
    sync.stop().await;

    // While ferry is away: "old" is replaced by "new" on the first master, whose backlog a
    // burst overflows (a full resync of its shard), and deleted on the second, whose stream
    // carries the deletion.
    let first = masters[0];
    let _: () = first
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("repl-backlog-size")
                .arg("16384"),
        )
        .unwrap();
    let _: String = first
        .query(redis::cmd("FUNCTION").arg("DELETE").arg("old"))
        .unwrap();
    load(first, &library("new", "3"));
    let _: String = masters[1]
        .query(redis::cmd("FUNCTION").arg("DELETE").arg("old"))
        .unwrap();
    let filler = vec![b'x'; 64 * 1024];
    let on_first = (0..)
        .map(|i| format!("burst:{i}"))
        .filter(|key| {
            let slot = ferry_engine::route::Slot::of_key(key.as_bytes());
            topology.shard_for_slot(slot).unwrap().master == first.addr()
        })
        .take(40);
    for key in on_first {
        let _: () = first
            .query(redis::cmd("SET").arg(key).arg(&filler))
            .unwrap();
    }

    let mut sync = Running::start_endpoints(&s, &t, options(SyncMode::FullIncr)).await;
    sync.caught_up(Duration::from_secs(20)).await;
    assert_eq!(sync.full_resyncs(), 1, "only the first shard is reloaded");
    let want = expected(&[("new", "3"), ("second_only", "2")]);
    for master in target.masters().unwrap() {
        assert_eq!(libraries(master), want, "{}", master.addr());
    }
    sync.stop().await;
}
