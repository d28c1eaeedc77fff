//! Full sync over TLS against plain TCP, measured in one run on the same clusters: a 3-master
//! source and a 3-master target that serve both (`port` and `tls-port`), and `ferry sync
//! --mode full` (release binary) through `redis://` then `rediss://`, twice each, alternating;
//! the target is flushed between runs. Prints wall and CPU seconds of each run and the
//! TLS / plain ratios of the best runs.
//!
//! Usage: bench_tls [KEYS]   (default 200000; run by ci/bench-tls.sh)

mod measure;

use std::process::Command;

use ferry_fixtures::{ClientAuth, Dataset, Deployment, LocalCluster};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let keys = measure::arg(1, 200_000)?;
    let ferry = measure::ferry_bin();
    let source = LocalCluster::builder()
        .masters(3)
        .tls(ClientAuth::Optional)
        .start()?;
    let target = LocalCluster::builder()
        .masters(3)
        .tls(ClientAuth::Optional)
        .start()?;
    let loaded = Dataset::new(1).scale(keys).load(&source)?;
    println!("dataset: {loaded}");
    let (source_tls, target_tls) = (source.tls().ok_or("no tls")?, target.tls().ok_or("no tls")?);

    let mut best = [f64::MAX; 4]; // plain wall, plain cpu, tls wall, tls cpu
    for round in 0..2 {
        for tls in [false, true] {
            for master in target.masters()? {
                let _: () = master.query(&redis::cmd("FLUSHALL"))?;
            }
            let mut sync = Command::new(&ferry);
            sync.args(["sync", "--mode", "full"]);
            if tls {
                sync.arg("--source")
                    .arg(source.tls_url().ok_or("no tls url")?)
                    .arg("--source-tls-ca")
                    .arg(&source_tls.ca)
                    .arg("--target")
                    .arg(target.tls_url().ok_or("no tls url")?)
                    .arg("--target-tls-ca")
                    .arg(&target_tls.ca);
            } else {
                sync.arg("--source")
                    .arg(source.nodes()[0].addr().url())
                    .arg("--target")
                    .arg(target.nodes()[0].addr().url());
            }
            let run = measure::run(sync)?;
            let copied: u64 = target
                .masters()?
                .iter()
                .map(|m| m.query::<u64>(&redis::cmd("DBSIZE")))
                .sum::<Result<_, _>>()?;
            let name = if tls { "tls" } else { "plain" };
            println!(
                "round {round} {name:5}: {copied} keys in {:.2} s wall, {:.2} CPU s, peak RSS {:.0} MB",
                run.wall, run.cpu, run.peak_rss_mb
            );
            let at = if tls { 2 } else { 0 };
            best[at] = best[at].min(run.wall);
            best[at + 1] = best[at + 1].min(run.cpu);
        }
    }
    println!(
        "ratios (best of 2): tls / plain wall {:.2}, tls / plain CPU {:.2}",
        best[2] / best[0],
        best[3] / best[1]
    );
    Ok(())
}
