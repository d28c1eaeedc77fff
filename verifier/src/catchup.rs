//! Live copies kept by `ferry sync`: before a re-check round, when the target holds ferry's
//! checkpoints, wait (up to a limit) until every target master has applied what every source
//! master had written when the round began. A key then re-read differs because it really
//! does (or changed again since), not because the copy was a few writes behind.
//!
//! A source master's position is `master_replid` + `master_repl_offset`; a target master's
//! checkpoint hash holds, per source shard (named by its lowest slot), the replid and offset
//! it has applied (the format is the engine's, `ferry_engine::sync::Checkpoint`).

use std::time::{Duration, Instant};

use ferry_engine::deployment::parse_info;
use ferry_engine::replica::ReplOffset;
use ferry_engine::route::Slot;
use ferry_engine::sync::{checkpoint_key, Checkpoint, ShardId};

use crate::error::Result;
use crate::side::{Link, Shard, Side};

/// How often the checkpoints are read again while waiting.
const POLL: Duration = Duration::from_millis(50);

/// What a source master had written when asked.
#[derive(Debug, Clone)]
struct Position {
    shard: ShardId,
    replid: String,
    offset: u64,
}

/// How waiting for the target went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CatchUp {
    /// The target holds no checkpoints of ferry: nothing to wait for.
    NoCheckpoints,
    /// Every target master applied every source position, after this long.
    CaughtUp(Duration),
    /// The limit passed first (a stopped sync, or a source that only sent pings since).
    TimedOut,
}

/// Waits until the target has applied every source master's current position, or `limit`.
pub(crate) fn await_applied(source: &Side, target: &Side, limit: Duration) -> Result<CatchUp> {
    let started = Instant::now();
    // One link and checkpoint key per target master that holds a checkpoint hash.
    let mut masters = Vec::new();
    for shard in &target.shards {
        let mut link = target.connect(&shard.master, 0, false)?;
        let key = checkpoint_key(lowest_slot(shard));
        let exists: u64 = link.query(redis::cmd("EXISTS").arg(&key[..]))?;
        if exists > 0 {
            masters.push((link, key));
        }
    }
    if masters.is_empty() {
        return Ok(CatchUp::NoCheckpoints);
    }
    let positions = positions(source)?;
    loop {
        let mut everywhere = true;
        for (link, key) in &mut masters {
            everywhere &= applied(link, key, &positions)?;
        }
        if everywhere {
            return Ok(CatchUp::CaughtUp(started.elapsed()));
        }
        if started.elapsed() >= limit {
            return Ok(CatchUp::TimedOut);
        }
        std::thread::sleep(POLL);
    }
}

fn lowest_slot(shard: &Shard) -> Slot {
    shard
        .slots
        .iter()
        .map(|r| r.first)
        .min()
        .unwrap_or(Slot::new(0).expect("slot 0"))
}

fn positions(source: &Side) -> Result<Vec<Position>> {
    let mut positions = Vec::with_capacity(source.shards.len());
    for shard in &source.shards {
        let mut link = source.connect(&shard.master, 0, false)?;
        let info = parse_info(&link.query::<String>(redis::cmd("INFO").arg("replication"))?);
        let (Some(replid), Some(offset)) = (
            info.get("master_replid"),
            info.get("master_repl_offset")
                .and_then(|o| o.parse::<u64>().ok()),
        ) else {
            continue;
        };
        positions.push(Position {
            shard: ShardId::from_first_slot(lowest_slot(shard)),
            replid: replid.clone(),
            offset,
        });
    }
    Ok(positions)
}

/// Whether this target master's checkpoint `key` is at or past every source position.
fn applied(link: &mut Link, key: &[u8], positions: &[Position]) -> Result<bool> {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key);
    for p in positions {
        cmd.arg(p.shard.as_str());
    }
    let values: Vec<Option<Vec<u8>>> = link.query(&cmd)?;
    Ok(positions.iter().zip(values).all(|(p, value)| {
        matches!(
            value.as_deref().and_then(Checkpoint::parse),
            Some(Checkpoint::Applied { replid, offset, .. })
                if replid.to_string() == p.replid && offset >= ReplOffset::new(p.offset)
        )
    }))
}
