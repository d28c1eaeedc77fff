//! A whole verification: discover both sides, take the census, list the source (comparing
//! every key with the target, several batches in flight per shard) and the target (looking
//! for keys the source lacks), then re-check the differing keys over rounds.
//!
//! Two clusters with every key in scope are listed slot by slot, the target afterwards and
//! only in the slots its census count does not account for; otherwise both sides are
//! `SCAN`ned in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use ferry_engine::route::{Slot, SLOT_COUNT};

use crate::catchup::{self, CatchUp};
use crate::census;
use crate::compare::{Comparator, KeyOutcome};
use crate::config::{Config, RESERVED_PREFIX};
use crate::diagnosis::{self, Evidence};
use crate::diff::DiffKind;
use crate::error::{Result, VerifyError};
use crate::functions::{self, Functions};
use crate::key::{Key, KeyType};
use crate::pipe::Pipeline;
use crate::progress::Progress;
use crate::reply;
use crate::report::{
    BreakdownRow, Clock, Counts, Report, Round, SampleEstimate, Scope, Unstable, Verdict,
    SCHEMA_VERSION,
};
use crate::side::{unix_ms, Link, Links, Side};
use crate::throttle::Throttle;

/// Compares the source and the target that `config` names and reports what differs.
///
/// Fails (and so "could not finish") when a side cannot be reached or answers something
/// unexpected; differences are never errors.
pub fn verify(config: &Config) -> Result<Report> {
    config.validate()?;
    let started = Instant::now();
    let started_at_ms = unix_ms() as u64;
    let throttle = Arc::new(Throttle::new(config.rate));
    let source = Side::discover(
        "source",
        config.source.clone(),
        config.read_from,
        throttle.clone(),
    )?;
    let mut target = Side::discover("target", config.target.clone(), config.read_from, throttle)?;
    let dbs = dbs(config, &source, &target)?;
    let progress = Progress::new(config.progress);
    let census = census::take(&source, &target, config.slots)?;
    let early = census.census(&BTreeMap::new(), &BTreeMap::new());
    progress.say(&format!(
        "census: {} source keys, {} target keys{}",
        early.source_keys,
        early.target_keys,
        if early.method == "slots" {
            format!(", {} slots with different counts", early.slots_differing)
        } else {
            String::new()
        }
    ));

    let collector = Mutex::new(Collector::new(config.max_differences));
    // When every key is in scope and both sides count keys per slot, the target is listed
    // only in the slots whose count the source's keys found there do not explain.
    let by_slot = census.by_slot().filter(|(s, t)| {
        config.selects_whole_slots() && s.iter().chain(*t).all(|&n| n <= config.windows.slot_keys)
    });
    let found: Vec<AtomicU64> = (0..SLOT_COUNT).map(|_| AtomicU64::new(0)).collect();
    let run = Run {
        config,
        source: &source,
        target: &target,
        collector: &collector,
        progress: &progress,
        found: by_slot.is_some().then_some(found.as_slice()),
    };
    std::thread::scope(|scope| -> Result<()> {
        let ticker = scope.spawn(|| progress.tick(started));
        let mut workers = Vec::new();
        for i in 0..source.shards.len() {
            let listings = match by_slot {
                Some((counts, _)) => {
                    let mut slots = shard_slots(config, &source, i, |s| counts[s]);
                    slots.retain(|&(_, n)| n > 0);
                    vec![(0, Listing::slots(config, slots))]
                }
                None if shard_in_range(config, &source, i) => {
                    dbs.iter().map(|db| (*db, Listing::scan())).collect()
                }
                None => Vec::new(),
            };
            let run = &run;
            workers.push(scope.spawn(move || run.scan_source(i, listings)));
        }
        if by_slot.is_none() {
            for i in (0..target.shards.len()).filter(|i| shard_in_range(config, &target, *i)) {
                let listings = dbs.iter().map(|db| (*db, Listing::scan())).collect();
                let run = &run;
                workers.push(scope.spawn(move || run.scan_target(i, listings)));
            }
        }
        let mut result = join(workers);
        if let (Some((_, counts)), Ok(())) = (by_slot, &result) {
            let found = |slot: usize| found[slot].load(Ordering::Relaxed);
            let mut workers = Vec::new();
            for i in 0..target.shards.len() {
                // A slot holding more or fewer keys than the source's keys found on it: the
                // target's keys there are listed.
                let slots = shard_slots(config, &target, i, |s| counts[s]);
                let mut counted = 0;
                let mut unexplained = Vec::new();
                for (slot, n) in slots {
                    let found = found(usize::from(slot));
                    if n == found {
                        counted += n;
                    } else {
                        unexplained.push((slot, n.max(found)));
                    }
                }
                lock(&collector).counts.target_keys_counted += counted;
                let listings = vec![(0, Listing::slots(config, unexplained))];
                let run = &run;
                workers.push(scope.spawn(move || run.scan_target(i, listings)));
            }
            result = join(workers);
        }
        progress.finish();
        let _ = ticker.join();
        result
    })?;
    let mut collector = collector.into_inner().unwrap_or_else(|e| e.into_inner());
    let rounds = recheck(config, &source, &target, &mut collector, &progress)?;
    // Libraries last, once a sync that is catching up had the longest to apply them.
    let functions = functions::compare(&source, &target)?;
    // Fresh eviction counters for the diagnosis.
    target.refresh()?;
    Ok(report(
        config,
        &source,
        &target,
        &dbs,
        census.census(&collector.source_reserved, &collector.reserved),
        collector,
        rounds,
        functions,
        started,
        started_at_ms,
    ))
}

/// The dbs to compare: the filter's, or every db with keys on either side.
fn dbs(config: &Config, source: &Side, target: &Side) -> Result<Vec<u32>> {
    let dbs: Vec<u32> = if config.filter.dbs.is_empty() {
        let mut found: BTreeSet<u32> = source.keys_per_db().into_keys().collect();
        found.extend(target.keys_per_db().into_keys());
        if source.cluster || target.cluster {
            found.retain(|db| *db == 0);
        }
        if found.is_empty() {
            found.insert(0);
        }
        found.into_iter().collect()
    } else {
        config.filter.dbs.clone()
    };
    for side in [source, target] {
        if let Some(db) = dbs.iter().find(|db| side.cluster && **db != 0) {
            return Err(VerifyError::ClusterDb {
                side: side.name,
                db: *db,
            });
        }
    }
    Ok(dbs)
}

/// Whether any slot of shard `i` is in the `--slots` range.
fn shard_in_range(config: &Config, side: &Side, i: usize) -> bool {
    let Some(range) = config.slots else {
        return true;
    };
    !side.cluster
        || side.shards[i]
            .slots
            .iter()
            .any(|r| r.first <= range.last && range.first <= r.last)
}

/// Comparers per source shard: while one waits for the servers, another compares.
const COMPARERS_PER_SHARD: usize = 2;

/// The keys of one `SCAN` step.
struct Batch {
    db: u32,
    /// The keys in scope.
    keys: Vec<Vec<u8>>,
    /// Keys the step returned.
    scanned: u64,
    /// `__ferry__:` keys among them.
    reserved: Vec<Vec<u8>>,
}

impl Batch {
    /// The keys of a step of shard `i`'s scan of `side`, sorted into those in scope and
    /// ferry's own.
    fn new(config: &Config, side: &Side, i: usize, db: u32, keys: Vec<Vec<u8>>) -> Self {
        let scanned = keys.len() as u64;
        let (keys, reserved) = select(config, side, i, keys);
        Batch {
            db,
            keys,
            scanned,
            reserved,
        }
    }
}

/// What the workers of one verification share.
struct Run<'a> {
    config: &'a Config,
    source: &'a Side,
    target: &'a Side,
    collector: &'a Mutex<Collector>,
    progress: &'a Progress,
    /// Per slot, the source keys found on the target, when the target's keys are accounted
    /// for by slot counts.
    found: Option<&'a [AtomicU64]>,
}

impl Run<'_> {
    /// Lists the source shard `i` and compares every key in scope with the target: one
    /// thread lists, [`COMPARERS_PER_SHARD`] compare the batches it finds, each with its
    /// own connections, so that several batches are in flight.
    fn scan_source(&self, i: usize, listings: Vec<(u32, Listing)>) -> Result<()> {
        let (batches, found) = mpsc::sync_channel::<Batch>(COMPARERS_PER_SHARD);
        // The comparers own the receiving end: when they all stop (on an error), the
        // listing stops.
        let found = Arc::new(Mutex::new(found));
        std::thread::scope(|scope| {
            let comparers: Vec<_> = (0..COMPARERS_PER_SHARD)
                .map(|_| {
                    let found = found.clone();
                    scope.spawn(move || self.compare_batches(&found))
                })
                .collect();
            drop(found);
            let result = self.list_source(i, listings, batches);
            join(comparers).and(result)
        })
    }

    /// Lists the source shard `i` and hands the keys in scope to the comparers.
    fn list_source(
        &self,
        i: usize,
        listings: Vec<(u32, Listing)>,
        batches: mpsc::SyncSender<Batch>,
    ) -> Result<()> {
        let mut links = Links::new(self.source);
        let node = self.source.shards[i].read.clone();
        for (db, mut listing) in listings {
            loop {
                let link = links.to(&node, db)?;
                let Some(listed) = listing.send(link, self.config)? else {
                    break;
                };
                let keys = listing.receive(link, listed)?;
                self.progress
                    .source_scanned
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
                let batch = Batch::new(self.config, self.source, i, db, keys);
                if batches.send(batch).is_err() {
                    // Every comparer stopped: the first error is theirs to report.
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Compares the batches a source listing finds until it ends.
    fn compare_batches(&self, found: &Mutex<mpsc::Receiver<Batch>>) -> Result<()> {
        let mut cmp = Comparator::new(self.config, self.source, self.target);
        loop {
            let Ok(batch) = lock(found).recv() else {
                return Ok(());
            };
            let outcomes = cmp.compare(batch.db, batch.keys)?;
            if let Some(found) = self.found {
                for outcome in outcomes.iter().filter(|o| o.on_target) {
                    found[usize::from(Slot::of_key(&outcome.key).get())]
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            let mut c = lock(self.collector);
            c.counts.source_keys_scanned += batch.scanned;
            c.counts.reserved_ignored += batch.reserved.len() as u64;
            for key in &batch.reserved {
                *c.source_reserved
                    .entry((batch.db, Slot::of_key(key).get()))
                    .or_default() += 1;
            }
            c.add(outcomes, true, self.progress);
        }
    }

    /// Lists the target shard `i` for keys in scope that the source lacks, and compares
    /// those. Each listing step runs while the source answers `EXISTS` for the keys of the
    /// step before.
    fn scan_target(&self, i: usize, listings: Vec<(u32, Listing)>) -> Result<()> {
        let mut cmp = Comparator::new(self.config, self.source, self.target);
        let node = self.target.shards[i].read.clone();
        for (db, mut listing) in listings {
            let mut listed = listing.send(cmp.target().to(&node, db)?, self.config)?;
            let mut last: Option<Batch> = None;
            while listed.is_some() || last.is_some() {
                let absent = match last.as_mut() {
                    Some(batch) => cmp.absent_on_source(db, std::mem::take(&mut batch.keys))?,
                    None => Vec::new(),
                };
                let next = match listed {
                    Some(step) => Some(listing.receive(cmp.target().to(&node, db)?, step)?),
                    None => None,
                };
                if let Some(batch) = last.take() {
                    let outcomes = cmp.compare(db, absent)?;
                    let mut c = lock(self.collector);
                    c.counts.target_keys_scanned += batch.scanned;
                    for key in batch.reserved {
                        *c.reserved
                            .entry((db, Slot::of_key(&key).get()))
                            .or_default() += 1;
                    }
                    c.add(outcomes, false, self.progress);
                }
                listed = None;
                if let Some(keys) = next {
                    self.progress
                        .target_scanned
                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                    last = Some(Batch::new(self.config, self.target, i, db, keys));
                    listed = listing.send(cmp.target().to(&node, db)?, self.config)?;
                }
            }
        }
        Ok(())
    }
}

/// Waits for every worker; the first error wins.
fn join(workers: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    let mut result = Ok(());
    for worker in workers {
        let outcome = worker
            .join()
            .unwrap_or_else(|_| Err(VerifyError::Config("a verify worker panicked".into())));
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the keys of one shard and db come from.
enum Listing {
    /// `SCAN` steps; `None` once the cursor came back to 0.
    Scan { cursor: Option<u64> },
    /// `CLUSTER GETKEYSINSLOT` of groups of slots, each slot with the keys it is expected
    /// to hold.
    Slots(std::vec::IntoIter<Vec<(u16, u64)>>),
}

/// A listing step sent, its replies not read yet.
struct Listed {
    due: usize,
    slots: Vec<(u16, u64)>,
}

impl Listing {
    fn scan() -> Self {
        Listing::Scan { cursor: Some(0) }
    }

    /// Lists `slots` (with the keys each is expected to hold) in steps of about
    /// `scan_count` keys.
    fn slots(config: &Config, slots: Vec<(u16, u64)>) -> Self {
        let step = config.windows.scan_count as u64;
        let mut groups = Vec::new();
        let mut group = Vec::new();
        let mut keys = 0;
        for (slot, n) in slots {
            if !group.is_empty() && keys + n > step {
                groups.push(std::mem::take(&mut group));
                keys = 0;
            }
            group.push((slot, n));
            keys += n;
        }
        if !group.is_empty() {
            groups.push(group);
        }
        Listing::Slots(groups.into_iter())
    }

    /// Sends the next step; `None` when the listing is over.
    fn send(&mut self, link: &mut Link, config: &Config) -> Result<Option<Listed>> {
        let (pipe, slots) = match self {
            Listing::Scan { cursor: None } => return Ok(None),
            Listing::Scan {
                cursor: Some(cursor),
            } => (scan_command(*cursor, config), Vec::new()),
            Listing::Slots(groups) => match groups.next() {
                Some(group) => (keys_in_slots_command(&group), group),
                None => return Ok(None),
            },
        };
        let due = link.send(&pipe)?;
        Ok(Some(Listed { due, slots }))
    }

    /// The keys of a step sent.
    fn receive(&mut self, link: &mut Link, listed: Listed) -> Result<Vec<Vec<u8>>> {
        match self {
            Listing::Scan { cursor } => {
                let (next, keys) = scan_reply(link, listed.due)?;
                *cursor = (next != 0).then_some(next);
                Ok(keys)
            }
            Listing::Slots(_) => keys_in_slots(link, listed),
        }
    }
}

/// Keys asked of a slot expected to hold `n`: a few more, so that a shorter reply shows the
/// whole slot.
fn asked(n: u64) -> u64 {
    n + n / 8 + 16
}

fn keys_in_slots_command(slots: &[(u16, u64)]) -> Pipeline {
    let mut pipe = Pipeline::new();
    for &(slot, n) in slots {
        pipe.cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(asked(n));
    }
    pipe
}

/// The keys of a `CLUSTER GETKEYSINSLOT` step. A slot whose reply is full (it grew since it
/// was counted) is asked again for twice as many.
fn keys_in_slots(link: &mut Link, mut listed: Listed) -> Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    loop {
        let replies = link.receive(listed.due)?;
        let mut again = Vec::new();
        for (&(slot, n), reply) in listed.slots.iter().zip(replies) {
            let redis::Value::Array(items) = reply else {
                return Err(link.unexpected("CLUSTER GETKEYSINSLOT", &reply));
            };
            if items.len() as u64 >= asked(n) {
                again.push((slot, 2 * asked(n)));
                continue;
            }
            for item in items {
                let key = reply::into_bytes(item)
                    .ok_or_else(|| link.malformed("CLUSTER GETKEYSINSLOT"))?;
                keys.push(key);
            }
        }
        if again.is_empty() {
            return Ok(keys);
        }
        let due = link.send(&keys_in_slots_command(&again))?;
        listed = Listed { due, slots: again };
    }
}

/// The slots of shard `i` of `side` in the `--slots` range, each with the keys `count`
/// gives it.
fn shard_slots(
    config: &Config,
    side: &Side,
    i: usize,
    count: impl Fn(usize) -> u64,
) -> Vec<(u16, u64)> {
    let mut slots = Vec::new();
    for range in &side.shards[i].slots {
        for slot in range.first.get()..=range.last.get() {
            let in_range = config
                .slots
                .is_none_or(|r| r.contains(Slot::new(slot).expect("slot below 16384")));
            if in_range {
                slots.push((slot, count(usize::from(slot))));
            }
        }
    }
    slots
}

/// One `SCAN` step, as a pipeline to send.
fn scan_command(cursor: u64, config: &Config) -> Pipeline {
    let mut pipe = Pipeline::new();
    pipe.cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(config.windows.scan_count);
    pipe
}

/// The reply of a `SCAN` step: the next cursor and the keys.
fn scan_reply(link: &mut Link, due: usize) -> Result<(u64, Vec<Vec<u8>>)> {
    let value = link.receive(due)?.pop().unwrap_or_default();
    if !matches!(value, redis::Value::Array(_)) {
        return Err(link.unexpected("SCAN", &value));
    }
    reply::scan(value)
        .and_then(|(next, keys)| {
            let keys = keys
                .into_iter()
                .map(reply::into_bytes)
                .collect::<Option<Vec<_>>>()?;
            Some((next, keys))
        })
        .ok_or_else(|| link.malformed("SCAN"))
}

/// Keeps the keys in scope that shard `i` owns; returns them and the reserved keys seen.
fn select(
    config: &Config,
    side: &Side,
    i: usize,
    keys: Vec<Vec<u8>>,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut reserved = Vec::new();
    let mut selected = Vec::with_capacity(keys.len());
    for key in keys {
        // A key of a slot being migrated away is compared by the shard that owns it.
        if !side.owns(i, Slot::of_key(&key)) {
            continue;
        }
        if key.starts_with(RESERVED_PREFIX) {
            reserved.push(key);
        } else if config.selects(&key) {
            selected.push(key);
        }
    }
    (selected, reserved)
}

/// A differing key being followed through the rounds.
struct Tracked {
    outcome: KeyOutcome,
    changed_rounds: u32,
}

/// What the workers found, merged.
struct Collector {
    max: usize,
    tracked: BTreeMap<(u32, Vec<u8>), Tracked>,
    /// Differences beyond `max`, by type and kind, and how many keys they were.
    overflow: BTreeMap<(KeyType, DiffKind), u64>,
    overflow_keys: u64,
    counts: Counts,
    /// `__ferry__:` keys on the target, per db and slot.
    reserved: BTreeMap<(u32, u16), u64>,
    /// The same on the source (ferry's heartbeat keys), per db and slot.
    source_reserved: BTreeMap<(u32, u16), u64>,
    /// In-scope keys compared from the source scan, and those among them differing at
    /// first (for the sample estimate).
    sampled_from_source: u64,
}

impl Collector {
    fn new(max: usize) -> Self {
        Collector {
            max,
            tracked: BTreeMap::new(),
            overflow: BTreeMap::new(),
            overflow_keys: 0,
            counts: Counts::default(),
            reserved: BTreeMap::new(),
            source_reserved: BTreeMap::new(),
            sampled_from_source: 0,
        }
    }

    fn add(&mut self, outcomes: Vec<KeyOutcome>, from_source: bool, progress: &Progress) {
        for outcome in outcomes {
            if !outcome.in_scope {
                self.counts.out_of_scope += 1;
                continue;
            }
            // A target key that appeared on the source meanwhile is the source scan's.
            if !from_source && outcome.on_source && outcome.differences.is_empty() {
                continue;
            }
            self.counts.keys_compared += 1;
            if from_source {
                self.sampled_from_source += 1;
            }
            if outcome.differences.is_empty() {
                continue;
            }
            let key = (outcome.db, outcome.key.clone());
            if let Some(tracked) = self.tracked.get_mut(&key) {
                // Seen by both scans (SCAN may also return a key twice): one entry.
                self.counts.keys_compared -= 1;
                tracked.outcome = outcome;
            } else if self.tracked.len() < self.max {
                progress.differing.fetch_add(1, Ordering::Relaxed);
                self.tracked.insert(
                    key,
                    Tracked {
                        outcome,
                        changed_rounds: 0,
                    },
                );
            } else {
                progress.differing.fetch_add(1, Ordering::Relaxed);
                self.overflow_keys += 1;
                for d in &outcome.differences {
                    *self.overflow.entry((d.key_type, d.kind)).or_default() += 1;
                }
            }
        }
    }
}

/// Re-reads the differing keys after a pause, up to `config.rounds` times: keys now equal
/// are resolved; keys read differently than the round before changed.
fn recheck(
    config: &Config,
    source: &Side,
    target: &Side,
    collector: &mut Collector,
    progress: &Progress,
) -> Result<Vec<Round>> {
    let mut rounds = Vec::new();
    let mut cmp = Comparator::new(config, source, target);
    for round in 1..=config.rounds {
        if collector.tracked.is_empty() {
            break;
        }
        // A live copy by ferry: wait until the target applied what the source had; without
        // checkpoints (or when that takes too long), give it the pause instead.
        let mut caught_up_ms = None;
        match catchup::await_applied(source, target, config.catch_up_limit)? {
            CatchUp::CaughtUp(after) => {
                caught_up_ms = Some(after.as_millis() as u64);
                progress.say(&format!(
                    "round {round}: the target applied everything the source had (waited {} ms)",
                    after.as_millis()
                ))
            }
            CatchUp::TimedOut => progress.say(&format!(
                "round {round}: the target did not apply the source's position within {} s; re-checking anyway",
                config.catch_up_limit.as_secs_f64()
            )),
            CatchUp::NoCheckpoints => std::thread::sleep(config.recheck_interval),
        }
        let mut by_db: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        for (db, key) in collector.tracked.keys() {
            by_db.entry(*db).or_default().push(key.clone());
        }
        let mut summary = Round {
            round,
            rechecked: collector.tracked.len() as u64,
            resolved: 0,
            changed: 0,
            differing: 0,
            caught_up_ms,
        };
        for (db, keys) in by_db {
            for chunk in keys.chunks(config.windows.scan_count) {
                for outcome in cmp.compare(db, chunk.to_vec())? {
                    let key = (db, outcome.key.clone());
                    if outcome.differences.is_empty() || !outcome.in_scope {
                        collector.tracked.remove(&key);
                        summary.resolved += 1;
                        continue;
                    }
                    let tracked = collector.tracked.get_mut(&key).expect("tracked key");
                    if tracked.outcome.fingerprint != outcome.fingerprint {
                        tracked.changed_rounds += 1;
                        summary.changed += 1;
                    }
                    tracked.outcome = outcome;
                }
            }
        }
        summary.differing = collector.tracked.len() as u64;
        progress.say(&format!(
            "round {round}: {} rechecked, {} resolved, {} changed, {} still differing",
            summary.rechecked, summary.resolved, summary.changed, summary.differing
        ));
        rounds.push(summary);
    }
    Ok(rounds)
}

#[allow(clippy::too_many_arguments)]
fn report(
    config: &Config,
    source: &Side,
    target: &Side,
    dbs: &[u32],
    census: census::Census,
    collector: Collector,
    rounds: Vec<Round>,
    functions: Functions,
    started: Instant,
    started_at_ms: u64,
) -> Report {
    let rounds_done = rounds.len() as u32;
    let skew_ms = target.clock().0 - source.clock().0;
    let uncertainty_ms = target.clock().1 + source.clock().1;
    let mut counts = collector.counts;
    counts.resolved_on_recheck = rounds.iter().map(|r| r.resolved).sum();
    let mut differences = Vec::new();
    let mut unstable = Vec::new();
    let mut breakdown = collector.overflow.clone();
    for (_, tracked) in collector.tracked {
        let outcome = tracked.outcome;
        if rounds_done > 0 && tracked.changed_rounds == rounds_done {
            let slot = Slot::of_key(&outcome.key).get();
            let key = Key(outcome.key);
            unstable.push(Unstable {
                key_escaped: key.is_escaped(),
                key,
                db: outcome.db,
                slot,
                kinds: outcome.differences.iter().map(|d| d.kind).collect(),
                rounds_changed: tracked.changed_rounds,
            });
            continue;
        }
        let evidence = Evidence {
            target,
            skew_ms,
            tolerance_ms: config.ttl_tolerance.as_millis() as i64,
            now_ms: outcome.read_at_ms,
        };
        counts.differing_keys += 1;
        for mut diff in outcome.differences {
            diagnosis::diagnose(&mut diff, &evidence);
            *breakdown.entry((diff.key_type, diff.kind)).or_default() += 1;
            differences.push(diff);
        }
    }
    counts.differing_keys += collector.overflow_keys;
    counts.differences_not_kept = collector.overflow_keys;
    counts.differences = breakdown.values().sum();
    counts.unstable_keys = unstable.len() as u64;
    let verdict = if counts.differences == 0 && functions.differences.is_empty() {
        Verdict::Consistent
    } else {
        Verdict::Inconsistent
    };
    let sample = config.sample.filter(|r| *r < 1.0).map(|rate| {
        let differing_sampled = differences
            .iter()
            .filter(|d| d.kind != DiffKind::Extra)
            .map(|d| (d.db, d.key.clone()))
            .collect::<BTreeSet<_>>()
            .len() as u64;
        SampleEstimate::new(
            rate,
            collector.sampled_from_source,
            differing_sampled,
            census.source_keys,
        )
    });
    Report {
        schema: SCHEMA_VERSION,
        verdict,
        mode: config.mode,
        started_at_ms,
        elapsed_ms: started.elapsed().as_millis() as u64,
        source: source.summary(),
        target: target.summary(),
        scope: Scope {
            dbs: dbs.to_vec(),
            slots: config
                .slots
                .map(|r| format!("{}-{}", r.first.get(), r.last.get())),
            sample: config.sample,
            filter: config.filter.clone(),
            ttl_tolerance_ms: config.ttl_tolerance.as_millis() as u64,
        },
        clock: Clock {
            target_minus_source_ms: skew_ms,
            uncertainty_ms,
        },
        census,
        counts,
        rounds,
        breakdown: breakdown
            .into_iter()
            .map(|((key_type, kind), count)| BreakdownRow {
                key_type,
                kind,
                count,
            })
            .collect(),
        differences,
        functions,
        unstable,
        sample,
    }
}
