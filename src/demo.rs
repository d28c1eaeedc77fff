//! `ferry demo`: local source (3 masters) and target (4 masters) clusters, a sample dataset of
//! every type, the precheck, a full sync, `ferry verify`'s report, and cleanup.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_engine::endpoint::Endpoint;
use ferry_engine::precheck::{self, Status};
use ferry_engine::sync::{Sync, SyncOptions};
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
        let sync = Sync::prepare(&source_url, &target_url, SyncOptions::default()).await?;
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

    // The verifier reads both sides on its own (through the redis crate), key by key.
    let config = ferry_verifier::Config::new(
        ferry_verifier::Endpoint::parse("source", &source.nodes()[0].addr().url())?,
        ferry_verifier::Endpoint::parse("target", &target.nodes()[0].addr().url())?,
    );
    let verdict = ferry_verifier::verify(&config)?;
    print!("{}", verdict.render(ferry_verifier::Format::Text));
    if !verdict.is_consistent() {
        bail!("the copy differs from the source");
    }
    println!(
        "demo done in {:.1} s; stopping the clusters",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
