//! `ferry demo`: local source (3 masters) and target (4 masters) clusters, a sample dataset of
//! every type, the precheck, a full sync with progress, a check of every key, and cleanup.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_engine::endpoint::Endpoint;
use ferry_engine::precheck::{self, Status};
use ferry_engine::sync::{FullSync, FullSyncOptions};
use ferry_fixtures::{Dataset, Deployment, LocalCluster, ServerBinary};

#[derive(Args)]
pub struct DemoArgs {
    /// Keys in the sample dataset.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Seed of the sample dataset.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Server binary for both clusters [default: $REDIS_SERVER, then redis-server on PATH].
    #[arg(long)]
    server: Option<std::path::PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let binary = match &args.server {
        Some(path) => ServerBinary::at(path)?,
        None => ServerBinary::find()?,
    };
    println!("ferry demo with {binary}");
    let started = Instant::now();
    let source = LocalCluster::builder()
        .binary(binary.clone())
        .masters(3)
        .start()?;
    let target = LocalCluster::builder().binary(binary).masters(4).start()?;
    println!(
        "source: {} (3 masters), target: {} (4 masters), up in {:.1} s",
        source.nodes()[0].addr().url(),
        target.nodes()[0].addr().url(),
        started.elapsed().as_secs_f64()
    );
    let dataset = Dataset::new(args.seed).scale(args.keys);
    let loaded = dataset.load(&source)?;
    println!("loaded the sample dataset: {loaded}");

    let source_url = Endpoint::parse(&source.nodes()[0].addr().url())?;
    let target_url = Endpoint::parse(&target.nodes()[0].addr().url())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(async {
        let check = precheck::run(&source_url, &target_url, &precheck::Options::default()).await;
        for item in &check.items {
            println!(
                "precheck {:<4} {:<22} {}",
                item.status, item.name, item.detail
            );
        }
        if !check.passed() {
            let failed: Vec<&str> = check
                .items
                .iter()
                .filter(|i| i.status == Status::Fail)
                .map(|i| i.name)
                .collect();
            bail!("precheck failed: {}", failed.join(", "));
        }
        let sync = FullSync::prepare(&source_url, &target_url, FullSyncOptions::default()).await?;
        Ok(sync.run().await?)
    })?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "full sync: {} keys, {:.1} MB of snapshots in {:.2} s ({:.0} keys/s)",
        report.keys(),
        report.snapshot_bytes() as f64 / 1e6,
        secs,
        report.keys() as f64 / secs
    );

    let (checked, differences) = compare(&source, &target, &dataset)?;
    println!("checked {checked} keys on the target (type, value digest, expiry): {differences} differences");
    if differences > 0 {
        bail!("the copy differs from the source in {differences} keys");
    }
    println!(
        "demo done in {:.1} s; stopping the clusters",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Compares every dataset key on both sides: type, `DEBUG DIGEST-VALUE` and expiry.
fn compare(source: &LocalCluster, target: &LocalCluster, dataset: &Dataset) -> Result<(u64, u64)> {
    let mut source = Side::new(source)?;
    let mut target = Side::new(target)?;
    let mut checked = 0;
    let mut differences = 0;
    for spec in dataset.keys() {
        let expected = source.fingerprint(&spec.key)?;
        if expected.0 == "none" {
            continue;
        }
        checked += 1;
        if target.fingerprint(&spec.key)? != expected {
            differences += 1;
            eprintln!("differs: {}", spec.name());
        }
    }
    Ok((checked, differences))
}

/// One connection per master of a deployment, to read keys where they live.
struct Side {
    topology: ferry_fixtures::Topology,
    connections: std::collections::HashMap<ferry_fixtures::NodeAddr, redis::Connection>,
}

impl Side {
    fn new(deployment: &LocalCluster) -> Result<Self> {
        let topology = deployment.topology()?;
        let mut connections = std::collections::HashMap::new();
        for master in topology.masters() {
            connections.insert(master.clone(), ferry_fixtures::conn::connect(&master)?);
        }
        Ok(Side {
            topology,
            connections,
        })
    }

    fn fingerprint(&mut self, key: &[u8]) -> Result<(String, Vec<String>, i64)> {
        let shard = self
            .topology
            .shard_for_slot(ferry_engine::route::Slot::of_key(key))
            .context("a slot without a master")?;
        let conn = self
            .connections
            .get_mut(&shard.master)
            .context("unknown master")?;
        let mut pipe = redis::pipe();
        pipe.cmd("TYPE").arg(key);
        pipe.cmd("DEBUG").arg("DIGEST-VALUE").arg(key);
        pipe.cmd("PEXPIRETIME").arg(key);
        Ok(pipe.query(conn)?)
    }
}
