//! Verifier benchmark, measured in one run: `ferry verify` (full mode, release binary) over a
//! 3-master source and an identical 3-master target: wall time, keys/s, CPU seconds and peak
//! RSS; baseline: listing every key of both clusters with `redis-cli --scan` (no compare).
//!
//! Usage: bench_verify [KEYS]   (default 1000000; run by ci/bench-verify.sh)

mod measure;

use std::process::Command;
use std::time::Instant;

use ferry_fixtures::{Dataset, Deployment, LocalCluster};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let keys: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let ferry = std::env::var("FERRY_BIN").unwrap_or_else(|_| "target/release/ferry".into());
    let source = LocalCluster::builder().masters(3).start()?;
    let target = LocalCluster::builder().masters(3).start()?;
    // The same seed and base time on both sides: identical data, expiries included.
    let dataset = Dataset::new(1).scale(keys).base_time_ms(4_000_000_000_000);
    dataset.load(&source)?;
    dataset.load(&target)?;

    let mut verify = Command::new(&ferry);
    verify
        .args(["verify", "--format", "json", "--source"])
        .arg(source.nodes()[0].addr().url())
        .arg("--target")
        .arg(target.nodes()[0].addr().url());
    let measured = measure::run(verify)?;

    let started = Instant::now();
    let mut listed = 0usize;
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
    let listing = started.elapsed().as_secs_f64();
    println!(
        "ferry verify (full mode): {keys} keys in {:.2} s ({:.0} keys/s), {:.2} CPU s, peak RSS {:.0} MB",
        measured.wall,
        keys as f64 / measured.wall,
        measured.cpu,
        measured.peak_rss_mb
    );
    println!("baseline redis-cli --scan of both clusters: {listed} names in {listing:.2} s");
    println!("ratio verify / listing: {:.2}", measured.wall / listing);
    Ok(())
}
