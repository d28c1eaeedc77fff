//! Incremental sync benchmark, every figure measured in one run on the same clusters
//! (3-master source, 3-master target), with mixed writes (SET PX, INCR, RPUSH, HINCRBY):
//! - direct: the writes sent straight to the target as fast as it takes them (the baseline);
//! - for `--apply exactly-once` and `--apply at-least-once` (release `ferry sync` processes):
//!   - sustained: the same unthrottled writes into the source; ferry's apply rate is the ops
//!     divided by the time until the target caught up, compared with the direct rate;
//!   - lag at fixed rates: a probe writes a key into the source every 20 ms and times its
//!     arrival on the target; p50 and p99.
//!
//! Usage: bench_incremental [SECONDS] [RATES...]   (default 5 s; 10000 50000 ops/s)

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_engine::route::Slot;
use ferry_fixtures::data::OpKind;
use ferry_fixtures::{Deployment, LocalCluster, NodeAddr, Workload};

type Error = Box<dyn std::error::Error + Send + Sync>;

const MIX: [OpKind; 4] = [OpKind::SetPx, OpKind::Incr, OpKind::RPush, OpKind::HIncrBy];

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let mut rates: Vec<u32> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    if rates.is_empty() {
        rates = vec![10_000, 50_000];
    }
    let ferry = std::env::var("FERRY_BIN").unwrap_or_else(|_| "target/release/ferry".into());
    let source = LocalCluster::builder().masters(3).start()?;
    let target = LocalCluster::builder().masters(3).start()?;
    let writes = |seed: u64| {
        Workload::new(seed)
            .only(&MIX)
            .key_space(10_000)
            .duration(Duration::from_secs(seconds))
    };

    let direct = writes(1).unthrottled().run(&target)?;
    let direct_rate = direct.ops as f64 / seconds as f64;
    println!(
        "direct into the target: {} ops in {seconds} s = {direct_rate:.0} ops/s",
        direct.ops
    );
    flush(&target)?;

    for mode in ["exactly-once", "at-least-once"] {
        let port = free_port()?;
        let mut child = Command::new(&ferry)
            .args(["sync", "--skip-precheck", "--apply", mode, "--source"])
            .arg(source.nodes()[0].addr().url())
            .arg("--target")
            .arg(target.nodes()[0].addr().url())
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let result = measure_mode(
            &source,
            &target,
            port,
            seconds,
            &rates,
            direct_rate,
            mode,
            &writes,
        );
        child.kill()?;
        child.wait()?;
        result?;
        flush(&target)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure_mode(
    source: &LocalCluster,
    target: &LocalCluster,
    port: u16,
    seconds: u64,
    rates: &[u32],
    direct_rate: f64,
    mode: &str,
    writes: &dyn Fn(u64) -> Workload,
) -> Result<(), Error> {
    await_caught_up(port, Duration::from_secs(60))?;
    let started = Instant::now();
    let sent = writes(2).unthrottled().run(source)?;
    await_applied(source, port, Duration::from_secs(300))?;
    let rate = sent.ops as f64 / started.elapsed().as_secs_f64();
    println!(
        "{mode}: sustained {rate:.0} ops/s ({} ops, source at {:.0} ops/s) = {:.2}x direct",
        sent.ops,
        sent.ops as f64 / seconds as f64,
        rate / direct_rate
    );
    for &ops in rates {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = {
            let (stop, source, target) = (
                stop.clone(),
                masters_by_slot(source)?,
                masters_by_slot(target)?,
            );
            std::thread::spawn(move || probe_lag(&source, &target, &stop))
        };
        let load = writes(3).rate(ops).run(source)?;
        stop.store(true, Ordering::Relaxed);
        let mut lags = probe.join().map_err(|_| "probe panicked")??;
        lags.sort_unstable();
        let pick = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
        println!(
            "{mode}: at {:.0} ops/s lag p50 {:.1} ms, p99 {:.1} ms ({} probes)",
            load.ops as f64 / seconds as f64,
            pick(0.5).as_secs_f64() * 1e3,
            pick(0.99).as_secs_f64() * 1e3,
            lags.len()
        );
        await_caught_up(port, Duration::from_secs(300))?;
    }
    Ok(())
}

/// A function from slot to the master serving it.
fn masters_by_slot(
    deployment: &LocalCluster,
) -> Result<Vec<(Vec<ferry_engine::route::SlotRange>, NodeAddr)>, Error> {
    let topology = deployment.topology()?;
    Ok(topology
        .shards
        .iter()
        .map(|s| (s.slots.clone(), s.master.clone()))
        .collect())
}

fn owner(masters: &[(Vec<ferry_engine::route::SlotRange>, NodeAddr)], key: &str) -> NodeAddr {
    let slot = Slot::of_key(key.as_bytes());
    masters
        .iter()
        .find(|(slots, _)| slots.iter().any(|r| r.contains(slot)))
        .map(|(_, addr)| addr.clone())
        .expect("every slot is served")
}

/// Every 20 ms: a key written into the source, timed until the target has it.
fn probe_lag(
    source: &[(Vec<ferry_engine::route::SlotRange>, NodeAddr)],
    target: &[(Vec<ferry_engine::route::SlotRange>, NodeAddr)],
    stop: &AtomicBool,
) -> Result<Vec<Duration>, Error> {
    let mut lags = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("probe:{n}");
        let mut write = ferry_fixtures::conn::connect(&owner(source, &key))?;
        let mut read = ferry_fixtures::conn::connect(&owner(target, &key))?;
        let sent = Instant::now();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("PX")
            .arg(60_000)
            .query(&mut write)?;
        loop {
            let found: bool = redis::cmd("EXISTS").arg(&key).query(&mut read)?;
            if found {
                lags.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                return Err(format!("{key} never arrived").into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(lags)
}

/// Polls ferry's `/status` until every shard has applied the offset its source master has
/// now (read here, not from ferry's once-a-second poll, so the time is exact).
fn await_applied(source: &LocalCluster, port: u16, limit: Duration) -> Result<(), Error> {
    let mut wanted = Vec::new();
    for master in source.masters()? {
        let info = ferry_fixtures::conn::info(&master.addr(), "replication")?;
        let offset: u64 = info["master_repl_offset"].parse()?;
        wanted.push((master.addr().to_string(), offset));
    }
    let deadline = Instant::now() + limit;
    loop {
        let body = status(port)?;
        let json = body.split("\r\n\r\n").nth(1).unwrap_or_default();
        let status: serde_json::Value = serde_json::from_str(json)?;
        let done = wanted.iter().all(|(shard, offset)| {
            status["shards"].as_array().into_iter().flatten().any(|s| {
                s["shard"].as_str() == Some(shard.as_str())
                    && s["applied_offset"].as_u64().unwrap_or(0) >= *offset
            })
        });
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not applied after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls ferry's `/status` until every shard is caught up.
fn await_caught_up(port: u16, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        if status(port).is_ok_and(|s| s.contains("],\"caught_up\":true")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not caught up after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(port: u16) -> Result<String, Error> {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET /status HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

fn flush(deployment: &LocalCluster) -> Result<(), Error> {
    for master in deployment.masters()? {
        let _: () = master.query(&redis::cmd("FLUSHALL"))?;
    }
    Ok(())
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
