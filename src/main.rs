//! `ferry`: copy a live Redis Cluster into another and prove the copy exact.
//!
//! This binary is thin: it parses the command line, builds configs and prints results; the
//! work lives in the workspace's library crates.

mod chaos;
mod cleanup;
mod demo;
mod endpoints;
mod lab;
mod precheck;
mod rdb;
mod sync;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start, inspect and stop local source and target clusters to try ferry by hand.
    Lab(lab::LabArgs),
    /// Start local source and target clusters, load sample data, sync, check, clean up.
    Demo(demo::DemoArgs),
    /// Check that a sync from source to target can start, and how to fix what blocks it.
    Precheck(precheck::PrecheckArgs),
    /// Copy a source deployment into a target deployment.
    Sync(sync::SyncArgs),
    /// Compare a source and a target key by key and report every difference (exit 0:
    /// consistent, 1: differences found, 2: could not finish).
    Verify(verify::VerifyArgs),
    /// Run fault scenarios against local clusters and let the verifier judge (`list`, `run
    /// NAME...`, `run --all`, `fuzz`; exit 0 when every scenario reached its expected verdict).
    Chaos(chaos::ChaosArgs),
    /// Remove ferry's checkpoints (and heartbeats) from a deployment after a cutover.
    Cleanup(cleanup::CleanupArgs),
    /// Read RDB files without a server: `ferry rdb inspect FILE` lists keys, types, encodings,
    /// expiry and the biggest keys.
    Rdb(rdb::RdbArgs),
}

/// Exit code when a command could not do its work (bad input, unreachable server, ...).
const EXIT_FAILURE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Structured logs on stderr: warnings by default, more with RUST_LOG (e.g. `ferry=info`).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Lab(args) => lab::run(args).map(|()| ExitCode::SUCCESS),
        Command::Precheck(args) => precheck::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Verify(args) => verify::run(args).map(ExitCode::from),
        Command::Rdb(args) => rdb::run(args),
        Command::Cleanup(args) => cleanup::run(args),
        Command::Chaos(args) => chaos::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
