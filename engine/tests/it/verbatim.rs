//! Sources that replicate scripts verbatim (Redis 4.0; 5.0 with `lua-replicate-commands no`)
//! followed exactly once into a standalone and a cluster target: `EVAL`, `SCRIPT LOAD` and
//! `EVALSHA`, a script that fails midway, scripts inside `MULTI`, a script that asks for
//! effects replication (`redis.replicate_commands()`), all with counters and lists
//! so that a script applied twice shows, through syncs stopped at random points (as abruptly
//! as a crash) and resumed with `+CONTINUE`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::endpoint::Endpoint;
use ferry_engine::sync::{Sync, SyncMode};
use ferry_fixtures::{Deployment, LocalCluster, LocalServer, ServerBinary};

use super::incr::{options, Running};

/// `INCR` a counter and `RPUSH` the call's number.
const PUSH: &str = "redis.call('INCR', KEYS[1]); redis.call('RPUSH', KEYS[2], ARGV[1]); return 1";
/// Loaded with `SCRIPT LOAD` and called with `EVALSHA`.
const LOADED: &str = "redis.call('INCRBY', KEYS[1], 2); redis.call('LPUSH', KEYS[2], ARGV[1]); redis.call('HINCRBY', KEYS[3], 'calls', 1); return 2";
/// Asks for effects replication: the stream carries its writes in a `MULTI`, not the script.
const EFFECTS: &str = "redis.replicate_commands(); redis.call('INCR', KEYS[1]); redis.call('RPUSH', KEYS[2], ARGV[1]); return 1";
/// Loaded with `SCRIPT LOAD` while the sync streams.
const LATER: &str = "return redis.call('RPUSH', KEYS[1], 'later', ARGV[1])";
/// Writes twice, then fails (`INCR` of a list): the source keeps the two writes and
/// replicates the script anyway.
const FAILS: &str = "redis.call('INCR', KEYS[1]); redis.call('RPUSH', KEYS[2], ARGV[1]); return redis.call('INCR', KEYS[2])";

fn endpoint(deployment: &dyn Deployment) -> Endpoint {
    Endpoint::parse(&deployment.nodes()[0].addr().url()).unwrap()
}

/// The source build, or `None` after a loud line saying it is missing.
fn binary(name: &str) -> Option<ServerBinary> {
    match ServerBinary::cached(name) {
        Ok(binary) => Some(binary),
        Err(e) => {
            println!("SKIPPED: a verbatim-script test needs {name}: {e}");
            None
        }
    }
}

/// Script calls number `from..to` on the source: keys in six hash tags, so that a cluster
/// target spreads them over its masters.
fn play(conn: &mut redis::Connection, loaded: &str, from: u64, to: u64) {
    for i in from..to {
        let t = i % 6;
        let (n, l, m, h) = (
            format!("{{t{t}}}n"),
            format!("{{t{t}}}l"),
            format!("{{t{t}}}m"),
            format!("{{t{t}}}h"),
        );
        let eval = |script: &str, keys: &[&str]| {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(script).arg(keys.len()).arg(keys).arg(i);
            cmd
        };
        let evalsha = |sha: &str, keys: &[&str]| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha).arg(keys.len()).arg(keys).arg(i);
            cmd
        };
        match i % 6 {
            0 => {
                let _: i64 = eval(PUSH, &[&n, &l]).query(conn).unwrap();
            }
            1 => {
                let _: i64 = evalsha(loaded, &[&n, &l, &h]).query(conn).unwrap();
            }
            2 => {
                let failed: redis::RedisResult<i64> = eval(FAILS, &[&m, &l]).query(conn);
                assert!(failed.is_err(), "the script fails midway");
            }
            3 => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.add_command(eval(PUSH, &[&m, &l]))
                    .cmd("INCR")
                    .arg(&m)
                    .add_command(evalsha(loaded, &[&n, &l, &h]));
                let _: redis::Value = pipe.query(conn).unwrap();
            }
            4 => {
                let _: i64 = eval(EFFECTS, &[&m, &l]).query(conn).unwrap();
            }
            _ => {
                let push = sha1(PUSH.as_bytes());
                let _: i64 = evalsha(&push, &[&n, &l]).query(conn).unwrap();
            }
        }
    }
}

/// SHA-1 as Redis names scripts (the test does not use the engine's).
fn sha1(data: &[u8]) -> String {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    let mut m = data.to_vec();
    m.push(0x80);
    while m.len() % 64 != 56 {
        m.push(0);
    }
    m.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in m.chunks_exact(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i / 20 {
                0 => ((b & c) | (!b & d), 0x5a82_7999u32),
                1 => (b ^ c ^ d, 0x6ed9_eba1),
                2 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// Every key but ferry's with its type and value as text (Redis 4.0 has no `DEBUG
/// DIGEST-VALUE`, which the fixtures' comparison uses).
fn contents(deployment: &dyn Deployment) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for master in deployment.masters().unwrap() {
        let mut conn = master.connect().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        for key in keys.into_iter().filter(|k| !k.starts_with("__ferry__:")) {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
            let value = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).query::<String>(&mut conn),
                "list" => redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query::<Vec<String>>(&mut conn)
                    .map(|v| v.join(",")),
                "hash" => redis::cmd("HGETALL")
                    .arg(&key)
                    .query::<BTreeMap<String, String>>(&mut conn)
                    .map(|v| format!("{v:?}")),
                other => Ok(format!("unexpected type {other}")),
            }
            .unwrap();
            all.insert(key, format!("{kind} {value}"));
        }
    }
    all
}

/// Waits until the target holds what the source holds.
async fn assert_same(source: &dyn Deployment, target: &dyn Deployment) {
    let mut last = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..100 {
        last = tokio::task::block_in_place(|| (contents(source), contents(target)));
        if last.0 == last.1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (want, got) = last;
    let differing: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: source {v}, target {:?}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k}: only on the target")),
        )
        .take(10)
        .collect();
    panic!("the target differs: {differing:#?}");
}

/// The verbatim-script workload through stopped and resumed syncs into both targets.
/// The verbatim-script workload from `source_build` (with `config`) into a standalone and a
/// cluster target of `target_build` (the Redis on the PATH when `None`).
async fn scripts_are_applied_exactly_once(
    source_build: &str,
    config: &[&str],
    target_build: Option<&str>,
) {
    let Some(binary) = binary(source_build) else {
        return;
    };
    let (mut standalone, mut cluster) = (LocalServer::builder(), LocalCluster::builder());
    if let Some(build) = target_build {
        let Some(target) = self::binary(build) else {
            return;
        };
        standalone = standalone.binary(target.clone());
        cluster = cluster.binary(target);
    }
    let mut builder = LocalServer::builder()
        .binary(binary)
        .config("appendonly yes");
    for line in config {
        builder = builder.config(*line);
    }
    let source = builder.start().unwrap();
    let standalone = standalone.start().unwrap();
    let cluster = cluster.masters(2).start().unwrap();
    let master = source.master();
    let mut conn = (master as &dyn ferry_fixtures::Node).connect().unwrap();
    let loaded: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(LOADED)
        .query(&mut conn)
        .unwrap();
    assert_eq!(loaded, sha1(LOADED.as_bytes()));
    // Some calls before the sync: their results arrive in the snapshot, the loaded script
    // in its `lua` aux field.
    play(&mut conn, &loaded, 0, 40);

    let targets: [&dyn Deployment; 2] = [&standalone, &cluster];
    let start = || async {
        let mut running = Vec::new();
        for target in targets {
            running.push(
                Running::start_endpoints(
                    &endpoint(&source),
                    &endpoint(target),
                    options(SyncMode::FullIncr),
                )
                .await,
            );
        }
        running
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let loaded = loaded.clone();
        let addr = (master as &dyn ferry_fixtures::Node).addr();
        std::thread::spawn(move || {
            let mut conn = ferry_fixtures::conn::connect(&addr).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let later: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(LATER)
                .query(&mut conn)
                .unwrap();
            for i in 0..3 {
                let _: i64 = redis::cmd("EVALSHA")
                    .arg(&later)
                    .arg(1)
                    .arg("{t2}later")
                    .arg(i)
                    .query(&mut conn)
                    .unwrap();
            }
            let mut i = 40;
            while !stop.load(Ordering::Relaxed) {
                play(&mut conn, &loaded, i, i + 10);
                i += 10;
                std::thread::sleep(Duration::from_millis(5));
            }
            i
        })
    };
    // Stopped at seeded points while scripts stream in; every restart resumes with
    // +CONTINUE from the checkpoints.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..4 {
        let running = start().await;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        tokio::time::sleep(Duration::from_millis(400 + state % 900)).await;
        for sync in running {
            sync.stop().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let calls = writer.join().unwrap();
    assert!(calls > 200, "{calls} script calls");
    // While no sync runs: the master sends these by sha only (its replicas knew the
    // script), to a sync that starts with no body in memory.
    play(&mut conn, &loaded, calls, calls + 1);
    for i in 0..20 {
        let _: i64 = redis::cmd("EVALSHA")
            .arg(&loaded)
            .arg(3)
            .arg("{t1}n")
            .arg("{t1}l")
            .arg("{t1}h")
            .arg(format!("after-{i}"))
            .query(&mut conn)
            .unwrap();
    }
    for i in 0..5 {
        let _: i64 = redis::cmd("EVALSHA")
            .arg(sha1(LATER.as_bytes()))
            .arg(1)
            .arg("{t2}later")
            .arg(format!("after-{i}"))
            .query(&mut conn)
            .unwrap();
    }
    // Without the body in the target's store, the sync cannot know what those calls do: it
    // stops and names the script.
    let store = ferry_engine::sync::scripts_key(ferry_engine::route::Slot::new(0).unwrap());
    let stored = &standalone.nodes()[0];
    let body: String = stored
        .query(redis::cmd("HGET").arg(store.as_ref()).arg(&loaded))
        .unwrap();
    assert_eq!(body, LOADED);
    let _: () = stored
        .query(redis::cmd("HDEL").arg(store.as_ref()).arg(&loaded))
        .unwrap();
    let sync = Sync::prepare(
        &endpoint(&source),
        &endpoint(&standalone),
        options(SyncMode::FullIncr),
    )
    .await
    .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), sync.run())
        .await
        .expect("the sync stops on a script it has no body for")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&loaded) && error.contains("has not seen its body"),
        "{error}"
    );
    let _: () = stored
        .query(
            redis::cmd("HSET")
                .arg(store.as_ref())
                .arg(&loaded)
                .arg(LOADED),
        )
        .unwrap();
    let mut running = start().await;
    for sync in &mut running {
        sync.caught_up(Duration::from_secs(30)).await;
    }
    for target in targets {
        assert_same(&source, target).await;
    }
    let resumes: u64 = running.iter().map(|r| r.resumes()).sum();
    let full: u64 = running.iter().map(|r| r.full_resyncs()).sum();
    assert_eq!((resumes, full), (2, 0), "the last run resumes both syncs");
    for sync in running {
        sync.stop().await;
    }
    // The counters moved once per call: the first call of each kind shows it.
    let value: i64 = redis::cmd("GET").arg("{t0}n").query(&mut conn).unwrap();
    assert!(value > 10, "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_4_scripts_are_applied_exactly_once_through_restarts() {
    scripts_are_applied_exactly_once("redis-4.0.14", &[], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_4_scripts_are_applied_exactly_once_into_valkey_9() {
    scripts_are_applied_exactly_once("redis-4.0.14", &[], Some("valkey-9.1.2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_5_verbatim_scripts_are_applied_exactly_once_through_restarts() {
    scripts_are_applied_exactly_once("redis-5.0.10", &["lua-replicate-commands no"], None).await;
}

/// Runs a sync from `source` to `target` until it stops; returns its error.
async fn stops_with(source: &dyn Deployment, target: &dyn Deployment) -> String {
    let sync = Sync::prepare(
        &endpoint(source),
        &endpoint(target),
        options(SyncMode::FullIncr),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(20), sync.run())
        .await
        .expect("the sync stops")
        .unwrap_err()
        .to_string()
}

/// Starts a Redis 4.0 source with a sync into `target` running and caught up.
async fn source_followed_by(target: &dyn Deployment) -> Option<(LocalServer, Running)> {
    let source = LocalServer::builder()
        .binary(binary("redis-4.0.14")?)
        .start()
        .unwrap();
    let _: () = source.nodes()[0]
        .query(redis::cmd("SET").arg("before").arg(1))
        .unwrap();
    let mut sync = Running::start_endpoints(
        &endpoint(&source),
        &endpoint(target),
        options(SyncMode::FullIncr),
    )
    .await;
    sync.caught_up(Duration::from_secs(20)).await;
    Some((source, sync))
}

fn eval(source: &LocalServer, script: &str, keys: &[&str]) {
    let _: redis::Value = source.nodes()[0]
        .query(redis::cmd("EVAL").arg(script).arg(keys.len()).arg(keys))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_no_one_target_master_can_run_whole_stop_the_sync_naming_them() {
    // Keys `b` and `a` are served by different masters of a two-master cluster.
    let cross = "redis.call('INCR', KEYS[1]); return redis.call('INCR', KEYS[2])";
    let keyless = "return redis.call('INCR', 'b')";
    let cases = [
        (cross, &["b", "a"][..], "different target masters"),
        (keyless, &[][..], "declares no keys"),
    ];
    for (script, keys, reason) in cases {
        let target = LocalCluster::builder().masters(2).start().unwrap();
        let Some((source, sync)) = source_followed_by(&target).await else {
            return;
        };
        sync.stop().await;
        eval(&source, script, keys);
        let error = stops_with(&source, &target).await;
        assert!(
            error.contains(&sha1(script.as_bytes()))
                && error.contains(reason)
                && error.contains("redis.replicate_commands()"),
            "{error}"
        );
    }

    // A keyless script is exact on a target with one master.
    let standalone = LocalServer::builder().start().unwrap();
    let Some((source, mut sync)) = source_followed_by(&standalone).await else {
        return;
    };
    eval(&source, keyless, &[]);
    eval(&source, keyless, &[]);
    sync.caught_up(Duration::from_secs(20)).await;
    assert_same(&source, &standalone).await;
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_writes_a_key_of_another_target_master_stops_and_the_next_run_reloads() {
    let target = LocalCluster::builder().masters(2).start().unwrap();
    let Some((source, sync)) = source_followed_by(&target).await else {
        return;
    };
    // Declares `b`, also writes `a`, which the other target master serves.
    let undeclared = "redis.call('INCR', KEYS[1]); return redis.call('INCR', 'a')";
    eval(&source, undeclared, &["b"]);
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if sync.finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "the sync stops");
    let error = sync.error().await;
    assert!(
        error.contains(&sha1(undeclared.as_bytes()))
            && error.contains("must be served by")
            && error.contains("loads the shard again"),
        "{error}"
    );
    // The wrapper removed that master's checkpoint: the next run takes a new snapshot.
    let mut sync = Running::start_endpoints(
        &endpoint(&source),
        &endpoint(&target),
        options(SyncMode::FullIncr),
    )
    .await;
    sync.caught_up(Duration::from_secs(20)).await;
    assert_eq!(sync.full_resyncs(), 1);
    assert_same(&source, &target).await;
    sync.stop().await;
}
