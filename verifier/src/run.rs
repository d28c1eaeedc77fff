//! A whole verification: discover both sides, take the census, scan the source (comparing
//! every key with the target, several batches in flight per shard) and the target (looking
//! for keys the source lacks) in parallel, then re-check the differing keys over rounds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use ferry_engine::route::Slot;

use crate::catchup::{self, CatchUp};
use crate::census;
use crate::compare::{Comparator, KeyOutcome};
use crate::config::{Config, RESERVED_PREFIX};
use crate::diagnosis::{self, Evidence};
use crate::diff::DiffKind;
use crate::error::{Result, VerifyError};
use crate::key::{Key, KeyType};
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
    std::thread::scope(|scope| -> Result<()> {
        let ticker = scope.spawn(|| progress.tick(started));
        let mut workers = Vec::new();
        for i in 0..source.shards.len() {
            let (source, target, dbs, collector, progress) =
                (&source, &target, &dbs, &collector, &progress);
            workers.push(
                scope.spawn(move || {
                    scan_source(config, source, target, i, dbs, collector, progress)
                }),
            );
        }
        for i in 0..target.shards.len() {
            let (source, target, dbs, collector, progress) =
                (&source, &target, &dbs, &collector, &progress);
            workers.push(
                scope.spawn(move || {
                    scan_target(config, source, target, i, dbs, collector, progress)
                }),
            );
        }
        let results: Vec<Result<()>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(VerifyError::Config("a scan worker panicked".into())))
            })
            .collect();
        progress.finish();
        let _ = ticker.join();
        results.into_iter().collect()
    })?;
    let mut collector = collector.into_inner().unwrap_or_else(|e| e.into_inner());
    let rounds = recheck(config, &source, &target, &mut collector, &progress)?;
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

/// Scans the source shard `i` and compares every key in scope with the target: one thread
/// scans, [`COMPARERS_PER_SHARD`] compare the batches it finds, each with its own
/// connections, so that several batches are in flight.
fn scan_source(
    config: &Config,
    source: &Side,
    target: &Side,
    i: usize,
    dbs: &[u32],
    collector: &Mutex<Collector>,
    progress: &Progress,
) -> Result<()> {
    if !shard_in_range(config, source, i) {
        return Ok(());
    }
    let (batches, found) = mpsc::sync_channel::<Batch>(COMPARERS_PER_SHARD);
    // The comparers own the receiving end: when they all stop (on an error), the scan stops.
    let found = Arc::new(Mutex::new(found));
    std::thread::scope(|scope| {
        let comparers: Vec<_> = (0..COMPARERS_PER_SHARD)
            .map(|_| {
                let found = found.clone();
                scope.spawn(move || {
                    compare_batches(config, source, target, &found, collector, progress)
                })
            })
            .collect();
        drop(found);
        let mut result = scan_batches(config, source, i, dbs, progress, batches);
        for comparer in comparers {
            let compared = comparer
                .join()
                .unwrap_or_else(|_| Err(VerifyError::Config("a comparer panicked".into())));
            if result.is_ok() {
                result = compared;
            }
        }
        result
    })
}

/// `SCAN`s the source shard `i` and hands the keys in scope to the comparers.
fn scan_batches(
    config: &Config,
    source: &Side,
    i: usize,
    dbs: &[u32],
    progress: &Progress,
    batches: mpsc::SyncSender<Batch>,
) -> Result<()> {
    let mut links = Links::new(source);
    let node = source.shards[i].read.clone();
    for &db in dbs {
        let mut cursor = 0;
        loop {
            let link = links.to(&node, db)?;
            let due = link.send(&scan_command(cursor, config))?;
            let (next, keys) = scan_reply(link, due)?;
            progress
                .source_scanned
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
            if batches
                .send(Batch::new(config, source, i, db, keys))
                .is_err()
            {
                // Every comparer stopped: the first error is theirs to report.
                return Ok(());
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// Compares the batches a source scan finds until it ends.
fn compare_batches(
    config: &Config,
    source: &Side,
    target: &Side,
    found: &Mutex<mpsc::Receiver<Batch>>,
    collector: &Mutex<Collector>,
    progress: &Progress,
) -> Result<()> {
    let mut cmp = Comparator::new(config, source, target);
    loop {
        let batch = found.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = batch else {
            return Ok(());
        };
        let outcomes = cmp.compare(batch.db, batch.keys)?;
        let mut c = collector.lock().unwrap_or_else(|e| e.into_inner());
        c.counts.source_keys_scanned += batch.scanned;
        c.counts.reserved_ignored += batch.reserved.len() as u64;
        for key in &batch.reserved {
            *c.source_reserved
                .entry((batch.db, Slot::of_key(key).get()))
                .or_default() += 1;
        }
        c.add(outcomes, true, progress);
    }
}

/// Scans the target shard `i` for keys in scope that the source lacks, and compares those.
/// Each `SCAN` step runs while the source answers `EXISTS` for the keys of the step before.
fn scan_target(
    config: &Config,
    source: &Side,
    target: &Side,
    i: usize,
    dbs: &[u32],
    collector: &Mutex<Collector>,
    progress: &Progress,
) -> Result<()> {
    if !shard_in_range(config, target, i) {
        return Ok(());
    }
    let mut cmp = Comparator::new(config, source, target);
    let node = target.shards[i].read.clone();
    for &db in dbs {
        let mut cursor = Some(0);
        let mut last: Option<Batch> = None;
        while cursor.is_some() || last.is_some() {
            let due = match cursor {
                Some(cursor) => Some(
                    cmp.target()
                        .to(&node, db)?
                        .send(&scan_command(cursor, config))?,
                ),
                None => None,
            };
            let absent = match last.as_mut() {
                Some(batch) => cmp.absent_on_source(db, std::mem::take(&mut batch.keys))?,
                None => Vec::new(),
            };
            let next = match due {
                Some(due) => Some(scan_reply(cmp.target().to(&node, db)?, due)?),
                None => None,
            };
            if let Some(batch) = last.take() {
                let outcomes = cmp.compare(db, absent)?;
                let mut c = collector.lock().unwrap_or_else(|e| e.into_inner());
                c.counts.target_keys_scanned += batch.scanned;
                for key in batch.reserved {
                    *c.reserved
                        .entry((db, Slot::of_key(&key).get()))
                        .or_default() += 1;
                }
                c.add(outcomes, false, progress);
            }
            cursor = None;
            if let Some((next, keys)) = next {
                progress
                    .target_scanned
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
                last = Some(Batch::new(config, target, i, db, keys));
                cursor = (next != 0).then_some(next);
            }
        }
    }
    Ok(())
}

/// One `SCAN` step, as a pipeline to send.
fn scan_command(cursor: u64, config: &Config) -> redis::Pipeline {
    let mut pipe = redis::pipe();
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
    let verdict = if counts.differences == 0 {
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
        unstable,
        sample,
    }
}
