//! `ferry chaos list | run NAME... | run --all`: the scenario catalogue, each run against
//! local clusters with `ferry sync` as a child process and judged by the verifier.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ferry_chaos::report::{render, Format};
use ferry_chaos::{catalogue, describe, Backend, RunConfig};

#[derive(Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    command: ChaosCommand,
}

#[derive(Subcommand)]
enum ChaosCommand {
    /// Every scenario: name, expected verdict, what happens.
    List,
    /// Run scenarios by name, or all of them.
    Run(RunArgs),
    /// Run random fault schedules (seeded; a failure shrinks to the smallest failing one).
    Fuzz(FuzzArgs),
}

/// Where the scenarios' deployments run.
#[derive(Args)]
struct BackendArgs {
    /// `local`: server processes on this machine; `docker`: containers of the local Docker
    /// engine, on the host's network (every scenario runs on both).
    #[arg(long, value_name = "local|docker", default_value = "local", value_parser = ["local", "docker"])]
    backend: String,
    /// The server image for `--backend docker` (default: the one `ci/redis-image.sh` builds
    /// from the default server, or `$FERRY_IMAGE`), e.g. `redis:7.2`.
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
}

impl BackendArgs {
    fn backend(&self) -> Result<Backend> {
        let backend = match self.backend.as_str() {
            "docker" => Backend::Docker {
                image: self.image.clone(),
            },
            _ if self.image.is_some() => bail!("--image needs --backend docker"),
            _ => Backend::Local,
        };
        if let Some(why) = backend.unavailable() {
            bail!("the {} backend cannot run here: {why}", self.backend);
        }
        Ok(backend)
    }
}

#[derive(Args)]
struct FuzzArgs {
    /// Schedules to run.
    #[arg(long, default_value_t = 10)]
    cases: u32,
    /// Seed of the schedules (the same seed gives the same schedules).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Extra runs spent shrinking a failing schedule.
    #[arg(long, default_value_t = 16)]
    shrinks: u32,
    /// Directory for the engine logs.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<std::path::PathBuf>,
    /// An extra `ferry sync` argument for every run (repeatable).
    #[arg(long = "sync-arg", value_name = "ARG", allow_hyphen_values = true)]
    sync_args: Vec<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Scenario names (see `ferry chaos list`).
    names: Vec<String>,
    /// Run every scenario of the catalogue.
    #[arg(long)]
    all: bool,
    /// Write the results to this file: Markdown (.md), JSON (.json) or JUnit XML (.xml).
    #[arg(long, value_name = "FILE")]
    report: Option<std::path::PathBuf>,
    /// Seed of the datasets and workloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the engine logs of each scenario.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<std::path::PathBuf>,
    /// An extra `ferry sync` argument for every scenario (repeatable), e.g.
    /// `--sync-arg=--apply --sync-arg=at-least-once` to see which scenarios that breaks.
    #[arg(long = "sync-arg", value_name = "ARG", allow_hyphen_values = true)]
    sync_args: Vec<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

/// This binary as the engine, logs in `log_dir` (a temporary directory by default).
fn run_config(
    log_dir: Option<std::path::PathBuf>,
    seed: u64,
    backend: &BackendArgs,
) -> Result<RunConfig> {
    Ok(RunConfig {
        ferry: std::env::current_exe().context("finding the ferry binary")?,
        log_dir: log_dir.unwrap_or_else(|| std::env::temp_dir().join("ferry-chaos")),
        seed,
        backend: backend.backend()?,
    })
}

/// Exit code when a scenario did not reach its expected verdict.
const EXIT_FAILED: u8 = 1;

pub fn run(args: ChaosArgs) -> Result<ExitCode> {
    match args.command {
        ChaosCommand::List => {
            for s in catalogue::all() {
                println!("{:<40} {:<52} {}", s.name, describe(&s.expect), s.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        ChaosCommand::Run(args) => run_scenarios(args),
        ChaosCommand::Fuzz(args) => fuzz(args),
    }
}

fn fuzz(args: FuzzArgs) -> Result<ExitCode> {
    let config = run_config(args.log_dir.clone(), args.seed, &args.backend)?;
    eprintln!(
        "fuzzing {} schedules from seed {} ...",
        args.cases, args.seed
    );
    match ferry_chaos::fuzz::fuzz(
        args.cases,
        args.seed,
        args.shrinks,
        &args.sync_args,
        &config,
    ) {
        ferry_chaos::fuzz::FuzzOutcome::Passed { cases } => {
            println!(
                "{cases} random schedules, every one exact (seed {})",
                args.seed
            );
            Ok(ExitCode::SUCCESS)
        }
        ferry_chaos::fuzz::FuzzOutcome::Failed {
            schedule,
            report,
            reason,
        } => {
            println!("FAIL: {reason}");
            println!(
                "smallest failing schedule (seed {}):\n{}",
                args.seed,
                serde_json::to_string_pretty(&schedule)?
            );
            print!(
                "{}",
                render(std::slice::from_ref(&*report), Format::Markdown)
            );
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn run_scenarios(args: RunArgs) -> Result<ExitCode> {
    let mut scenarios = if args.all {
        catalogue::all()
    } else {
        if args.names.is_empty() {
            bail!("name scenarios to run, or pass --all (`ferry chaos list` shows them)");
        }
        args.names
            .iter()
            .map(|n| {
                catalogue::find(n)
                    .with_context(|| format!("no scenario {n:?} (`ferry chaos list` shows them)"))
            })
            .collect::<Result<Vec<_>>>()?
    };
    for scenario in &mut scenarios {
        scenario.sync_args.extend(args.sync_args.iter().cloned());
    }
    let format = match &args.report {
        Some(path) => Some(
            Format::parse(&path.to_string_lossy())
                .with_context(|| format!("--report {}: use .md, .json or .xml", path.display()))?,
        ),
        None => None,
    };
    let config = run_config(args.log_dir.clone(), args.seed, &args.backend)?;
    let mut reports = Vec::new();
    for scenario in &scenarios {
        eprintln!("running {} ...", scenario.name);
        let report = ferry_chaos::run(scenario, &config);
        println!(
            "{:<4} {:<40} {:>6.1} s  expected {}; got {}{}",
            if report.passed { "pass" } else { "FAIL" },
            report.name,
            report.duration_s,
            report.expected,
            report.verdict,
            report
                .error
                .as_deref()
                .map(|e| format!(" ({})", e.lines().next().unwrap_or_default()))
                .unwrap_or_default()
        );
        reports.push(report);
    }
    if let (Some(path), Some(format)) = (&args.report, format) {
        std::fs::write(path, render(&reports, format))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = reports.iter().filter(|r| !r.passed).count();
    println!(
        "{} of {} scenarios passed (engine logs in {})",
        reports.len() - failed,
        reports.len(),
        config.log_dir.display()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}
