//! `ferry verify`: compares a source and a target deployment and writes a consistency report.
//! Exit codes: 0 consistent, 1 differences found, 2 could not finish.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use ferry_verifier::{
    parse_slots, Config, Endpoint, Filter, Format, KeyType, Mode, RateLimits, ReadFrom, Verdict,
};

#[derive(Args)]
pub struct VerifyArgs {
    /// Source: redis://[user:password@]host:port (any node of a cluster), rediss:// for TLS.
    /// A password may also come from $FERRY_SOURCE_PASSWORD, which keeps it out of the
    /// command line.
    #[arg(long, value_name = "URL")]
    source: String,
    /// Target: redis://[user:password@]host:port or rediss://; or $FERRY_TARGET_PASSWORD.
    #[arg(long, value_name = "URL")]
    target: String,
    #[command(flatten)]
    source_tls: crate::endpoints::SourceTlsArgs,
    #[command(flatten)]
    target_tls: crate::endpoints::TargetTlsArgs,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Write the report to this file instead of stdout (the verdict line still goes to
    /// stdout).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// outline: existence, type, TTL; length: plus lengths; full: plus values.
    #[arg(long, value_enum, default_value_t = CompareMode::Full)]
    mode: CompareMode,
    /// Largest difference between absolute expiry times that still counts as equal.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    ttl_tolerance_ms: u64,
    /// Re-check rounds for differing keys (keys changing in every round are unstable).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Pause before each re-check round, so a live copy can catch up (when the target holds
    /// no checkpoints of `ferry sync`).
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    recheck_interval_ms: u64,
    /// When the target holds checkpoints of `ferry sync`: how long each re-check round waits
    /// for the target to apply everything the source had, instead of the pause.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    catch_up_limit_ms: u64,
    /// Compare only this db (repeatable; default: every db with keys; a cluster has db 0).
    #[arg(long = "db", value_name = "N")]
    dbs: Vec<u32>,
    /// Compare only keys starting with this prefix (repeatable).
    #[arg(long = "prefix", value_name = "PREFIX")]
    prefixes: Vec<String>,
    /// Compare only keys matching this glob pattern, as SCAN MATCH reads it (repeatable).
    #[arg(long = "match", value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Leave out keys starting with this prefix (repeatable).
    #[arg(long = "exclude-prefix", value_name = "PREFIX")]
    exclude_prefixes: Vec<String>,
    /// Leave out keys matching this glob pattern (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    exclude_patterns: Vec<String>,
    /// Compare only keys of this type on either side: string, list, set, zset, hash,
    /// stream, other (repeatable).
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
    types: Vec<KeyType>,
    /// Compare only keys whose slot is in A-B (or the one slot N), to split the work across
    /// processes.
    #[arg(long, value_name = "A-B")]
    slots: Option<String>,
    /// Compare a share of the keys (0 < R <= 1), picked by a hash of the name, and estimate
    /// the differing share of all keys with its 95% interval.
    #[arg(long, value_name = "R")]
    sample: Option<f64>,
    /// Cap on commands per second, both sides together.
    #[arg(long, value_name = "N")]
    max_ops: Option<u64>,
    /// Cap on reply bytes per second, both sides together.
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// Read keys from masters or from replicas (a shard without replicas is read from its
    /// master).
    #[arg(long, value_enum, default_value_t = ReadNode::Master)]
    read_from: ReadNode,
    /// Differences kept with details and re-checked; beyond this they are only counted.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_differences: usize,
    /// Progress lines on stderr.
    #[arg(long, value_enum, default_value_t = When::Auto)]
    progress: When,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Junit,
    Markdown,
    Html,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompareMode {
    Outline,
    Length,
    Full,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReadNode {
    Master,
    Replica,
}

#[derive(Clone, Copy, ValueEnum)]
enum When {
    /// When stderr is a terminal.
    Auto,
    Always,
    Never,
}

fn parse_type(name: &str) -> Result<KeyType, String> {
    KeyType::parse(name).ok_or_else(|| format!("unknown type {name:?}"))
}

/// Exit code when the copy is consistent.
const CONSISTENT: u8 = 0;
/// Exit code when differences were found.
const DIFFERENCES: u8 = 1;

/// Runs the verification; returns the exit code (errors exit 2 through `main`).
pub fn run(args: VerifyArgs) -> Result<u8> {
    let mut source = Endpoint::parse("source", &args.source)?;
    if let Ok(password) = std::env::var("FERRY_SOURCE_PASSWORD") {
        source = source.with_password(&password);
    }
    let mut target = Endpoint::parse("target", &args.target)?;
    if let Ok(password) = std::env::var("FERRY_TARGET_PASSWORD") {
        target = target.with_password(&password);
    }
    let rediss = |url: &str| url.starts_with("rediss://");
    if let Some(options) = args.source_tls.options() {
        crate::endpoints::check_tls("source", rediss(&args.source), Some(&options))?;
        source = source.with_tls(&options)?;
    }
    if let Some(options) = args.target_tls.options() {
        crate::endpoints::check_tls("target", rediss(&args.target), Some(&options))?;
        target = target.with_tls(&options)?;
    }
    let mut config = Config::new(source, target);
    config.mode = match args.mode {
        CompareMode::Outline => Mode::Outline,
        CompareMode::Length => Mode::Length,
        CompareMode::Full => Mode::Full,
    };
    config.ttl_tolerance = Duration::from_millis(args.ttl_tolerance_ms);
    config.rounds = args.rounds;
    config.recheck_interval = Duration::from_millis(args.recheck_interval_ms);
    config.catch_up_limit = Duration::from_millis(args.catch_up_limit_ms);
    let bytes = |items: Vec<String>| items.into_iter().map(String::into_bytes).collect();
    config.filter = Filter {
        dbs: args.dbs,
        prefixes: bytes(args.prefixes),
        patterns: bytes(args.patterns),
        exclude_prefixes: bytes(args.exclude_prefixes),
        exclude_patterns: bytes(args.exclude_patterns),
        types: args.types,
    };
    config.slots = args.slots.as_deref().map(parse_slots).transpose()?;
    config.sample = args.sample;
    config.rate = RateLimits {
        ops_per_sec: args.max_ops,
        bytes_per_sec: args.max_bytes,
    };
    config.read_from = match args.read_from {
        ReadNode::Master => ReadFrom::Master,
        ReadNode::Replica => ReadFrom::Replica,
    };
    config.max_differences = args.max_differences;
    config.progress = match args.progress {
        When::Auto => std::io::stderr().is_terminal(),
        When::Always => true,
        When::Never => false,
    };
    let format = match args.format {
        ReportFormat::Text => Format::Text,
        ReportFormat::Json => Format::Json,
        ReportFormat::Junit => Format::Junit,
        ReportFormat::Markdown => Format::Markdown,
        ReportFormat::Html => Format::Html,
    };

    let report = ferry_verifier::verify(&config)?;
    let rendered = report.render(format);
    match &args.output {
        Some(path) => {
            std::fs::write(path, rendered)
                .with_context(|| format!("writing the report to {}", path.display()))?;
            let text = report.render(Format::Text);
            let verdict = text.lines().next().ok_or_else(|| anyhow!("empty report"))?;
            println!("{verdict} (report in {})", path.display());
        }
        None => print!("{rendered}"),
    }
    Ok(match report.verdict {
        Verdict::Consistent => CONSISTENT,
        Verdict::Inconsistent => DIFFERENCES,
    })
}
