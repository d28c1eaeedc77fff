//! `ferry sync`: one task per source master. Each registers as its replica, applies the
//! snapshot (parsed while it arrives, applied in batches while the next batch is parsed) and,
//! unless only a full copy was asked for, then follows the replication stream for ever,
//! resuming from the checkpoints the target holds after any interruption.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::functions::{held_elsewhere, install, FunctionStats, Others};
use super::snapshot::{Selection, SnapshotError, SnapshotSink, SnapshotStats, ValueMode};
use super::stream::RouteError;
use super::writer::ApplyMode;
use crate::apply::{Applier, ApplyConfig, ApplyError, ApplyStats, WriteGroup};
use crate::deployment::{Deployment, DiscoverError};
use crate::endpoint::Endpoint;
use crate::rdb::{self, Parser};
use crate::replica::{
    PsyncFrom, ReplId, ReplOffset, Session, SessionConfig, SessionError, SessionEvent, SpoolConfig,
    SpoolGauge,
};
use crate::route::{NodeAddr, Shard};

/// What a sync copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every snapshot, then done.
    #[default]
    Full,
    /// Every snapshot, then the live stream until stopped.
    FullIncr,
    /// Only the live stream from now on (the target already holds the data).
    Incr,
}

/// Snapshot bytes handed to the parser at a time.
const FEED_SLICE: usize = 256 << 10;

/// Tunables of a sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub mode: SyncMode,
    /// How the live stream is applied.
    pub apply_mode: ApplyMode,
    /// Write a heartbeat key on every source master each second, to measure lag in seconds.
    pub heartbeat: bool,
    /// Forward `PUBLISH` messages.
    pub publish: bool,
    /// Stream writes queued before a flush to the target.
    pub stream_batch: usize,
    /// What arrives from a source faster than it is applied waits here: in memory up to a
    /// cap, then in a local file.
    pub spool: SpoolConfig,
    /// A batch is applied once it holds this many keys...
    pub batch_keys: usize,
    /// ... or this many bytes of commands.
    pub batch_bytes: usize,
    /// Rewrite every value as commands instead of `RESTORE` (the default decides per
    /// snapshot format).
    pub rewrite: bool,
    /// Values serialized in more bytes than this are rewritten as commands, in parts, even
    /// where `RESTORE` would do: memory stays bounded by the part size, not the value's.
    pub restore_max_bytes: usize,
    /// The source db to copy (cluster sources only have db 0).
    pub db: u32,
    pub timeout: Duration,
    pub apply: ApplyConfig,
    /// Batches applied at once per source shard, each by its own connections.
    pub apply_workers: usize,
    /// Which keys are copied.
    pub selection: Selection,
    /// Take each shard's snapshot from one of its replicas (when it has one) instead of its
    /// master, to spare the master the fork.
    pub snapshot_from_replica: bool,
    /// Snapshots taken at once from the nodes of one host (0: no limit): several masters on
    /// one machine should not all fork together.
    pub max_snapshots_per_host: usize,
}

impl SyncOptions {
    /// How snapshots are parsed: values past `restore_max_bytes` come as elements. A
    /// server's snapshot (`from_server`) is not decoded where its values go out whole: a
    /// RESTORE payload is checked by the target, as a replica checks a snapshot. A file may
    /// have been damaged at rest: every value of it is decoded and checked before it is sent.
    pub(super) fn parser_config(&self, from_server: bool) -> rdb::Config {
        rdb::Config {
            max_raw_value: self.restore_max_bytes,
            decode_raw_values: !from_server,
            ..rdb::Config::default()
        }
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            mode: SyncMode::Full,
            apply_mode: ApplyMode::ExactlyOnce,
            heartbeat: true,
            publish: false,
            stream_batch: 1000,
            spool: SpoolConfig::default(),
            batch_keys: 2000,
            batch_bytes: 4 << 20,
            rewrite: false,
            restore_max_bytes: super::snapshot::RESTORE_MAX_BYTES,
            db: 0,
            timeout: Duration::from_secs(10),
            apply: ApplyConfig::default(),
            apply_workers: 2,
            selection: Selection::default(),
            snapshot_from_replica: false,
            max_snapshots_per_host: 0,
        }
    }
}

/// Why the sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("discovering the {side}: {source}")]
    Discover {
        side: &'static str,
        source: DiscoverError,
    },
    #[error("source shard {shard}: {source}")]
    Session {
        shard: NodeAddr,
        source: SessionError,
    },
    #[error("source shard {shard}: snapshot: {source}")]
    Snapshot {
        shard: NodeAddr,
        source: SnapshotError,
    },
    #[error("source shard {shard}: {source}")]
    Apply { shard: NodeAddr, source: ApplyError },
    #[error("source shard {shard}: {detail}")]
    Protocol { shard: NodeAddr, detail: String },
    #[error("source shard {shard}: {source}")]
    Route { shard: NodeAddr, source: RouteError },
    #[error("source shard {shard}: reading its command table: {detail}")]
    Commands { shard: NodeAddr, detail: String },
}

/// Where a shard's sync is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Connecting = 0,
    /// Receiving and applying the snapshot.
    Transfer = 1,
    Done = 2,
    Failed = 3,
    /// Following the replication stream.
    Streaming = 4,
}

/// How often the heartbeat key is written on each source master.
pub(super) const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// How recent the source offset must be for a shard to count as caught up (it is read four
/// times a second).
const OFFSET_FRESHNESS: Duration = Duration::from_secs(1);

/// Milliseconds since the epoch on this machine's clock.
/// Snapshot keys expiring within this much of the start of the load are held: the stream
/// that follows runs behind by the load and the catching up after it.
const SNAPSHOT_HOLD_MS: i64 = 600_000;

pub(super) use crate::replica::unix_ms as now_ms;

/// Live counters of one source shard, readable from any thread.
#[derive(Debug)]
pub struct ShardProgress {
    pub source: NodeAddr,
    pub(super) phase: AtomicU8,
    pub(super) received: AtomicU64,
    pub(super) applied_keys: AtomicU64,
    pub(super) applied_bytes: AtomicU64,
    /// Stream offset every target master has applied.
    pub(super) applied_offset: AtomicU64,
    /// The source master's `master_repl_offset`, polled every second.
    pub(super) source_offset: AtomicU64,
    /// Milliseconds between a heartbeat written on the source and its arrival here.
    pub(super) lag_ms: AtomicU64,
    /// When the last heartbeat that arrived was written (engine clock, ms since the epoch).
    pub(super) heartbeat_sent_ms: AtomicU64,
    /// The most milliseconds between a heartbeat written on the source and its bytes
    /// reaching ferry, before any wait in ferry (sources whose expiries count from arrival,
    /// heartbeats of the live stream only): how late those arrival times may be.
    pub(super) transit_ms: AtomicU64,
    /// When `source_offset` was last read from the source (ms since the epoch).
    pub(super) source_offset_read_ms: AtomicU64,
    /// Keys of the current snapshot read so far, and how many it announced (0: unknown).
    pub(super) snapshot_keys_read: AtomicU64,
    pub(super) snapshot_keys_expected: AtomicU64,
    /// Stream commands applied.
    pub(super) stream_commands: AtomicU64,
    /// Full resyncs and partial resumes since the start.
    pub(super) full_resyncs: AtomicU64,
    pub(super) resumes: AtomicU64,
    /// Bytes received from the source and not yet consumed, in memory and on disk.
    pub(super) spool: Arc<SpoolGauge>,
    /// The port announced to the source (`REPLCONF listening-port`), kept across reconnects.
    pub(super) listening_port: std::sync::atomic::AtomicU16,
    /// Set when the shard must stop (its source slots started moving), with why.
    pub(super) halt: std::sync::Mutex<Option<String>>,
}

impl ShardProgress {
    pub fn new(source: NodeAddr) -> Self {
        ShardProgress {
            source,
            phase: AtomicU8::new(Phase::Connecting as u8),
            received: AtomicU64::new(0),
            applied_keys: AtomicU64::new(0),
            applied_bytes: AtomicU64::new(0),
            applied_offset: AtomicU64::new(0),
            source_offset: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            heartbeat_sent_ms: AtomicU64::new(0),
            transit_ms: AtomicU64::new(0),
            source_offset_read_ms: AtomicU64::new(0),
            snapshot_keys_read: AtomicU64::new(0),
            snapshot_keys_expected: AtomicU64::new(0),
            stream_commands: AtomicU64::new(0),
            full_resyncs: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            spool: Arc::default(),
            listening_port: std::sync::atomic::AtomicU16::new(0),
            halt: std::sync::Mutex::new(None),
        }
    }

    /// Bytes received from the source and waiting to be applied: in memory, on disk.
    pub fn buffered(&self) -> (u64, u64) {
        (self.spool.memory(), self.spool.disk())
    }

    /// Stream offset every target master has applied.
    pub fn applied_offset(&self) -> u64 {
        self.applied_offset.load(Ordering::Relaxed)
    }

    /// The source master's replication offset when last asked.
    pub fn source_offset(&self) -> u64 {
        self.source_offset.load(Ordering::Relaxed)
    }

    /// Stream bytes the target is behind the source (as of the last poll).
    pub fn lag_bytes(&self) -> u64 {
        self.source_offset().saturating_sub(self.applied_offset())
    }

    /// Heartbeat lag in milliseconds: the age of the last heartbeat when it arrived, and,
    /// when heartbeats stop arriving (a silent or unreachable source link), growing with the
    /// time since the last one beyond the heartbeat period.
    pub fn lag_ms(&self) -> u64 {
        let at_arrival = self.lag_ms.load(Ordering::Relaxed);
        let sent = self.heartbeat_sent_ms.load(Ordering::Relaxed);
        if sent == 0 {
            return at_arrival;
        }
        let overdue = now_ms().saturating_sub(sent + HEARTBEAT_PERIOD.as_millis() as u64);
        at_arrival.max(overdue)
    }

    /// The most a live heartbeat took to reach ferry, in milliseconds (see `transit_ms`).
    pub fn transit_ms(&self) -> u64 {
        self.transit_ms.load(Ordering::Relaxed)
    }

    pub fn stream_commands(&self) -> u64 {
        self.stream_commands.load(Ordering::Relaxed)
    }

    pub fn full_resyncs(&self) -> u64 {
        self.full_resyncs.load(Ordering::Relaxed)
    }

    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }

    /// Streaming, and the target has applied everything the source had when last asked, and
    /// that was within the last second (an unreachable source is never caught up with).
    pub fn caught_up(&self) -> bool {
        let read = self.source_offset_read_ms.load(Ordering::Relaxed);
        self.phase() == Phase::Streaming
            && self.source_offset() > 0
            && self.applied_offset() >= self.source_offset()
            && now_ms().saturating_sub(read) <= OFFSET_FRESHNESS.as_millis() as u64
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Connecting,
            1 => Phase::Transfer,
            2 => Phase::Done,
            4 => Phase::Streaming,
            _ => Phase::Failed,
        }
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Counts snapshot bytes received.
    pub fn record_received(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Snapshot bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Keys acknowledged by the target so far.
    /// What the snapshot being loaded has shown of its keys so far.
    pub(super) fn record_snapshot_keys(&self, stats: &super::snapshot::SnapshotStats) {
        self.snapshot_keys_read.store(stats.keys, Ordering::Relaxed);
        self.snapshot_keys_expected
            .store(stats.expected_keys, Ordering::Relaxed);
    }

    /// Keys of the snapshot being loaded that were read so far, and how many it holds (0
    /// when the snapshot does not say).
    pub fn snapshot_keys(&self) -> (u64, u64) {
        (
            self.snapshot_keys_read.load(Ordering::Relaxed),
            self.snapshot_keys_expected.load(Ordering::Relaxed),
        )
    }

    pub fn applied_keys(&self) -> u64 {
        self.applied_keys.load(Ordering::Relaxed)
    }

    /// Command bytes acknowledged by the target so far.
    pub fn applied_bytes(&self) -> u64 {
        self.applied_bytes.load(Ordering::Relaxed)
    }
}

/// What one shard's full sync did.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub source: NodeAddr,
    pub replid: ReplId,
    /// The replication offset the snapshot was taken at: an incremental sync continues here.
    pub offset: ReplOffset,
    pub snapshot_bytes: u64,
    pub snapshot: SnapshotStats,
    pub apply: ApplyStats,
    pub elapsed: Duration,
}

/// What the whole full sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub shards: Vec<ShardReport>,
    pub elapsed: Duration,
}

impl SyncReport {
    pub fn keys(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.snapshot.restored + s.snapshot.rewritten)
            .sum()
    }

    pub fn snapshot_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.snapshot_bytes).sum()
    }
}

/// A sync from a source deployment into a target deployment.
pub struct Sync {
    source: Deployment,
    target: Deployment,
    options: SyncOptions,
    progress: Vec<Arc<ShardProgress>>,
}

impl Sync {
    /// Discovers both sides.
    pub async fn prepare(
        source: &Endpoint,
        target: &Endpoint,
        options: SyncOptions,
    ) -> Result<Self, SyncError> {
        let source = Deployment::discover(source, options.timeout)
            .await
            .map_err(|e| SyncError::Discover {
                side: "source",
                source: e,
            })?;
        let target = Deployment::discover(target, options.timeout)
            .await
            .map_err(|e| SyncError::Discover {
                side: "target",
                source: e,
            })?;
        let progress = source
            .topology
            .shards
            .iter()
            .map(|s| Arc::new(ShardProgress::new(s.master.clone())))
            .collect();
        Ok(Sync {
            source,
            target,
            options,
            progress,
        })
    }

    pub fn source(&self) -> &Deployment {
        &self.source
    }

    pub fn target(&self) -> &Deployment {
        &self.target
    }

    /// One live counter set per source shard.
    pub fn progress(&self) -> &[Arc<ShardProgress>] {
        &self.progress
    }

    /// Syncs every source shard at once; returns when all snapshots are applied (`Full`), or
    /// only on an error (the other modes: drop the future to stop; checkpoints make that
    /// safe).
    pub async fn run(self) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let mode = ValueMode::for_target(&self.target.server, self.options.rewrite);
        let mut tasks = JoinSet::new();
        let mut hosts: HashMap<String, Arc<Semaphore>> = HashMap::new();
        for (progress, shard) in self.progress.iter().zip(&self.source.topology.shards) {
            let node = match shard.replicas.first() {
                Some(replica) if self.options.snapshot_from_replica => replica.clone(),
                _ => shard.master.clone(),
            };
            let limit = match self.options.max_snapshots_per_host {
                0 => Semaphore::MAX_PERMITS,
                n => n,
            };
            let host = hosts
                .entry(node.host.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone();
            let shard = ShardSync {
                endpoint: self.source.endpoint.clone(),
                source: self.source.clone(),
                shard: shard.clone(),
                node,
                host,
                progress: progress.clone(),
                target: self.target.clone(),
                options: self.options.clone(),
                mode,
            };
            tasks.spawn(shard.run());
        }
        let mut shards = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("shard sync panicked") {
                Ok(report) => shards.push(report),
                Err(e) => {
                    tasks.abort_all();
                    return Err(e);
                }
            }
        }
        shards.sort_by(|a, b| a.source.cmp(&b.source));
        Ok(SyncReport {
            shards,
            elapsed: started.elapsed(),
        })
    }
}

pub(super) struct ShardSync {
    pub(super) endpoint: Endpoint,
    /// The source as discovered at the start.
    pub(super) source: Deployment,
    /// The source shard as discovered at the start.
    pub(super) shard: Shard,
    /// The node the snapshot is taken from: the shard's master or one of its replicas.
    pub(super) node: NodeAddr,
    /// Permits for snapshots from `node`'s host.
    pub(super) host: Arc<Semaphore>,
    pub(super) progress: Arc<ShardProgress>,
    pub(super) target: Deployment,
    pub(super) options: SyncOptions,
    pub(super) mode: ValueMode,
}

impl ShardSync {
    async fn run(self) -> Result<ShardReport, SyncError> {
        let result = match self.options.mode {
            SyncMode::Full => self.full().await,
            SyncMode::FullIncr | SyncMode::Incr => self.follow().await,
        };
        self.progress.set_phase(if result.is_ok() {
            Phase::Done
        } else {
            Phase::Failed
        });
        if let Err(e) = &result {
            tracing::error!(shard = %self.progress.source, error = %e, "shard sync stopped");
        }
        result
    }

    pub(super) fn session_error(&self, source: SessionError) -> SyncError {
        SyncError::Session {
            shard: self.progress.source.clone(),
            source,
        }
    }

    pub(super) fn apply_error(&self, source: ApplyError) -> SyncError {
        SyncError::Apply {
            shard: self.progress.source.clone(),
            source,
        }
    }

    pub(super) fn protocol(&self, detail: String) -> SyncError {
        SyncError::Protocol {
            shard: self.progress.source.clone(),
            detail,
        }
    }

    pub(super) async fn connect(
        &self,
        node: &NodeAddr,
        from: PsyncFrom,
    ) -> Result<Session, SessionError> {
        let mut config = SessionConfig::new(node.host.clone(), node.port);
        config.credentials = self.endpoint.credentials.clone();
        config.tls = self.endpoint.tls.clone();
        config.handshake_timeout = self.options.timeout;
        config.spool = self.options.spool.clone();
        config.spool_gauge = self.progress.spool.clone();
        let announced = self.progress.listening_port.load(Ordering::Relaxed);
        config.listening_port = (announced != 0).then_some(announced);
        let session = Session::connect(config, from).await?;
        if let Some(port) = session.listening_port() {
            self.progress.listening_port.store(port, Ordering::Relaxed);
        }
        Ok(session)
    }

    /// `--mode full`: the snapshot, then done.
    async fn full(&self) -> Result<ShardReport, SyncError> {
        let started = Instant::now();
        let shard = self.progress.source.clone();
        let _permit = self
            .host
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if self.node != shard {
            tracing::info!(shard = %shard, replica = %self.node, "taking the snapshot from a replica");
        }
        let mut session = self
            .connect(&self.node, PsyncFrom::Fresh)
            .await
            .map_err(|e| self.session_error(e))?;
        let (replid, offset) = match session
            .next_event()
            .await
            .map_err(|e| self.session_error(e))?
        {
            SessionEvent::FullResync { replid, offset } => (replid, offset),
            other => {
                return Err(self.protocol(format!(
                    "expected +FULLRESYNC after PSYNC ? -1, got {other:?}"
                )))
            }
        };
        tracing::info!(shard = %shard, %replid, %offset, "full resync accepted");
        self.progress.set_phase(Phase::Transfer);
        let (snapshot_bytes, stats, apply, _) = self.load_snapshot(&mut session, true).await?;
        Ok(ShardReport {
            source: shard,
            replid,
            offset,
            snapshot_bytes,
            snapshot: stats,
            apply,
            elapsed: started.elapsed(),
        })
    }

    /// Applies (or, when `apply` is false, reads past) the snapshot that follows
    /// `+FULLRESYNC`; also returns the script bodies it carries.
    pub(super) async fn load_snapshot(
        &self,
        session: &mut Session,
        apply_keys: bool,
    ) -> Result<(u64, SnapshotStats, ApplyStats, Vec<Bytes>), SyncError> {
        let shard = self.progress.source.clone();
        let session_error = |source| SyncError::Session {
            shard: shard.clone(),
            source,
        };
        if !apply_keys {
            loop {
                match session.next_event().await.map_err(session_error)? {
                    SessionEvent::SnapshotBegin(_) => {}
                    SessionEvent::SnapshotChunk(bytes) => {
                        self.progress.record_received(bytes.len() as u64)
                    }
                    SessionEvent::SnapshotEnd { len } => {
                        return Ok((
                            len,
                            SnapshotStats::default(),
                            ApplyStats::default(),
                            Vec::new(),
                        ))
                    }
                    other => {
                        return Err(
                            self.protocol(format!("unexpected {other:?} during the snapshot"))
                        )
                    }
                }
            }
        }
        // Batches go to apply workers through a short queue, so parsing goes on while earlier
        // batches are applied. A snapshot holds each key once, so batches may land in any
        // order: several workers, each with its own connections, keep the target busy. The
        // exception is a big value handed out in parts: a batch that continues a key waits
        // until every batch sent before it is applied.
        let workers = self.options.apply_workers.max(1);
        let (batches, queue) = mpsc::channel::<Vec<WriteGroup>>(workers);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let (finished, mut finished_rx) = tokio::sync::watch::channel(0u64);
        let finished = Arc::new(finished);
        let mut applying = JoinSet::new();
        for _ in 0..workers {
            let mut applier = Applier::new(self.target.clone(), self.options.apply.clone());
            let progress = self.progress.clone();
            let queue = queue.clone();
            let finished = finished.clone();
            applying.spawn(async move {
                loop {
                    let Some(batch) = queue.lock().await.recv().await else {
                        break;
                    };
                    let keys = batch.iter().filter(|g| g.ends_key()).count() as u64;
                    let bytes_before = applier.stats().bytes;
                    let applied = applier.apply(batch).await;
                    finished.send_modify(|n| *n += 1);
                    applied?;
                    progress.applied_keys.fetch_add(keys, Ordering::Relaxed);
                    progress
                        .applied_bytes
                        .fetch_add(applier.stats().bytes - bytes_before, Ordering::Relaxed);
                }
                Ok::<_, ApplyError>(applier.stats().clone())
            });
        }
        drop(finished);
        let mut sent = 0u64;
        let mut send = async |batch: Vec<WriteGroup>| {
            if batch.first().is_some_and(|g| !g.starts_key()) {
                // Every worker gone means one failed: its error is collected below.
                let _ = finished_rx.wait_for(|&n| n >= sent).await;
            }
            sent += 1;
            batches.send(batch).await.is_ok()
        };

        let mut parser = Parser::new(self.options.parser_config(true));
        let mut sink =
            SnapshotSink::new(self.mode, self.options.db, self.options.selection.clone())
                .batch_limits(self.options.batch_keys, self.options.batch_bytes)
                .target_server(&self.target.server);
        // A stream follows: it reaches the target only once the snapshot is applied, so
        // expiries the load and the catching up may pass are held (see `hold`).
        let hold = self.options.mode != SyncMode::Full
            && super::writer::holds_expiries(&self.target.server);
        if hold {
            sink = sink.hold_expiries(now_ms() as i64 + SNAPSHOT_HOLD_MS);
        }
        self.progress.snapshot_keys_read.store(0, Ordering::Relaxed);
        self.progress
            .snapshot_keys_expected
            .store(0, Ordering::Relaxed);
        let snapshot_error = |source| SyncError::Snapshot {
            shard: shard.clone(),
            source,
        };
        let snapshot_bytes = loop {
            match session.next_event().await.map_err(session_error)? {
                SessionEvent::SnapshotBegin(_) => {}
                SessionEvent::SnapshotChunk(bytes) => {
                    self.progress.record_received(bytes.len() as u64);
                    // The parser pauses whenever a batch is full, so a chunk of compact
                    // encodings never becomes more than a batch of commands at a time; fed in
                    // slices, it is not copied whole into the parser's buffer either.
                    let mut stopped = false;
                    'slices: for slice in bytes.chunks(FEED_SLICE) {
                        let mut input = slice;
                        while parser.feed(input, &mut sink).map_err(snapshot_error)?
                            == rdb::Status::Paused
                        {
                            input = &[];
                            let batch = sink.take_groups();
                            if !send(batch).await {
                                stopped = true;
                                break 'slices;
                            }
                        }
                    }
                    self.progress.record_snapshot_keys(sink.stats());
                    if stopped {
                        break None;
                    }
                }
                SessionEvent::SnapshotEnd { len } => {
                    parser
                        .finish()
                        .map_err(|e| snapshot_error(SnapshotError::Rdb(e)))?;
                    self.progress.record_snapshot_keys(sink.stats());
                    let batch = sink.take_groups();
                    if !batch.is_empty() {
                        send(batch).await;
                    }
                    break Some(len);
                }
                other => {
                    return Err(self.protocol(format!("unexpected {other:?} during the snapshot")))
                }
            }
        };
        drop(batches);
        let mut apply = ApplyStats::default();
        while let Some(joined) = applying.join_next().await {
            let stats =
                joined
                    .expect("apply worker panicked")
                    .map_err(|source| SyncError::Apply {
                        shard: shard.clone(),
                        source,
                    })?;
            apply.add(&stats);
        }
        let snapshot_bytes = snapshot_bytes.ok_or_else(|| SyncError::Protocol {
            shard: shard.clone(),
            detail: "the apply task stopped early".into(),
        })?;
        let holds = sink.take_holds();
        if !holds.is_empty() {
            let id = super::checkpoint::ShardId::of(&self.shard);
            super::writer::record_holds(&self.target, &id, holds, &self.options.apply)
                .await
                .map_err(|source| SyncError::Apply {
                    shard: shard.clone(),
                    source,
                })?;
        }
        // Libraries last, once the keys are in: before the stream that may call them.
        let mut functions = FunctionStats::default();
        if self.target.server.holds_functions() {
            let others = match held_elsewhere(
                &self.source,
                &self.shard.master,
                self.options.timeout,
            )
            .await
            {
                Some(names) => Others::DeleteExcept(names),
                None => Others::Keep,
            };
            functions = install(
                &self.target,
                sink.libraries(),
                &others,
                self.options.apply.connect_timeout,
            )
            .await
            .map_err(|source| SyncError::Apply {
                shard: shard.clone(),
                source,
            })?;
        }
        let stats = sink.stats().clone();
        tracing::info!(
            shard = %shard,
            keys = stats.restored + stats.rewritten,
            libraries = stats.libraries,
            libraries_deleted = functions.deleted,
            expired = stats.expired,
            bytes = snapshot_bytes,
            "snapshot applied"
        );
        Ok((snapshot_bytes, stats, apply, sink.take_scripts()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming_shard() -> ShardProgress {
        let shard = ShardProgress::new(NodeAddr::new("127.0.0.1", 7000));
        shard.set_phase(Phase::Streaming);
        shard.source_offset.store(100, Ordering::Relaxed);
        shard.applied_offset.store(100, Ordering::Relaxed);
        shard
    }

    #[test]
    fn caught_up_needs_a_recent_source_offset() {
        let shard = streaming_shard();
        shard
            .source_offset_read_ms
            .store(now_ms(), Ordering::Relaxed);
        assert!(shard.caught_up());
        shard
            .source_offset_read_ms
            .store(now_ms() - 5_000, Ordering::Relaxed);
        assert!(
            !shard.caught_up(),
            "a source last heard of 5 s ago is not caught up with"
        );
    }

    #[test]
    fn lag_grows_while_heartbeats_stop_arriving() {
        let shard = streaming_shard();
        assert_eq!(shard.lag_ms(), 0, "no heartbeat yet: nothing measured");
        shard.lag_ms.store(3, Ordering::Relaxed);
        shard.heartbeat_sent_ms.store(now_ms(), Ordering::Relaxed);
        assert_eq!(shard.lag_ms(), 3, "within the period: the lag at arrival");
        shard
            .heartbeat_sent_ms
            .store(now_ms() - 10_000, Ordering::Relaxed);
        let lag = shard.lag_ms();
        assert!(
            (8_900..=9_100).contains(&lag),
            "overdue by about 9 s: {lag}"
        );
    }
}
