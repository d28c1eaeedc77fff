//! Comparing a batch of keys: both sides are probed (`TYPE` and the expiry), then the lengths
//! are read, then the values: small ones whole in one pipeline per node, big ones and
//! streams in windows, so memory stays bounded whatever the size of a value.

mod chunked;
mod stream;
mod whole;

use std::hash::{DefaultHasher, Hash, Hasher};

use ferry_engine::route::Slot;
use redis::Value;

use crate::config::{Config, Mode};
use crate::diff::{
    Cause, Detail, DiffKind, Difference, Facts, FieldChange, FieldValue, Listing, Member, Score,
    ScoreChange, TtlChange,
};
use crate::error::{Result, VerifyError};
use crate::key::{Excerpt, Key, KeyType};
use crate::reply;
use crate::side::{unix_ms, Link, Links, NodeAddr, Side};

/// A hash of everything read of a key on one side, to tell whether it changed between
/// rounds. Collections read in no particular order are summed element by element, so the
/// order of a scan does not matter.
#[derive(Clone, Default)]
pub(crate) struct Fingerprint {
    ordered: DefaultHasher,
    unordered: u64,
}

impl Fingerprint {
    fn add<T: Hash + ?Sized>(&mut self, value: &T) {
        value.hash(&mut self.ordered);
    }

    fn add_unordered<T: Hash + ?Sized>(&mut self, value: &T) {
        let mut h = DefaultHasher::new();
        value.hash(&mut h);
        self.unordered = self.unordered.wrapping_add(h.finish());
    }

    fn finish(&self) -> u64 {
        let mut h = self.ordered.clone();
        self.unordered.hash(&mut h);
        h.finish()
    }
}

/// `TYPE` and the expiry of a key on one side.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Probe {
    pub(crate) ty: Option<KeyType>,
    /// Unix ms on the server's clock; `None`: no TTL.
    pub(crate) expire_at: Option<i64>,
}

/// What comparing one key found.
#[derive(Clone)]
pub(crate) struct KeyOutcome {
    pub(crate) db: u32,
    pub(crate) key: Vec<u8>,
    /// False when the type filter leaves the key out.
    pub(crate) in_scope: bool,
    /// Whether the key exists on the source.
    pub(crate) on_source: bool,
    pub(crate) differences: Vec<Difference>,
    /// A hash of both sides as read.
    pub(crate) fingerprint: u64,
    /// Both servers' clocks when the key was read, as Unix ms (source, target).
    pub(crate) read_at_ms: (i64, i64),
}

/// A key's state while its batch is compared.
struct Item {
    slot: Slot,
    src: Probe,
    tgt: Probe,
    src_len: Option<u64>,
    tgt_len: Option<u64>,
    value: Option<Detail>,
    cause: Option<Cause>,
    src_fp: Fingerprint,
    tgt_fp: Fingerprint,
    in_scope: bool,
}

impl Item {
    /// The type both sides share, when the value is to be compared.
    fn common_type(&self) -> Option<KeyType> {
        match (self.src.ty, self.tgt.ty) {
            (Some(a), Some(b)) if a == b && self.in_scope => Some(a),
            _ => None,
        }
    }
}

/// Compares keys of the source and the target, with its own connections to both sides.
pub(crate) struct Comparator<'a> {
    config: &'a Config,
    source: Links<'a>,
    target: Links<'a>,
}

impl<'a> Comparator<'a> {
    pub(crate) fn new(config: &'a Config, source: &'a Side, target: &'a Side) -> Self {
        Comparator {
            config,
            source: Links::new(source),
            target: Links::new(target),
        }
    }

    /// The source's connections (for scans and existence checks).
    pub(crate) fn source(&mut self) -> &mut Links<'a> {
        &mut self.source
    }

    pub(crate) fn target(&mut self) -> &mut Links<'a> {
        &mut self.target
    }

    /// The keys of `keys` that do not exist on the source (`EXISTS`, pipelined per node).
    pub(crate) fn absent_on_source(&mut self, db: u32, keys: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        let slots: Vec<Slot> = keys.iter().map(|k| Slot::of_key(k)).collect();
        let all: Vec<usize> = (0..keys.len()).collect();
        let mut absent = vec![false; keys.len()];
        for (addr, group) in route(self.source.side, &slots, &all)? {
            let link = self.source.to(&addr, db)?;
            let mut pipe = redis::pipe();
            for &i in &group {
                pipe.cmd("EXISTS").arg(&keys[i]);
            }
            for (&i, reply) in group.iter().zip(link.pipeline(&mut pipe)?) {
                absent[i] =
                    reply::int(&reply).ok_or_else(|| link.unexpected("EXISTS", &reply))? == 0;
            }
        }
        Ok(keys
            .iter()
            .zip(absent)
            .filter(|(_, absent)| *absent)
            .map(|(k, _)| k.clone())
            .collect())
    }

    /// Compares `keys` of `db` on both sides.
    pub(crate) fn compare(&mut self, db: u32, keys: &[Vec<u8>]) -> Result<Vec<KeyOutcome>> {
        let slots: Vec<Slot> = keys.iter().map(|k| Slot::of_key(k)).collect();
        let src = probe(&mut self.source, db, keys, &slots)?;
        let tgt = probe(&mut self.target, db, keys, &slots)?;
        let filter = &self.config.filter;
        let mut items: Vec<Item> = (0..keys.len())
            .map(|i| {
                let mut src_fp = Fingerprint::default();
                let mut tgt_fp = Fingerprint::default();
                // The expiry is hashed only when it is exact, not computed from PTTL.
                src_fp.add(&(src[i].ty, exact_expiry(self.source.side, src[i])));
                tgt_fp.add(&(tgt[i].ty, exact_expiry(self.target.side, tgt[i])));
                Item {
                    slot: slots[i],
                    src: src[i],
                    tgt: tgt[i],
                    src_len: None,
                    tgt_len: None,
                    value: None,
                    cause: None,
                    src_fp,
                    tgt_fp,
                    in_scope: filter.selects_types(src[i].ty, tgt[i].ty),
                }
            })
            .collect();
        if self.config.mode != Mode::Outline {
            self.lengths(db, keys, &mut items)?;
        }
        if self.config.mode == Mode::Full {
            self.values(db, keys, &mut items)?;
        }
        Ok(keys
            .iter()
            .zip(items)
            .map(|(key, item)| self.outcome(db, key, item))
            .collect())
    }

    /// `STRLEN`/`LLEN`/`SCARD`/`ZCARD`/`HLEN`/`XLEN` on both sides of keys of one type.
    fn lengths(&mut self, db: u32, keys: &[Vec<u8>], items: &mut [Item]) -> Result<()> {
        let wanted: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].common_type().is_some_and(|t| t != KeyType::Other))
            .collect();
        let slots: Vec<Slot> = items.iter().map(|i| i.slot).collect();
        let types: Vec<Option<KeyType>> = items.iter().map(|i| i.common_type()).collect();
        let src = lengths(&mut self.source, db, keys, &slots, &wanted, &types)?;
        let tgt = lengths(&mut self.target, db, keys, &slots, &wanted, &types)?;
        for (&i, (s, t)) in wanted.iter().zip(src.into_iter().zip(tgt)) {
            let item = &mut items[i];
            item.src_len = Some(s);
            item.tgt_len = Some(t);
            item.src_fp.add(&s);
            item.tgt_fp.add(&t);
            if self.config.mode == Mode::Length && s != t {
                item.value = Some(Detail::Length {
                    source_len: s,
                    target_len: t,
                });
            }
        }
        Ok(())
    }

    /// Compares values: small ones whole, the others (and every stream) in windows.
    fn values(&mut self, db: u32, keys: &[Vec<u8>], items: &mut [Item]) -> Result<()> {
        let w = self.config.windows;
        let mut small = Vec::new();
        let mut big = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let (Some(ty), Some(s), Some(t)) = (item.common_type(), item.src_len, item.tgt_len)
            else {
                continue;
            };
            let limit = match ty {
                KeyType::Other => continue,
                KeyType::Stream => {
                    big.push(i);
                    continue;
                }
                KeyType::String => w.small_string_bytes,
                _ => w.small_elements,
            };
            if s.max(t) <= limit {
                small.push(i);
            } else {
                big.push(i);
            }
        }
        // Small values go in groups of about `pipeline_bytes` (strings by length,
        // collections at 64 bytes an element): one group's values are in memory at a time.
        let slots: Vec<Slot> = items.iter().map(|i| i.slot).collect();
        let mut groups: Vec<Vec<(usize, KeyType, u64)>> = Vec::new();
        let mut bytes = 0u64;
        for &i in &small {
            let item = &items[i];
            let ty = item.common_type().expect("small keys have one type");
            let len = item.src_len.unwrap_or(0).max(item.tgt_len.unwrap_or(0));
            let estimate = 64 + if ty == KeyType::String { len } else { len * 64 };
            match groups.last_mut() {
                Some(group) if bytes + estimate <= w.pipeline_bytes => group.push((i, ty, len)),
                _ => {
                    groups.push(vec![(i, ty, len)]);
                    bytes = 0;
                }
            }
            bytes += estimate;
        }
        for plan in groups {
            let src = whole::read(&mut self.source, db, keys, &slots, &plan)?;
            let tgt = whole::read(&mut self.target, db, keys, &slots, &plan)?;
            for ((&(i, _, _), s), t) in plan.iter().zip(src).zip(tgt) {
                let item = &mut items[i];
                s.fingerprint(&mut item.src_fp);
                t.fingerprint(&mut item.tgt_fp);
                let (detail, cause) = whole::compare(s, t);
                item.value = detail;
                item.cause = cause;
            }
        }
        let multi = (
            self.source.side.caps.multi_member,
            self.target.side.caps.multi_member,
        );
        for i in big {
            let item = &mut items[i];
            let ty = item.common_type().expect("big keys have one type");
            let key = keys[i].as_slice();
            let src = self.source.for_slot(item.slot, db)?;
            let tgt = self.target.for_slot(item.slot, db)?;
            let lens = (
                item.src_len.expect("length read"),
                item.tgt_len.expect("length read"),
            );
            let mut pair = Pair {
                src,
                tgt,
                src_fp: &mut item.src_fp,
                tgt_fp: &mut item.tgt_fp,
                key,
                lens,
                windows: w.elements,
                multi,
            };
            let compared = match ty {
                KeyType::String => chunked::string(&mut pair, w.string_bytes).map(|d| (d, None)),
                KeyType::List => chunked::list(&mut pair),
                KeyType::Hash => chunked::collection(&mut pair, Coll::Hash).map(|d| (d, None)),
                KeyType::Set => chunked::collection(&mut pair, Coll::Set).map(|d| (d, None)),
                KeyType::Zset => chunked::collection(&mut pair, Coll::Zset).map(|d| (d, None)),
                KeyType::Stream => stream::compare(&mut pair).map(|d| (d, None)),
                KeyType::Other => Ok((None, None)),
            };
            // An error reply (the key was deleted or changed type between two windows) is a
            // difference to re-check, not a failure of the run.
            let (detail, cause) = match compared {
                Ok(found) => found,
                Err(VerifyError::Redis { source, .. }) if source.code().is_some() => (
                    Some(Detail::Unreadable {
                        reason: source.to_string(),
                    }),
                    None,
                ),
                Err(e) => return Err(e),
            };
            item.value = detail;
            item.cause = cause;
        }
        Ok(())
    }

    /// The differences of one key, from what was read.
    fn outcome(&self, db: u32, key: &[u8], item: Item) -> KeyOutcome {
        let fingerprint = {
            let mut h = DefaultHasher::new();
            (item.src_fp.finish(), item.tgt_fp.finish()).hash(&mut h);
            h.finish()
        };
        let mut outcome = KeyOutcome {
            db,
            key: key.to_vec(),
            in_scope: item.in_scope,
            on_source: item.src.ty.is_some(),
            differences: Vec::new(),
            fingerprint,
            read_at_ms: (
                (unix_ms() + self.source.side.clock().0) as i64,
                (unix_ms() + self.target.side.clock().0) as i64,
            ),
        };
        if !item.in_scope {
            return outcome;
        }
        let facts = |probe: Probe, len: Option<u64>| {
            probe.ty.map(|key_type| Facts {
                key_type,
                expire_at_ms: probe.expire_at,
                len,
            })
        };
        let key = Key(key.to_vec());
        let difference = |kind, key_type, detail, cause| Difference {
            key_escaped: key.is_escaped(),
            key: key.clone(),
            db,
            slot: item.slot.get(),
            kind,
            key_type,
            source: facts(item.src, item.src_len),
            target: facts(item.tgt, item.tgt_len),
            detail,
            cause,
        };
        let diffs = &mut outcome.differences;
        match (item.src.ty, item.tgt.ty) {
            (None, None) => {}
            (Some(t), None) => diffs.push(difference(DiffKind::Missing, t, None, None)),
            (None, Some(t)) => diffs.push(difference(DiffKind::Extra, t, None, None)),
            (Some(s), Some(t)) if s != t => diffs.push(difference(
                DiffKind::Type,
                s,
                Some(Detail::Type {
                    source: s,
                    target: t,
                }),
                None,
            )),
            (Some(t), Some(_)) => {
                if let Some(detail) = self.ttl(item.src.expire_at, item.tgt.expire_at) {
                    diffs.push(difference(DiffKind::Ttl, t, Some(detail), None));
                }
                if let Some(detail) = item.value.clone() {
                    diffs.push(difference(
                        DiffKind::Value,
                        t,
                        Some(detail),
                        item.cause.clone(),
                    ));
                }
            }
        }
        outcome
    }

    /// Compares absolute expiry times with the tolerance.
    fn ttl(&self, source: Option<i64>, target: Option<i64>) -> Option<Detail> {
        let tolerance = self.config.ttl_tolerance.as_millis() as i64;
        let (change, delta_ms) = match (source, target) {
            (None, None) => return None,
            (Some(_), None) => (TtlChange::Lost, None),
            (None, Some(_)) => (TtlChange::Added, None),
            (Some(s), Some(t)) if (t - s).abs() <= tolerance => return None,
            (Some(s), Some(t)) => (TtlChange::Changed, Some(t - s)),
        };
        Some(Detail::Ttl {
            change,
            source_expire_at_ms: source,
            target_expire_at_ms: target,
            delta_ms,
        })
    }
}

/// The expiry when the side reads it exactly (`PEXPIRETIME`), for fingerprints.
fn exact_expiry(side: &Side, probe: Probe) -> Option<i64> {
    side.caps.pexpiretime.then_some(probe.expire_at).flatten()
}

/// Indices of `wanted` grouped by the node their slot is read from.
fn route(side: &Side, slots: &[Slot], wanted: &[usize]) -> Result<Vec<(NodeAddr, Vec<usize>)>> {
    let mut groups: Vec<(NodeAddr, Vec<usize>)> = Vec::new();
    for &i in wanted {
        let addr = &side.shard_for(slots[i])?.read;
        match groups.iter_mut().find(|(a, _)| a == addr) {
            Some((_, group)) => group.push(i),
            None => groups.push((addr.clone(), vec![i])),
        }
    }
    Ok(groups)
}

/// `TYPE` and `PEXPIRETIME` of every key (before 7.0: `TIME`, then `TYPE` and `PTTL`).
fn probe(links: &mut Links, db: u32, keys: &[Vec<u8>], slots: &[Slot]) -> Result<Vec<Probe>> {
    let side = links.side;
    let exact = side.caps.pexpiretime;
    let all: Vec<usize> = (0..keys.len()).collect();
    let mut probes = vec![Probe::default(); keys.len()];
    for (addr, group) in route(side, slots, &all)? {
        let link = links.to(&addr, db)?;
        let mut pipe = redis::pipe();
        if !exact {
            pipe.cmd("TIME");
        }
        for &i in &group {
            pipe.cmd("TYPE").arg(&keys[i]);
            pipe.cmd(if exact { "PEXPIRETIME" } else { "PTTL" })
                .arg(&keys[i]);
        }
        let mut replies = link.pipeline(&mut pipe)?.into_iter();
        let now_ms = if exact {
            0
        } else {
            let time = replies.next().unwrap_or_default();
            server_ms(&time).ok_or_else(|| link.unexpected("TIME", &time))?
        };
        for &i in &group {
            let (ty, ttl) = (
                replies.next().unwrap_or_default(),
                replies.next().unwrap_or_default(),
            );
            let ty_name = reply::text(&ty).ok_or_else(|| link.unexpected("TYPE", &ty))?;
            let ttl = reply::int(&ttl)
                .ok_or_else(|| link.unexpected(if exact { "PEXPIRETIME" } else { "PTTL" }, &ttl))?;
            probes[i] = match ttl {
                // The key vanished between the two commands.
                -2 => Probe::default(),
                -1 => Probe {
                    ty: KeyType::from_reply(&ty_name),
                    expire_at: None,
                },
                ms => Probe {
                    ty: KeyType::from_reply(&ty_name),
                    expire_at: Some(if exact { ms } else { now_ms + ms }),
                },
            };
        }
    }
    Ok(probes)
}

/// A `TIME` reply as Unix milliseconds.
fn server_ms(time: &Value) -> Option<i64> {
    let parts = reply::items(time.clone())?;
    let secs = reply::int(parts.first()?)?;
    let micros = reply::int(parts.get(1)?)?;
    Some(secs * 1_000 + micros / 1_000)
}

/// The length of every `wanted` key, whose type is `types[i]`. A key that changed type in
/// between reads as length 0 (its value comparison then reports it).
fn lengths(
    links: &mut Links,
    db: u32,
    keys: &[Vec<u8>],
    slots: &[Slot],
    wanted: &[usize],
    types: &[Option<KeyType>],
) -> Result<Vec<u64>> {
    let side = links.side;
    let mut lens = vec![0u64; keys.len()];
    for (addr, group) in route(side, slots, wanted)? {
        let link = links.to(&addr, db)?;
        let mut pipe = redis::pipe();
        for &i in &group {
            let cmd = match types[i].expect("wanted keys have a type") {
                KeyType::String => "STRLEN",
                KeyType::List => "LLEN",
                KeyType::Set => "SCARD",
                KeyType::Zset => "ZCARD",
                KeyType::Hash => "HLEN",
                KeyType::Stream => "XLEN",
                KeyType::Other => "EXISTS",
            };
            pipe.cmd(cmd).arg(&keys[i]);
        }
        for (&i, reply) in group.iter().zip(link.pipeline(&mut pipe)?) {
            lens[i] = reply::int(&reply).unwrap_or(0).max(0) as u64;
        }
    }
    Ok(wanted.iter().map(|&i| lens[i]).collect())
}

/// Both sides of one key, for comparisons in windows.
pub(crate) struct Pair<'p> {
    src: &'p mut Link,
    tgt: &'p mut Link,
    src_fp: &'p mut Fingerprint,
    tgt_fp: &'p mut Fingerprint,
    key: &'p [u8],
    /// Source and target lengths.
    lens: (u64, u64),
    /// Elements per window.
    windows: usize,
    /// Whether each side has `SMISMEMBER`/`ZMSCORE`/exclusive ranges (6.2).
    multi: (bool, bool),
}

/// The unordered collections, compared member by member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coll {
    Hash,
    Set,
    Zset,
}

impl Coll {
    /// Whether two values of a member are the same (scores as doubles).
    fn same(self, a: &[u8], b: &[u8]) -> bool {
        match self {
            Coll::Zset => match (parse_score(a), parse_score(b)) {
                (Some(a), Some(b)) => Score::same(a, b),
                _ => a == b,
            },
            Coll::Hash | Coll::Set => a == b,
        }
    }
}

fn parse_score(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Differences of an unordered collection, collected member by member.
#[derive(Default)]
pub(crate) struct CollDiff {
    missing: Listing<(Excerpt, Excerpt)>,
    extra: Listing<(Excerpt, Excerpt)>,
    changed: Listing<(Excerpt, Excerpt, Excerpt)>,
}

impl CollDiff {
    fn missing(&mut self, member: &[u8], value: &[u8]) {
        self.missing
            .push((Excerpt::new(member), Excerpt::new(value)));
    }

    fn extra(&mut self, member: &[u8], value: &[u8]) {
        self.extra.push((Excerpt::new(member), Excerpt::new(value)));
    }

    fn changed(&mut self, member: &[u8], source: &[u8], target: &[u8]) {
        self.changed.push((
            Excerpt::new(member),
            Excerpt::new(source),
            Excerpt::new(target),
        ));
    }

    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }

    /// The detail, or `None` when nothing differs and the lengths agree.
    fn detail(self, coll: Coll, source_len: u64, target_len: u64) -> Option<Detail> {
        if self.is_empty() && source_len == target_len {
            return None;
        }
        fn map<A, B>(l: Listing<A>, f: impl Fn(A) -> B) -> Listing<B> {
            Listing {
                total: l.total,
                shown: l.shown.into_iter().map(f).collect(),
            }
        }
        let score = |e: &Excerpt| Score(e.0.parse().unwrap_or(f64::NAN));
        Some(match coll {
            Coll::Hash => Detail::Hash {
                source_len,
                target_len,
                missing: map(self.missing, |(field, value)| FieldValue { field, value }),
                extra: map(self.extra, |(field, value)| FieldValue { field, value }),
                changed: map(self.changed, |(field, source, target)| FieldChange {
                    field,
                    source,
                    target,
                }),
            },
            Coll::Set => Detail::Set {
                source_len,
                target_len,
                missing: map(self.missing, |(m, _)| m),
                extra: map(self.extra, |(m, _)| m),
            },
            Coll::Zset => Detail::Zset {
                source_len,
                target_len,
                missing: map(self.missing, |(member, s)| Member {
                    member,
                    score: score(&s),
                }),
                extra: map(self.extra, |(member, s)| Member {
                    member,
                    score: score(&s),
                }),
                changed: map(self.changed, |(member, s, t)| ScoreChange {
                    member,
                    source: score(&s),
                    target: score(&t),
                }),
            },
        })
    }
}
