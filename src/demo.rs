//! `ferry demo`: local source (3 masters) and target (4 masters) clusters, a sample dataset of
//! every type, the precheck, a full+incremental sync while a workload keeps writing (with the
//! live lag), `ferry verify`'s report once the writes stop and the target caught up, and
//! cleanup.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_engine::endpoint::Endpoint;
use ferry_engine::precheck::{self, Status};
use ferry_engine::sync::{Phase, Sync, SyncMode, SyncOptions};
use ferry_fixtures::{Dataset, Deployment, LocalCluster, ServerBinary, Workload};

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
    /// Seconds the live workload writes into the source during the sync.
    #[arg(long, default_value_t = 5)]
    live_seconds: u64,
    /// Operations per second of the live workload.
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
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
    let workload = Workload::new(args.seed)
        .rate(args.rate)
        .duration(Duration::from_secs(args.live_seconds));
    let writes = workload.spawn(&source)?;
    println!(
        "live workload: {} ops/s for {} s (INCR, RPUSH, LPOP, HINCRBY, ZINCRBY, XADD, MULTI, EVAL, ...)",
        args.rate, args.live_seconds
    );
    runtime.block_on(async {
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
        let options = SyncOptions {
            mode: SyncMode::FullIncr,
            ..SyncOptions::default()
        };
        let sync = Sync::prepare(&source_url, &target_url, options).await?;
        let holds = crate::sync::Holds::of(&sync);
        let shards = sync.progress().to_vec();
        let sync_started = Instant::now();
        let mut running = tokio::spawn(sync.run());
        let mut snapshot_done = false;
        let mut was_caught_up = false;
        loop {
            tokio::select! {
                outcome = &mut running => {
                    outcome.context("the sync task")??;
                    bail!("the sync stopped");
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let keys: u64 = shards.iter().map(|s| s.applied_keys()).sum();
            let streaming = shards.iter().all(|s| s.phase() == Phase::Streaming);
            if streaming && !snapshot_done {
                snapshot_done = true;
                println!(
                    "snapshots applied: {keys} keys in {:.2} s; now following the live stream",
                    sync_started.elapsed().as_secs_f64()
                );
            }
            let stream: u64 = shards.iter().map(|s| s.stream_commands()).sum();
            let lag_ms = shards.iter().map(|s| s.lag_ms()).max().unwrap_or(0);
            let lag_bytes: u64 = shards.iter().map(|s| s.lag_bytes()).sum();
            let writing = !writes.is_finished();
            println!(
                "  {:>4.1} s  source writes: {:>6}  stream writes applied: {stream:>6}  lag: {lag_ms} ms, {lag_bytes} bytes{}",
                sync_started.elapsed().as_secs_f64(),
                writes.ops(),
                if writing { "" } else { "  (workload done)" }
            );
            // Twice in a row: the source offset behind `caught_up` is polled every 250 ms.
            let caught_up = shards.iter().all(|s| s.caught_up());
            let settled = caught_up && was_caught_up;
            was_caught_up = caught_up && !writing;
            if !writing && streaming && settled {
                println!("caught up on every shard; stopping the sync");
                running.abort();
                let _ = (&mut running).await;
                holds.release().await;
                return Ok(());
            }
            if sync_started.elapsed() > Duration::from_secs(args.live_seconds + 120) {
                bail!("the target did not catch up");
            }
        }
    })?;
    let report = writes.join()?;
    println!(
        "workload: {} ops sent, {} error replies",
        report.ops,
        report.errors()
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
