//! The census: how many keys each side holds, per slot when both sides are clusters
//! (`CLUSTER COUNTKEYSINSLOT`), per db otherwise (`INFO keyspace`). It is taken first and
//! points at gross problems (an empty shard, a slot range never copied) at once.

use std::collections::BTreeMap;

use ferry_engine::route::{Slot, SlotRange, SLOT_COUNT};
use serde::Serialize;

use crate::error::Result;
use crate::pipe::Pipeline;
use crate::reply;
use crate::side::{Links, Side};

/// Slots listed in a report at most.
const TOP_SLOTS: usize = 20;

/// Key counts of both sides. They count every key the servers hold, before filters and
/// with ferry's own `__ferry__:` keys taken out of the target's count.
#[derive(Debug, Clone, Serialize)]
pub struct Census {
    /// `slots` (both sides are clusters) or `keyspace` (`INFO keyspace` per db).
    pub method: &'static str,
    pub source_keys: u64,
    pub target_keys: u64,
    pub dbs: Vec<DbCount>,
    /// Slots whose counts differ (only with the `slots` method).
    pub slots_differing: u64,
    /// The slots whose counts differ most.
    pub top_slots: Vec<SlotCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbCount {
    pub db: u32,
    pub source: u64,
    pub target: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlotCount {
    pub slot: u16,
    pub source: u64,
    pub target: u64,
}

/// Counts per slot of both sides, before the reserved keys are known.
pub(crate) struct Counts {
    by_slot: Option<(Vec<u64>, Vec<u64>)>,
    dbs: BTreeMap<u32, (u64, u64)>,
}

/// Takes the census, restricted to `slots` when given.
pub(crate) fn take(source: &Side, target: &Side, slots: Option<SlotRange>) -> Result<Counts> {
    let by_slot = if source.cluster && target.cluster {
        Some((per_slot(source, slots)?, per_slot(target, slots)?))
    } else {
        None
    };
    let mut dbs: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (db, keys) in source.keys_per_db() {
        dbs.entry(db).or_default().0 = keys;
    }
    for (db, keys) in target.keys_per_db() {
        dbs.entry(db).or_default().1 = keys;
    }
    if let Some((s, t)) = &by_slot {
        // A slot range narrows the cluster counts; db 0 is all a cluster has.
        dbs = BTreeMap::from([(0, (s.iter().sum(), t.iter().sum()))]);
    }
    Ok(Counts { by_slot, dbs })
}

impl Counts {
    /// Keys per slot (source, target), when both sides are clusters.
    pub(crate) fn by_slot(&self) -> Option<(&[u64], &[u64])> {
        self.by_slot
            .as_ref()
            .map(|(s, t)| (s.as_slice(), t.as_slice()))
    }

    /// The census, with `__ferry__:` keys the scans found (per db and slot: heartbeats on the
    /// source, checkpoints on the target) taken out of each side's counts.
    pub(crate) fn census(
        &self,
        source_reserved: &BTreeMap<(u32, u16), u64>,
        reserved: &BTreeMap<(u32, u16), u64>,
    ) -> Census {
        let mut dbs = self.dbs.clone();
        for ((db, _), n) in source_reserved {
            if let Some(counts) = dbs.get_mut(db) {
                counts.0 = counts.0.saturating_sub(*n);
            }
        }
        for ((db, _), n) in reserved {
            if let Some(counts) = dbs.get_mut(db) {
                counts.1 = counts.1.saturating_sub(*n);
            }
        }
        let mut census = Census {
            method: if self.by_slot.is_some() {
                "slots"
            } else {
                "keyspace"
            },
            source_keys: dbs.values().map(|c| c.0).sum(),
            target_keys: dbs.values().map(|c| c.1).sum(),
            dbs: dbs
                .iter()
                .map(|(db, (s, t))| DbCount {
                    db: *db,
                    source: *s,
                    target: *t,
                })
                .collect(),
            slots_differing: 0,
            top_slots: Vec::new(),
        };
        if let Some((s, t)) = &self.by_slot {
            let (mut s, mut t) = (s.clone(), t.clone());
            for (counts, taken) in [(&mut s, source_reserved), (&mut t, reserved)] {
                for ((_, slot), n) in taken {
                    let count = &mut counts[usize::from(*slot)];
                    *count = count.saturating_sub(*n);
                }
            }
            let mut differing: Vec<SlotCount> = (0..usize::from(SLOT_COUNT))
                .filter(|&i| s[i] != t[i])
                .map(|i| SlotCount {
                    slot: i as u16,
                    source: s[i],
                    target: t[i],
                })
                .collect();
            census.slots_differing = differing.len() as u64;
            differing.sort_by_key(|c| (std::cmp::Reverse(c.source.abs_diff(c.target)), c.slot));
            differing.truncate(TOP_SLOTS);
            census.top_slots = differing;
        }
        census
    }
}

/// `CLUSTER COUNTKEYSINSLOT` of every slot, pipelined to the node each slot is read from.
fn per_slot(side: &Side, range: Option<SlotRange>) -> Result<Vec<u64>> {
    let mut counts = vec![0u64; usize::from(SLOT_COUNT)];
    let mut links = Links::new(side);
    for shard in &side.shards {
        let slots: Vec<u16> = shard
            .slots
            .iter()
            .flat_map(|r| r.first.get()..=r.last.get())
            .filter(|s| range.is_none_or(|r| r.contains(Slot::new(*s).expect("slot below 16384"))))
            .collect();
        let link = links.to(&shard.read, 0)?;
        for chunk in slots.chunks(4_096) {
            let mut pipe = Pipeline::new();
            for slot in chunk {
                pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(*slot);
            }
            for (slot, reply) in chunk.iter().zip(link.pipeline(&pipe)?) {
                counts[usize::from(*slot)] = reply::int(&reply)
                    .ok_or_else(|| link.unexpected("CLUSTER COUNTKEYSINSLOT", &reply))?
                    .max(0) as u64;
            }
        }
    }
    Ok(counts)
}
