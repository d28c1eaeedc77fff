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

use super::checkpoint::{checkpoint_key_of, Checkpoint, ShardId};
use super::stream::Write;
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

/// Commands with more arguments than this do not fit one Lua call (`unpack` limit).
const SCRIPT_MAX_ARGS: usize = 7900;

/// One target master's queue and its connection.
struct NodeWriter {
    addr: NodeAddr,
    /// The lowest slot the master owned when the sync started: after a failover the master
    /// that owns it now is this writer's node.
    first_slot: Slot,
    key: Bytes,
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
}

/// What every writer of one shard shares.
struct Context {
    field: Bytes,
    replid: ReplId,
    mode: ApplyMode,
    config: ApplyConfig,
    target: Deployment,
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
}

impl StreamApplier {
    pub fn new(shard: ShardId, target: Deployment, mode: ApplyMode, config: ApplyConfig) -> Self {
        let writers = target
            .topology
            .shards
            .iter()
            .map(|s| NodeWriter {
                addr: s.master.clone(),
                first_slot: s
                    .slots
                    .iter()
                    .map(|r| r.first)
                    .min()
                    .unwrap_or(Slot::new(0).expect("slot 0")),
                key: checkpoint_key_of(s),
                applied: ReplOffset::default(),
                applied_db: 0,
                fresh: true,
                suspect: false,
                checkpointed: Instant::now(),
                units: Vec::new(),
                link: None,
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
        }
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
                        Ok(Frame::Error(e)) => is_transient(&String::from_utf8_lossy(e)),
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
            writer.units.push(write);
            self.pending += 1;
        }
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
    Fatal(ApplyError),
}

impl NodeWriter {
    async fn flush(
        &mut self,
        context: &Context,
        end: ReplOffset,
        db: u32,
    ) -> Result<(), ApplyError> {
        if self.applied >= end && !self.fresh {
            self.units.clear();
            return Ok(());
        }
        let mut backoff = context.config.min_backoff;
        let mut failures = 0;
        let mut recovering = false;
        loop {
            let attempt = self.attempt(context, end, db, recovering).await;
            let failure = match attempt {
                Ok(()) => {
                    self.fresh = false;
                    self.suspect = false;
                    self.applied = end;
                    self.applied_db = db;
                    self.units.clear();
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
                    if failures > context.config.max_link_failures {
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
            if let Some(unit) = self.units.iter().find(|u| u.script) {
                return Err(Failure::Fatal(ApplyError::Rejected {
                    key: printable(&unit.key),
                    command: unit.commands.first().map(|c| printable(c.name()).to_ascii_uppercase()).unwrap_or_default(),
                    reply: "the source replicates this script verbatim (lua-replicate-commands no), and exactly-once cannot run a script inside its own: set lua-replicate-commands yes on the source, or run with --apply at-least-once".into(),
                }));
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
        // The checkpoint after the batch may have landed although a write did not (a DEL
        // freed memory in between, a slot moved): set it back, so that a crash now replays
        // the batch. Under OOM the HSET may be refused; HDEL never is (a missing checkpoint
        // makes a restart reload the shard, which is exact). In this process the batch
        // (absolute writes only) is sent again whole, whatever the checkpoint says.
        self.suspect = true;
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
        if let Frame::Error(_) = reply {
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
                    Frame::Error(e) => Some((text(e), Some((c, *k)))),
                    _ => None,
                }),
            _ => None,
        }
    }
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

/// Whether an error reply is worth waiting out.
fn classify(text: String, what: Option<(&Command, &Bytes)>) -> Failure {
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
