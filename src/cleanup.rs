//! `ferry cleanup --target URL`: after a cutover, removes every key ferry keeps in a
//! deployment (checkpoints on a target, heartbeats on a source).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::endpoints::{endpoint, set_tls, TargetTlsArgs};

#[derive(Args)]
pub struct CleanupArgs {
    /// The deployment to clean: redis://[user:password@]host:port, rediss:// for TLS
    #[arg(long)]
    target: String,
    /// File holding the password, or `user:password` (overrides the URL's).
    /// FERRY_TARGET_PASSWORD in the environment does the same.
    #[arg(long, value_name = "FILE")]
    target_password_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    target_tls: TargetTlsArgs,
}

pub fn run(args: CleanupArgs) -> Result<ExitCode> {
    let mut target = endpoint(
        "--target",
        &args.target,
        "FERRY_TARGET_PASSWORD",
        &args.target_password_file,
    )?;
    set_tls("target", &mut target, args.target_tls.options())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let deleted = runtime
        .block_on(ferry_engine::sync::cleanup(&target, Duration::from_secs(5)))
        .with_context(|| format!("cleaning {target}"))?;
    println!("removed {deleted} ferry keys (__ferry__:*) from {target}");
    Ok(ExitCode::SUCCESS)
}
