//! `ferry precheck --source URL --target URL`: every item pass/warn/fail and how to fix it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ferry_engine::precheck::{self, Existing, Options, Status};

use crate::endpoints::EndpointArgs;

#[derive(Args)]
pub struct PrecheckArgs {
    #[command(flatten)]
    endpoints: EndpointArgs,
    /// What a sync would do with keys already on the target.
    #[arg(long, value_enum, default_value = "fail")]
    existing: ExistingArg,
    /// Accept a target that may evict keys (maxmemory-policy other than noeviction).
    #[arg(long)]
    allow_eviction: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for each node.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExistingArg {
    Fail,
    Replace,
}

/// Exit code when an item failed.
const EXIT_FAILED: u8 = 1;

pub fn run(args: PrecheckArgs) -> Result<ExitCode> {
    let (source, target) = args.endpoints.resolve()?;
    let options = Options {
        existing: match args.existing {
            ExistingArg::Fail => Existing::Fail,
            ExistingArg::Replace => Existing::Replace,
        },
        allow_eviction: args.allow_eviction,
        // As `ferry sync` by default (full+incr): a target with ferry's checkpoints resumes.
        resume: true,
        stream_only: false,
        timeout: Duration::from_secs(args.timeout),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(precheck::run(&source, &target, &options));
    if args.json {
        let json = serde_json::json!({ "passed": report.passed(), "items": report.items });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("precheck {source} -> {target}");
        for item in &report.items {
            println!("{:<4}  {:<22} {}", item.status, item.name, item.detail);
            if item.status != Status::Pass {
                println!("      {:<22} fix: {}", "", item.fix);
            }
        }
        let failed = report
            .items
            .iter()
            .filter(|i| i.status == Status::Fail)
            .count();
        let warned = report
            .items
            .iter()
            .filter(|i| i.status == Status::Warn)
            .count();
        println!(
            "{}: {failed} failed, {warned} warnings, {} passed",
            if report.passed() {
                "ready"
            } else {
                "not ready"
            },
            report.items.len() - failed - warned
        );
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}
