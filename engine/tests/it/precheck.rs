//! Precheck against real deployments: a clean pair passes; each blocking condition fails the
//! right item with a fix, and options turn failures into warnings.

use ferry_engine::endpoint::Endpoint;
use ferry_engine::precheck::{run, Existing, Item, Options, Status};
use ferry_fixtures::{Deployment as _, LocalCluster, LocalServer, Node};

fn owner<'a>(deployment: &'a LocalCluster, key: &str) -> &'a dyn Node {
    let slot = ferry_engine::route::Slot::of_key(key.as_bytes());
    let topology = deployment.topology().unwrap();
    deployment
        .node(&topology.shard_for_slot(slot).unwrap().master)
        .unwrap()
}

fn endpoint(node: &dyn Node) -> Endpoint {
    Endpoint::parse(&node.addr().url()).unwrap()
}

/// The precheck's `target-empty` item for a sync from `s` into `t`.
async fn target_empty(s: &Endpoint, t: &Endpoint, options: &Options) -> Item {
    run(s, t, options)
        .await
        .item("target-empty")
        .unwrap()
        .clone()
}

/// The names of the checkpoint keys of `t`'s masters, as the sync reads them.
async fn checkpoint_keys(t: &Endpoint) -> Vec<String> {
    let topology = ferry_engine::deployment::Deployment::discover(t, Options::default().timeout)
        .await
        .unwrap()
        .topology;
    topology
        .shards
        .iter()
        .map(|shard| {
            String::from_utf8(ferry_engine::sync::checkpoint_key_of(shard).to_vec()).unwrap()
        })
        .collect()
}

fn resuming() -> Options {
    Options {
        resume: true,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_pair_passes_and_each_problem_fails_its_item() {
    let source = LocalCluster::builder().masters(3).start().unwrap();
    let target = LocalCluster::builder().masters(2).start().unwrap();
    let (s, t) = (endpoint(source.nodes()[0]), endpoint(target.nodes()[0]));
    let _: () = owner(&source, "{a}x")
        .query(redis::cmd("SET").arg("{a}x").arg("1"))
        .unwrap();

    let report = run(&s, &t, &Options::default()).await;
    assert!(report.passed(), "{report:#?}");
    let names: Vec<&str> = report.items.iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        [
            "connectivity",
            "distinct",
            "replication-permission",
            "versions",
            "slot-coverage",
            "target-empty",
            "eviction-policy",
            "memory-headroom",
            "backlog",
            "modules",
            "functions"
        ]
    );
    assert!(report
        .item("connectivity")
        .unwrap()
        .detail
        .starts_with("3 source and 2 target"));

    // ferry's checkpoints do not make a target non-empty; user keys do. The precheck looks
    // for a checkpoint under the name the sync reads (one per master), never scans.
    for key in checkpoint_keys(&t).await {
        let _: () = owner(&target, &key)
            .query(
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("slots-from-0")
                    .arg("loading 0"),
            )
            .unwrap();
    }
    assert!(run(&s, &t, &Options::default()).await.passed());
    // So are the sets of expiries a sync of this source holds there (one per source shard).
    let source_shards =
        ferry_engine::deployment::Deployment::discover(&s, std::time::Duration::from_secs(5))
            .await
            .unwrap()
            .topology
            .shards;
    for key in checkpoint_keys(&t).await {
        let held = ferry_engine::sync::held_key(
            key.as_bytes(),
            &ferry_engine::sync::ShardId::of(&source_shards[1]),
        );
        let _: () = owner(&target, &key)
            .query(redis::cmd("ZADD").arg(held.as_ref()).arg(1).arg("k"))
            .unwrap();
    }
    let report = run(&s, &t, &Options::default()).await;
    assert!(report.passed(), "{:?}", report.item("target-empty"));
    let _: () = owner(&target, "user:1")
        .query(redis::cmd("SET").arg("user:1").arg("x"))
        .unwrap();
    let report = run(&s, &t, &Options::default()).await;
    let item = report.item("target-empty").unwrap();
    assert_eq!(item.status, Status::Fail, "{item:?}");
    assert!(item.detail.contains("1 keys") && item.fix.contains("--existing replace"));
    let item = target_empty(&s, &t, &resuming()).await;
    assert_eq!(item.status, Status::Pass, "{item:?}");
    assert!(item.detail.contains("4 ferry keys"), "{item:?}");
    let replace = Options {
        existing: Existing::Replace,
        ..Options::default()
    };
    assert_eq!(target_empty(&s, &t, &replace).await.status, Status::Warn);

    // An evicting policy fails unless allowed.
    let target_master = target.masters().unwrap()[0];
    let _: () = target_master
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg("allkeys-lru"),
        )
        .unwrap();
    let report = run(&s, &t, &replace).await;
    let item = report.item("eviction-policy").unwrap();
    assert_eq!(item.status, Status::Fail);
    assert!(item.detail.contains("allkeys-lru") && item.fix.contains("noeviction"));
    let allow = Options {
        allow_eviction: true,
        ..replace.clone()
    };
    assert!(run(&s, &t, &allow).await.passed());

    // Too little memory for the source's data.
    let mut conn = owner(&source, "{a}").connect().unwrap();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{a}}big:{i}"))
            .arg(vec![b'x'; 100_000])
            .query(&mut conn)
            .unwrap();
    }
    let used: u64 = ferry_fixtures::conn::info(&target_master.addr(), "memory").unwrap()
        ["used_memory"]
        .parse()
        .unwrap();
    let _: () = target_master
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg(used + 100_000),
        )
        .unwrap();
    let report = run(&s, &t, &Options::default()).await;
    let item = report.item("memory-headroom").unwrap();
    assert_eq!(item.status, Status::Fail, "{item:?}");
    assert!(item.fix.contains("maxmemory"));
    // With eviction accepted, a small target is a choice: a warning.
    let report = run(&s, &t, &allow).await;
    let item = report.item("memory-headroom").unwrap();
    assert_eq!(item.status, Status::Warn, "{item:?}");

    // The same deployment on both sides.
    let report = run(&s, &s, &allow).await;
    assert_eq!(report.item("distinct").unwrap().status, Status::Fail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_unauthenticated_sides_fail_connectivity() {
    let source = LocalServer::builder().start().unwrap();
    let node: &dyn Node = source.master();
    let s = endpoint(node);
    let nowhere = Endpoint::parse("redis://127.0.0.1:1").unwrap();
    let report = run(&s, &nowhere, &Options::default()).await;
    assert!(!report.passed());
    assert_eq!(report.items.len(), 1);
    let item = &report.items[0];
    assert_eq!((item.name, item.status), ("connectivity", Status::Fail));
    assert!(
        item.detail
            .contains("target: cannot connect to 127.0.0.1:1"),
        "{}",
        item.detail
    );

    let _: () = node
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("requirepass")
                .arg("right"),
        )
        .unwrap();
    let wrong = Endpoint::parse(&format!("redis://:wrong@{}", node.addr())).unwrap();
    let report = run(&wrong, &nowhere, &Options::default()).await;
    let detail = &report.items[0].detail;
    assert!(
        detail.contains("source") && detail.contains("AUTH"),
        "{detail}"
    );
    assert!(
        !detail.contains("wrong@") && !detail.contains(":wrong"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_target_is_judged_by_the_db_of_its_url() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let s = endpoint(source.master());
    let t2 = Endpoint::parse(&format!("{}/2", target.master().addr().url())).unwrap();
    let set = |db: u32, key: &str| {
        let mut conn = target.master().connect().unwrap();
        let _: () = redis::cmd("SELECT").arg(db).query(&mut conn).unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("1")
            .query(&mut conn)
            .unwrap();
    };
    // Keys in another db are not where the sync writes.
    set(0, "elsewhere");
    let item = target_empty(&s, &t2, &Options::default()).await;
    assert_eq!(item.status, Status::Pass, "{item:?}");
    // A checkpoint in db 2 lets a sync resume; a user key there blocks a fresh one.
    for key in checkpoint_keys(&t2).await {
        set(2, &key);
    }
    assert!(run(&s, &t2, &Options::default()).await.passed());
    set(2, "user:1");
    let item = target_empty(&s, &t2, &Options::default()).await;
    assert_eq!(item.status, Status::Fail, "{item:?}");
    assert!(item.detail.contains("1 keys"), "{item:?}");
    let item = target_empty(&s, &t2, &resuming()).await;
    assert_eq!(item.status, Status::Pass, "{item:?}");
}
