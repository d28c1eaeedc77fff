//! Full sync benchmark, every figure measured in one run on the same clusters:
//! - ferry: `ferry sync --mode full` (release binary) from a 3-master source into a 3-master
//!   target: wall time, CPU seconds and peak RSS of the process;
//! - write limit: the same keys as pre-computed `RESTORE` commands piped into the target
//!   masters in parallel with `redis-cli --pipe` (the fastest the target can take them);
//! - native replication: a fresh replica of each source master, all at once, until every
//!   link is up (what Redis itself needs to copy the shards);
//! - where the cores went during each sync: the CPU of the source masters (with the forks
//!   that make their snapshots), of the target masters and of ferry, from `INFO cpu` and
//!   `wait4`, against the wall time times the number of cores.
//!
//! Usage: bench_full_sync [KEYS] [RUNS]   (default 1000000 keys, 1 run; run by
//! ci/bench-full-sync.sh). With RUNS, ferry copies the source RUNS times into the emptied
//! target and the medians are printed; with FERRY_BASELINE_BIN set, that build of ferry also
//! copies it in every run, just before this one.

mod measure;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_fixtures::{conn, Dataset, Deployment, LocalCluster, LocalServer, Node};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let keys = measure::arg(1, 1_000_000)?;
    let runs = measure::arg(2, 1)?.max(1);
    let ferry = measure::ferry_bin();
    let baseline_bin = std::env::var("FERRY_BASELINE_BIN").ok();
    let source = LocalCluster::builder().masters(3).start()?;
    let target = LocalCluster::builder().masters(3).start()?;
    let loaded = Dataset::new(1).scale(keys).load(&source)?;
    println!("dataset: {loaded}");

    // ferry, measured as a child process, into an emptied target; and the CPU the source
    // servers (their snapshots' forks included) and the target servers spent meanwhile.
    let mut split = Vec::new();
    let mut sync = |bin: &str| -> Result<(measure::Measured, u64), Error> {
        let command = measure::full_sync(bin, &source, &target)?;
        let before = (
            measure::servers_cpu(&[&source])?,
            measure::servers_cpu(&[&target])?,
        );
        let measured = measure::run(command)?;
        // A master reaps its fork within a cron tick (100 ms).
        std::thread::sleep(Duration::from_millis(300));
        let sources = measure::servers_cpu(&[&source])? - before.0;
        let targets = measure::servers_cpu(&[&target])? - before.1;
        split.push((sources, targets, measured.cpu, measured.wall));
        Ok((measured, total_keys(&target)?))
    };
    let mut runs_of = Vec::new();
    let mut baseline = Vec::new();
    for n in 0..runs {
        if let Some(bin) = &baseline_bin {
            let (m, copied) = sync(bin)?;
            println!(
                "run {}: baseline build: {copied} keys in {:.2} s wall, {:.2} CPU s, peak RSS {:.0} MB, {:.0} context switches",
                n + 1,
                m.wall,
                m.cpu,
                m.peak_rss_mb,
                m.switches
            );
            baseline.push(m);
        }
        let (m, copied) = sync(&ferry)?;
        if runs > 1 {
            println!(
                "run {}: {copied} keys in {:.2} s wall, {:.2} CPU s, peak RSS {:.0} MB, {:.0} context switches",
                n + 1,
                m.wall,
                m.cpu,
                m.peak_rss_mb,
                m.switches
            );
        }
        runs_of.push((m, copied));
    }
    let copied = runs_of[0].1;
    let ferry_run = measure::typical(runs_of.iter().map(|(m, _)| m));

    // The write limit: DUMP every key, RESTORE them through redis-cli --pipe.
    let pipes = restore_commands(&source, &target)?;
    for master in target.masters()? {
        let _: () = master.query(&redis::cmd("FLUSHALL"))?;
    }
    let started = Instant::now();
    let children: Vec<_> = pipes
        .into_iter()
        .map(|(addr, input)| {
            let mut child = Command::new("redis-cli")
                .args(["-h", &addr.host, "-p", &addr.port.to_string(), "--pipe"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()?;
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            let writer = std::thread::spawn(move || stdin.write_all(&input));
            Ok::<_, Error>((child, writer))
        })
        .collect::<Result<_, _>>()?;
    for (mut child, writer) in children {
        writer.join().map_err(|_| "writer panicked")??;
        child.wait()?;
    }
    let limit_wall = started.elapsed();
    let restored = total_keys(&target)?;

    let native = native_replication(&source)?;

    let per_million = |cpu: f64| cpu / (copied as f64 / 1e6);
    let of_runs = if runs > 1 {
        format!(" (median of {runs}, largest RSS)")
    } else {
        String::new()
    };
    println!(
        "ferry full sync{of_runs}: {copied} keys in {:.2} s wall, {:.2} CPU s ({:.2} per million keys), peak RSS {:.0} MB, {:.0} context switches",
        ferry_run.wall, ferry_run.cpu, per_million(ferry_run.cpu), ferry_run.peak_rss_mb, ferry_run.switches
    );
    if !baseline.is_empty() {
        let b = measure::typical(&baseline);
        println!(
            "baseline build{of_runs}: {:.2} s wall, {:.2} CPU s ({:.2} per million keys), peak RSS {:.0} MB, {:.0} context switches; CPU ratio {:.2}",
            b.wall,
            b.cpu,
            per_million(b.cpu),
            b.peak_rss_mb,
            b.switches,
            ferry_run.cpu / b.cpu
        );
    }
    // Every sync of the runs (this build's and the baseline's): how busy the cores were.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let sources = measure::median(split.iter().map(|s| s.0).collect());
    let targets = measure::median(split.iter().map(|s| s.1).collect());
    let floor = measure::median(split.iter().map(|s| (s.0 + s.1 + s.2) / cores).collect());
    let busy = measure::median(
        split
            .iter()
            .map(|s| (s.0 + s.1 + s.2) / cores / s.3)
            .collect(),
    );
    println!(
        "CPU during the syncs (medians of {}): source masters {sources:.2} s (their snapshots' forks included), target masters {targets:.2} s; all three parties' CPU over {cores:.0} cores: {floor:.2} s, {:.0}% of the wall time",
        split.len(),
        busy * 100.0
    );
    println!(
        "write limit (RESTORE via redis-cli --pipe, 3 masters in parallel): {restored} keys in {:.2} s",
        limit_wall.as_secs_f64()
    );
    println!(
        "native replication of the 3 shards: {:.2} s",
        native.as_secs_f64()
    );
    println!(
        "ratios: ferry / write limit {:.2}, ferry / native replication {:.2}",
        ferry_run.wall / limit_wall.as_secs_f64(),
        ferry_run.wall / native.as_secs_f64()
    );
    Ok(())
}

fn total_keys(deployment: &dyn Deployment) -> Result<u64, Error> {
    let mut total = 0;
    for master in deployment.masters()? {
        total += master.query::<u64>(&redis::cmd("DBSIZE"))?;
    }
    Ok(total)
}

/// `RESTORE key ttl payload REPLACE ABSTTL` for every source key, as RESP, per target master.
fn restore_commands(
    source: &LocalCluster,
    target: &LocalCluster,
) -> Result<Vec<(ferry_fixtures::NodeAddr, Vec<u8>)>, Error> {
    let topology = target.topology()?;
    let mut out: Vec<(ferry_fixtures::NodeAddr, Vec<u8>)> = topology
        .masters()
        .into_iter()
        .map(|a| (a, Vec::new()))
        .collect();
    for master in source.masters()? {
        let mut conn = master.connect()?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("DUMP").arg(key);
                pipe.cmd("PEXPIRETIME").arg(key);
            }
            let replies: Vec<redis::Value> = pipe.query(&mut conn)?;
            for (key, pair) in keys.iter().zip(replies.chunks(2)) {
                let payload: Vec<u8> = redis::from_redis_value(pair[0].clone())?;
                let expire: i64 = redis::from_redis_value(pair[1].clone())?;
                let slot = ferry_engine::route::Slot::of_key(key);
                let owner = &topology
                    .shard_for_slot(slot)
                    .ok_or("uncovered slot")?
                    .master;
                let buf = &mut out
                    .iter_mut()
                    .find(|(a, _)| a == owner)
                    .ok_or("unknown master")?
                    .1;
                let ttl = expire.max(0).to_string();
                let args: [&[u8]; 6] = [
                    b"RESTORE",
                    key,
                    ttl.as_bytes(),
                    &payload,
                    b"REPLACE",
                    b"ABSTTL",
                ];
                write!(buf, "*{}\r\n", args.len())?;
                for arg in args {
                    write!(buf, "${}\r\n", arg.len())?;
                    buf.extend_from_slice(arg);
                    buf.extend_from_slice(b"\r\n");
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(out)
}

/// A fresh standalone replica per source master, all started at once; the time until every
/// link is up and loaded.
fn native_replication(source: &LocalCluster) -> Result<Duration, Error> {
    let masters: Vec<ferry_fixtures::NodeAddr> =
        source.masters()?.iter().map(|m| m.addr()).collect();
    let replicas: Vec<LocalServer> = masters
        .iter()
        .map(|_| LocalServer::builder().start())
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for (replica, master) in replicas.iter().zip(&masters) {
        let node: &dyn Node = replica.master();
        let _: () = node.query(redis::cmd("REPLICAOF").arg(&master.host).arg(master.port))?;
    }
    conn::poll("native replicas to load", Duration::from_secs(600), || {
        replicas
            .iter()
            .all(|r| {
                conn::info(&r.master().addr(), "replication")
                    .is_ok_and(|i| i.get("master_link_status").is_some_and(|s| s == "up"))
            })
            .then_some(())
    })?;
    Ok(started.elapsed())
}
