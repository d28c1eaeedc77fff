//! The verifier on one huge key, measured in one run: a hash of FIELDS fields (default 1M)
//! on a source and a target cluster, once identical and once with one field changed;
//! `ferry verify` (release binary) wall time, CPU seconds and peak RSS, against the memory
//! the hash takes on the server (`MEMORY USAGE`): the verifier reads it in windows, so its
//! peak RSS stays far below the value's size.
//!
//! Usage: bench_verify_big_key [FIELDS]   (run by ci/bench-verify.sh)

mod measure;

use std::process::Command;

use ferry_fixtures::data::BigKeys;
use ferry_fixtures::{Dataset, Deployment, LocalCluster};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let fields = usize::try_from(measure::arg(1, 1_000_000)?)?;
    let ferry = measure::ferry_bin();
    let source = LocalCluster::builder().masters(3).start()?;
    let target = LocalCluster::builder().masters(3).start()?;
    let dataset = Dataset::new(3)
        .scale(0)
        .base_time_ms(4_000_000_000_000)
        .big_keys(BigKeys {
            hash_fields: fields,
            string_bytes: 0,
            list_elements: 0,
            set_members: 0,
            zset_members: 0,
        });
    dataset.load(&source)?;
    dataset.load(&target)?;
    let key = "ds:big-hash";
    let owner = |deployment: &LocalCluster| -> Result<_, Error> {
        let slot = ferry_engine::route::Slot::of_key(key.as_bytes());
        let topology = deployment.topology()?;
        let master = topology
            .shard_for_slot(slot)
            .ok_or("no owner")?
            .master
            .clone();
        Ok(deployment.node(&master).ok_or("no node")?.addr())
    };
    let usage: u64 = ferry_fixtures::conn::query(
        &owner(&source)?,
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0),
    )?;
    let verify = |code: i32| -> Result<measure::Measured, Error> {
        let mut command = Command::new(&ferry);
        command
            .args(["verify", "--format", "json", "--rounds", "0", "--source"])
            .arg(source.nodes()[0].addr().url())
            .arg("--target")
            .arg(target.nodes()[0].addr().url());
        measure::run_expecting(command, code)
    };
    let same = verify(0)?;
    let field: Vec<u8> =
        ferry_fixtures::conn::query(&owner(&target)?, redis::cmd("HRANDFIELD").arg(key))?;
    let _: () = ferry_fixtures::conn::query(
        &owner(&target)?,
        redis::cmd("HSET").arg(key).arg(field).arg("changed"),
    )?;
    let changed = verify(1)?;
    println!(
        "hash of {fields} fields, {:.0} MB on the server (MEMORY USAGE)",
        usage as f64 / 1e6
    );
    for (what, m) in [("identical", &same), ("one field changed", &changed)] {
        println!(
            "ferry verify, {what}: {:.2} s ({:.0} fields/s), {:.2} CPU s, peak RSS {:.0} MB ({:.2}x the value's size)",
            m.wall,
            fields as f64 / m.wall,
            m.cpu,
            m.peak_rss_mb,
            m.peak_rss_mb * 1e6 / usage as f64
        );
    }
    Ok(())
}
