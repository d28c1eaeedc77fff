//! The incremental part of a shard's sync: from the checkpoints (or a new snapshot) to the
//! live replication stream, applied exactly once, for as long as the sync runs.
//!
//! Decisions, each logged with the shard, replid and offsets:
//! - every target master holds an `Applied` checkpoint of one history: `PSYNC <replid>
//!   <lowest offset + 1>`; masters skip what they already have;
//! - otherwise `PSYNC ? -1`; a target that may hold some of the shard's keys (checkpoints of
//!   another history, or a snapshot that was being loaded) has the shard's slots cleared first;
//! - `+CONTINUE` goes on; `+FULLRESYNC` clears the shard's slots and loads the snapshot;
//! - the source link breaks: everything read is flushed, then the same `PSYNC <replid>
//!   <offset+1>` goes to the shard's master (rediscovered: it may be a promoted replica).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::checkpoint::{heartbeat_key, Checkpoint, ShardId};
use super::expiry::Arrival;
use super::probe::Prober;
use super::run::{now_ms, Phase, ShardReport, ShardSync, SyncError, SyncMode, HEARTBEAT_PERIOD};
use super::stream::{Routed, StreamRouter, Write};
use super::writer::{ApplyMode, StreamApplier};
use crate::apply::ApplyError;
use crate::deployment::{parse_info, Deployment};
use crate::link::Link;
use crate::replica::{PsyncFrom, ReplId, ReplOffset, Session, SessionError, SessionEvent};
use crate::resp::{Command, Frame};
use crate::route::{CommandTable, NodeAddr, Slot};

/// Connection attempts to a source shard in a row before the sync gives up.
const MAX_SOURCE_FAILURES: u32 = 60;

/// Why streaming stopped.
enum Stop {
    /// The source link broke: reconnect and continue.
    Source(SourceLost),
    /// A target master's checkpoint went back (a failover lost acknowledged writes): resume
    /// every master from its checkpoint.
    Rewind(String),
    Fatal(SyncError),
}

/// What broke on the source side.
#[derive(Debug, thiserror::Error)]
enum SourceLost {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("reading expiries from the source master failed: {0}")]
    Probe(#[from] super::probe::ProbeError),
}

impl Stop {
    fn from_apply(error: SyncError) -> Self {
        match error {
            SyncError::Apply {
                source: e @ ApplyError::CheckpointBehind { .. },
                ..
            } => Stop::Rewind(e.to_string()),
            other => Stop::Fatal(other),
        }
    }
}

/// Where a shard resumes: history and, per target master, applied offset and selected db.
struct Position {
    replid: ReplId,
    offsets: Vec<(ReplOffset, u32)>,
}

impl Position {
    fn from_checkpoints(found: &[Option<Checkpoint>]) -> Option<Self> {
        let mut replid = None;
        let mut offsets = Vec::new();
        for checkpoint in found {
            let Some(Checkpoint::Applied {
                replid: r,
                offset,
                db,
            }) = checkpoint
            else {
                return None;
            };
            if *replid.get_or_insert(*r) != *r {
                return None;
            }
            offsets.push((*offset, *db));
        }
        Some(Position {
            replid: replid?,
            offsets,
        })
    }

    /// The lowest applied offset and the db selected there.
    fn lowest(&self) -> (ReplOffset, u32) {
        self.offsets
            .iter()
            .copied()
            .min_by_key(|(offset, _)| *offset)
            .unwrap_or_default()
    }
}

/// Writes that wait for expiries read from the source ([`Prober`]) before they are queued
/// for the target, with every write after them so that none overtakes them.
#[derive(Default)]
struct Held {
    writes: Vec<(Write, ReplOffset)>,
    /// The last offset outside a transaction before the first of them, and its db: what the
    /// target may be moved to if they cannot be resolved.
    before: (ReplOffset, u32),
}

/// How a stream of a source that replicates relative expiries is followed: reads of the
/// source master's expiries, and the offset up to which the stream replays what the master
/// ran before the link was set up.
struct Expiries {
    prober: Prober,
    replayed_until: ReplOffset,
    /// How far the source master's clock is ahead of ferry's: arrival times are moved onto
    /// the source's clock, which is the one its own absolute expiries (and the probes) use.
    clock_offset_ms: i64,
}

/// Aborts a background task when dropped.
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ShardSync {
    /// `--mode full+incr` and `--mode incr`: returns only with an error.
    pub(super) async fn follow(&self) -> Result<ShardReport, SyncError> {
        let shard = self.progress.source.clone();
        let id = ShardId::of(&self.shard);
        let table = self.command_table().await?;
        let mut router = StreamRouter::new(
            table,
            self.target.topology.clone(),
            self.options.selection.keys.clone(),
            self.options.db,
        );
        router.publish = self.options.publish;
        router.set_target_server(&self.target.server);
        router.set_source_server(&self.source.server);
        let mut expiries = router.source_forms().relative_expiry.then(|| {
            tracing::info!(shard = %shard, version = ?self.source.server.version, "the source replicates relative expiries; they are applied as absolute ones");
            Expiries {
                prober: Prober::new(
                    self.endpoint.clone(),
                    self.shard.master.clone(),
                    self.options.timeout,
                ),
                replayed_until: ReplOffset::default(),
                clock_offset_ms: 0,
            }
        });
        let mut applier = StreamApplier::new(
            id.clone(),
            self.target.clone(),
            self.options.apply_mode,
            self.options.apply.clone(),
        );
        let found = applier
            .read_checkpoints()
            .await
            .map_err(|e| self.apply_error(e))?;
        let mut position = Position::from_checkpoints(&found);
        // The target may hold keys of this shard that a new snapshot must not leave behind.
        let mut stale = found.iter().any(Option::is_some);
        match &position {
            Some(p) => {
                let (offset, db) = p.lowest();
                tracing::info!(shard = %shard, %id, replid = %p.replid, %offset, db, "checkpoints found; resuming");
                applier.start(p.replid, &p.offsets);
                router.set_selected_db(db);
            }
            None if stale => {
                tracing::info!(shard = %shard, %id, "incomplete checkpoints found; the shard is loaded again")
            }
            None => {}
        }
        let _heartbeat = Background(tokio::spawn(heartbeat(
            self.source.clone(),
            self.shard.clone(),
            self.progress.clone(),
            self.options.heartbeat,
            self.options.timeout,
        )));
        let mut node = self.node.clone();
        let mut failures = 0;
        loop {
            let from = match &position {
                Some(p) => PsyncFrom::Continue {
                    replid: p.replid,
                    next_offset: p.lowest().0.advance(1),
                },
                None => PsyncFrom::Fresh,
            };
            let connected = match self.connect(&node, from).await {
                Ok(mut session) => session.next_event().await.map(|first| (session, first)),
                Err(e) => Err(e),
            };
            let (mut session, first) = match connected {
                Ok(connected) => connected,
                Err(e) => {
                    failures += 1;
                    if failures > MAX_SOURCE_FAILURES {
                        return Err(self.session_error(e));
                    }
                    tracing::warn!(shard = %shard, node = %node, error = %e, attempt = failures, "source link failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    node = self.current_master().await.unwrap_or(node);
                    continue;
                }
            };
            match first {
                SessionEvent::FullResync { replid, offset } => {
                    self.progress.full_resyncs.fetch_add(1, Ordering::Relaxed);
                    let load = self.options.mode == SyncMode::FullIncr || stale;
                    tracing::info!(shard = %shard, %replid, %offset, load, "full resync");
                    if load {
                        applier
                            .mark_loading(replid)
                            .await
                            .map_err(|e| self.apply_error(e))?;
                        if stale {
                            applier
                                .clear_all(&self.shard.slots, &self.options.selection.keys)
                                .await
                                .map_err(|e| self.apply_error(e))?;
                        }
                        let _permit = self.host.acquire().await.expect("never closed");
                        self.progress.set_phase(Phase::Transfer);
                    }
                    let scripts = match self.load_snapshot(&mut session, load).await {
                        Ok((_, _, _, scripts)) => scripts,
                        Err(SyncError::Session { source, .. }) => {
                            // The source dropped the transfer (FLUSHALL kills the fork that
                            // streams it, a failover, a restart): take a new snapshot.
                            failures += 1;
                            if failures > MAX_SOURCE_FAILURES {
                                return Err(self.session_error(source));
                            }
                            tracing::warn!(shard = %shard, node = %node, error = %source, "snapshot transfer broken; taking a new snapshot");
                            position = None;
                            stale = stale || load;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            node = self.current_master().await.unwrap_or(node);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    // Before the first checkpoint of this history: an `EVALSHA` after a
                    // restart may name them.
                    applier
                        .store_scripts(&scripts)
                        .await
                        .map_err(|e| self.apply_error(e))?;
                    let everywhere =
                        vec![(ReplOffset::default(), 0); self.target.topology.shards.len()];
                    applier.start(replid, &everywhere);
                    router.set_selected_db(0);
                    applier
                        .flush(offset, 0)
                        .await
                        .map_err(|e| self.apply_error(e))?;
                }
                SessionEvent::Continue { replid, offset } => {
                    self.progress.resumes.fetch_add(1, Ordering::Relaxed);
                    if replid != applier.replid() {
                        tracing::info!(shard = %shard, old = %applier.replid(), new = %replid, "the source history changed (failover); following it");
                    }
                    applier.set_replid(replid);
                    tracing::info!(shard = %shard, node = %node, %replid, %offset, "partial resync accepted (+CONTINUE)");
                }
                other => {
                    return Err(self.protocol(format!(
                        "expected +FULLRESYNC or +CONTINUE after PSYNC, got {other:?}"
                    )))
                }
            }
            stale = true;
            failures = 0;
            if let Some(expiries) = &mut expiries {
                // What the master ran before now reaches ferry late by an unknown time
                // (its backlog, what it buffered during the snapshot): those commands'
                // expiries are read from the source instead of counted from arrival.
                expiries.replayed_until = match expiries.prober.master_offset().await {
                    Ok(offset) => offset,
                    Err(e) => {
                        tracing::warn!(shard = %shard, error = %e, "cannot read the source's replication offset; reading every expiry of this link from the source");
                        ReplOffset::new(u64::MAX)
                    }
                };
                match expiries.prober.clock_offset_ms().await {
                    Ok(offset) => expiries.clock_offset_ms = offset,
                    Err(e) => {
                        tracing::warn!(shard = %shard, error = %e, "cannot read the source's clock; arrival times stay on this host's")
                    }
                }
                tracing::info!(shard = %shard, replayed_until = %expiries.replayed_until, clock_offset_ms = expiries.clock_offset_ms, "commands up to this offset ran before the link; expiries of later ones count from their arrival");
            }
            self.progress.set_phase(Phase::Streaming);
            self.record(&applier, &mut session);
            match self
                .stream(&mut session, &mut router, &mut applier, expiries.as_mut())
                .await
            {
                Stop::Fatal(e) => return Err(e),
                Stop::Rewind(why) => {
                    tracing::warn!(shard = %shard, %why, "reading the stream again from the target's checkpoints");
                    drop(session);
                    let found = applier
                        .read_checkpoints()
                        .await
                        .map_err(|e| self.apply_error(e))?;
                    position = Position::from_checkpoints(&found);
                    match &position {
                        Some(p) => {
                            let (offset, db) = p.lowest();
                            tracing::info!(shard = %shard, replid = %p.replid, %offset, "resuming from the lowest checkpoint");
                            applier.start(p.replid, &p.offsets);
                            router.set_selected_db(db);
                        }
                        None => {
                            tracing::warn!(shard = %shard, "checkpoints incomplete; the shard is loaded again")
                        }
                    }
                    self.progress.set_phase(Phase::Connecting);
                }
                Stop::Source(e) => {
                    tracing::warn!(shard = %shard, node = %node, error = %e, replid = %applier.replid(), offset = %applier.applied(), "source link lost; resuming");
                    position = Some(Position {
                        replid: applier.replid(),
                        offsets: vec![(applier.applied(), router.selected_db())],
                    });
                    self.progress.set_phase(Phase::Connecting);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    node = self.current_master().await.unwrap_or(node);
                    if let Some(expiries) = &mut expiries {
                        expiries.prober.set_master(node.clone());
                    }
                }
            }
        }
    }

    /// Applies the stream until the source link breaks or something cannot be applied.
    async fn stream(
        &self,
        session: &mut Session,
        router: &mut StreamRouter,
        applier: &mut StreamApplier,
        mut expiries: Option<&mut Expiries>,
    ) -> Stop {
        router.restart();
        let start = session.offset().unwrap_or_default();
        // The last offset outside a transaction, and the db selected there.
        let mut safe = (start, router.selected_db());
        let mut held = Held::default();
        loop {
            let mut next = session.next_event().await.map(Some);
            applier.set_lag(self.progress.lag_ms());
            applier.set_heartbeat(self.progress.heartbeat_sent_ms.load(Ordering::Relaxed));
            loop {
                let event = match next {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(e) => {
                        if let Err(stop) = self
                            .release(&mut held, router, applier, expiries.as_deref_mut())
                            .await
                        {
                            return stop;
                        }
                        if let Err(e) = applier.flush(safe.0, safe.1).await {
                            return Stop::from_apply(self.apply_error(e));
                        }
                        return Stop::Source(e.into());
                    }
                };
                if let Err(stop) = self
                    .handle(
                        event,
                        router,
                        applier,
                        &mut safe,
                        &mut held,
                        expiries.as_deref_mut(),
                    )
                    .await
                {
                    return stop;
                }
                let pending = applier.pending() + held.writes.len();
                if pending >= self.options.stream_batch && !router.in_transaction() {
                    break;
                }
                next = session.try_next_event().await;
            }
            if let Err(stop) = self
                .release(&mut held, router, applier, expiries.as_deref_mut())
                .await
            {
                return stop;
            }
            if let Err(e) = applier.flush(safe.0, safe.1).await {
                return Stop::from_apply(self.apply_error(e));
            }
            self.record(applier, session);
            if let Some(why) = self.progress.halt.lock().expect("halt lock").clone() {
                return Stop::Fatal(self.protocol(why));
            }
        }
    }

    async fn handle(
        &self,
        event: SessionEvent,
        router: &mut StreamRouter,
        applier: &mut StreamApplier,
        safe: &mut (ReplOffset, u32),
        held: &mut Held,
        mut expiries: Option<&mut Expiries>,
    ) -> Result<(), Stop> {
        let fatal = |e| Stop::from_apply(e);
        let SessionEvent::Command {
            command,
            offset,
            arrived_ms,
        } = event
        else {
            return Err(fatal(
                self.protocol(format!("unexpected {event:?} in the stream")),
            ));
        };
        let sent = self.heartbeat_arrived(&command);
        let arrival = match &expiries {
            Some(e) => Arrival {
                ms: arrived_ms.saturating_add_signed(e.clock_offset_ms),
                replayed: offset <= e.replayed_until,
            },
            None => Arrival {
                ms: arrived_ms,
                replayed: false,
            },
        };
        if let (Some(sent), Some(_), false) = (sent, &expiries, arrival.replayed) {
            // Both times are this host's clock.
            self.progress
                .transit_ms
                .fetch_max(arrived_ms.saturating_sub(sent), Ordering::Relaxed);
        }
        let routed = router.route_at(command, arrival).map_err(|source| {
            fatal(SyncError::Route {
                shard: self.progress.source.clone(),
                source,
            })
        })?;
        let apply = |e| fatal(self.apply_error(e));
        match routed {
            Routed::Nothing => {}
            Routed::Writes(mut writes) => {
                self.progress
                    .stream_commands
                    .fetch_add(1, Ordering::Relaxed);
                for write in writes.iter_mut().filter(|w| w.script) {
                    applier
                        .resolve_scripts(write, offset)
                        .await
                        .map_err(apply)?;
                }
                // A verbatim script cannot run inside the batch script: it travels alone,
                // in its own wrapper with the checkpoint (see `verbatim`).
                let alone =
                    applier.mode() == ApplyMode::ExactlyOnce && writes.iter().any(|w| w.script);
                if alone {
                    // Writes held for their expiries go first, or the checkpoint would pass
                    // them.
                    self.release(held, router, applier, expiries.as_deref_mut())
                        .await?;
                    applier.flush(safe.0, safe.1).await.map_err(apply)?;
                }
                for write in writes {
                    if held.writes.is_empty() && write.probes.is_empty() {
                        applier.push(write, offset).map_err(apply)?;
                        continue;
                    }
                    if held.writes.is_empty() {
                        held.before = *safe;
                    }
                    held.writes.push((write, offset));
                }
                if alone {
                    self.release(held, router, applier, expiries.as_deref_mut())
                        .await?;
                    applier
                        .flush(offset, router.selected_db())
                        .await
                        .map_err(apply)?;
                }
            }
            Routed::Clear => {
                self.release(held, router, applier, expiries.as_deref_mut())
                    .await?;
                applier.flush(safe.0, safe.1).await.map_err(apply)?;
                tracing::info!(shard = %self.progress.source, %offset, "FLUSHALL/FLUSHDB on the source: clearing the shard's slots on the target");
                applier
                    .clear(
                        &self.shard.slots,
                        &self.options.selection.keys,
                        offset,
                        router.selected_db(),
                    )
                    .await
                    .map_err(apply)?;
            }
            Routed::Everywhere(command) => {
                self.release(held, router, applier, expiries).await?;
                applier.flush(safe.0, safe.1).await.map_err(apply)?;
                applier
                    .everywhere(command, offset, router.selected_db())
                    .await
                    .map_err(apply)?;
            }
        }
        if !router.in_transaction() {
            *safe = (offset, router.selected_db());
        }
        Ok(())
    }

    /// Reads the expiries the held writes wait for from the source and queues them for the
    /// target. When the source cannot be read, the target is moved only up to where they
    /// begin and the stream is resumed from there, as after a broken source link.
    async fn release(
        &self,
        held: &mut Held,
        router: &mut StreamRouter,
        applier: &mut StreamApplier,
        expiries: Option<&mut Expiries>,
    ) -> Result<(), Stop> {
        if held.writes.is_empty() {
            return Ok(());
        }
        let expiries = expiries.expect("writes are held only for a source's expiries");
        let apply = |e| Stop::from_apply(self.apply_error(e));
        match expiries.prober.resolve(&mut held.writes).await {
            Ok(()) => {
                for (write, offset) in held.writes.drain(..) {
                    applier.push(write, offset).map_err(apply)?;
                }
                Ok(())
            }
            Err(e) => {
                held.writes.clear();
                let (offset, db) = held.before;
                applier.flush(offset, db).await.map_err(apply)?;
                router.set_selected_db(db);
                Err(Stop::Source(e.into()))
            }
        }
    }

    /// Publishes the applied offset to the progress counters and the source's ACKs.
    fn record(&self, applier: &StreamApplier, session: &mut Session) {
        let applied = applier.applied();
        session.set_applied(applied);
        self.progress
            .applied_offset
            .store(applied.get(), Ordering::Relaxed);
    }

    /// A heartbeat written by [`heartbeat`] came through the stream: the lag is its age.
    /// Returns when it was written.
    fn heartbeat_arrived(&self, command: &Command) -> Option<u64> {
        let argv = command.argv();
        if argv.len() < 3 || !command.is("set") || !argv[1].ends_with(b":heartbeat") {
            return None;
        }
        if !argv[1].starts_with(crate::precheck::RESERVED_PREFIX.as_bytes()) {
            return None;
        }
        let sent = std::str::from_utf8(&argv[2]).ok()?.parse::<u64>().ok()?;
        self.progress
            .lag_ms
            .store(now_ms().saturating_sub(sent), Ordering::Relaxed);
        self.progress
            .heartbeat_sent_ms
            .fetch_max(sent, Ordering::Relaxed);
        Some(sent)
    }

    /// The source's `COMMAND` table: which arguments of each command are keys.
    async fn command_table(&self) -> Result<CommandTable, SyncError> {
        let failed = |detail: String| SyncError::Commands {
            shard: self.progress.source.clone(),
            detail,
        };
        let master = &self.shard.master;
        let mut link = Link::connect(
            &master.host,
            master.port,
            &self.endpoint,
            self.options.timeout,
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
        let reply = link
            .call(&["COMMAND"])
            .await
            .map_err(|e| failed(e.to_string()))?;
        CommandTable::from_reply(&reply).map_err(|e| failed(e.to_string()))
    }

    /// The master that owns this shard's slots now (a replica may have been promoted).
    async fn current_master(&self) -> Option<NodeAddr> {
        current_master(&self.source, &self.shard, self.options.timeout).await
    }
}

async fn current_master(
    source: &Deployment,
    shard: &crate::route::Shard,
    timeout: Duration,
) -> Option<NodeAddr> {
    let first = shard.slots.iter().map(|r| r.first).min()?;
    let fresh = source.rediscover(timeout).await.ok()?;
    Some(fresh.topology.owner(first)?.master.clone())
}

/// Every 250 ms the source master's replication offset (for lag in bytes and `caught_up`),
/// every second a heartbeat key with the time in milliseconds (for lag in seconds), when
/// enabled and the source accepts it. Resharding of the source stops the shard.
async fn heartbeat(
    source: Deployment,
    shard: crate::route::Shard,
    progress: std::sync::Arc<super::run::ShardProgress>,
    write: bool,
    timeout: Duration,
) {
    let first = shard
        .slots
        .iter()
        .map(|r| r.first)
        .min()
        .unwrap_or(Slot::new(0).expect("slot 0"));
    let key = heartbeat_key(first);
    let mut master = shard.master.clone();
    let mut link: Option<Link> = None;
    let mut write = write;
    let mut tick = 0u64;
    if write {
        // Counts as the last heartbeat until one arrives: a link that goes silent before
        // the first one shows as growing lag too.
        progress
            .heartbeat_sent_ms
            .fetch_max(now_ms(), Ordering::Relaxed);
    }
    loop {
        // The offset is polled four times a second (it decides `caught_up`), the heartbeat
        // written once a second.
        tokio::time::sleep(Duration::from_millis(250)).await;
        tick += 1;
        if link.is_none() {
            match Link::connect(&master.host, master.port, &source.endpoint, timeout).await {
                Ok(l) => link = Some(l),
                Err(_) => {
                    if let Some(m) = current_master(&source, &shard, timeout).await {
                        master = m;
                    }
                    continue;
                }
            }
        }
        let l = link.as_mut().expect("connected");
        let info = match l.call(&["INFO", "replication"]).await {
            Ok(Frame::Bulk(Some(text))) => parse_info(&String::from_utf8_lossy(&text)),
            _ => {
                link = None;
                continue;
            }
        };
        if info.get("role").map(String::as_str) != Some("master") {
            link = None;
            if let Some(m) = current_master(&source, &shard, timeout).await {
                master = m;
            }
            continue;
        }
        if let Some(offset) = info.get("master_repl_offset").and_then(|o| o.parse().ok()) {
            progress.source_offset.store(offset, Ordering::Relaxed);
            progress
                .source_offset_read_ms
                .store(now_ms(), Ordering::Relaxed);
        }
        if source.topology.cluster {
            if let Ok(Frame::Bulk(Some(nodes))) = l.call(&["CLUSTER", "NODES"]).await {
                if let Some(why) = slots_moving(&String::from_utf8_lossy(&nodes), &shard) {
                    tracing::error!(shard = %shard.master, %why, "stopping the shard");
                    *progress.halt.lock().expect("halt lock") = Some(why);
                }
            }
        }
        if write && tick % (HEARTBEAT_PERIOD.as_millis() as u64 / 250) == 0 {
            let now = now_ms().to_string();
            let reply = l
                .call(&[&b"SET"[..], &key, now.as_bytes(), b"PX", b"60000"])
                .await;
            match reply {
                Ok(Frame::Error(e)) => {
                    tracing::warn!(node = %master, reply = %String::from_utf8_lossy(&e), "the source refuses the heartbeat key; lag in seconds is not measured");
                    write = false;
                    progress.heartbeat_sent_ms.store(0, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => link = None,
            }
        }
    }
}

/// Why the shard must stop, when the source master's `CLUSTER NODES` line shows its slots
/// migrating, importing, or no longer the ones the sync started with: keys moved between
/// source shards arrive through two streams whose order ferry cannot know.
fn slots_moving(nodes: &str, shard: &crate::route::Shard) -> Option<String> {
    let line = nodes.lines().find(|l| {
        l.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    })?;
    let mut owned = Vec::new();
    for field in line.split(' ').skip(8) {
        if field.starts_with('[') {
            let slot = field
                .trim_start_matches('[')
                .split('-')
                .next()
                .unwrap_or(field);
            let direction = if field.contains("->-") {
                "migrating"
            } else {
                "importing"
            };
            return Some(format!(
                "source slot {slot} is {direction} on {} (a resharding of the source): ferry stops rather than apply the moved keys out of order; once the resharding is done, sync that slot range again (ferry verify --slots shows what differs)",
                shard.master
            ));
        }
        let (first, last) = match field.split_once('-') {
            Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
            None => {
                let n = field.parse::<u16>().ok()?;
                (n, n)
            }
        };
        owned.push((first, last));
    }
    let mut expected: Vec<(u16, u16)> = shard
        .slots
        .iter()
        .map(|r| (r.first.get(), r.last.get()))
        .collect();
    expected.sort_unstable();
    owned.sort_unstable();
    if owned == expected {
        return None;
    }
    let set = |ranges: &[(u16, u16)]| -> std::collections::BTreeSet<u16> {
        ranges.iter().flat_map(|&(a, b)| a..=b).collect()
    };
    let (now, then) = (set(&owned), set(&expected));
    let moved: Vec<String> = now
        .symmetric_difference(&then)
        .take(5)
        .map(|s| s.to_string())
        .collect();
    Some(format!(
        "source slot {} moved to or from {} (a resharding of the source): ferry stops rather than apply the moved keys out of order; once the resharding is done, sync those slots again (ferry verify --slots shows what differs)",
        moved.join(", "),
        shard.master
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_slots_are_named() {
        let shard = crate::route::Shard {
            master: NodeAddr::new("127.0.0.1", 7000),
            replicas: Vec::new(),
            slots: vec![crate::route::SlotRange::new(
                Slot::new(0).unwrap(),
                Slot::new(5460).unwrap(),
            )],
        };
        let line = |slots: &str| {
            format!("abc 127.0.0.1:7000@17000 myself,master - 0 0 1 connected {slots}\ndef 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-16383\n")
        };
        assert_eq!(slots_moving(&line("0-5460"), &shard), None);
        let why = slots_moving(&line("0-5460 [42->-def]"), &shard).unwrap();
        assert!(why.contains("slot 42 is migrating"), "{why}");
        let why = slots_moving(&line("0-5459"), &shard).unwrap();
        assert!(why.contains("source slot 5460 moved"), "{why}");
    }

    fn replid(c: u8) -> ReplId {
        ReplId::parse(&[c; 40]).unwrap()
    }

    #[test]
    fn resume_needs_one_history_on_every_master() {
        let applied = |c, offset, db| {
            Some(Checkpoint::Applied {
                replid: replid(c),
                offset: ReplOffset::new(offset),
                db,
            })
        };
        let position =
            Position::from_checkpoints(&[applied(b'a', 90, 0), applied(b'a', 70, 2)]).unwrap();
        assert_eq!(position.lowest(), (ReplOffset::new(70), 2));
        assert!(Position::from_checkpoints(&[applied(b'a', 90, 0), None]).is_none());
        assert!(
            Position::from_checkpoints(&[applied(b'a', 90, 0), applied(b'b', 90, 0)]).is_none()
        );
        assert!(Position::from_checkpoints(&[
            applied(b'a', 90, 0),
            Some(Checkpoint::Loading {
                replid: replid(b'a')
            })
        ])
        .is_none());
        assert!(Position::from_checkpoints(&[]).is_none());
    }
}
