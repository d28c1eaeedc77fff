//! Comparing a batch of keys in a few round trips. Each step writes one pipeline to every
//! node of both sides before it reads any reply, so that all of them work at once:
//!
//! 1. `TYPE`, the expiry (`PEXPIRETIME`, or `TIME` + `PTTL` before 7.0) and, in full mode,
//!    `OBJECT ENCODING` of every key;
//! 2. for every key of one type on both sides, in length mode its length, in full mode
//!    whatever of its value one bounded reply holds ([`whole::First`]), which tells the
//!    length when it is the whole value: short strings, small encodings by `DUMP` (equal
//!    payloads are equal values), other strings and collections up to a share of the
//!    batch's byte budget, and the head of each stream;
//! 3. for the keys step 2 did not settle (and lengths that differing keys lack): values up
//!    to the small limits whole, in groups of about `pipeline_bytes`; the consumer groups of
//!    streams; bigger values in windows (`chunked.rs`, and further windows of streams in
//!    `stream.rs`). Memory stays bounded whatever the size of a value.
//!
//! A key thus costs two lookups a side when step 2 reads it whole, the usual case: servers
//! spend more on finding a key than on most commands that follow.

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
use crate::pipe::Pipeline;
use crate::reply;
use crate::side::{unix_ms, Landed, Link, Links, NodeAddr, Side};
use whole::{First, Shares, Whole};

/// Bytes a short string (`int` or `embstr`: at most 44 bytes) counts for in step 2's budget.
const SHORT_STRING_BYTES: u64 = 64;
/// Bytes a `DUMP` of a small encoding counts for in step 2's budget: with the servers'
/// default `*-max-listpack-*` and `set-max-intset-entries` limits they stay under a few
/// kilobytes.
const COMPACT_BYTES: u64 = 8 << 10;
/// Bytes an element of a collection counts for in the budgets of whole reads.
const ELEMENT_BYTES: u64 = 64;
/// The least step 2 reads of a string or collection, however many keys share the budget.
const MIN_SHARE_BYTES: u64 = 1 << 10;

/// A hash of everything read of a key on one side, to tell whether it changed between
/// rounds. Collections read in no particular order are summed element by element, so the
/// order of a scan does not matter. Values compared whole are hashed only when the key
/// differs (the hash of a key without differences is never used).
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

/// How a server keeps a value, as far as reading it goes (`OBJECT ENCODING`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Not asked (outline and length modes), or not answered.
    #[default]
    Unknown,
    /// `int` or `embstr`: a string of at most 44 bytes.
    ShortString,
    /// `listpack`, `listpackex`, `ziplist` or `intset`: a small collection in one piece,
    /// kept small by the server's limits.
    Compact,
    /// Anything else (`raw`, `quicklist`, `hashtable`, `skiplist`, `stream`...).
    Other,
}

impl Encoding {
    fn of(reply: &Value) -> Encoding {
        match reply::str(reply) {
            Some("int" | "embstr") => Encoding::ShortString,
            Some("listpack" | "listpackex" | "ziplist" | "intset") => Encoding::Compact,
            Some(_) => Encoding::Other,
            None => Encoding::Unknown,
        }
    }
}

/// `TYPE`, the expiry and the encoding of a key on one side.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Probe {
    pub(crate) ty: Option<KeyType>,
    /// Unix ms on the server's clock; `None`: no TTL.
    pub(crate) expire_at: Option<i64>,
    pub(crate) encoding: Encoding,
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
    /// Whether it exists on the target.
    pub(crate) on_target: bool,
    pub(crate) differences: Vec<Difference>,
    /// A hash of both sides as read.
    pub(crate) fingerprint: u64,
    /// Both servers' clocks when the key was read, as Unix ms (source, target).
    pub(crate) read_at_ms: (i64, i64),
}

/// What step 2 read of a value on one side.
#[derive(Default)]
enum Read {
    /// Nothing usable: step 3 reads the value (again).
    #[default]
    Nothing,
    /// The whole value (or why it could not be read).
    Whole(Whole),
    /// A `DUMP` payload.
    Dump(Vec<u8>),
    /// The head of a stream.
    Stream(Box<stream::Head>),
}

/// Why a reply of a pipeline could not be used.
enum Bad {
    /// An error reply: the key changed type or vanished while it was read (a difference,
    /// re-checked later).
    Unreadable(String),
    /// A reply of the wrong shape to this command (the run fails).
    Unexpected(&'static str),
}

/// A key's state while its batch is compared.
struct Item {
    slot: Slot,
    src: Probe,
    tgt: Probe,
    src_len: Option<u64>,
    tgt_len: Option<u64>,
    src_read: Read,
    tgt_read: Read,
    /// Whether step 3 still has to compare the value.
    pending: bool,
    value: Option<Detail>,
    cause: Option<Cause>,
    src_fp: Fingerprint,
    tgt_fp: Fingerprint,
    in_scope: bool,
    /// Whether the expiry times differ (so that values are fingerprinted even when equal).
    ttl_differs: bool,
}

impl Item {
    /// The type both sides share, when the value is to be compared.
    fn common_type(&self) -> Option<KeyType> {
        match (self.src.ty, self.tgt.ty) {
            (Some(a), Some(b)) if a == b && self.in_scope => Some(a),
            _ => None,
        }
    }

    /// Compares two whole values of the key.
    fn compare_whole(&mut self, mut s: Whole, mut t: Whole) {
        let (detail, cause) = whole::compare_mut(&mut s, &mut t);
        if detail.is_some() || self.ttl_differs {
            s.fingerprint(&mut self.src_fp);
            t.fingerprint(&mut self.tgt_fp);
        }
        self.value = detail;
        self.cause = cause;
    }

    /// Compares what step 2 read of both sides when that is enough; false when step 3 has
    /// to read the value (again).
    fn settle(&mut self) -> bool {
        match (
            std::mem::take(&mut self.src_read),
            std::mem::take(&mut self.tgt_read),
        ) {
            (Read::Whole(s), Read::Whole(t)) => self.compare_whole(s, t),
            (Read::Dump(s), Read::Dump(t)) if s == t => {
                if self.ttl_differs {
                    self.src_fp.add(&s);
                    self.tgt_fp.add(&t);
                }
            }
            (s @ Read::Stream(_), t @ Read::Stream(_)) => {
                self.src_read = s;
                self.tgt_read = t;
                return false;
            }
            // A stream whose head one side could not read (it vanished or changed type).
            (Read::Whole(Whole::Unreadable(reason)), Read::Stream(_))
            | (Read::Stream(_), Read::Whole(Whole::Unreadable(reason))) => {
                self.src_fp.add(&reason);
                self.tgt_fp.add(&reason);
                self.value = Some(Detail::Unreadable { reason });
            }
            _ => return false,
        }
        true
    }
}

/// Compares keys of the source and the target, with its own connections to both sides.
pub(crate) struct Comparator<'a> {
    config: &'a Config,
    source: Links<'a>,
    target: Links<'a>,
    /// Whether small encodings are compared by their `DUMP` payloads: both sides allow
    /// `OBJECT ENCODING` and `DUMP` and run the same version (so the same format).
    dump: bool,
}

impl<'a> Comparator<'a> {
    pub(crate) fn new(config: &'a Config, source: &'a Side, target: &'a Side) -> Self {
        let dump = [source, target]
            .iter()
            .all(|side| side.caps.dump && side.caps.object_encoding)
            && source.same_version(target);
        Comparator {
            config,
            source: Links::new(source),
            target: Links::new(target),
            dump,
        }
    }

    /// The target's connections (for its scan).
    pub(crate) fn target(&mut self) -> &mut Links<'a> {
        &mut self.target
    }

    /// One step on both sides at once: `build(source?, pipe, keys)` writes the commands for
    /// the keys `src` (source) and `tgt` (target) want, to every node concerned, before any
    /// reply is read.
    fn exchange(
        &mut self,
        db: u32,
        slots: &[Slot],
        src: impl IntoIterator<Item = usize>,
        tgt: impl IntoIterator<Item = usize>,
        build: impl Fn(bool, &mut Pipeline, &[usize]),
    ) -> Result<(Vec<Landed>, Vec<Landed>)> {
        let src = self
            .source
            .send(db, slots, src, |pipe, group| build(true, pipe, group))?;
        let tgt = self
            .target
            .send(db, slots, tgt, |pipe, group| build(false, pipe, group))?;
        Ok((self.source.receive(src)?, self.target.receive(tgt)?))
    }

    /// Walks the replies of an [`Comparator::exchange`] key by key, in the order the keys were
    /// sent: `each(source?, links, node, key, replies)` takes that key's replies.
    fn each_reply(
        &self,
        (src, tgt): (Vec<Landed>, Vec<Landed>),
        mut each: impl FnMut(
            bool,
            &Links,
            &NodeAddr,
            usize,
            &mut std::vec::IntoIter<Value>,
        ) -> Result<()>,
    ) -> Result<()> {
        for (links, landed, source) in [(&self.source, src, true), (&self.target, tgt, false)] {
            for Landed {
                addr,
                keys,
                replies,
            } in landed
            {
                let mut replies = replies.into_iter();
                for i in keys {
                    each(source, links, &addr, i, &mut replies)?;
                }
            }
        }
        Ok(())
    }

    /// The keys of `keys` that do not exist on the source (`EXISTS`, pipelined per node).
    pub(crate) fn absent_on_source(&mut self, db: u32, keys: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        if keys.is_empty() {
            return Ok(keys);
        }
        let slots: Vec<Slot> = keys.iter().map(|k| Slot::of_key(k)).collect();
        let flight = self.source.send(db, &slots, 0..keys.len(), |pipe, group| {
            for &i in group {
                pipe.cmd("EXISTS").arg(&keys[i]);
            }
        })?;
        let mut absent = vec![false; keys.len()];
        for landed in self.source.receive(flight)? {
            for (&i, reply) in landed.keys.iter().zip(&landed.replies) {
                absent[i] = reply::int(reply)
                    .ok_or_else(|| self.source.unexpected(&landed.addr, "EXISTS", reply))?
                    == 0;
            }
        }
        Ok(keys
            .into_iter()
            .zip(absent)
            .filter_map(|(k, absent)| absent.then_some(k))
            .collect())
    }

    /// Compares `keys` of `db` on both sides.
    pub(crate) fn compare(&mut self, db: u32, keys: Vec<Vec<u8>>) -> Result<Vec<KeyOutcome>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let slots: Vec<Slot> = keys.iter().map(|k| Slot::of_key(k)).collect();
        let (src, tgt) = self.probe(db, &keys, &slots)?;
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
                    src_read: Read::Nothing,
                    tgt_read: Read::Nothing,
                    pending: false,
                    value: None,
                    cause: None,
                    src_fp,
                    tgt_fp,
                    in_scope: filter.selects_types(src[i].ty, tgt[i].ty),
                    ttl_differs: self.ttl(src[i].expire_at, tgt[i].expire_at).is_some(),
                }
            })
            .collect();
        if self.config.mode != Mode::Outline {
            self.first_reads(db, &keys, &slots, &mut items)?;
        }
        if self.config.mode == Mode::Full {
            self.values(db, &keys, &slots, &mut items)?;
        }
        let read_at_ms = (
            (unix_ms() + self.source.side.clock().0) as i64,
            (unix_ms() + self.target.side.clock().0) as i64,
        );
        Ok(keys
            .into_iter()
            .zip(items)
            .map(|(key, item)| self.outcome(db, key, item, read_at_ms))
            .collect())
    }

    /// Step 1: `TYPE`, the expiry and (in full mode) the encoding of every key, both sides
    /// at once.
    fn probe(
        &mut self,
        db: u32,
        keys: &[Vec<u8>],
        slots: &[Slot],
    ) -> Result<(Vec<Probe>, Vec<Probe>)> {
        let full = self.config.mode == Mode::Full;
        let plan = |side: &Side| ProbePlan {
            exact: side.caps.pexpiretime,
            encoding: full && side.caps.object_encoding,
        };
        let (src_plan, tgt_plan) = (plan(self.source.side), plan(self.target.side));
        let (src, tgt) = self.exchange(
            db,
            slots,
            0..keys.len(),
            0..keys.len(),
            |source, pipe, group| {
                let plan = if source { src_plan } else { tgt_plan };
                plan.commands(pipe, keys, group)
            },
        )?;
        Ok((
            src_plan.parse(&self.source, src, keys.len())?,
            tgt_plan.parse(&self.target, tgt, keys.len())?,
        ))
    }

    /// Step 2: lengths (length mode) or the values one bounded reply holds (full mode), both
    /// sides at once; settles the keys whose values were read whole (or whose payloads are
    /// equal).
    fn first_reads(
        &mut self,
        db: u32,
        keys: &[Vec<u8>],
        slots: &[Slot],
        items: &mut [Item],
    ) -> Result<()> {
        let full = self.config.mode == Mode::Full;
        let w = self.config.windows;
        let mut plans: Vec<Option<(First, First)>> = Vec::with_capacity(items.len());
        let (mut fixed, mut sharing) = (0u64, 0u64);
        for item in items.iter() {
            let plan = item.common_type().and_then(|ty| self.first(ty, item));
            if let Some((s, t)) = plan {
                let cost = |first| match first {
                    First::Len => Some(0),
                    First::Get => Some(SHORT_STRING_BYTES),
                    First::Dump => Some(COMPACT_BYTES),
                    _ => None,
                };
                match (cost(s), cost(t)) {
                    (Some(s), Some(t)) => fixed += s.max(t),
                    _ => sharing += 1,
                }
            }
            plans.push(plan);
        }
        if plans.iter().all(Option::is_none) {
            return Ok(());
        }
        // What is left of the budget is shared by the reads that stop at a size.
        let share = w.pipeline_bytes.saturating_sub(fixed) / sharing.max(1);
        let shares = Shares {
            bytes: share.max(MIN_SHARE_BYTES).min(w.small_string_bytes).max(1),
            elements: (share / ELEMENT_BYTES)
                .max(MIN_SHARE_BYTES / ELEMENT_BYTES)
                .min(w.small_elements)
                .max(1),
            entries: (share / ELEMENT_BYTES)
                .max(MIN_SHARE_BYTES / ELEMENT_BYTES)
                .min(w.elements as u64)
                .max(1),
        };
        let wanted = || (0..plans.len()).filter(|&i| plans[i].is_some());
        let ty = |i: usize| items[i].common_type().expect("planned keys have one type");
        let landed = self.exchange(db, slots, wanted(), wanted(), |source, pipe, group| {
            for &i in group {
                let (s, t) = plans[i].expect("planned");
                let first = if source { s } else { t };
                whole::first_commands(pipe, &keys[i], ty(i), first, shares);
            }
        })?;
        self.each_reply(landed, |source, links, addr, i, replies| {
            let (s, t) = plans[i].expect("planned");
            let first = if source { s } else { t };
            let item = &mut items[i];
            let ty = item.common_type().expect("planned keys have one type");
            let (len, read) = whole::parse_first(replies, ty, first, shares)
                .map_err(|bad| bad.error(links, addr))?;
            if source {
                (item.src_len, item.src_read) = (len, read);
            } else {
                (item.tgt_len, item.tgt_read) = (len, read);
            }
            Ok(())
        })?;
        for (item, plan) in items.iter_mut().zip(&plans) {
            if plan.is_none() {
                continue;
            }
            if full {
                item.pending = !item.settle();
            } else if let (Some(s), Some(t)) = (item.src_len, item.tgt_len) {
                if s != t {
                    item.value = Some(Detail::Length {
                        source_len: s,
                        target_len: t,
                    });
                }
            }
        }
        Ok(())
    }

    /// What step 2 reads of a key of type `ty` on each side.
    fn first(&self, ty: KeyType, item: &Item) -> Option<(First, First)> {
        if ty == KeyType::Other {
            return None;
        }
        if self.config.mode != Mode::Full {
            return Some((First::Len, First::Len));
        }
        let string = |encoding| match encoding {
            Encoding::ShortString => First::Get,
            _ => First::Prefix,
        };
        // A hash table (of any size) is read in the third step, once its length is known:
        // `HRANDFIELD` with a count below the length copies it. `HRANDFIELD` came with 6.2.
        let hash = |side: &Side, encoding| match (encoding, side.caps.multi_member) {
            (Encoding::Other, _) => First::Len,
            (_, true) => First::Sample,
            (_, false) => First::Scan,
        };
        let compact =
            item.src.encoding == Encoding::Compact && item.tgt.encoding == Encoding::Compact;
        Some(match ty {
            KeyType::String => (string(item.src.encoding), string(item.tgt.encoding)),
            KeyType::Stream => (First::Stream, First::Stream),
            _ if self.dump && compact => (First::Dump, First::Dump),
            KeyType::List | KeyType::Zset => (First::Range, First::Range),
            KeyType::Set => (First::Sample, First::Sample),
            _ => (
                hash(self.source.side, item.src.encoding),
                hash(self.target.side, item.tgt.encoding),
            ),
        })
    }

    /// Step 3: the values step 2 did not settle. Small ones whole, the groups of streams,
    /// the others in windows.
    fn values(
        &mut self,
        db: u32,
        keys: &[Vec<u8>],
        slots: &[Slot],
        items: &mut [Item],
    ) -> Result<()> {
        let w = self.config.windows;
        self.lengths(db, keys, slots, items)?;
        let mut small = Vec::new();
        let mut big = Vec::new();
        let mut streams = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if !item.pending {
                continue;
            }
            let (Some(ty), Some(s), Some(t)) = (item.common_type(), item.src_len, item.tgt_len)
            else {
                continue;
            };
            let limit = match ty {
                KeyType::Other => continue,
                KeyType::Stream => {
                    streams.push(i);
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
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0u64;
        for &i in &small {
            let item = &items[i];
            let ty = item.common_type().expect("small keys have one type");
            let len = item.src_len.unwrap_or(0).max(item.tgt_len.unwrap_or(0));
            let estimate = 64
                + if ty == KeyType::String {
                    len
                } else {
                    len * ELEMENT_BYTES
                };
            match groups.last_mut() {
                Some(group) if bytes + estimate <= w.pipeline_bytes => group.push(i),
                _ => {
                    groups.push(vec![i]);
                    bytes = 0;
                }
            }
            bytes += estimate;
        }
        for group in groups {
            self.whole(db, keys, slots, items, &group)?;
        }
        self.streams(db, keys, slots, items, &streams)?;
        for i in big {
            self.in_windows(db, keys, items, i)?;
        }
        Ok(())
    }

    /// Reads the lengths step 2 did not learn, of the keys still to compare and of those
    /// that differ (reports show them), both sides at once. A key that changed type or
    /// vanished meanwhile reads as 0.
    fn lengths(
        &mut self,
        db: u32,
        keys: &[Vec<u8>],
        slots: &[Slot],
        items: &mut [Item],
    ) -> Result<()> {
        let wanted = |item: &Item| {
            item.common_type().is_some_and(|t| t != KeyType::Other)
                && (item.pending || item.value.is_some() || item.ttl_differs)
        };
        let src: Vec<usize> = (0..items.len())
            .filter(|&i| wanted(&items[i]) && items[i].src_len.is_none())
            .collect();
        let tgt: Vec<usize> = (0..items.len())
            .filter(|&i| wanted(&items[i]) && items[i].tgt_len.is_none())
            .collect();
        if src.is_empty() && tgt.is_empty() {
            return Ok(());
        }
        let landed = self.exchange(db, slots, src, tgt, |_, pipe, group| {
            for &i in group {
                let ty = items[i].common_type().expect("only keys of one type");
                pipe.cmd(whole::len_command(ty)).arg(&keys[i]);
            }
        })?;
        self.each_reply(landed, |source, _, _, i, replies| {
            let reply = replies.next().unwrap_or_default();
            let len = Some(reply::int(&reply).unwrap_or(0).max(0) as u64);
            if source {
                items[i].src_len = len;
            } else {
                items[i].tgt_len = len;
            }
            Ok(())
        })
    }

    /// Reads the values of `group` whole on both sides at once and compares them.
    fn whole(
        &mut self,
        db: u32,
        keys: &[Vec<u8>],
        slots: &[Slot],
        items: &mut [Item],
        group: &[usize],
    ) -> Result<()> {
        let ty = |i: usize| items[i].common_type().expect("whole reads have one type");
        let wanted = || group.iter().copied();
        let landed = self.exchange(db, slots, wanted(), wanted(), |_, pipe, group| {
            for &i in group {
                whole::command(pipe, &keys[i], ty(i));
            }
        })?;
        let mut read: Vec<(Option<Whole>, Option<Whole>)> = Vec::new();
        read.resize_with(items.len(), || (None, None));
        self.each_reply(landed, |source, _, _, i, replies| {
            let value = Some(whole::parse(ty(i), replies.next().unwrap_or_default()));
            if source {
                read[i].0 = value;
            } else {
                read[i].1 = value;
            }
            Ok(())
        })?;
        for &i in group {
            if let (Some(s), Some(t)) = std::mem::take(&mut read[i]) {
                items[i].compare_whole(s, t);
            }
        }
        Ok(())
    }

    /// Compares the streams of `streams` from their heads: the consumers and first pending
    /// entries of every group both sides have, read for all of them at once, then further
    /// windows where the first were full.
    fn streams(
        &mut self,
        db: u32,
        keys: &[Vec<u8>],
        slots: &[Slot],
        items: &mut [Item],
        streams: &[usize],
    ) -> Result<()> {
        if streams.is_empty() {
            return Ok(());
        }
        let mut heads: Vec<Option<(stream::Head, stream::Head, Vec<String>)>> = Vec::new();
        heads.resize_with(items.len(), || None);
        for &i in streams {
            let item = &mut items[i];
            if let (Read::Stream(s), Read::Stream(t)) = (
                std::mem::take(&mut item.src_read),
                std::mem::take(&mut item.tgt_read),
            ) {
                let names = stream::common_groups(&s, &t);
                heads[i] = Some((*s, *t, names));
            }
        }
        let window = |i: usize| heads[i].as_ref().map_or(1, |h| h.0.window());
        let with_groups = || {
            streams
                .iter()
                .copied()
                .filter(|&i| heads[i].as_ref().is_some_and(|h| !h.2.is_empty()))
        };
        let landed = self.exchange(db, slots, with_groups(), with_groups(), |_, pipe, group| {
            for &i in group {
                let names = &heads[i].as_ref().expect("a head").2;
                for name in names {
                    stream::group_commands(pipe, &keys[i], name, window(i));
                }
            }
        })?;
        type Groups = std::result::Result<Vec<stream::GroupHead>, String>;
        let mut groups: Vec<(Groups, Groups)> = Vec::new();
        groups.resize_with(items.len(), || (Ok(Vec::new()), Ok(Vec::new())));
        self.each_reply(landed, |source, links, addr, i, replies| {
            let names = heads[i].as_ref().map_or(0, |h| h.2.len());
            let mut read: Groups = Ok(Vec::with_capacity(names));
            for _ in 0..names {
                match stream::parse_group(replies, window(i)) {
                    Ok(group) => {
                        if let Ok(read) = &mut read {
                            read.push(group);
                        }
                    }
                    Err(Bad::Unreadable(reason)) => read = Err(reason),
                    Err(bad) => return Err(bad.error(links, addr)),
                }
            }
            if source {
                groups[i].0 = read;
            } else {
                groups[i].1 = read;
            }
            Ok(())
        })?;
        let windows = self.config.windows.elements;
        let multi = self.multi();
        for &i in streams {
            let Some((s, t, _)) = heads[i].take() else {
                continue;
            };
            let item = &mut items[i];
            let (src_groups, tgt_groups) =
                match std::mem::replace(&mut groups[i], (Ok(Vec::new()), Ok(Vec::new()))) {
                    (Ok(s), Ok(t)) => (s, t),
                    (Err(reason), _) | (_, Err(reason)) => {
                        item.value = Some(Detail::Unreadable { reason });
                        continue;
                    }
                };
            let (src, tgt) = (&mut self.source, &mut self.target);
            let mut pair = Pair::new(src, tgt, db, item, &keys[i], windows, multi)?;
            let compared = stream::compare(&mut pair, s, t, src_groups, tgt_groups);
            item.value = unreadable_on_error(compared)?;
        }
        Ok(())
    }

    /// Compares the big value of key `i` in windows.
    fn in_windows(
        &mut self,
        db: u32,
        keys: &[Vec<u8>],
        items: &mut [Item],
        i: usize,
    ) -> Result<()> {
        let w = self.config.windows;
        let multi = self.multi();
        let item = &mut items[i];
        let ty = item.common_type().expect("big keys have one type");
        let (src, tgt) = (&mut self.source, &mut self.target);
        let mut pair = Pair::new(src, tgt, db, item, &keys[i], w.elements, multi)?;
        let compared = match ty {
            KeyType::String => chunked::string(&mut pair, w.string_bytes).map(|d| (d, None)),
            KeyType::List => chunked::list(&mut pair),
            KeyType::Hash => chunked::collection(&mut pair, Coll::Hash).map(|d| (d, None)),
            KeyType::Set => chunked::collection(&mut pair, Coll::Set).map(|d| (d, None)),
            KeyType::Zset => chunked::collection(&mut pair, Coll::Zset).map(|d| (d, None)),
            KeyType::Stream | KeyType::Other => Ok((None, None)),
        };
        let (detail, cause) = match compared {
            Ok(found) => found,
            Err(e) => (unreadable_on_error(Err(e))?, None),
        };
        item.value = detail;
        item.cause = cause;
        Ok(())
    }

    /// Whether each side has `SMISMEMBER`/`ZMSCORE`/exclusive ranges.
    fn multi(&self) -> (bool, bool) {
        (
            self.source.side.caps.multi_member,
            self.target.side.caps.multi_member,
        )
    }

    /// The differences of one key, from what was read.
    fn outcome(&self, db: u32, key: Vec<u8>, item: Item, read_at_ms: (i64, i64)) -> KeyOutcome {
        let fingerprint = {
            let mut h = DefaultHasher::new();
            (item.src_fp.finish(), item.tgt_fp.finish()).hash(&mut h);
            (item.src_len, item.tgt_len).hash(&mut h);
            h.finish()
        };
        let mut found: Vec<(DiffKind, KeyType, Option<Detail>, Option<Cause>)> = Vec::new();
        if item.in_scope {
            match (item.src.ty, item.tgt.ty) {
                (None, None) => {}
                (Some(t), None) => found.push((DiffKind::Missing, t, None, None)),
                (None, Some(t)) => found.push((DiffKind::Extra, t, None, None)),
                (Some(s), Some(t)) if s != t => found.push((
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
                        found.push((DiffKind::Ttl, t, Some(detail), None));
                    }
                    if let Some(detail) = item.value {
                        found.push((DiffKind::Value, t, Some(detail), item.cause));
                    }
                }
            }
        }
        let facts = |probe: Probe, len: Option<u64>| {
            probe.ty.map(|key_type| Facts {
                key_type,
                expire_at_ms: probe.expire_at,
                len,
            })
        };
        let differences = if found.is_empty() {
            Vec::new()
        } else {
            let name = Key(key.clone());
            let key_escaped = name.is_escaped();
            found
                .into_iter()
                .map(|(kind, key_type, detail, cause)| Difference {
                    key_escaped,
                    key: name.clone(),
                    db,
                    slot: item.slot.get(),
                    kind,
                    key_type,
                    source: facts(item.src, item.src_len),
                    target: facts(item.tgt, item.tgt_len),
                    detail,
                    cause,
                })
                .collect()
        };
        KeyOutcome {
            db,
            key,
            in_scope: item.in_scope,
            on_source: item.src.ty.is_some(),
            on_target: item.tgt.ty.is_some(),
            differences,
            fingerprint,
            read_at_ms,
        }
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

/// The detail of a comparison in windows: an error reply (the key was deleted or changed
/// type between two windows) is a difference to re-check, not a failure of the run.
fn unreadable_on_error(compared: Result<Option<Detail>>) -> Result<Option<Detail>> {
    match compared {
        Ok(detail) => Ok(detail),
        Err(VerifyError::Redis { error, .. }) if error.code().is_some() => {
            Ok(Some(Detail::Unreadable {
                reason: error.to_string(),
            }))
        }
        Err(e) => Err(e),
    }
}

impl Bad {
    /// The error that fails the run for a reply of the node `addr` of `links`' side.
    fn error(self, links: &Links, addr: &NodeAddr) -> VerifyError {
        match self {
            Bad::Unexpected(command) => links.malformed(addr, command),
            Bad::Unreadable(reason) => {
                links.unexpected(addr, "a read", &Value::SimpleString(reason))
            }
        }
    }
}

/// What step 1 asks of one side.
#[derive(Clone, Copy)]
struct ProbePlan {
    /// `PEXPIRETIME` (else `TIME` first, then `PTTL`).
    exact: bool,
    /// `OBJECT ENCODING` too.
    encoding: bool,
}

impl ProbePlan {
    fn commands(&self, pipe: &mut Pipeline, keys: &[Vec<u8>], group: &[usize]) {
        if !self.exact {
            pipe.cmd("TIME");
        }
        for &i in group {
            pipe.cmd("TYPE").arg(&keys[i]);
            pipe.cmd(if self.exact { "PEXPIRETIME" } else { "PTTL" })
                .arg(&keys[i]);
            if self.encoding {
                pipe.cmd("OBJECT").arg("ENCODING").arg(&keys[i]);
            }
        }
    }

    fn parse(&self, links: &Links, landed: Vec<Landed>, n: usize) -> Result<Vec<Probe>> {
        let mut probes = vec![Probe::default(); n];
        let ttl_command = if self.exact { "PEXPIRETIME" } else { "PTTL" };
        for Landed {
            addr,
            keys,
            replies,
        } in landed
        {
            let mut replies = replies.into_iter();
            let now_ms = if self.exact {
                0
            } else {
                let time = replies.next().unwrap_or_default();
                server_ms(&time).ok_or_else(|| links.unexpected(&addr, "TIME", &time))?
            };
            for i in keys {
                let ty = replies.next().unwrap_or_default();
                let ttl = replies.next().unwrap_or_default();
                let encoding = if self.encoding {
                    Encoding::of(&replies.next().unwrap_or_default())
                } else {
                    Encoding::Unknown
                };
                let ty = KeyType::from_reply(
                    reply::str(&ty).ok_or_else(|| links.unexpected(&addr, "TYPE", &ty))?,
                );
                let ttl =
                    reply::int(&ttl).ok_or_else(|| links.unexpected(&addr, ttl_command, &ttl))?;
                probes[i] = match ttl {
                    // The key vanished between the two commands.
                    -2 => Probe::default(),
                    -1 => Probe {
                        ty,
                        expire_at: None,
                        encoding,
                    },
                    ms => {
                        let at = if self.exact { ms } else { now_ms + ms };
                        // ferry holds an expiry the target must not carry out before the
                        // source's stream does: the key has its own expiry, and once that
                        // has passed it is gone as far as the copy goes.
                        let clock = if self.exact { wall_ms() } else { now_ms };
                        match crate::config::held_expiry(at, clock) {
                            Some(held) if held <= clock => Probe::default(),
                            Some(held) => Probe {
                                ty,
                                expire_at: Some(held),
                                encoding,
                            },
                            None => Probe {
                                ty,
                                expire_at: Some(at),
                                encoding,
                            },
                        }
                    }
                };
            }
        }
        Ok(probes)
    }
}

/// The expiry when the side reads it exactly (`PEXPIRETIME`), for fingerprints.
fn exact_expiry(side: &Side, probe: Probe) -> Option<i64> {
    side.caps.pexpiretime.then_some(probe.expire_at).flatten()
}

/// This machine's clock in Unix milliseconds.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A `TIME` reply as Unix milliseconds.
fn server_ms(time: &Value) -> Option<i64> {
    let parts = reply::items(time.clone())?;
    let secs = reply::int(parts.first()?)?;
    let micros = reply::int(parts.get(1)?)?;
    Some(secs * 1_000 + micros / 1_000)
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

impl<'p> Pair<'p> {
    /// Both sides' connections for `item`'s key (whose lengths are read) and its
    /// fingerprints.
    fn new(
        source: &'p mut Links,
        target: &'p mut Links,
        db: u32,
        item: &'p mut Item,
        key: &'p [u8],
        windows: usize,
        multi: (bool, bool),
    ) -> Result<Self> {
        Ok(Pair {
            src: source.for_slot(item.slot, db)?,
            tgt: target.for_slot(item.slot, db)?,
            src_fp: &mut item.src_fp,
            tgt_fp: &mut item.tgt_fp,
            key,
            lens: (
                item.src_len.expect("length read"),
                item.tgt_len.expect("length read"),
            ),
            windows,
            multi,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_tell_short_strings_and_small_collections() {
        let reply = |name: &str| Value::BulkString(name.as_bytes().to_vec());
        assert_eq!(Encoding::of(&reply("embstr")), Encoding::ShortString);
        assert_eq!(Encoding::of(&reply("int")), Encoding::ShortString);
        for compact in ["listpack", "listpackex", "ziplist", "intset"] {
            assert_eq!(Encoding::of(&reply(compact)), Encoding::Compact);
        }
        for other in ["raw", "quicklist", "hashtable", "skiplist", "stream"] {
            assert_eq!(Encoding::of(&reply(other)), Encoding::Other);
        }
        // A key that vanished, or a user not allowed `OBJECT`.
        assert_eq!(Encoding::of(&Value::Nil), Encoding::Unknown);
    }
}
