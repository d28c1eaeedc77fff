//! Every fault applied to real servers, with its effect observed on the servers themselves
//! (ROLE, INFO, CLIENT LIST, CONFIG GET, DBSIZE, /proc), not taken from the outcome.
//!
//! Clusters are shared where faults do not get in each other's way:
//! - [`SHARED`] (3 masters + 1 replica each) takes the faults that leave the topology alone,
//!   each on its own shard: shard 0 `CLIENT KILL TYPE replica` and FLUSHALL (nothing else
//!   writes there), shard 1 `CLIENT KILL TYPE master`, shard 2 the forced full resync and the
//!   faults that must be refused.
//! - [`FAILOVER`] (3 + 3, `cluster-node-timeout` 1500 ms) takes the failovers and the master
//!   kill, one test at a time behind its lock; each test leaves it healthy with a replica per
//!   shard.
//! - Process faults on a whole cluster get a cluster of their own; pause, FLUSHDB, maxmemory
//!   and a standalone resync use standalone servers (no cluster formation to wait for).

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use ferry_chaos::{
    ChaosError, ClientType, Effect, FailoverMode, Fault, MaxmemoryPolicy, NodeSelector,
    MIN_BACKLOG_SIZE,
};
use ferry_engine::route::Slot;
use ferry_fixtures::{
    conn, pid_alive, Deployment, LocalCluster, LocalServer, Node, NodeAddr, Role,
};

/// How long a deployment may take to settle after a fault.
const SETTLE: Duration = Duration::from_secs(60);

static SHARED: LazyLock<LocalCluster> = LazyLock::new(|| {
    LocalCluster::builder()
        .masters(3)
        .replicas(1)
        .start()
        .expect("shared 3+3 cluster starts")
});

static FAILOVER: LazyLock<Mutex<LocalCluster>> = LazyLock::new(|| {
    Mutex::new(
        LocalCluster::builder()
            .masters(3)
            .replicas(1)
            .node_timeout(Duration::from_millis(1500))
            .start()
            .expect("failover 3+3 cluster starts"),
    )
});

/// The failover cluster, healthy, for one test at a time.
fn failover_cluster() -> MutexGuard<'static, LocalCluster> {
    let cluster = FAILOVER.lock().unwrap_or_else(|e| e.into_inner());
    cluster
        .wait_healthy(SETTLE)
        .expect("failover cluster healthy");
    cluster
}

fn query<T: redis::FromRedisValue>(addr: &NodeAddr, cmd: &redis::Cmd) -> T {
    conn::query(addr, cmd).unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn dbsize(addr: &NodeAddr) -> u64 {
    query(addr, &redis::cmd("DBSIZE"))
}

fn stat(addr: &NodeAddr, field: &str) -> u64 {
    let stats = conn::info(addr, "stats").unwrap();
    stats[field].parse().unwrap()
}

fn config(addr: &NodeAddr, parameter: &str) -> String {
    let reply: Vec<String> = query(addr, redis::cmd("CONFIG").arg("GET").arg(parameter));
    reply[1].clone()
}

fn role(deployment: &dyn Deployment, addr: &NodeAddr) -> Role {
    deployment.node(addr).unwrap().role().unwrap()
}

/// `master_host:master_port` of a replica, from its own `INFO replication`.
fn replicating_from(addr: &NodeAddr) -> Option<NodeAddr> {
    let repl = conn::info(addr, "replication").ok()?;
    Some(NodeAddr::new(
        repl.get("master_host")?.clone(),
        repl.get("master_port")?.parse().ok()?,
    ))
}

fn link_up(replica: &NodeAddr) -> bool {
    conn::info(replica, "replication")
        .is_ok_and(|repl| repl.get("master_link_status").map(String::as_str) == Some("up"))
}

/// Ids of the replica connections a master serves, from `CLIENT LIST TYPE replica`.
fn replica_client_ids(master: &NodeAddr) -> HashSet<u64> {
    let list: String = query(
        master,
        redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("replica"),
    );
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(|id| id.parse().unwrap())
        .collect()
}

/// Writes `count` keys `<prefix>:<n>`, each to the master that serves its slot, skipping
/// those `keep` rejects; returns the keys written with their master.
fn write_keys(
    cluster: &dyn Deployment,
    prefix: &str,
    count: usize,
    keep: impl Fn(&NodeAddr) -> bool,
) -> Vec<(String, NodeAddr)> {
    let topology = cluster.topology().unwrap();
    let keys: Vec<(String, NodeAddr)> = (0..count)
        .map(|n| {
            let key = format!("{prefix}:{n}");
            let shard = topology
                .shard_for_slot(Slot::of_key(key.as_bytes()))
                .unwrap();
            (key, shard.master.clone())
        })
        .filter(|(_, master)| keep(master))
        .collect();
    for (key, master) in &keys {
        let _: () = query(master, redis::cmd("SET").arg(key).arg("value"));
    }
    keys
}

fn await_true(what: &str, mut probe: impl FnMut() -> bool) {
    conn::poll(what, SETTLE, || probe().then_some(())).unwrap_or_else(|e| panic!("{e}"));
}

// ---- process faults ------------------------------------------------------------------------

#[test]
fn kill_stop_and_restart_keep_a_cluster_master_identity() {
    let cluster = LocalCluster::builder().masters(3).start().unwrap();
    let kill = Fault::Kill {
        node: NodeSelector::Master(2),
    };
    let stop = Fault::Stop {
        node: NodeSelector::Master(1),
    };
    for fault in [kill, stop] {
        let addr = fault.node().resolve(&cluster).unwrap();
        let node = cluster.node(&addr).unwrap();
        let pid = node.pid().unwrap();
        let id_before: String = query(&addr, redis::cmd("CLUSTER").arg("MYID"));

        let outcome = fault.apply(&cluster).unwrap();

        eprintln!("{outcome}");
        assert_eq!(outcome.node, addr);
        assert!(
            matches!(outcome.effect, Effect::Killed { pid: Some(p) } | Effect::Stopped { pid: Some(p) } if p == pid),
            "{outcome}"
        );
        assert!(!pid_alive(pid), "{fault}: pid {pid} still exists");
        assert!(!node.is_running());
        assert!(
            conn::connect(&addr).is_err(),
            "{fault}: {addr} still accepts connections"
        );

        let restarted = Fault::Restart {
            node: NodeSelector::Addr(addr.clone()),
        }
        .apply(&cluster)
        .unwrap();
        let Effect::Restarted { pid: Some(new_pid) } = restarted.effect else {
            panic!("{restarted}");
        };
        assert_ne!(new_pid, pid);
        assert!(pid_alive(new_pid));
        let id_after: String = query(&addr, redis::cmd("CLUSTER").arg("MYID"));
        assert_eq!(id_after, id_before, "{addr} came back as another node");
        cluster.wait_healthy(SETTLE).unwrap();
        assert!(
            cluster.topology().unwrap().masters().contains(&addr),
            "{addr} no longer a master with slots"
        );
    }
}

#[test]
fn pause_silences_a_node_until_resume() {
    let server = LocalServer::builder().start().unwrap();
    let addr = server.addrs()[0].clone();
    let mut before = conn::connect(&addr).unwrap();
    before
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();

    let outcome = Fault::Pause {
        node: NodeSelector::Master(0),
    }
    .apply(&server)
    .unwrap();

    eprintln!("{outcome}");
    let Effect::Paused { pid: Some(pid) } = outcome.effect else {
        panic!("{outcome}");
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next();
    assert_eq!(state, Some("T"), "process state while paused: {stat}");
    let ping: redis::RedisResult<String> = redis::cmd("PING").query(&mut before);
    let err = ping.expect_err("a paused server answered PING");
    assert!(err.is_timeout(), "{err}");

    let resumed = Fault::Resume {
        node: NodeSelector::Addr(outcome.node.clone()),
    }
    .apply(&server)
    .unwrap();
    assert_eq!(resumed.effect, Effect::Resumed { pid: Some(pid) });
    let pong: String = query(&addr, &redis::cmd("PING"));
    assert_eq!(pong, "PONG");
}

// ---- failovers -----------------------------------------------------------------------------

fn failover_swaps_roles(mode: FailoverMode, shard: usize) {
    let cluster = failover_cluster();
    let master = NodeSelector::Master(shard).resolve(&*cluster).unwrap();
    let replica = NodeSelector::replica_of_master(shard)
        .resolve(&*cluster)
        .unwrap();
    let slots = cluster.topology().unwrap().shards[shard].slots.clone();

    let outcome = Fault::Failover {
        node: NodeSelector::replica_of_master(shard),
        mode,
    }
    .apply(&*cluster)
    .unwrap();

    eprintln!("{outcome}");
    assert_eq!(outcome.node, replica);
    assert_eq!(
        outcome.effect,
        Effect::FailedOver {
            old_master: master.clone(),
            new_master: replica.clone(),
        }
    );

    assert_eq!(role(&*cluster, &replica), Role::Master);
    await_true(&format!("{master} to follow {replica}"), || {
        cluster.node(&master).unwrap().role().ok() == Some(Role::Replica)
            && replicating_from(&master).as_ref() == Some(&replica)
    });
    cluster.wait_healthy(SETTLE).unwrap();
    let topology = cluster.topology().unwrap();
    let shard_now = topology
        .shards
        .iter()
        .find(|s| s.master == replica)
        .unwrap();
    assert_eq!(shard_now.slots, slots);
    assert_eq!(shard_now.replicas, vec![master]);
}

#[test]
fn failover_default_swaps_replica_and_master() {
    failover_swaps_roles(FailoverMode::Default, 0);
}

#[test]
fn failover_force_swaps_replica_and_master() {
    failover_swaps_roles(FailoverMode::Force, 1);
}

#[test]
fn failover_takeover_swaps_replica_and_master() {
    failover_swaps_roles(FailoverMode::Takeover, 2);
}

#[test]
fn killing_a_master_promotes_its_replica() {
    let cluster = failover_cluster();
    let master = NodeSelector::Master(0).resolve(&*cluster).unwrap();
    let replica = NodeSelector::replica_of_master(0)
        .resolve(&*cluster)
        .unwrap();
    let pid = cluster.node(&master).unwrap().pid().unwrap();

    let outcome = Fault::KillMasterAwaitPromotion {
        node: NodeSelector::Master(0),
    }
    .apply(&*cluster)
    .unwrap();

    eprintln!("{outcome}");
    assert_eq!(
        outcome.effect,
        Effect::Promoted {
            killed_master: master.clone(),
            promoted: replica.clone(),
        }
    );
    assert!(!pid_alive(pid));
    assert_eq!(role(&*cluster, &replica), Role::Master);
    assert_eq!(
        NodeSelector::Master(0).resolve(&*cluster).unwrap(),
        replica,
        "shard 0's slots did not move to the promoted replica"
    );

    // The old master comes back, learns the new configuration and follows the new master,
    // which gives shard 0 its replica back for the other tests.
    Fault::Restart {
        node: NodeSelector::Addr(master.clone()),
    }
    .apply(&*cluster)
    .unwrap();
    await_true(&format!("{master} to rejoin as a replica"), || {
        replicating_from(&master).as_ref() == Some(&replica) && link_up(&master)
    });
    cluster.wait_healthy(SETTLE).unwrap();
}

// ---- replication links ---------------------------------------------------------------------

#[test]
fn client_kill_type_replica_on_a_master_makes_its_replica_reconnect() {
    let cluster = &*SHARED;
    let master = NodeSelector::Master(0).resolve(cluster).unwrap();
    let replica = NodeSelector::replica_of_master(0).resolve(cluster).unwrap();
    let links_before = replica_client_ids(&master);
    assert_eq!(links_before.len(), 1);
    let partial_before = stat(&master, "sync_partial_ok");

    let outcome = Fault::ClientKill {
        node: NodeSelector::Master(0),
        kind: ClientType::Replica,
    }
    .apply(cluster)
    .unwrap();

    eprintln!("{outcome}");
    assert_eq!(
        outcome.effect,
        Effect::ClientsKilled {
            kind: ClientType::Replica,
            count: 1
        }
    );

    await_true("the replica to reconnect with a partial resync", || {
        let links = replica_client_ids(&master);
        stat(&master, "sync_partial_ok") > partial_before
            && links.len() == 1
            && links.is_disjoint(&links_before)
            && link_up(&replica)
    });
}

#[test]
fn client_kill_type_master_on_a_replica_makes_it_reconnect() {
    let cluster = &*SHARED;
    let master = NodeSelector::Master(1).resolve(cluster).unwrap();
    let replica = NodeSelector::replica_of_master(1).resolve(cluster).unwrap();
    let links_before = replica_client_ids(&master);
    let partial_before = stat(&master, "sync_partial_ok");

    let outcome = Fault::ClientKill {
        node: NodeSelector::replica_of_master(1),
        kind: ClientType::Master,
    }
    .apply(cluster)
    .unwrap();

    eprintln!("{outcome}");
    assert_eq!(outcome.node, replica);
    assert_eq!(
        outcome.effect,
        Effect::ClientsKilled {
            kind: ClientType::Master,
            count: 1
        }
    );

    await_true("the replica to reconnect with a partial resync", || {
        let links = replica_client_ids(&master);
        stat(&master, "sync_partial_ok") > partial_before
            && links.len() == 1
            && links.is_disjoint(&links_before)
            && link_up(&replica)
    });
}

#[test]
fn force_full_resync_makes_the_replica_load_a_new_snapshot() {
    let cluster = &*SHARED;
    let master = NodeSelector::Master(2).resolve(cluster).unwrap();
    let replica = NodeSelector::replica_of_master(2).resolve(cluster).unwrap();
    // Only into shard 2: shard 0 must stay empty for the FLUSHALL test.
    let written = write_keys(cluster, "resync", 600, |m| m == &master);
    assert!(!written.is_empty());
    let backlog_before = config(&master, "repl-backlog-size");
    let full_before = stat(&master, "sync_full");

    let outcome = Fault::ForceFullResync {
        node: NodeSelector::Master(2),
        restore_backlog: true,
    }
    .apply(cluster)
    .unwrap();

    eprintln!("{outcome}");
    let Effect::FullResync {
        replicas,
        sync_full_before,
        sync_full_after,
        backlog_restored,
        ..
    } = &outcome.effect
    else {
        panic!("{outcome}");
    };
    assert_eq!(replicas, &vec![replica.clone()]);
    assert!(sync_full_after > sync_full_before, "{outcome}");

    assert!(stat(&master, "sync_full") > full_before);
    assert!(link_up(&replica));
    assert_eq!(config(&master, "repl-backlog-size"), backlog_before);
    assert_eq!(
        backlog_restored.map(|size| size.to_string()),
        Some(backlog_before)
    );
    await_true("the replica to hold as many keys as its master", || {
        dbsize(&master) == dbsize(&replica)
    });
    assert!(dbsize(&replica) > 0);
}

#[test]
fn force_full_resync_works_on_a_standalone_master() {
    let server = LocalServer::builder().replicas(1).start().unwrap();
    let master = server.master().addr();
    let replica = NodeSelector::replica_of_master(0).resolve(&server).unwrap();
    for n in 0..100 {
        let _: () = query(&master, redis::cmd("SET").arg(format!("k:{n}")).arg(n));
    }
    let full_before = stat(&master, "sync_full");

    let outcome = Fault::ForceFullResync {
        node: NodeSelector::Master(0),
        restore_backlog: false,
    }
    .apply(&server)
    .unwrap();

    eprintln!("{outcome}");
    assert!(
        matches!(
            outcome.effect,
            Effect::FullResync {
                backlog_restored: None,
                ..
            }
        ),
        "{outcome}"
    );
    assert!(stat(&master, "sync_full") > full_before);
    assert_eq!(
        config(&master, "repl-backlog-size"),
        MIN_BACKLOG_SIZE.to_string()
    );
    await_true("the replica to hold the master's 100 keys", || {
        link_up(&replica) && dbsize(&replica) == 100
    });
    assert_eq!(dbsize(&master), 100);
}

// ---- data faults ---------------------------------------------------------------------------

#[test]
fn flushall_empties_one_master_and_its_replica_only() {
    let cluster = &*SHARED;
    let master = NodeSelector::Master(0).resolve(cluster).unwrap();
    let replica = NodeSelector::replica_of_master(0).resolve(cluster).unwrap();
    let written = write_keys(cluster, "flushall", 300, |_| true);
    let on_master = written.iter().filter(|(_, m)| m == &master).count() as u64;
    assert!(on_master > 0);

    let outcome = Fault::FlushAll {
        node: NodeSelector::Master(0),
        asynchronous: false,
    }
    .apply(cluster)
    .unwrap();

    eprintln!("{outcome}");
    let Effect::Flushed {
        db: None,
        keys_before,
    } = outcome.effect
    else {
        panic!("{outcome}");
    };
    assert!(keys_before >= on_master, "{outcome}");

    assert_eq!(dbsize(&master), 0);
    await_true("the replica to replay the FLUSHALL", || {
        dbsize(&replica) == 0
    });
    for (key, owner) in written.iter().filter(|(_, m)| m != &master) {
        let exists: bool = query(owner, redis::cmd("EXISTS").arg(key));
        assert!(exists, "{key} on {owner} was flushed too");
    }
}

#[test]
fn flushdb_empties_one_database_and_flushall_async_the_rest() {
    let server = LocalServer::builder().start().unwrap();
    let addr = server.master().addr();
    let mut connection = conn::connect(&addr).unwrap();
    for db in [0, 1] {
        let _: () = redis::pipe()
            .cmd("SELECT")
            .arg(db)
            .ignore()
            .cmd("MSET")
            .arg("a")
            .arg(1)
            .arg("b")
            .arg(2)
            .arg("c")
            .arg(3)
            .ignore()
            .query(&mut connection)
            .unwrap();
    }
    let size_of = |db: u32| -> u64 {
        let mut connection = conn::connect(&addr).unwrap();
        let (size,): (u64,) = redis::pipe()
            .cmd("SELECT")
            .arg(db)
            .ignore()
            .cmd("DBSIZE")
            .query(&mut connection)
            .unwrap();
        size
    };

    let outcome = Fault::FlushDb {
        node: NodeSelector::Master(0),
        db: 1,
        asynchronous: true,
    }
    .apply(&server)
    .unwrap();

    eprintln!("{outcome}");
    assert_eq!(
        outcome.effect,
        Effect::Flushed {
            db: Some(1),
            keys_before: 3
        }
    );
    assert_eq!(size_of(1), 0);
    assert_eq!(size_of(0), 3);

    let outcome = Fault::FlushAll {
        node: NodeSelector::Master(0),
        asynchronous: true,
    }
    .apply(&server)
    .unwrap();

    eprintln!("{outcome}");
    assert_eq!(
        outcome.effect,
        Effect::Flushed {
            db: None,
            keys_before: 3
        }
    );
    assert_eq!(size_of(0), 0);
}

#[test]
fn maxmemory_with_allkeys_lru_evicts_when_exceeded() {
    let server = LocalServer::builder().start().unwrap();
    let addr = server.master().addr();
    let used: u64 = conn::info(&addr, "memory").unwrap()["used_memory"]
        .parse()
        .unwrap();
    let limit = used + (2 << 20);

    let outcome = Fault::SetMaxmemory {
        node: NodeSelector::Master(0),
        bytes: limit,
        policy: MaxmemoryPolicy::AllkeysLru,
    }
    .apply(&server)
    .unwrap();

    eprintln!("{outcome}");
    assert_eq!(
        outcome.effect,
        Effect::MaxmemorySet {
            previous_bytes: 0,
            previous_policy: MaxmemoryPolicy::Noeviction,
        }
    );
    assert_eq!(config(&addr, "maxmemory"), limit.to_string());
    assert_eq!(config(&addr, "maxmemory-policy"), "allkeys-lru");

    // 8 MB of values into a 2 MB allowance.
    let value = vec![b'v'; 4096];
    let mut connection = conn::connect(&addr).unwrap();
    for batch in 0..20 {
        let mut pipe = redis::pipe();
        for n in 0..100 {
            pipe.cmd("SET")
                .arg(format!("big:{batch}:{n}"))
                .arg(&value[..])
                .ignore();
        }
        let _: () = pipe.query(&mut connection).unwrap();
    }
    assert!(stat(&addr, "evicted_keys") > 0);
    assert!(dbsize(&addr) < 2000);
}

// ---- faults aimed at the wrong node --------------------------------------------------------

#[test]
fn faults_aimed_at_the_wrong_node_fail_without_acting() {
    let cluster = &*SHARED;
    let master = NodeSelector::Master(2).resolve(cluster).unwrap();

    let err = Fault::ClientKill {
        node: NodeSelector::Master(2),
        kind: ClientType::Master,
    }
    .apply(cluster)
    .unwrap_err();
    assert!(matches!(err, ChaosError::NothingKilled { .. }), "{err}");
    assert!(err.to_string().contains(&master.to_string()), "{err}");

    let err = Fault::Failover {
        node: NodeSelector::Master(2),
        mode: FailoverMode::Takeover,
    }
    .apply(cluster)
    .unwrap_err();
    assert!(
        matches!(
            err,
            ChaosError::WrongRole {
                expected: Role::Replica,
                actual: Role::Master,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(role(cluster, &master), Role::Master);

    let err = Fault::Kill {
        node: NodeSelector::Master(3),
    }
    .apply(cluster)
    .unwrap_err();
    assert_eq!(err.to_string(), "no node is master 3");

    let err = Fault::Kill {
        node: NodeSelector::MasterOfSlot(16384),
    }
    .apply(cluster)
    .unwrap_err();
    assert!(matches!(err, ChaosError::InvalidSlot(_)), "{err}");

    let err = Fault::Kill {
        node: NodeSelector::Addr(NodeAddr::localhost(1)),
    }
    .apply(cluster)
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 127.0.0.1:1 is not part of this deployment"
    );
    assert!(cluster.nodes().iter().all(|node| node.is_running()));

    let server = LocalServer::builder().start().unwrap();
    let err = Fault::KillMasterAwaitPromotion {
        node: NodeSelector::Master(0),
    }
    .apply(&server)
    .unwrap_err();
    assert!(matches!(err, ChaosError::NeedsCluster { .. }), "{err}");
    assert!(server.nodes()[0].is_running());
}
