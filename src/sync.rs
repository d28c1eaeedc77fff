//! `ferry sync`: precheck, then every source shard's snapshot streamed into the target and,
//! unless `--mode full`, the live stream after it (until stopped, or `--until-caught-up`),
//! with progress on stderr.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_engine::metrics::Exporter;
use ferry_engine::precheck::{self, Existing, Status};
use ferry_engine::rdb::ObjectType;
use ferry_engine::route::KeyFilter;
use ferry_engine::sync::{
    load_file, ApplyMode, Phase, Selection, ShardProgress, Sync, SyncMode, SyncOptions,
};

use crate::endpoints::EndpointArgs;

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    endpoints: EndpointArgs,
    /// What to copy: `full+incr` every snapshot then the live stream until stopped; `full`
    /// every snapshot, then exit; `incr` only the stream from now on.
    /// (Default: full+incr; full for an RDB file.)
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// How the live stream is applied: `exactly-once` (checkpoints move atomically with the
    /// data, by Lua scripts on the target) or `at-least-once` (plain pipelining, for targets
    /// that refuse scripts; a crash may apply some writes twice).
    #[arg(long = "apply", value_enum, default_value = "exactly-once")]
    apply: ApplyArg,
    /// Exit 0 once every shard has stayed caught up for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    until_caught_up: Option<f64>,
    /// Do not write the heartbeat key (`__ferry__:{..}:heartbeat`) on the source masters; lag
    /// is then measured in bytes only.
    #[arg(long)]
    no_heartbeat: bool,
    /// Forward PUBLISH messages of the stream to the target.
    #[arg(long)]
    publish: bool,
    /// MB per source shard kept in memory when the source sends faster than the target
    /// applies; beyond it, bytes wait in a file in --spool-dir.
    #[arg(long, value_name = "MB", default_value_t = 4)]
    buffer_mb: usize,
    /// Directory for spilled bytes (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<std::path::PathBuf>,
    /// What to do with keys already on the target.
    #[arg(long, value_enum, default_value = "fail")]
    existing: ExistingArg,
    /// Accept a target that may evict keys (maxmemory-policy other than noeviction).
    #[arg(long)]
    allow_eviction: bool,
    /// Rewrite every value as commands instead of RESTORE.
    #[arg(long)]
    rewrite: bool,
    /// Values whose serialized form is bigger than this are rewritten as commands, in parts of
    /// about 1 MB, instead of RESTOREd whole: memory stays bounded whatever a value's size.
    #[arg(long, value_name = "MB", default_value_t = 4)]
    restore_max_mb: usize,
    /// Start without running the precheck.
    #[arg(long)]
    skip_precheck: bool,
    /// Keys per batch applied to the target.
    #[arg(long, default_value_t = 2000)]
    batch_keys: usize,
    /// The source db to copy (standalone sources; default: the source URL's /N, else 0).
    /// The target db is the target URL's /N.
    #[arg(long, value_name = "N")]
    db: Option<u32>,
    /// Copy only keys starting with this prefix (repeatable).
    #[arg(long = "prefix", value_name = "PREFIX")]
    prefixes: Vec<String>,
    /// Copy only keys matching this glob pattern, as SCAN MATCH reads it (repeatable).
    #[arg(long = "match", value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Leave out keys starting with this prefix (repeatable).
    #[arg(long = "exclude-prefix", value_name = "PREFIX")]
    exclude_prefixes: Vec<String>,
    /// Leave out keys matching this glob pattern (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    exclude_patterns: Vec<String>,
    /// Take each shard's snapshot from one of its replicas instead of its master (a shard
    /// without a replica uses its master).
    #[arg(long, value_enum, default_value = "master")]
    snapshot_from: SnapshotFrom,
    /// Snapshots taken at once from the nodes of one host (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_snapshots_per_host: usize,
    /// Serve Prometheus metrics on http://ADDR/metrics and a JSON status on /status.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Copy only keys of this type: string, list, set, zset, hash, stream (repeatable).
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
    types: Vec<ObjectType>,
    /// Worker threads (default: one per four source masters, at most one per core; one for an
    /// RDB file).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

/// Source masters one worker thread keeps up with: a thread parses and routes 550k-650k keys
/// a second (1.5-1.8 CPU s per million, BENCHMARKS.md), a master streams its snapshot at
/// 115k-165k keys a second. More threads than that only add wake-ups between them: 8% more
/// CPU for 3 masters on 2 threads than on one, with the same wall time.
const MASTERS_PER_THREAD: usize = 4;

/// The worker threads for `masters` source masters on `cores` cores.
fn auto_threads(masters: usize, cores: usize) -> usize {
    masters.div_ceil(MASTERS_PER_THREAD).clamp(1, cores.max(1))
}

/// The runtime, with `--threads` workers or as many as the source's masters need (asked of
/// the source before anything else; when it does not answer, one, and the sync itself reports
/// why).
fn runtime(
    threads: Option<u16>,
    source: Option<&ferry_engine::endpoint::Endpoint>,
    timeout: Duration,
) -> Result<tokio::runtime::Runtime> {
    let threads = match (threads, source) {
        (Some(n), _) => usize::from(n),
        (None, None) => 1,
        (None, Some(source)) => {
            let masters = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?
                .block_on(ferry_engine::deployment::Deployment::discover(
                    source, timeout,
                ))
                .map_or(1, |d| d.topology.shards.len());
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            auto_threads(masters, cores)
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn parse_type(text: &str) -> Result<ObjectType, String> {
    Ok(match text {
        "string" => ObjectType::String,
        "list" => ObjectType::List,
        "set" => ObjectType::Set,
        "zset" => ObjectType::Zset,
        "hash" => ObjectType::Hash,
        "stream" => ObjectType::Stream,
        other => {
            return Err(format!(
                "unknown type {other:?}, expected string, list, set, zset, hash or stream"
            ))
        }
    })
}

impl SyncArgs {
    fn selection(&self) -> Selection {
        let bytes = |v: &[String]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
        Selection {
            keys: KeyFilter {
                prefixes: bytes(&self.prefixes),
                patterns: bytes(&self.patterns),
                exclude_prefixes: bytes(&self.exclude_prefixes),
                exclude_patterns: bytes(&self.exclude_patterns),
            },
            types: self.types.clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Full,
    #[value(name = "full+incr")]
    FullIncr,
    Incr,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ApplyArg {
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SnapshotFrom {
    Master,
    Replica,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExistingArg {
    Fail,
    Replace,
}

pub fn run(args: SyncArgs) -> Result<ExitCode> {
    let file = args.endpoints.source_file();
    let mode = match (args.mode, &file) {
        (Some(Mode::Full), _) | (None, Some(_)) => SyncMode::Full,
        (Some(Mode::FullIncr) | None, None) => SyncMode::FullIncr,
        (Some(Mode::Incr), None) => SyncMode::Incr,
        (Some(_), Some(_)) => bail!("an RDB file has no live stream: use --mode full"),
    };
    if mode != SyncMode::Full && !args.types.is_empty() {
        bail!("--type works with --mode full only: commands of the live stream do not say the type of what they write");
    }
    if mode == SyncMode::Full && args.until_caught_up.is_some() {
        bail!("--until-caught-up needs the live stream: use --mode full+incr or incr");
    }
    let precheck_options = precheck::Options {
        existing: match args.existing {
            ExistingArg::Fail => Existing::Fail,
            ExistingArg::Replace => Existing::Replace,
        },
        allow_eviction: args.allow_eviction,
        resume: mode != SyncMode::Full,
        stream_only: mode == SyncMode::Incr,
        ..precheck::Options::default()
    };
    let mut options = SyncOptions {
        mode,
        apply_mode: match args.apply {
            ApplyArg::ExactlyOnce => ApplyMode::ExactlyOnce,
            ApplyArg::AtLeastOnce => ApplyMode::AtLeastOnce,
        },
        heartbeat: !args.no_heartbeat,
        publish: args.publish,
        spool: ferry_engine::replica::SpoolConfig {
            memory_cap: args.buffer_mb.max(1) << 20,
            dir: args.spool_dir.clone(),
        },
        rewrite: args.rewrite,
        restore_max_bytes: args.restore_max_mb << 20,
        batch_keys: args.batch_keys.max(1),
        db: args.db.unwrap_or(0),
        selection: args.selection(),
        snapshot_from_replica: args.snapshot_from == SnapshotFrom::Replica,
        max_snapshots_per_host: args.max_snapshots_per_host,
        ..SyncOptions::default()
    };
    if let Some(path) = file {
        if args.endpoints.source_tls.options().is_some()
            || args.endpoints.source_password_file.is_some()
        {
            bail!(
                "--source {} is an RDB file: --source-tls-* and --source-password-file apply to a server source",
                path.display()
            );
        }
        let target = args.endpoints.resolve_target()?;
        return runtime(args.threads, None, options.timeout)?.block_on(async {
            if !args.skip_precheck {
                require(precheck::run_target(&target, &precheck_options).await)?;
            }
            eprintln!("loading {} into {target}", path.display());
            let report = tokio::select! {
                report = load_file(&path, &target, &options) => report?,
                signal = stop_signal() => bail!("stopped by {signal}; the target holds a partial copy (run again with --existing replace)"),
            };
            let secs = report.elapsed.as_secs_f64().max(1e-9);
            let keys = report.snapshot.restored + report.snapshot.rewritten;
            println!(
                "rdb file done: {keys} keys ({} restored, {} rewritten, {} expired skipped, {} in other dbs), {:.1} MB in {secs:.1} s ({:.0} keys/s)",
                report.snapshot.restored,
                report.snapshot.rewritten,
                report.snapshot.expired,
                report.snapshot.skipped_other_db,
                report.bytes as f64 / 1e6,
                keys as f64 / secs
            );
            if report.snapshot.libraries > 0 || report.functions.deleted > 0 {
                println!(
                    "function libraries: {} loaded on every target master, {} deleted from the target (not in the file)",
                    report.snapshot.libraries, report.functions.deleted
                );
            }
            Ok(ExitCode::SUCCESS)
        });
    }
    let (source, target) = args.endpoints.resolve()?;
    options.db = args.db.or(source.db).unwrap_or(0);
    runtime(args.threads, Some(&source), options.timeout)?.block_on(async {
        if !args.skip_precheck {
            require(precheck::run(&source, &target, &precheck_options).await)?;
        }
        let sync = Sync::prepare(&source, &target, options).await?;
        eprintln!(
            "{} {source} ({} shards, {}) -> {target} ({} shards, {})",
            match mode {
                SyncMode::Full => "full sync",
                SyncMode::FullIncr => "full+incremental sync",
                SyncMode::Incr => "incremental sync",
            },
            sync.source().topology.shards.len(),
            sync.source().server,
            sync.target().topology.shards.len(),
            sync.target().server,
        );
        let progress = sync.progress().to_vec();
        if let Some(addr) = args.metrics_addr {
            let (bound, serve) = Exporter::new(progress.clone())
                .bind(addr)
                .await
                .with_context(|| format!("--metrics-addr {addr}"))?;
            eprintln!("metrics on http://{bound}/metrics, status on http://{bound}/status");
            tokio::spawn(serve);
        }
        let reporter = tokio::spawn(report_progress(progress.clone()));
        if mode != SyncMode::Full {
            let holds = Holds::of(&sync);
            let caught_up = wait_caught_up(progress, args.until_caught_up);
            let outcome = tokio::select! {
                outcome = sync.run() => outcome.map(|_| ()),
                signal = stop_signal() => {
                    stop_reporter(reporter).await;
                    holds.release().await;
                    eprintln!("\nstopped by {signal}; run the same command again to resume from the target's checkpoints");
                    return Ok(ExitCode::SUCCESS);
                }
                () = caught_up => {
                    stop_reporter(reporter).await;
                    holds.release().await;
                    eprintln!("\ncaught up on every shard; stopping (run the same command again to resume)");
                    return Ok(ExitCode::SUCCESS);
                }
            };
            stop_reporter(reporter).await;
            outcome?;
            bail!("the sync stopped without an error");
        }
        let outcome = tokio::select! {
            outcome = sync.run() => outcome,
            signal = stop_signal() => {
                stop_reporter(reporter).await;
                bail!("stopped by {signal}; the target holds a partial copy (run again with --existing replace)");
            }
        };
        stop_reporter(reporter).await;
        let report = outcome?;
        let secs = report.elapsed.as_secs_f64().max(1e-9);
        for shard in &report.shards {
            println!(
                "shard {}: {} keys ({} restored, {} rewritten, {} expired and {} filtered out skipped), {:.1} MB snapshot at offset {} of {}, {:.1} s",
                shard.source,
                shard.snapshot.restored + shard.snapshot.rewritten,
                shard.snapshot.restored,
                shard.snapshot.rewritten,
                shard.snapshot.expired,
                shard.snapshot.filtered,
                shard.snapshot_bytes as f64 / 1e6,
                shard.offset,
                shard.replid,
                shard.elapsed.as_secs_f64(),
            );
        }
        let libraries: u64 = report.shards.iter().map(|s| s.snapshot.libraries).sum();
        if libraries > 0 {
            println!("function libraries: {libraries} in the snapshots, loaded on every target master");
        }
        println!(
            "full sync done: {} keys, {:.1} MB in {:.1} s ({:.0} keys/s)",
            report.keys(),
            report.snapshot_bytes() as f64 / 1e6,
            secs,
            report.keys() as f64 / secs
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Stops with the failed items when the precheck did not pass.
fn require(report: precheck::Report) -> Result<()> {
    if report.passed() {
        return Ok(());
    }
    for item in report.items.iter().filter(|i| i.status == Status::Fail) {
        eprintln!(
            "precheck {}: {} (fix: {})",
            item.name, item.detail, item.fix
        );
    }
    bail!("precheck failed; nothing was written (run `ferry precheck` for every item)");
}

/// The expiries a stopped stream leaves held on the target (see the engine's `sync::hold`).
pub(crate) struct Holds {
    target: ferry_engine::deployment::Deployment,
    shards: Vec<ferry_engine::sync::ShardId>,
}

impl Holds {
    pub(crate) fn of(sync: &Sync) -> Self {
        Holds {
            target: sync.target().clone(),
            shards: sync
                .source()
                .topology
                .shards
                .iter()
                .map(ferry_engine::sync::ShardId::of)
                .collect(),
        }
    }

    /// Gives the held keys their own expiry back, so the target expires them on its own.
    pub(crate) async fn release(&self) {
        let config = ferry_engine::apply::ApplyConfig::default();
        if let Err(e) = ferry_engine::sync::release_holds(&self.target, &self.shards, &config).await
        {
            eprintln!("warning: could not give held expiries back ({e}); `ferry cleanup --target URL` does it after the cutover");
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn stop_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Resolves once every shard has stayed caught up for `hold` seconds; never without `hold`.
async fn wait_caught_up(shards: Vec<Arc<ShardProgress>>, hold: Option<f64>) {
    let Some(hold) = hold else {
        return std::future::pending().await;
    };
    let hold = Duration::from_secs_f64(hold.max(0.0));
    let mut since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if shards.iter().all(|s| s.caught_up()) {
            let since = *since.get_or_insert_with(Instant::now);
            if since.elapsed() >= hold {
                return;
            }
        } else {
            since = None;
        }
    }
}

/// Stops the progress reporter and waits until it is gone (its bars cleared).
async fn stop_reporter(reporter: tokio::task::JoinHandle<()>) {
    reporter.abort();
    let _ = reporter.await;
}

/// Prints progress: on a terminal one bar per shard (snapshot keys read of those the
/// snapshot announced, keys/s, ETA, MB received; then the stream's lag), refreshed twice a
/// second; otherwise a summary log line every 5 seconds.
async fn report_progress(shards: Vec<Arc<ShardProgress>>) {
    if std::io::stderr().is_terminal() {
        progress_bars(shards).await
    } else {
        progress_lines(shards).await
    }
}

async fn progress_lines(shards: Vec<Arc<ShardProgress>>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!("{}", summary_line(&shards, started.elapsed()));
    }
}

/// One line about every shard: streaming counters once any shard streams, snapshot
/// counters before.
fn summary_line(shards: &[Arc<ShardProgress>], elapsed: Duration) -> String {
    let keys: u64 = shards.iter().map(|s| s.applied_keys()).sum();
    let received: u64 = shards.iter().map(|s| s.received()).sum();
    let done = shards.iter().filter(|s| s.phase() == Phase::Done).count();
    let streaming = shards
        .iter()
        .filter(|s| s.phase() == Phase::Streaming)
        .count();
    if streaming > 0 {
        let commands: u64 = shards.iter().map(|s| s.stream_commands()).sum();
        let lag_bytes: u64 = shards.iter().map(|s| s.lag_bytes()).sum();
        let lag_ms = shards.iter().map(|s| s.lag_ms()).max().unwrap_or(0);
        let caught_up = shards.iter().filter(|s| s.caught_up()).count();
        format!(
            "{streaming}/{} shards streaming ({caught_up} caught up), {keys} snapshot keys, {commands} stream writes applied, lag {lag_bytes} B / {lag_ms} ms",
            shards.len()
        )
    } else {
        format!(
            "{done}/{} shards done, {:.1} MB received, {keys} keys applied ({:.0} keys/s)",
            shards.len(),
            received as f64 / 1e6,
            keys as f64 / elapsed.as_secs_f64().max(0.001)
        )
    }
}

async fn progress_bars(shards: Vec<Arc<ShardProgress>>) {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    /// Clears the bars when the task ends (it is aborted once the sync is over), so the
    /// summary prints on a clean screen.
    struct Clear(MultiProgress);
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = self.0.clear();
        }
    }
    let bars = Clear(MultiProgress::new());
    let loading = ProgressStyle::with_template(
        "{prefix:>21} [{bar:28}] {percent:>3}% {human_pos}/{human_len} keys  ETA {eta:>4}  {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let unknown = ProgressStyle::with_template("{prefix:>21} {spinner} {human_pos} keys  {msg}")
        .expect("valid template");
    let plain = ProgressStyle::with_template("{prefix:>21} {msg}").expect("valid template");
    let shown: Vec<ProgressBar> = shards
        .iter()
        .map(|shard| {
            let bar = bars.0.add(ProgressBar::new(0));
            bar.set_prefix(shard.source.to_string());
            bar.set_style(plain.clone());
            bar
        })
        .collect();
    // When each shard's current transfer began, for its rate.
    let mut transfer_started: Vec<Option<Instant>> = vec![None; shards.len()];
    loop {
        for ((shard, bar), began) in shards.iter().zip(&shown).zip(&mut transfer_started) {
            let (read, expected) = shard.snapshot_keys();
            if shard.phase() != Phase::Transfer {
                *began = None;
            }
            let began = *began.get_or_insert_with(Instant::now);
            let rate = read as f64 / began.elapsed().as_secs_f64().max(0.001);
            let received = format!(
                "{:.0} keys/s, {:.1} MB received",
                rate,
                shard.received() as f64 / 1e6
            );
            match shard.phase() {
                Phase::Transfer if expected > 0 => {
                    bar.set_style(loading.clone());
                    bar.set_length(expected.max(read));
                    bar.set_position(read);
                    bar.set_message(received);
                }
                Phase::Transfer => {
                    bar.set_style(unknown.clone());
                    bar.set_position(read);
                    bar.set_message(received);
                }
                Phase::Streaming => {
                    bar.set_style(plain.clone());
                    bar.set_message(format!(
                        "streaming{}: {} writes applied, lag {} B / {} ms ({} snapshot keys)",
                        if shard.caught_up() { ", caught up" } else { "" },
                        shard.stream_commands(),
                        shard.lag_bytes(),
                        shard.lag_ms(),
                        shard.applied_keys()
                    ));
                }
                Phase::Done => {
                    bar.set_style(plain.clone());
                    bar.set_message(format!(
                        "snapshot applied: {} keys, {:.1} MB received",
                        shard.applied_keys(),
                        shard.received() as f64 / 1e6
                    ));
                }
                Phase::Connecting => {
                    bar.set_style(plain.clone());
                    bar.set_message("connecting");
                }
                Phase::Failed => {
                    bar.set_style(plain.clone());
                    bar.set_message("failed");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::auto_threads;

    #[test]
    fn one_thread_per_four_masters_at_most_one_per_core() {
        assert_eq!(auto_threads(0, 8), 1);
        assert_eq!(auto_threads(3, 2), 1);
        assert_eq!(auto_threads(4, 8), 1);
        assert_eq!(auto_threads(5, 8), 2);
        assert_eq!(auto_threads(16, 8), 4);
        assert_eq!(auto_threads(64, 8), 8);
        assert_eq!(auto_threads(64, 0), 1);
    }
}
