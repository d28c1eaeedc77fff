//! Full sync of big keys: ferry's wall time, CPU seconds and peak RSS while it copies a
//! 1M-field hash, a 100 MiB string and 1M-element list, set and sorted set (plus a few
//! thousand small keys) between two standalone servers, checked exact afterwards. Run once with `RESTORE` allowed (the
//! target reads the source's format) and once with `--rewrite`.
//!
//! `FERRY_BIN` is the binary measured (default `target/release/ferry`); with
//! `FERRY_BASELINE_BIN` set, that binary (say, a build of the parent commit) is measured the
//! same way on the same servers first, and the ratios are printed.
//!
//! Usage: bench_big_keys [SCALE] [KINDS]   (SCALE multiplies the big keys' sizes, default
//! 1.0; KINDS keeps some of them, comma-separated from hash,string,list,set,zset, default all;
//! run by ci/bench-big-keys.sh)

mod measure;

use ferry_fixtures::data::BigKeys;
use ferry_fixtures::{exact, Dataset, Deployment, LocalServer};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let scale: f64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1.0);
    let kinds = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "hash,string,list,set,zset".into());
    let kinds: Vec<&str> = kinds.split(',').collect();
    if let Some(unknown) = kinds
        .iter()
        .find(|k| !["hash", "string", "list", "set", "zset"].contains(k))
    {
        return Err(format!("unknown big key kind {unknown:?}").into());
    }
    let ferry = measure::ferry_bin();
    let baseline = std::env::var("FERRY_BASELINE_BIN").ok();
    let size = |kind: &str, n: usize| {
        if kinds.contains(&kind) {
            (n as f64 * scale) as usize
        } else {
            0
        }
    };
    let standard = BigKeys::standard();
    let big = BigKeys {
        hash_fields: size("hash", standard.hash_fields),
        string_bytes: size("string", standard.string_bytes),
        list_elements: size("list", standard.list_elements),
        set_members: size("set", standard.set_members),
        zset_members: size("zset", standard.zset_members),
    };
    // Standalone servers: a cluster would declare a node failed while it computes the digest
    // of a 1M-member sorted set for the exact check.
    let source = LocalServer::builder().start()?;
    let target = LocalServer::builder().start()?;
    let loaded = Dataset::new(1).scale(3_000).big_keys(big).load(&source)?;
    println!("dataset: {loaded}; big keys {big:?}");
    let used = |d: &dyn Deployment| -> Result<u64, Error> {
        let mut total = 0;
        for master in d.masters()? {
            let info = ferry_fixtures::conn::info(&master.addr(), "memory")?;
            total += info
                .get("used_memory")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    };
    println!("source used_memory: {:.0} MB", used(&source)? as f64 / 1e6);

    for rewrite in [false, true] {
        let mode = if rewrite {
            "--rewrite"
        } else {
            "restore allowed"
        };
        let mut runs = Vec::new();
        for (name, bin) in [("baseline", baseline.as_deref()), ("ferry", Some(&*ferry))] {
            let Some(bin) = bin else { continue };
            let mut sync = measure::full_sync(bin, &source, &target)?;
            if rewrite {
                sync.arg("--rewrite");
            }
            let run = measure::run(sync)?;
            let differences = exact::differences(&source, &target, 1)?;
            let verdict = if differences.is_empty() {
                "exact".to_string()
            } else {
                format!(
                    "{} differences, first: {}",
                    differences.len(),
                    differences[0]
                )
            };
            println!(
                "{name} ({mode}): {:.2} s wall, {:.2} CPU s, peak RSS {:.0} MB; {verdict}",
                run.wall, run.cpu, run.peak_rss_mb
            );
            runs.push(run);
        }
        if let [before, after] = &runs[..] {
            println!(
                "ratios ({mode}): peak RSS {:.2}, wall {:.2}, CPU {:.2} (ferry / baseline)",
                after.peak_rss_mb / before.peak_rss_mb,
                after.wall / before.wall,
                after.cpu / before.cpu
            );
        }
    }
    Ok(())
}
