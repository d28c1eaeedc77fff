//! Expiries from sources older than Redis 7.0, which replicate them relative to when they
//! ran: on the target they must end where the source has them, however late the stream is
//! applied (a paused target, a sync restarted after the writes), and `INCRBYFLOAT` before
//! 6.0 (replicated as a plain `SET`) must keep the key's expiry.

use std::time::Duration;

use ferry_fixtures::{Deployment, LocalServer, Node, ServerBinary};

use super::incr::{options, Running};
use ferry_engine::sync::SyncMode;

/// How far the target's expiry may be from the source's: both run on this machine, so
/// there is no clock skew; what remains is the network's delay and rounding.
const TOLERANCE_MS: i64 = 50;

/// The old sources to test, with a loud line for each build that is missing.
fn old_sources(names: &[&'static str]) -> Vec<(&'static str, ServerBinary)> {
    names
        .iter()
        .filter_map(|name| match ServerBinary::cached(name) {
            Ok(binary) => Some((*name, binary)),
            Err(e) => {
                println!("SKIPPED: source {name}: {e}");
                None
            }
        })
        .collect()
}

fn server(binary: Option<ServerBinary>) -> LocalServer {
    let mut builder = LocalServer::builder();
    if let Some(binary) = binary {
        builder = builder.binary(binary);
    }
    builder.start().unwrap()
}

fn node(deployment: &LocalServer) -> &dyn Node {
    deployment.master()
}

fn run(node: &dyn Node, line: &str) {
    let words: Vec<&str> = line.split(' ').collect();
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    let _: redis::Value = node.query(&cmd).unwrap_or_else(|e| panic!("{line}: {e}"));
}

/// The absolute expiry of `key` in Unix milliseconds, -1 without one, -2 without the key:
/// `PTTL` plus the server's clock read right after it (`PEXPIRETIME` needs 7.0).
fn expire_at(node: &dyn Node, key: impl redis::ToRedisArgs) -> i64 {
    let mut conn = node.connect().unwrap();
    let (pttl, time): (i64, Vec<String>) = redis::pipe()
        .cmd("PTTL")
        .arg(key)
        .cmd("TIME")
        .query(&mut conn)
        .unwrap();
    if pttl < 0 {
        return pttl;
    }
    let now_ms = time[0].parse::<i64>().unwrap() * 1000 + time[1].parse::<i64>().unwrap() / 1000;
    // An expiry ferry holds on the target until the source's stream reaches it stands for
    // its own (and once that has passed, the key is gone as far as the copy goes).
    match ferry_engine::sync::held_expiry(now_ms + pttl, now_ms) {
        Some(held) if held <= now_ms => -2,
        Some(held) => held,
        None => now_ms + pttl,
    }
}

/// Each relative form a source before 7.0 replicates as it was sent; returns the keys.
fn write_relative_forms(source: &dyn Node, version: &str) -> Vec<String> {
    for line in [
        "SET e1 v",
        "EXPIRE e1 1000",
        "SET e2 v",
        "PEXPIRE e2 1000000",
        "SETEX e3 1000 v",
        "PSETEX e4 1000000 v",
        "SET e5 v EX 1000",
        "SET e6 v PX 1000000 NX",
        // A script's writes come as their effects (asked for: 4.0 replicates scripts
        // verbatim by default), relative expiry included.
        "EVAL redis.replicate_commands();redis.call('SET',KEYS[1],'v');redis.call('EXPIRE',KEYS[1],1000) 1 e8",
    ] {
        run(source, line);
    }
    // RESTORE with a relative ttl (the payload is the source's own).
    let payload: Vec<u8> = source.query(redis::cmd("DUMP").arg("e1")).unwrap();
    let _: () = source
        .query(redis::cmd("RESTORE").arg("e7").arg(1_000_000).arg(payload))
        .unwrap();
    let mut keys: Vec<String> = (1..=8).map(|i| format!("e{i}")).collect();
    if version >= "redis-6.2" {
        // 6.2 replicates GETEX as PEXPIRE.
        run(source, "SET e9 v");
        run(source, "GETEX e9 EX 1000");
        keys.push("e9".into());
    }
    keys
}

/// Every key's expiry on the target is the source's, within the tolerance and the most the
/// stream's bytes took to reach the sync (`transit_ms`: a machine short of CPU delays them).
fn assert_same_expiries(
    source: &dyn Node,
    target: &dyn Node,
    keys: &[String],
    transit_ms: u64,
    what: &str,
) {
    for key in keys {
        let at_source = expire_at(source, key);
        let at_target = expire_at(target, key);
        assert!(at_source > 0, "{what}: {key} has no expiry on the source");
        assert!(
            (at_target - at_source).abs() <= TOLERANCE_MS + transit_ms as i64,
            "{what}: {key} expires at {at_target} on the target, {at_source} on the source ({} ms apart)",
            at_target - at_source
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_expiries_applied_late_keep_the_source_expiry() {
    let sources = old_sources(&[
        "redis-4.0.14",
        "redis-5.0.10",
        "redis-6.0.9",
        "redis-6.2.16",
    ]);
    assert!(!sources.is_empty(), "no old source build at all");
    for (name, binary) in sources {
        let source = server(Some(binary));
        let target = server(None);
        let (src, dst) = (node(&source), node(&target));
        let mut sync = Running::start_endpoints(
            &endpoint(&source),
            &endpoint(&target),
            options(SyncMode::FullIncr),
        )
        .await;
        sync.caught_up(Duration::from_secs(20)).await;

        // The target takes no write for three seconds: the stream waits in ferry's spool.
        run(dst, "CLIENT PAUSE 3000");
        let keys = write_relative_forms(src, name);
        tokio::time::sleep(Duration::from_secs(3)).await;
        sync.caught_up(Duration::from_secs(20)).await;
        assert_same_expiries(
            src,
            dst,
            &keys,
            sync.transit_ms(),
            &format!("{name}, target paused"),
        );

        // The sync stops (as abruptly as a crash), the source goes on, the sync resumes from
        // its checkpoints: the writes come from the source's backlog, seconds late.
        sync.stop().await;
        for key in &keys {
            run(src, &format!("DEL {key}"));
        }
        let keys = write_relative_forms(src, name);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut sync = Running::start_endpoints(
            &endpoint(&source),
            &endpoint(&target),
            options(SyncMode::FullIncr),
        )
        .await;
        sync.caught_up(Duration::from_secs(20)).await;
        assert_eq!(sync.full_resyncs(), 0, "{name}: resumed from the backlog");
        assert_same_expiries(
            src,
            dst,
            &keys,
            sync.transit_ms(),
            &format!("{name}, resumed"),
        );
        sync.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_increments_keep_the_expiry_and_plain_sets_clear_it() {
    let sources = old_sources(&["redis-4.0.14", "redis-5.0.10", "redis-6.0.9"]);
    assert!(!sources.is_empty(), "no old source build at all");
    for (name, binary) in sources {
        let source = server(Some(binary));
        let target = server(None);
        let (src, dst) = (node(&source), node(&target));
        let mut sync = Running::start_endpoints(
            &endpoint(&source),
            &endpoint(&target),
            options(SyncMode::FullIncr),
        )
        .await;
        sync.caught_up(Duration::from_secs(20)).await;
        let probes_before = pttl_calls(src);
        for line in [
            "SET f 1.5 EX 1000",
            "INCRBYFLOAT f 1",
            "SET g 1 EX 1000",
            "SET g 2.5",
            "HSET h a 1",
            "EXPIRE h 1000",
            "HINCRBYFLOAT h a 0.5",
            "SET w hello EX 1000",
            "SET w world",
        ] {
            run(src, line);
        }
        // A float increment inside a transaction too.
        let mut conn = src.connect().unwrap();
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("t")
            .arg("2")
            .arg("EX")
            .arg(1000)
            .cmd("INCRBYFLOAT")
            .arg("t")
            .arg("0.25")
            .cmd("INCR")
            .arg("counter")
            .query(&mut conn)
            .unwrap();
        sync.caught_up(Duration::from_secs(20)).await;
        // Reads of the source are limited to the plain SETs of numbers, before 6.0 only.
        let probes = pttl_calls(src) - probes_before;
        assert_same_expiries(
            src,
            dst,
            &["f".into(), "h".into(), "t".into()],
            sync.transit_ms(),
            name,
        );
        for key in ["g", "w"] {
            assert_eq!(expire_at(src, key), -1, "{name}: {key} on the source");
            assert_eq!(
                expire_at(dst, key),
                -1,
                "{name}: a plain SET clears {key}'s expiry"
            );
        }
        for key in ["f", "g", "t", "w"] {
            let get = |n: &dyn Node| -> String { n.query(redis::cmd("GET").arg(key)).unwrap() };
            assert_eq!(get(src), get(dst), "{name}: {key}");
        }
        let expected = if name < "redis-6.0" { 3 } else { 0 };
        assert_eq!(probes, expected, "{name}: PTTL calls on the source");
        sync.stop().await;
    }
}

/// How many `PTTL` commands the server ran.
fn pttl_calls(node: &dyn Node) -> u64 {
    let text: String = node.query(redis::cmd("INFO").arg("commandstats")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_pttl:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn endpoint(deployment: &LocalServer) -> ferry_engine::endpoint::Endpoint {
    ferry_engine::endpoint::Endpoint::parse(&deployment.nodes()[0].addr().url()).unwrap()
}

/// Every key of every master of `deployment` with its absolute expiry (-1: none).
fn expiries(deployment: &dyn Deployment) -> std::collections::BTreeMap<Vec<u8>, i64> {
    let mut all = std::collections::BTreeMap::new();
    for master in deployment.masters().unwrap() {
        let keys: Vec<Vec<u8>> = master.query(redis::cmd("KEYS").arg("*")).unwrap();
        for key in keys.into_iter().filter(|k| !k.starts_with(b"__ferry__")) {
            let at = expire_at(master, &key);
            if at != -2 {
                all.insert(key, at);
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_source_stopped_at_random_points_copies_exactly_with_its_expiries() {
    use ferry_fixtures::{Dataset, LocalCluster, Workload};
    let Some((name, binary)) = old_sources(&["redis-5.0.10"]).pop() else {
        return;
    };
    let source = LocalCluster::builder()
        .masters(2)
        .binary(binary)
        .start()
        .unwrap();
    let target = LocalCluster::builder().masters(3).start().unwrap();
    Dataset::new(41).scale(500).load(&source).unwrap();
    // EXPIRE and SET PX among the rest, on few keys so that they meet.
    let writes = Workload::new(42)
        .key_space(200)
        .rate(2_000)
        .spawn(&source)
        .unwrap();
    let endpoint = |d: &dyn Deployment| {
        ferry_engine::endpoint::Endpoint::parse(&d.nodes()[0].addr().url()).unwrap()
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    // How late the stream's bytes reached the syncs: a machine short of CPU delays them.
    let mut transit_ms = 0;
    for _ in 0..6 {
        let sync = Running::start_endpoints(
            &endpoint(&source),
            &endpoint(&target),
            options(SyncMode::FullIncr),
        )
        .await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(200 + rng % 900)).await;
        transit_ms = transit_ms.max(sync.transit_ms() as i64);
        sync.stop().await;
        // The writes go on while the sync is down: they come back from the backlog.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let report = tokio::task::block_in_place(|| writes.stop()).unwrap();
    assert!(report.ops > 1_000, "{report:?}");
    // The last writes reach the sync seconds after they ran.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut sync = Running::start_endpoints(
        &endpoint(&source),
        &endpoint(&target),
        options(SyncMode::FullIncr),
    )
    .await;
    sync.caught_up(Duration::from_secs(20)).await;
    // To the millisecond, not only the second the exact check allows, first (the workload's
    // expiries are seconds away).
    let (at_source, at_target) = (expiries(&source), expiries(&target));
    let soon = ferry_engine::replica::unix_ms() as i64 + 1_000;
    let mut timed = 0;
    for (key, &at) in &at_source {
        let Some(&got) = at_target.get(key) else {
            continue;
        };
        let key = String::from_utf8_lossy(key);
        if at == -1 {
            assert_eq!(got, -1, "{name}: {key} has an expiry only on the target");
            continue;
        }
        if at < soon {
            // The target may have expired it already, on time, while the lagging stream
            // still brought an APPEND that the source ran just before: it then holds a new
            // key without expiry until the source's expiry DEL arrives (the exact check
            // below waits for that).
            continue;
        }
        timed += 1;
        assert!(
            (got - at).abs() <= TOLERANCE_MS + transit_ms,
            "{name}: {key} expires at {got} on the target, {at} on the source (heartbeats took up to {transit_ms} ms to arrive)"
        );
    }
    assert!(
        timed > 10,
        "{name}: only {timed} keys with a distant expiry"
    );
    super::incr::assert_exact(&source, &target).await;
    sync.stop().await;
}
