//! Verifier benchmark, measured in one run: `ferry verify` (full mode, release binary) over a
//! 3-master source and an identical 3-master target: wall time, keys/s, CPU seconds, peak
//! RSS, and the CPU seconds the six servers spent meanwhile (`INFO cpu`); baseline: listing
//! every key of both clusters with `redis-cli --scan` (no compare). With RUNS above 1,
//! verify and listing alternate RUNS times over the same clusters and the medians are
//! printed (a shared machine makes single runs noisy; CPU seconds vary far less).
//!
//! Usage: bench_verify [KEYS] [RUNS]   (default 1000000 keys, 1 run; run by
//! ci/bench-verify.sh). With FERRY_BASELINE_BIN set, that build of ferry also verifies the
//! same clusters in every run, just before this one, and its medians are printed.

mod measure;

use std::process::Command;
use std::time::Instant;

use ferry_fixtures::{conn, Dataset, Deployment, LocalCluster};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let keys = measure::arg(1, 1_000_000)?;
    let runs = measure::arg(2, 1)?.max(1);
    let ferry = measure::ferry_bin();
    let source = LocalCluster::builder().masters(3).start()?;
    let target = LocalCluster::builder().masters(3).start()?;
    // The same seed and base time on both sides: identical data, expiries included.
    let dataset = Dataset::new(1).scale(keys).base_time_ms(4_000_000_000_000);
    dataset.load(&source)?;
    dataset.load(&target)?;

    // CPU seconds every server of both clusters has used so far.
    let servers_cpu = || measure::servers_cpu(&[&source, &target]);
    let mut verified = Vec::new();
    let mut servers = Vec::new();
    let mut listings = Vec::new();
    let mut listed = 0usize;
    let mut commands = Vec::new();
    // Another build of ferry (FERRY_BASELINE_BIN) verified the same clusters in each run.
    let baseline_bin = std::env::var("FERRY_BASELINE_BIN").ok();
    let mut baseline = Vec::new();
    let verify = |bin: &str| -> Result<(measure::Measured, f64), Error> {
        let mut verify = Command::new(bin);
        verify
            .args(["verify", "--format", "json", "--source"])
            .arg(source.nodes()[0].addr().url())
            .arg("--target")
            .arg(target.nodes()[0].addr().url());
        for node in source.nodes().into_iter().chain(target.nodes()) {
            conn::query::<()>(&node.addr(), redis::cmd("CONFIG").arg("RESETSTAT"))?;
        }
        let before = servers_cpu()?;
        let measured = measure::run(verify)?;
        Ok((measured, servers_cpu()? - before))
    };
    for _ in 0..runs {
        if let Some(bin) = &baseline_bin {
            baseline.push(verify(bin)?);
        }
        let (measured, server_cpu) = verify(&ferry)?;
        verified.push(measured);
        servers.push(server_cpu);
        commands = command_stats(&source, &target)?;

        let started = Instant::now();
        listed = 0;
        for deployment in [&source, &target] {
            for master in deployment.masters()? {
                let addr = master.addr();
                let out = Command::new("redis-cli")
                    .args(["-h", &addr.host, "-p", &addr.port.to_string(), "--scan"])
                    .output()?;
                listed += out
                    .stdout
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count();
            }
        }
        listings.push(started.elapsed().as_secs_f64());
    }
    if runs > 1 {
        for (n, ((m, listing), servers)) in verified.iter().zip(&listings).zip(&servers).enumerate()
        {
            println!(
                "run {}: verify {:.2} s ({:.0} keys/s), {:.2} CPU s, servers {servers:.2} CPU s; \
                 listing {listing:.2} s",
                n + 1,
                m.wall,
                keys as f64 / m.wall,
                m.cpu
            );
        }
    }
    let median = measure::median;
    let measure::Measured {
        wall,
        cpu,
        peak_rss_mb: rss,
        ..
    } = measure::typical(&verified);
    let servers = median(servers);
    let listing = median(listings);
    let of = if runs > 1 {
        format!(" (median of {runs})")
    } else {
        String::new()
    };
    println!(
        "ferry verify (full mode): {keys} keys in {wall:.2} s ({:.0} keys/s), {cpu:.2} CPU s, peak RSS {rss:.0} MB{of}",
        keys as f64 / wall,
    );
    println!("servers while verifying: {servers:.2} CPU s{of}");
    println!("baseline redis-cli --scan of both clusters: {listed} names in {listing:.2} s{of}");
    println!("ratio verify / listing: {:.2}", wall / listing);
    if let Some(bin) = &baseline_bin {
        let measure::Measured {
            wall: b_wall,
            cpu: b_cpu,
            ..
        } = measure::typical(baseline.iter().map(|(m, _)| m));
        let b_servers = median(baseline.iter().map(|(_, s)| *s).collect());
        println!(
            "baseline build {bin} on the same clusters: {b_wall:.2} s ({:.0} keys/s), {b_cpu:.2} CPU s, servers {b_servers:.2} CPU s{of}; ratio this / baseline {:.2}",
            keys as f64 / b_wall,
            wall / b_wall
        );
    }
    println!("server time per key by command (last run, both sides, INFO commandstats):");
    for (command, calls, usec) in commands {
        println!(
            "  {command:<28} {:>6.2} calls/key {:>7.2} us/key",
            calls as f64 / keys as f64,
            usec as f64 / keys as f64
        );
    }
    Ok(())
}

/// Calls and microseconds per command over every node of both sides since their last
/// `CONFIG RESETSTAT`, most time first.
fn command_stats(
    source: &LocalCluster,
    target: &LocalCluster,
) -> Result<Vec<(String, u64, u64)>, Error> {
    let mut totals: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for node in source.nodes().into_iter().chain(target.nodes()) {
        for (name, stats) in conn::info(&node.addr(), "commandstats")? {
            // cmdstat_<name>: calls=N,usec=N,usec_per_call=...
            let Some(command) = name.strip_prefix("cmdstat_") else {
                continue;
            };
            let field = |key: &str| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let total = totals.entry(command.to_string()).or_default();
            total.0 += field("calls");
            total.1 += field("usec");
        }
    }
    let mut rows: Vec<_> = totals.into_iter().map(|(c, (n, us))| (c, n, us)).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    Ok(rows)
}
