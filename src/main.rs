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
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The error and its causes on one line, each cause said once: library errors often show
/// their cause in their own message and also return it as `source`, which `{:#}` would print
/// again.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        #[derive(Debug)]
        struct Outer {
            source: std::io::Error,
        }
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "discovering the source: {}", self.source)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let io = || std::io::Error::other("connection refused");
        let err = anyhow::Error::new(Outer { source: io() });
        assert_eq!(one_line(&err), "discovering the source: connection refused");
        let err = anyhow::Error::new(io()).context("--source password file x");
        assert_eq!(
            one_line(&err),
            "--source password file x: connection refused"
        );
    }
}
