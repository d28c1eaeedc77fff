//! The incremental apply of one source shard: writes queued per target master and flushed
//! together with that master's checkpoint, so that what a master holds and what its
//! checkpoint says never disagree (exactly-once), or with the checkpoint after them
//! (at-least-once).
//!
//! Exactly-once: a master's batch that holds only absolute writes (see
//! [`Write::relative`](super::stream::Write)) is pipelined with `HSET <checkpoint>` after it;
//! if any of it is refused, the checkpoint is set back to where the batch began before it is
//! sent again, so a replay only ever repeats absolute writes. A batch with any relative write
//! runs as one Lua script that first probes one key per slot it touches (a slot that moved
//! makes it stop before writing anything), then runs every command and sets the checkpoint:
//! it happens whole or not at all. When the connection is lost the master's checkpoint says
//! which: the batch is sent again only if the checkpoint is still where it began.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use super::checkpoint::{checkpoint_key_of, held_key, scripts_key, Checkpoint, ShardId};
use super::hold::{self, HOLD_MARGIN_MS, HOLD_SHIFT_MS};
use super::run::now_ms;
use super::stream::{Write, SCRIPT_EFFECTS_HINT};
use super::verbatim::{self, ScriptBook, Step};
use crate::apply::{connect, printable, ApplyConfig, ApplyError};
use crate::deployment::Deployment;
use crate::link::{Link, LinkError};
use crate::replica::{ReplId, ReplOffset};
use crate::resp::{Command, Frame};
use crate::route::{KeyFilter, NodeAddr, Slot, SlotRange};

/// How the incremental stream is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyMode {
    /// Checkpoints move atomically with the data: nothing is applied twice.
    #[default]
    ExactlyOnce,
    /// Plain pipelining with the checkpoint after each batch: after a crash, the writes since
    /// the last checkpoint are applied again (lists may get duplicated entries). For targets
    /// that refuse scripts.
    AtLeastOnce,
}

/// The batch script: `ARGV` = checkpoint key, field, value, the number of probe keys, the
/// probe keys, then each command as its argument count followed by its arguments. It returns
/// `OK`, `{'retry', error}` when a probe found a slot that is not served here (nothing was
/// written), or `{'fail', index, error}` for the first command the target refused (the
/// commands before it were applied, the checkpoint was not moved).
const SCRIPT: &str = r#"local a = ARGV
local probes = tonumber(a[4])
for i = 5, 4 + probes do
  local r = redis.pcall('EXISTS', a[i])
  if type(r) == 'table' and r.err then return {'retry', r.err} end
end
local i = 5 + probes
local n = #a
local k = 0
while i <= n do
  local c = tonumber(a[i])
  local r = redis.pcall(unpack(a, i + 1, i + c))
  if type(r) == 'table' and r.err then return {'fail', tostring(k), r.err} end
  i = i + c + 1
  k = k + 1
end
redis.call('HSET', a[1], a[2], a[3])
return 'OK'"#;

/// How often at-least-once writes its checkpoints: a crash repeats up to this much of the
/// stream, in exchange for one write fewer per batch.
const AT_LEAST_ONCE_CHECKPOINT: Duration = Duration::from_millis(250);

/// How often a writer settles the expiries it holds (see `hold`).
const RELEASE_PERIOD: Duration = Duration::from_millis(500);

/// Held expiries settled by one release script at most.
const RELEASE_LIMIT: usize = 1000;

/// Commands with more arguments than this do not fit one Lua call (`unpack` limit).
const SCRIPT_MAX_ARGS: usize = 7900;

/// One target master's queue and its connection.
struct NodeWriter {
    addr: NodeAddr,
    /// The lowest slot the master owned when the sync started: after a failover the master
    /// that owns it now is this writer's node.
    first_slot: Slot,
    key: Bytes,
    /// Where this master keeps the bodies of the verbatim scripts it ran.
    scripts_key: Bytes,
    /// What the master's checkpoint says.
    applied: ReplOffset,
    applied_db: u32,
    /// The checkpoint must be written at the next flush even if `applied` reaches its end.
    fresh: bool,
    /// A write of the current batch was refused after the batch was sent: the checkpoint
    /// may say more than the data holds, so the batch is resent without consulting it.
    suspect: bool,
    /// When the checkpoint was last written (at-least-once writes it at most every
    /// [`AT_LEAST_ONCE_CHECKPOINT`]).
    checkpointed: Instant,
    units: Vec<Write>,
    link: Option<Link>,
    /// This shard's held expiries on the master (`hold`): how many the set had after the
    /// last release (`None`: not known yet), and when that ran.
    held_key: Bytes,
    held: Option<u64>,
    released: Instant,
}

/// What every writer of one shard shares.
struct Context {
    field: Bytes,
    replid: ReplId,
    mode: ApplyMode,
    config: ApplyConfig,
    target: Deployment,
    /// Expiries are held (`hold`), and a time in the source's clock (ms) that the stream has
    /// passed once the batch is applied: the last heartbeat's (never later than the stream).
    hold: bool,
    stream_time_ms: i64,
}

/// The writers of one source shard, one per target master.
pub struct StreamApplier {
    shard: ShardId,
    target: Deployment,
    mode: ApplyMode,
    config: ApplyConfig,
    replid: ReplId,
    writers: Vec<NodeWriter>,
    pending: usize,
    /// The target reads expiries exactly (`PEXPIRETIME`), so expiries can be held.
    hold: bool,
    /// How far the stream runs behind the source (the heartbeat lag), in ms.
    lag_ms: i64,
    /// When the source wrote the last heartbeat the stream brought (Unix ms, 0: none yet):
    /// once what is queued is applied, the target holds the stream at least up to then.
    heartbeat_ms: i64,
    /// Bodies of the scripts the stream may name by sha.
    scripts: ScriptBook,
}

impl StreamApplier {
    pub fn new(shard: ShardId, target: Deployment, mode: ApplyMode, config: ApplyConfig) -> Self {
        let hold = holds_expiries(&target.server);
        let writers = target
            .topology
            .shards
            .iter()
            .map(|s| {
                let first_slot = s
                    .slots
                    .iter()
                    .map(|r| r.first)
                    .min()
                    .unwrap_or(Slot::new(0).expect("slot 0"));
                NodeWriter {
                    addr: s.master.clone(),
                    first_slot,
                    key: checkpoint_key_of(s),
                    scripts_key: scripts_key(first_slot),
                    applied: ReplOffset::default(),
                    applied_db: 0,
                    fresh: true,
                    suspect: false,
                    checkpointed: Instant::now(),
                    units: Vec::new(),
                    link: None,
                    held_key: held_key(&checkpoint_key_of(s), &shard),
                    held: None,
                    released: Instant::now(),
                }
            })
            .collect();
        StreamApplier {
            shard,
            target,
            mode,
            config,
            // Replaced by `start` or `mark_loading` before anything is written.
            replid: ReplId::parse(&[b'0'; ReplId::LEN]).expect("40 hex digits"),
            writers,
            pending: 0,
            hold,
            lag_ms: 0,
            heartbeat_ms: 0,
            scripts: ScriptBook::default(),
        }
    }

    /// How far the stream runs behind the source now: expiries closer than that (plus a
    /// margin) are held until the stream passes them.
    pub fn set_lag(&mut self, lag_ms: u64) {
        self.lag_ms = lag_ms.min(i64::MAX as u64) as i64;
    }

    /// The source's time in the last heartbeat the stream brought: held expiries up to it
    /// are settled after the next flush (the stream has passed them by then).
    pub fn set_heartbeat(&mut self, sent_ms: u64) {
        self.heartbeat_ms = sent_ms.min(i64::MAX as u64) as i64;
    }

    pub fn mode(&self) -> ApplyMode {
        self.mode
    }

    pub fn replid(&self) -> ReplId {
        self.replid
    }

    /// The source continues under a new history id (a failover): checkpoints name it from
    /// the next flush on.
    pub fn set_replid(&mut self, replid: ReplId) {
        self.replid = replid;
    }

    /// Writes queued and not yet flushed.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The lowest offset every target master has applied.
    pub fn applied(&self) -> ReplOffset {
        self.writers
            .iter()
            .map(|w| w.applied)
            .min()
            .unwrap_or_default()
    }

    /// Reads this shard's checkpoint on every target master (`None` where there is none),
    /// following a master that moved (a failover) and waiting out one that does not answer.
    pub async fn read_checkpoints(&mut self) -> Result<Vec<Option<Checkpoint>>, ApplyError> {
        let field = self.shard.as_str().to_string();
        let mut found = Vec::new();
        for writer in &mut self.writers {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let reply = match writer.link.as_mut() {
                    Some(link) => {
                        link.call(&[&b"HGET"[..], &writer.key, field.as_bytes()])
                            .await
                    }
                    None => match open(&self.target, &writer.addr, &self.config).await {
                        Ok(link) => {
                            writer.link = Some(link);
                            continue;
                        }
                        Err(e) => Err(e),
                    },
                };
                // Lost links and refusals that pass (a failover, loading) are retried.
                let retry = attempts <= self.config.max_link_failures
                    && match &reply {
                        Err(_) => true,
                        Ok(Frame::Error(e)) => {
                            let text = String::from_utf8_lossy(e);
                            is_transient(&text) || is_redirect(&text)
                        }
                        Ok(_) => false,
                    };
                if retry {
                    writer.link = None;
                    tokio::time::sleep(self.config.max_backoff).await;
                    writer.relocate(&self.target, &self.config).await;
                    continue;
                }
                match reply {
                    Ok(Frame::Bulk(Some(value))) => {
                        found.push(Checkpoint::parse(&value));
                        break;
                    }
                    Err(source) => return Err(ApplyError::Link { attempts, source }),
                    Ok(Frame::Error(e)) => {
                        return Err(ApplyError::Rejected {
                            key: printable(&writer.key),
                            command: "HGET".into(),
                            reply: String::from_utf8_lossy(&e).into_owned(),
                        })
                    }
                    Ok(_) => {
                        found.push(None);
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Starts history `replid` with every master at `offsets` (one per master, as
    /// [`StreamApplier::read_checkpoints`] returned them) and `db` selected.
    pub fn start(&mut self, replid: ReplId, offsets: &[(ReplOffset, u32)]) {
        self.replid = replid;
        for (writer, &(offset, db)) in self.writers.iter_mut().zip(offsets) {
            writer.applied = offset;
            writer.applied_db = db;
            writer.fresh = true;
            writer.suspect = false;
            writer.units.clear();
        }
        self.pending = 0;
    }

    /// Records on every master that a snapshot of `replid` is being loaded.
    pub async fn mark_loading(&mut self, replid: ReplId) -> Result<(), ApplyError> {
        self.replid = replid;
        let value = Checkpoint::Loading { replid }.encode();
        for i in 0..self.writers.len() {
            let key = self.writers[i].key.clone();
            let field = self.shard.as_str().to_string();
            let link = self.link(i).await?;
            expect_ok(
                link,
                &[&b"HSET"[..], &key, field.as_bytes(), value.as_bytes()],
            )
            .await?;
        }
        Ok(())
    }

    /// Queues `write`, which the stream carried up to `offset`. Masters that already applied
    /// that offset skip it.
    pub fn push(&mut self, write: Write, offset: ReplOffset) -> Result<(), ApplyError> {
        debug_assert!(
            write.probes.is_empty(),
            "expiries are read before writes queue"
        );
        let slot = Slot::of_key(&write.key);
        let index =
            self.target
                .topology
                .owner_index(slot)
                .ok_or_else(|| ApplyError::Uncovered {
                    key: printable(&write.key),
                    slot,
                })?;
        let writer = &mut self.writers[index];
        if offset > writer.applied {
            let mut write = write;
            if self.hold {
                let until = now_ms() as i64 + self.lag_ms + HOLD_MARGIN_MS;
                hold_expiries(&mut write, &writer.held_key, until);
                if write.other_slots.contains(&writer.held_key) {
                    writer.held = Some(writer.held.unwrap_or(0) + 1);
                }
            }
            writer.units.push(write);
            self.pending += 1;
        }
        Ok(())
    }

    /// Learns the bodies of `write`'s `EVAL`s and gives its `EVALSHA`s theirs (`EVAL body
    /// ...`), looking a body the process has not seen up in the target's script stores. A
    /// write the target master already applied keeps an `EVALSHA` it has no body for: it is
    /// skipped.
    pub async fn resolve_scripts(
        &mut self,
        write: &mut Write,
        offset: ReplOffset,
    ) -> Result<(), ApplyError> {
        let applied = self
            .target
            .topology
            .owner_index(Slot::of_key(&write.key))
            .is_some_and(|i| self.writers[i].applied >= offset);
        for i in 0..write.commands.len() {
            let command = &write.commands[i];
            if let Some(Ok(Step::Script { body, .. })) = verbatim::script_step(command) {
                self.scripts.learn(body.clone());
                continue;
            }
            if !verbatim::is_evalsha(command) {
                continue;
            }
            let sha = command.args().first().cloned().unwrap_or_default();
            if self.scripts.get(&sha).is_none() {
                self.look_up_script(&sha).await?;
            }
            match self.scripts.get(&sha) {
                Some(body) => write.commands[i] = verbatim::with_body(command, body),
                None if applied || self.mode == ApplyMode::AtLeastOnce => {}
                None => {
                    return Err(ApplyError::Script {
                        sha: printable(&sha),
                        reason: format!("the source names it by sha only, and ferry has not seen its body (not in the stream since the checkpoint, nor in a snapshot, nor stored in the target's {}*:scripts keys); load the shard again from a snapshot (ferry cleanup on the target, then sync), or {SCRIPT_EFFECTS_HINT}", crate::precheck::RESERVED_PREFIX),
                    })
                }
            }
        }
        Ok(())
    }

    /// Reads the body of script `sha` from the first target master that stored it.
    async fn look_up_script(&mut self, sha: &Bytes) -> Result<(), ApplyError> {
        for i in 0..self.writers.len() {
            let key = self.writers[i].scripts_key.clone();
            let link = self.link(i).await?;
            if let Frame::Bulk(Some(body)) = link
                .call(&[&b"HGET"[..], &key, sha])
                .await
                .map_err(link_error)?
            {
                tracing::info!(shard = %self.shard, sha = %printable(sha), "script body found in the target's store");
                self.scripts.insert(sha, body);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Learns `bodies` (a snapshot's `lua` aux fields, `SCRIPT LOAD`) and stores them on
    /// every target master, before any checkpoint moves past the point they were learnt.
    pub async fn store_scripts(&mut self, bodies: &[Bytes]) -> Result<(), ApplyError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let mut fields: Vec<Bytes> = Vec::new();
        for body in bodies {
            let sha = self.scripts.learn(body.clone());
            fields.push(Bytes::from(sha));
            fields.push(body.clone());
        }
        for i in 0..self.writers.len() {
            let key = self.writers[i].scripts_key.clone();
            let link = self.link(i).await?;
            for chunk in fields.chunks(200) {
                let mut argv: Vec<&[u8]> = vec![b"HSET", &key];
                argv.extend(chunk.iter().map(|b| b.as_ref()));
                expect_ok(link, &argv).await?;
            }
        }
        tracing::debug!(shard = %self.shard, scripts = bodies.len(), "script bodies stored on the target");
        Ok(())
    }

    /// Applies everything queued and moves every master's checkpoint to `end` with `db`
    /// selected.
    pub async fn flush(&mut self, end: ReplOffset, db: u32) -> Result<(), ApplyError> {
        let context = Arc::new(self.context());
        let mut tasks = JoinSet::new();
        for (index, mut writer) in std::mem::take(&mut self.writers).into_iter().enumerate() {
            let context = context.clone();
            tasks.spawn(async move {
                let result = writer.flush(&context, end, db).await;
                (index, writer, result)
            });
        }
        let mut writers: Vec<Option<NodeWriter>> = Vec::new();
        writers.resize_with(tasks.len(), || None);
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            let (index, writer, result) = joined.expect("writer task panicked");
            writers[index] = Some(writer);
            if let Err(e) = result {
                failure.get_or_insert(e);
            }
        }
        self.writers = writers
            .into_iter()
            .map(|w| w.expect("every writer returns"))
            .collect();
        self.pending = self.writers.iter().map(|w| w.units.len()).sum();
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `command` on every target master (after what is queued), then checkpoints.
    pub async fn everywhere(
        &mut self,
        command: Command,
        offset: ReplOffset,
        db: u32,
    ) -> Result<(), ApplyError> {
        let argv = command.argv();
        if argv.len() == 3 && command.is("script") && argv[1].eq_ignore_ascii_case(b"load") {
            // `EVALSHA` names it from now on, also after a restart.
            self.store_scripts(&[argv[2].clone()]).await?;
        }
        for i in 0..self.writers.len() {
            if self.writers[i].applied >= offset {
                continue;
            }
            let link = self.link(i).await?;
            link.queue_command(&command);
            let reply = link.exchange().await.map_err(link_error)?;
            if let Some(Frame::Error(e)) = reply.first() {
                let text = String::from_utf8_lossy(e);
                // A replayed FUNCTION DELETE finds nothing to delete: that is its effect.
                if !text.contains("not found") {
                    return Err(ApplyError::Rejected {
                        key: String::new(),
                        command: printable(command.name()).to_ascii_uppercase(),
                        reply: text.into_owned(),
                    });
                }
            }
        }
        self.flush(offset, db).await
    }

    /// Deletes every key of `slots` that `keys` selects on every target master that has not
    /// applied `offset` yet (`FLUSHALL`, or a full resync), then checkpoints there.
    pub async fn clear(
        &mut self,
        slots: &[SlotRange],
        keys: &KeyFilter,
        offset: ReplOffset,
        db: u32,
    ) -> Result<u64, ApplyError> {
        debug_assert_eq!(self.pending, 0, "flush before clearing");
        let deleted = self.clear_nodes(slots, keys, Some(offset)).await?;
        tracing::info!(shard = %self.shard, deleted, %offset, "cleared the shard's slots on the target");
        self.flush(offset, db).await?;
        Ok(deleted)
    }

    /// Deletes every key of `slots` that `keys` selects on every target master (before a
    /// snapshot is loaded again).
    pub async fn clear_all(
        &mut self,
        slots: &[SlotRange],
        keys: &KeyFilter,
    ) -> Result<u64, ApplyError> {
        let deleted = self.clear_nodes(slots, keys, None).await?;
        tracing::info!(shard = %self.shard, deleted, "cleared the shard's slots on the target before loading a snapshot");
        Ok(deleted)
    }

    /// The deleting part of both: masters that applied `unless_applied` already are skipped.
    async fn clear_nodes(
        &mut self,
        slots: &[SlotRange],
        keys: &KeyFilter,
        unless_applied: Option<ReplOffset>,
    ) -> Result<u64, ApplyError> {
        let mut deleted = 0;
        for i in 0..self.writers.len() {
            if unless_applied.is_some_and(|offset| self.writers[i].applied >= offset) {
                continue;
            }
            let link = self.link(i).await?;
            deleted += clear_node(link, slots, keys).await.map_err(link_error)?;
        }
        Ok(deleted)
    }

    fn context(&self) -> Context {
        Context {
            field: Bytes::from(self.shard.as_str().to_string()),
            replid: self.replid,
            mode: self.mode,
            config: self.config.clone(),
            target: self.target.clone(),
            hold: self.hold,
            stream_time_ms: self.heartbeat_ms,
        }
    }

    async fn link(&mut self, index: usize) -> Result<&mut Link, ApplyError> {
        let writer = &mut self.writers[index];
        if writer.link.is_none() {
            let link = open(&self.target, &writer.addr, &self.config)
                .await
                .map_err(link_error)?;
            writer.link = Some(link);
        }
        Ok(writer.link.as_mut().expect("just connected"))
    }
}

fn link_error(source: LinkError) -> ApplyError {
    ApplyError::Link {
        attempts: 1,
        source,
    }
}

async fn open(
    target: &Deployment,
    addr: &NodeAddr,
    config: &ApplyConfig,
) -> Result<Link, LinkError> {
    let db = target.endpoint.db.filter(|_| !target.topology.cluster);
    connect(addr, &target.endpoint, db, config.connect_timeout).await
}

async fn expect_ok(link: &mut Link, argv: &[&[u8]]) -> Result<(), ApplyError> {
    match link.call(argv).await.map_err(link_error)? {
        Frame::Error(e) => Err(ApplyError::Rejected {
            key: printable(argv.get(1).copied().unwrap_or_default()),
            command: printable(argv[0]),
            reply: String::from_utf8_lossy(&e).into_owned(),
        }),
        _ => Ok(()),
    }
}

/// What went wrong with one attempt at a batch.
enum Failure {
    /// The connection broke: the checkpoint says what was applied.
    Link(LinkError),
    /// Refused for now (`OOM`, `LOADING`, a failover in progress, ...).
    Later(String),
    /// `MOVED`: the node no longer serves a slot of the batch (a graceful failover made it a
    /// replica, or the slot moved).
    Moved(String),
    Fatal(ApplyError),
}

impl NodeWriter {
    async fn flush(
        &mut self,
        context: &Context,
        end: ReplOffset,
        db: u32,
    ) -> Result<(), ApplyError> {
        // A master ahead of `end` (after a resume from the lowest checkpoint, the masters'
        // checkpoints differ where ferry stopped between their parallel writes) keeps its
        // checkpoint: set back, it would take the writes up to it again.
        if self.applied > end || (self.applied == end && !self.fresh) {
            self.units.clear();
            return Ok(());
        }
        let mut backoff = context.config.min_backoff;
        let mut failures = 0;
        let mut recovering = false;
        // When the master stopped answering, and how many redirections in a row left this
        // writer's slot where it was (a slot moved to another master is not a failover).
        let mut unreachable_since: Option<Instant> = None;
        let mut moved_in_place = 0;
        loop {
            let attempt = self.attempt(context, end, db, recovering).await;
            let failure = match attempt {
                Ok(()) => {
                    self.fresh = false;
                    self.suspect = false;
                    self.applied = end;
                    self.applied_db = db;
                    self.units.clear();
                    self.settle_holds(context).await;
                    return Ok(());
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(failure) => failure,
            };
            failures += 1;
            match &failure {
                Failure::Link(e) => {
                    tracing::warn!(node = %self.addr, error = %e, attempt = failures, "target link lost; the checkpoint will say what was applied");
                    self.link = None;
                    recovering = true;
                    // A dead master is replaced by its replica once its cluster noticed: wait
                    // for that as long as a failover may take, not for a number of attempts.
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if failures > context.config.max_link_failures
                        && since.elapsed() >= context.config.failover_wait
                    {
                        let Failure::Link(source) = failure else {
                            unreachable!()
                        };
                        return Err(ApplyError::Link {
                            attempts: failures,
                            source,
                        });
                    }
                }
                Failure::Later(reason) => {
                    tracing::warn!(node = %self.addr, %reason, pause = ?backoff, "target refused writes, retrying");
                    // A refusal may come from a failover: find the master again.
                    recovering = true;
                    failures = 0;
                    unreachable_since = None;
                }
                Failure::Moved(reason) => {
                    // `CLUSTER FAILOVER` made this node a replica: its slots answer MOVED
                    // until the writer follows the new master.
                    tracing::warn!(node = %self.addr, %reason, "target slot redirected; following its master");
                    recovering = true;
                    failures = 0;
                    unreachable_since = None;
                    let before = self.addr.clone();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(context.config.max_backoff);
                    self.relocate(&context.target, &context.config).await;
                    if self.addr != before {
                        moved_in_place = 0;
                        continue;
                    }
                    moved_in_place += 1;
                    if moved_in_place > context.config.max_redirects {
                        return Err(ApplyError::Rejected {
                            key: printable(&self.key),
                            command: "HSET".into(),
                            reply: format!("{reason}: a slot of {} moved to another master while it was written (resharding the target during a sync is not followed)", self.addr),
                        });
                    }
                    continue;
                }
                Failure::Fatal(_) => unreachable!(),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(context.config.max_backoff);
            if recovering {
                self.relocate(&context.target, &context.config).await;
            }
        }
    }

    /// Lets the target carry out the held expiries the stream has passed (the source expired
    /// those keys; its `DEL` may come later), at most every [`RELEASE_PERIOD`].
    async fn settle_holds(&mut self, context: &Context) {
        if !context.hold || self.held == Some(0) || self.released.elapsed() < RELEASE_PERIOD {
            return;
        }
        self.released = Instant::now();
        let Some(link) = self.link.as_mut() else {
            return;
        };
        match release(link, &self.held_key, context.stream_time_ms, false).await {
            Ok(left) => self.held = Some(left),
            // The next flush tries again; nothing depends on it meanwhile.
            Err(e) => {
                tracing::debug!(node = %self.addr, error = %e, "releasing held expiries failed")
            }
        }
    }

    /// Finds the master that owns this writer's slots now (after a failover).
    async fn relocate(&mut self, target: &Deployment, config: &ApplyConfig) {
        let Ok(fresh) = target.rediscover(config.connect_timeout).await else {
            return;
        };
        if let Some(shard) = fresh.topology.owner(self.first_slot) {
            if shard.master != self.addr {
                tracing::warn!(from = %self.addr, to = %shard.master, "target master moved; following it");
                self.addr = shard.master.clone();
                self.link = None;
            }
        }
    }

    async fn attempt(
        &mut self,
        context: &Context,
        end: ReplOffset,
        db: u32,
        recovering: bool,
    ) -> Result<(), Failure> {
        if self.link.is_none() {
            let link = open(&context.target, &self.addr, &context.config)
                .await
                .map_err(Failure::Link)?;
            self.link = Some(link);
        }
        let link = self.link.as_mut().expect("connected");
        if recovering && !self.suspect {
            let reply = link
                .call(&[&b"HGET"[..], &self.key, &context.field])
                .await
                .map_err(Failure::Link)?;
            let found = match reply {
                Frame::Bulk(Some(value)) => Checkpoint::parse(&value),
                _ => None,
            };
            match found {
                Some(Checkpoint::Applied { replid, offset, .. })
                    if replid == context.replid && offset >= end =>
                {
                    return Ok(());
                }
                Some(Checkpoint::Applied { replid, offset, .. })
                    if replid == context.replid && offset >= self.applied => {}
                // Behind what this master acknowledged before: a failover lost writes that
                // are no longer queued here. The stream must be read again from there.
                other if !self.fresh => {
                    return Err(Failure::Fatal(ApplyError::CheckpointBehind {
                        node: self.addr.to_string(),
                        found: other.map(|c| c.encode()).unwrap_or_else(|| "none".into()),
                        expected: format!("{} {}", context.replid, self.applied),
                    }));
                }
                _ => {}
            }
        }
        let value = Checkpoint::Applied {
            replid: context.replid,
            offset: end,
            db,
        }
        .encode();
        let relative = self.units.iter().any(|u| u.relative);
        if relative && context.mode == ApplyMode::ExactlyOnce {
            if self.units.iter().any(|u| u.script) {
                return self.verbatim(context, &value).await;
            }
            return self.script(context, &value).await;
        }
        let link = self.link.as_mut().expect("connected");
        let mut expect: Vec<Expect<'_>> = Vec::new();
        for unit in &self.units {
            let key = &unit.key;
            let wrap = unit.commands.len() > 1 && unit.other_slots.is_empty();
            if wrap {
                link.queue(&["MULTI"]);
                expect.push(Expect::Bracket);
                for command in &unit.commands {
                    link.queue_command(command);
                    expect.push(Expect::Queued(command, key));
                }
                link.queue(&["EXEC"]);
                expect.push(Expect::Exec(&unit.commands, key));
            } else {
                for command in &unit.commands {
                    link.queue_command(command);
                    expect.push(Expect::Reply(command, key));
                }
            }
        }
        let checkpoint = context.mode == ApplyMode::ExactlyOnce
            || self.fresh
            || self.checkpointed.elapsed() >= AT_LEAST_ONCE_CHECKPOINT;
        if checkpoint {
            link.queue(&[&b"HSET"[..], &self.key, &context.field, value.as_bytes()]);
            expect.push(Expect::Bracket);
            self.checkpointed = Instant::now();
        }
        let replies = link.exchange().await.map_err(Failure::Link)?;
        let first_error = replies
            .iter()
            .zip(&expect)
            .find_map(|(reply, expect)| expect.error(reply));
        let Some((text, what)) = first_error else {
            return Ok(());
        };
        let checkpoint_refused = checkpoint && matches!(replies.last(), Some(Frame::Error(_)));
        self.suspect = true;
        if checkpoint_refused {
            // The checkpoint did not move: a crash now replays the batch as it should.
            return Err(classify(text, what));
        }
        // The checkpoint after the batch may have landed although a write did not (a DEL
        // freed memory in between, a slot moved): set it back, so that a crash now replays
        // the batch. Under OOM the HSET may be refused; HDEL never is (a missing checkpoint
        // makes a restart reload the shard, which is exact). In this process the batch
        // (absolute writes only) is sent again whole, whatever the checkpoint says.
        let back = Checkpoint::Applied {
            replid: context.replid,
            offset: self.applied,
            db: self.applied_db,
        }
        .encode();
        let reply = link
            .call(&[&b"HSET"[..], &self.key, &context.field, back.as_bytes()])
            .await
            .map_err(Failure::Link)?;
        if let Frame::Error(e) = &reply {
            if is_redirect(&String::from_utf8_lossy(e)) {
                // The node stopped being a master after the checkpoint landed (refusals of a
                // failover come in order, so every write before it landed too): the batch is
                // sent again to the new master.
                return Err(classify(text, what));
            }
            let reply = link
                .call(&[&b"HDEL"[..], &self.key, &context.field])
                .await
                .map_err(Failure::Link)?;
            if let Frame::Error(e) = reply {
                return Err(Failure::Fatal(ApplyError::Rejected {
                    key: printable(&self.key),
                    command: "HDEL".into(),
                    reply: format!(
                        "{} (resetting the checkpoint after a refused write: {text})",
                        String::from_utf8_lossy(&e)
                    ),
                }));
            }
        }
        Err(classify(text, what))
    }

    /// The queued units (they hold a verbatim script) as one [wrapper](verbatim::wrapper)
    /// script with the checkpoint.
    async fn verbatim(&mut self, context: &Context, value: &str) -> Result<(), Failure> {
        let value = Bytes::from(value.to_string());
        let fatal =
            |sha: String, reason: String| Failure::Fatal(ApplyError::Script { sha, reason });
        let mut steps: Vec<Step<'_>> = Vec::new();
        // Per step: the sha of a script, or the command and its key.
        let mut named: Vec<(String, &Command, &Bytes)> = Vec::new();
        for unit in &self.units {
            for command in &unit.commands {
                let step = match verbatim::script_step(command) {
                    Some(Ok(step)) => step,
                    Some(Err(reason)) => return Err(fatal(verbatim::sha_of(command), reason)),
                    None if verbatim::is_evalsha(command) => {
                        return Err(fatal(
                            verbatim::sha_of(command),
                            "its body is unknown".into(),
                        ))
                    }
                    None if command.is("fcall") || command.is("fcall_ro") => {
                        return Err(Failure::Fatal(ApplyError::Rejected {
                            key: printable(&unit.key),
                            command: "FCALL".into(),
                            reply: "a function call replicated verbatim cannot be applied exactly once; run with --apply at-least-once".into(),
                        }))
                    }
                    None => Step::Command(command.argv()),
                };
                let too_long = match &step {
                    Step::Command(args) => args.len(),
                    Step::Script { keys, args, .. } => keys.len().max(args.len()),
                } > SCRIPT_MAX_ARGS;
                if too_long {
                    return Err(Failure::Fatal(ApplyError::Rejected {
                        key: printable(&unit.key),
                        command: printable(command.name()).to_ascii_uppercase(),
                        reply: format!("more than {SCRIPT_MAX_ARGS} arguments do not fit one exactly-once script; use --apply at-least-once"),
                    }));
                }
                steps.push(step);
                named.push((verbatim::sha_of(command), command, &unit.key));
            }
        }
        let mut probes: Vec<Bytes> = Vec::new();
        let mut seen: Vec<Slot> = vec![Slot::of_key(&self.key)];
        for unit in &self.units {
            for key in std::iter::once(&unit.key).chain(&unit.other_slots) {
                let slot = Slot::of_key(key);
                if !seen.contains(&slot) {
                    seen.push(slot);
                    probes.push(key.clone());
                }
            }
        }
        let (text, args) = verbatim::wrapper(
            &steps,
            [&self.key, &context.field, &value],
            &self.scripts_key,
            &probes,
        );
        let mut argv = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from(text),
            Bytes::from_static(b"0"),
        ];
        argv.extend(args);
        let link = self.link.as_mut().expect("connected");
        link.queue_command(&Command::from_argv(argv).expect("not empty"));
        let reply = link.exchange().await.map_err(Failure::Link)?.remove(0);
        let text = |f: Option<&Frame>| match f {
            Some(Frame::Bulk(Some(b))) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let shas = || {
            let mut shas: Vec<&str> = named
                .iter()
                .map(|(sha, _, _)| sha.as_str())
                .filter(|s| !s.is_empty())
                .collect();
            shas.dedup();
            shas.join(", ")
        };
        match reply {
            Frame::Array(Some(parts)) => match text(parts.first()).as_str() {
                "ok" => {
                    for failed in parts[1..].chunks(2) {
                        let step: usize = text(failed.first()).parse().unwrap_or(0);
                        let sha = named.get(step).map(|n| n.0.as_str()).unwrap_or_default();
                        tracing::warn!(node = %self.addr, sha, error = %text(failed.get(1)), "a verbatim script failed on the target as it did on the source; its writes before the error are kept, as there");
                    }
                    Ok(())
                }
                "retry" => Err(Failure::Later(text(parts.get(1)))),
                _ => {
                    let step: usize = text(parts.get(1)).parse().unwrap_or(0);
                    let error = text(parts.get(2));
                    let removed = "the writes before it are applied and this shard's checkpoint on that master was removed, so the next run loads the shard again";
                    match named.get(step) {
                        Some((sha, _, _)) if !sha.is_empty() => Err(fatal(
                            sha.clone(),
                            format!("it failed on target master {} with `{error}`, which the source cannot have seen: every key it touches, declared or not, must be served by the target master that owns its first key; {removed}", self.addr),
                        )),
                        Some((_, command, key)) => Err(Failure::Fatal(ApplyError::Rejected {
                            key: printable(key),
                            command: printable(command.name()).to_ascii_uppercase(),
                            reply: format!("{error} (write {step} of a transaction with a script on {}: {removed})", self.addr),
                        })),
                        None => Err(fatal(shas(), error)),
                    }
                }
            },
            Frame::Error(e) => {
                let error = String::from_utf8_lossy(&e).into_owned();
                if error.contains("NOPERM") || error.contains("unknown command") {
                    return Err(Failure::Fatal(scripts_refused(&e)));
                }
                if is_transient(&error) {
                    return Err(Failure::Later(error));
                }
                // Nothing was written (the wrapper did not compile, or its first write was
                // refused).
                Err(fatal(
                    shas(),
                    format!("target master {} refused it: {error}", self.addr),
                ))
            }
            other => Err(fatal(shas(), format!("unexpected reply {other:?}"))),
        }
    }

    async fn script(&mut self, context: &Context, value: &str) -> Result<(), Failure> {
        let mut argv: Vec<Bytes> = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from_static(SCRIPT.as_bytes()),
            Bytes::from_static(b"0"),
            self.key.clone(),
            context.field.clone(),
            Bytes::from(value.to_string()),
        ];
        let mut probes: Vec<Bytes> = Vec::new();
        let mut seen: Vec<Slot> = vec![Slot::of_key(&self.key)];
        for unit in &self.units {
            for key in std::iter::once(&unit.key).chain(&unit.other_slots) {
                let slot = Slot::of_key(key);
                if !seen.contains(&slot) {
                    seen.push(slot);
                    probes.push(key.clone());
                }
            }
        }
        argv.push(Bytes::from(probes.len().to_string()));
        argv.extend(probes);
        for unit in &self.units {
            for command in &unit.commands {
                if command.argv().len() > SCRIPT_MAX_ARGS {
                    return Err(Failure::Fatal(ApplyError::Rejected {
                        key: printable(&unit.key),
                        command: printable(command.name()).to_ascii_uppercase(),
                        reply: format!(
                            "{} arguments do not fit one exactly-once script (at most {SCRIPT_MAX_ARGS}); use --apply at-least-once",
                            command.argv().len()
                        ),
                    }));
                }
                argv.push(Bytes::from(command.argv().len().to_string()));
                argv.extend(command.argv().iter().cloned());
            }
        }
        let script = Command::from_argv(argv).expect("not empty");
        let link = self.link.as_mut().expect("connected");
        link.queue_command(&script);
        let reply = link.exchange().await.map_err(Failure::Link)?.remove(0);
        match reply {
            Frame::Bulk(Some(ok)) if ok.as_ref() == b"OK" => Ok(()),
            Frame::Array(Some(parts)) => {
                let text = |f: Option<&Frame>| match f {
                    Some(Frame::Bulk(Some(b))) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                if text(parts.first()) == "retry" {
                    return Err(Failure::Later(text(parts.get(1))));
                }
                let index: usize = text(parts.get(1)).parse().unwrap_or(0);
                let error = text(parts.get(2));
                let failed = self
                    .units
                    .iter()
                    .flat_map(|u| u.commands.iter().map(move |c| (c, &u.key)))
                    .nth(index);
                if index == 0 {
                    return Err(classify(error, failed));
                }
                // The writes before it were applied and cannot be taken back: a retry would
                // apply them twice. Stop and say so.
                let (command, key) = failed
                    .map(|(c, k)| (printable(c.name()).to_ascii_uppercase(), printable(k)))
                    .unwrap_or_default();
                Err(Failure::Fatal(ApplyError::Rejected {
                    key,
                    command,
                    reply: format!("{error} (write {index} of a batch on {}: the writes before it are applied, its checkpoint is not)", self.addr),
                }))
            }
            Frame::Error(e) => {
                let text = String::from_utf8_lossy(&e).into_owned();
                if text.contains("NOPERM") || text.contains("unknown command") {
                    return Err(Failure::Fatal(scripts_refused(&e)));
                }
                let what = self
                    .units
                    .first()
                    .and_then(|u| u.commands.first().map(|c| (c, &u.key)));
                Err(classify(text, what))
            }
            other => Err(Failure::Fatal(ApplyError::Rejected {
                key: String::new(),
                command: "EVAL".into(),
                reply: format!("unexpected reply {other:?}"),
            })),
        }
    }
}

/// What a queued command's reply should be.
enum Expect<'a> {
    /// `MULTI` or the checkpoint: only an error reply matters.
    Bracket,
    Reply(&'a Command, &'a Bytes),
    /// A command inside `MULTI`: `+QUEUED`, or an error that aborts the transaction.
    Queued(&'a Command, &'a Bytes),
    /// `EXEC`: one reply per queued command.
    Exec(&'a [Command], &'a Bytes),
}

impl<'a> Expect<'a> {
    /// The first error `reply` holds, with the command that got it.
    fn error(&self, reply: &Frame) -> Option<(String, Option<(&'a Command, &'a Bytes)>)> {
        let text = |e: &Bytes| String::from_utf8_lossy(e).into_owned();
        match (self, reply) {
            (Expect::Bracket, Frame::Error(e)) => Some((text(e), None)),
            (Expect::Reply(c, _), Frame::Error(e)) if failed_as_on_source(c, e) => None,
            (Expect::Reply(c, k) | Expect::Queued(c, k), Frame::Error(e)) => {
                Some((text(e), Some((*c, *k))))
            }
            (Expect::Exec(commands, k), Frame::Error(e)) => {
                Some((text(e), commands.first().map(|c| (c, *k))))
            }
            (Expect::Exec(commands, k), Frame::Array(Some(replies))) => replies
                .iter()
                .zip(commands.iter())
                .find_map(|(r, c)| match r {
                    Frame::Error(e) if !failed_as_on_source(c, e) => Some((text(e), Some((c, *k)))),
                    _ => None,
                }),
            _ => None,
        }
    }
}

/// A verbatim script that failed while it ran (at least once): the source replicated it
/// because it failed there the same way after writing. Refusals before it runs are not
/// (`NOSCRIPT`, `NOPERM`, a refusal that passes, a key another master serves).
fn failed_as_on_source(command: &Command, error: &[u8]) -> bool {
    let text = String::from_utf8_lossy(error);
    let script = verbatim::script_step(command).is_some() || verbatim::is_evalsha(command);
    let ran = !(text.starts_with("NOSCRIPT")
        || text.starts_with("NOPERM")
        || text.contains("non local key")
        || text.starts_with("CROSSSLOT")
        || text.starts_with("MOVED")
        || text.starts_with("ASK")
        || is_transient(&text));
    if script && ran {
        tracing::warn!(error = %text, "a verbatim script failed on the target as it did on the source; its writes before the error are kept, as there");
    }
    script && ran
}

fn scripts_refused(reply: &[u8]) -> ApplyError {
    ApplyError::Rejected {
        key: String::new(),
        command: "EVAL".into(),
        reply: format!(
            "{}: the exactly-once apply needs Lua scripts on the target; allow EVAL for ferry's user, or run with --apply at-least-once",
            String::from_utf8_lossy(reply)
        ),
    }
}

/// Refusals that pass: memory, loading, a failover or resharding in progress.
fn is_transient(text: &str) -> bool {
    let code = text
        .trim_start_matches("ERR ")
        .split(' ')
        .next()
        .unwrap_or_default();
    matches!(
        code,
        "OOM" | "LOADING" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY" | "BUSY"
    ) || text.contains("OOM command not allowed")
        || text.contains("READONLY")
}

/// Whether the target can hold expiries: it must read them exactly (`PEXPIRETIME`, Redis
/// 7.0+ and every Valkey).
pub(super) fn holds_expiries(server: &crate::deployment::ServerInfo) -> bool {
    server.family == crate::deployment::Family::Valkey || server.version >= (7, 0, 0)
}

/// Rewrites the expiries of `write` that fall before `until` into held ones, each followed
/// by its record in `held` (a key of the same master, in another slot).
fn hold_expiries(write: &mut Write, held: &Bytes, until: i64) {
    let mut commands = Vec::with_capacity(write.commands.len());
    let mut any = false;
    for mut command in std::mem::take(&mut write.commands) {
        let record = hold::hold(&mut command, until);
        commands.push(command);
        if let Some(record) = record {
            any = true;
            commands.push(
                Command::new("ZADD")
                    .arg(held.clone())
                    .arg(record.expire_at_ms.to_string())
                    .arg(record.key),
            );
        }
    }
    write.commands = commands;
    if any && !write.other_slots.contains(held) {
        write.other_slots.push(held.clone());
    }
}

/// Gives every expiry that the sync of `shards` holds on the target its own back: after a
/// clean stop, so that the target carries out each key's own expiry again.
pub async fn release_holds(
    target: &Deployment,
    shards: &[ShardId],
    config: &ApplyConfig,
) -> Result<(), ApplyError> {
    if !holds_expiries(&target.server) {
        return Ok(());
    }
    for master in &target.topology.shards {
        let mut link = open(target, &master.master, config)
            .await
            .map_err(link_error)?;
        let checkpoint = checkpoint_key_of(master);
        for shard in shards {
            let held = held_key(&checkpoint, shard);
            while release(&mut link, &held, 0, true)
                .await
                .map_err(link_error)?
                > 0
            {}
        }
    }
    Ok(())
}

/// Records expiries a snapshot held (key, its own expiry) in the sets of `shard` on the
/// target masters owning the keys, where the stream's writers settle them.
pub(super) async fn record_holds(
    target: &Deployment,
    shard: &ShardId,
    holds: Vec<(Bytes, i64)>,
    config: &ApplyConfig,
) -> Result<(), ApplyError> {
    let mut by_master: Vec<Vec<(Bytes, i64)>> = vec![Vec::new(); target.topology.shards.len()];
    for (key, at) in holds {
        if let Some(index) = target.topology.owner_index(Slot::of_key(&key)) {
            by_master[index].push((key, at));
        }
    }
    for (master, holds) in target.topology.shards.iter().zip(by_master) {
        if holds.is_empty() {
            continue;
        }
        let held = held_key(&checkpoint_key_of(master), shard);
        let mut link = open(target, &master.master, config)
            .await
            .map_err(link_error)?;
        for chunk in holds.chunks(512) {
            let mut zadd = Command::new("ZADD").arg(held.clone());
            for (key, at) in chunk {
                zadd = zadd.arg(at.to_string()).arg(key.clone());
            }
            link.queue_command(&zadd);
            if let Some(Frame::Error(e)) = link.exchange().await.map_err(link_error)?.first() {
                return Err(ApplyError::Rejected {
                    key: printable(&held),
                    command: "ZADD".into(),
                    reply: String::from_utf8_lossy(e).into_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Runs [`hold::RELEASE`] on one master: up to `stream_time_ms` (or everything, `all`).
/// Returns how many held expiries remain.
pub(super) async fn release(
    link: &mut Link,
    held: &[u8],
    stream_time_ms: i64,
    all: bool,
) -> Result<u64, LinkError> {
    let upto = stream_time_ms.to_string();
    let shift = HOLD_SHIFT_MS.to_string();
    let limit = RELEASE_LIMIT.to_string();
    let reply = link
        .call(&[
            &b"EVAL"[..],
            hold::RELEASE.as_bytes(),
            b"0",
            held,
            upto.as_bytes(),
            shift.as_bytes(),
            limit.as_bytes(),
            if all { b"all" } else { b"due" },
        ])
        .await?;
    match reply {
        Frame::Integer(left) => Ok(left.max(0) as u64),
        other => {
            tracing::warn!(reply = ?other, "releasing held expiries was refused");
            Ok(0)
        }
    }
}

/// `MOVED`, or `READONLY` from a node that became a replica.
fn is_redirect(text: &str) -> bool {
    text.starts_with("MOVED ") || text.contains("READONLY")
}

/// Whether an error reply is worth waiting out.
fn classify(text: String, what: Option<(&Command, &Bytes)>) -> Failure {
    if text.starts_with("MOVED ") {
        return Failure::Moved(text);
    }
    if is_transient(&text) {
        return Failure::Later(text);
    }
    let (command, key) = what
        .map(|(c, k)| (printable(c.name()).to_ascii_uppercase(), printable(k)))
        .unwrap_or_default();
    Failure::Fatal(ApplyError::Rejected {
        key,
        command,
        reply: text,
    })
}

/// Deletes the selected keys of `slots` on one node (never ferry's own keys).
async fn clear_node(
    link: &mut Link,
    slots: &[SlotRange],
    keys: &KeyFilter,
) -> Result<u64, LinkError> {
    let mut cursor = Bytes::from_static(b"0");
    let mut deleted = 0;
    loop {
        let reply = link
            .call(&[&b"SCAN"[..], &cursor, b"COUNT", b"1000"])
            .await?;
        let Frame::Array(Some(parts)) = reply else {
            return Ok(deleted);
        };
        let [Frame::Bulk(Some(next)), Frame::Array(Some(found))] = parts.as_slice() else {
            return Ok(deleted);
        };
        let doomed: Vec<&Bytes> = found
            .iter()
            .filter_map(|f| match f {
                Frame::Bulk(Some(k)) => Some(k),
                _ => None,
            })
            .filter(|k| {
                !k.starts_with(crate::precheck::RESERVED_PREFIX.as_bytes())
                    && keys.selects(k)
                    && slots.iter().any(|r| r.contains(Slot::of_key(k)))
            })
            .collect();
        for key in &doomed {
            link.queue(&[&b"UNLINK"[..], key]);
        }
        if !doomed.is_empty() {
            link.exchange().await?;
            deleted += doomed.len() as u64;
        }
        if next.as_ref() == b"0" {
            return Ok(deleted);
        }
        cursor = next.clone();
    }
}
