//! From a snapshot to write groups: the [`rdb::Sink`](crate::rdb::Sink) that turns each key
//! of an RDB file into the commands that rebuild it on the target.
//!
//! A key becomes `RESTORE key <expire-at> <payload> REPLACE ABSTTL` when the target reads the
//! snapshot's format (the payload is the value's bytes as the file holds them, with the type
//! byte and the footer added: no re-encoding) and the value is small enough to hold whole (see
//! [`RESTORE_MAX_BYTES`]). Otherwise it is rewritten as commands: `DEL`, then `APPEND`,
//! `RPUSH`, `SADD`, `ZADD` or `HSET` in chunks, and `PEXPIREAT` last. Keys that have already
//! expired are skipped.
//!
//! A rewritten value is handed out in write groups of about [`GROUP_BYTES`] as it is read, so
//! no value is ever held whole. Each later part can be sent again on its own: strings continue
//! with `SETRANGE` at their offset, lists with `LTRIM` back to the length before the part and
//! then `RPUSH`, and hashes, sets and sorted sets with commands that set the same elements
//! again. Streams are not split (their `XADD`s cannot be repeated).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::apply::{Part, WriteGroup};
use crate::rdb::{
    payload, Element, Function, Header, Item, Key, Magic, ObjectType, RdbError, Sink, StreamId,
    ValueEnd, Want,
};
use crate::resp::{encode_bulk, encode_bulk_decimal, encode_bulk_header, Command};
use crate::route::KeyFilter;

/// Elements per rewrite command (`RPUSH key e1 ... e512`).
const REWRITE_CHUNK: usize = 512;

/// A rewritten value is handed out in write groups of about this many bytes.
pub const GROUP_BYTES: usize = 1 << 20;

/// Values whose serialized form is longer than this are rewritten as commands even when the
/// target could `RESTORE` them: a payload is held whole (and copied on its way out), a rewrite
/// only [`GROUP_BYTES`] at a time.
pub const RESTORE_MAX_BYTES: usize = 4 << 20;

/// How values reach the target, and what the target understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueMode {
    /// Rewrite every value as commands, even when `RESTORE` would do.
    pub force_rewrite: bool,
    /// The newest RDB version the target reads: `RESTORE` is used up to it. From 10 (Redis
    /// 7.0) the target also knows `XSETID ... ENTRIESADDED` and `XGROUP ... ENTRIESREAD`.
    pub target_rdb_version: u16,
    /// The target reads Valkey's own format (`VALKEY080`).
    pub target_reads_valkey: bool,
}

impl ValueMode {
    /// What a target running `server` reads; `force_rewrite` as asked.
    pub fn for_target(server: &crate::deployment::ServerInfo, force_rewrite: bool) -> Self {
        ValueMode {
            force_rewrite,
            target_rdb_version: server.rdb_version(),
            target_reads_valkey: server.reads_valkey_format(),
        }
    }
}

/// Why a key could not be turned into commands.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Rdb(#[from] RdbError),
    #[error("key {key} is a {kind} value the target cannot RESTORE, and {kind} values cannot be rewritten as commands")]
    NoRewrite { key: String, kind: &'static str },
    #[error("the snapshot holds function library {library}, and the target ({target}) cannot hold functions (Redis 7.0 or later, or Valkey, can)")]
    NoFunctions { library: String, target: String },
    #[error("the snapshot holds function library {library} in the format of Redis 7.0 release candidates, which Redis 7.0 and later refuse")]
    PreGaFunction { library: String },
}

/// Which keys of a snapshot are copied: names selected by `keys`, of one of `types` (any,
/// when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub keys: KeyFilter,
    pub types: Vec<ObjectType>,
}

impl Selection {
    fn selects(&self, key: &Key<'_>) -> bool {
        // ferry's own keys (a heartbeat on the source) never travel.
        !key.key
            .starts_with(crate::precheck::RESERVED_PREFIX.as_bytes())
            && self.keys.selects(key.key)
            && (self.types.is_empty() || self.types.contains(&key.object_type()))
    }
}

/// Counters of what the snapshot held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub keys: u64,
    pub restored: u64,
    pub rewritten: u64,
    pub expired: u64,
    pub skipped_other_db: u64,
    /// Keys the selection left out.
    pub filtered: u64,
    /// Keys the snapshot announces for the copied db (`RESIZEDB`), 0 when it does not.
    pub expected_keys: u64,
    /// Function libraries.
    pub libraries: u64,
}

/// Collects write groups from parser events; the caller drains them with
/// [`SnapshotSink::take_groups`] between chunks.
pub struct SnapshotSink {
    mode: ValueMode,
    selection: Selection,
    /// Only keys of this db are copied (cluster sources only have db 0).
    db: u32,
    /// The db the snapshot is in (its last `SELECTDB`).
    current_db: u32,
    header: Option<Header>,
    restore: bool,
    /// Where `RESTORE`s are written; each group holds a slice of it.
    out: BytesMut,
    groups: Vec<WriteGroup>,
    bytes: usize,
    /// The rewrite of the key being read, when its elements are coming.
    rewrite: Option<Rewrite>,
    /// Whether the key being read is copied (the parser reports every value's end, skipped
    /// ones too).
    wanted: bool,
    now_ms: i64,
    stats: SnapshotStats,
    /// The sink is [full](Sink::full) with this many groups, or this much memory held.
    max_groups: usize,
    max_bytes: usize,
    /// Expiries before this are held (see `hold`), each recorded in `holds`.
    hold_until_ms: Option<i64>,
    holds: Vec<(Bytes, i64)>,
    /// The code of every function library, in file order.
    libraries: Vec<Bytes>,
    /// The target cannot hold functions: a library makes the snapshot fail (before any key,
    /// since libraries come first), naming this server.
    no_functions: Option<String>,
    /// Script bodies the snapshot carries (`lua` aux fields: Redis up to 6.x sends its
    /// script cache to replicas that way).
    scripts: Vec<Bytes>,
}

/// A value being rewritten: the commands of the group being filled and the chunk being
/// filled.
struct Rewrite {
    key: Bytes,
    kind: ObjectType,
    commands: Vec<Command>,
    /// About the encoded size of `commands` and `chunk`.
    bytes: usize,
    chunk: Option<Command>,
    in_chunk: usize,
    /// Earlier groups of this value were handed out.
    split: bool,
    /// List elements, or string bytes, written so far (handed out or not).
    written: u64,
    stream: StreamRewrite,
}

/// What a stream rewrite needs to remember between elements.
#[derive(Default)]
struct StreamRewrite {
    /// The target knows Redis 7's stream metadata (`ENTRIESADDED`, `ENTRIESREAD`).
    v2: bool,
    group: Option<Bytes>,
    consumer: Option<Bytes>,
    /// The current group's pending entries: delivery time and count by ID.
    pending: std::collections::HashMap<StreamId, (i64, u64)>,
}

impl SnapshotSink {
    pub fn new(mode: ValueMode, db: u32, selection: Selection) -> Self {
        SnapshotSink {
            mode,
            selection,
            db,
            current_db: 0,
            header: None,
            restore: false,
            out: BytesMut::new(),
            groups: Vec::new(),
            bytes: 0,
            rewrite: None,
            wanted: false,
            now_ms: now_ms(),
            stats: SnapshotStats::default(),
            max_groups: usize::MAX,
            max_bytes: usize::MAX,
            hold_until_ms: None,
            holds: Vec::new(),
            libraries: Vec::new(),
            no_functions: None,
            scripts: Vec::new(),
        }
    }

    /// Holds the expiries that fall before `until_ms` (a stream follows the snapshot and may
    /// reach the target after them): they are written shifted and recorded (see `hold`).
    pub fn hold_expiries(mut self, until_ms: i64) -> Self {
        self.hold_until_ms = Some(until_ms);
        self
    }

    /// The keys whose expiries were held since the last call, with the expiry each holds.
    pub fn take_holds(&mut self) -> Vec<(Bytes, i64)> {
        std::mem::take(&mut self.holds)
    }

    /// The expiry to write for `key`: the held one when it falls in the hold window.
    fn written_expiry(&mut self, key: &[u8], expire_at_ms: Option<i64>) -> Option<i64> {
        let at = expire_at_ms?;
        match self.hold_until_ms {
            Some(until) if at < until => {
                self.holds.push((Bytes::copy_from_slice(key), at));
                Some(at + super::hold::HOLD_SHIFT_MS)
            }
            _ => Some(at),
        }
    }

    /// Refuses snapshots with function libraries: the target, `server`, cannot hold them.
    pub fn target_server(mut self, server: &crate::deployment::ServerInfo) -> Self {
        self.no_functions = (!server.holds_functions()).then(|| server.to_string());
        self
    }

    /// The code of every function library read so far, as `FUNCTION LOAD` takes it.
    pub fn libraries(&self) -> &[Bytes] {
        &self.libraries
    }

    /// The script bodies read so far.
    pub fn take_scripts(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.scripts)
    }

    /// Makes the parser pause (see [`Sink::full`]) once this many groups, or groups holding
    /// this much memory, wait to be taken.
    pub fn batch_limits(mut self, groups: usize, bytes: usize) -> Self {
        self.max_groups = groups.max(1);
        self.max_bytes = bytes.max(1);
        self
    }

    /// The groups completed since the last call. The next batch starts with room for as
    /// many groups as this one, so it does not grow (and copy itself) a dozen times.
    pub fn take_groups(&mut self) -> Vec<WriteGroup> {
        self.bytes = 0;
        let room = Vec::with_capacity(self.groups.len());
        std::mem::replace(&mut self.groups, room)
    }

    pub fn stats(&self) -> &SnapshotStats {
        &self.stats
    }

    fn push(&mut self, group: WriteGroup) {
        self.bytes += group.encoded_bytes().len() + GROUP_OVERHEAD;
        self.groups.push(group);
    }

    /// `RESTORE key <expire-at> <payload> REPLACE ABSTTL [IDLETIME s] [FREQ f]`, written
    /// straight into the sink's buffer as it goes on the wire: the payload is the type byte,
    /// the value's bytes as the snapshot holds them and the footer. The group's key is a
    /// slice of the same bytes.
    fn restore_group(&mut self, key: &Key<'_>, raw: &[u8], version: u16) -> WriteGroup {
        let expire_at_ms = self.written_expiry(key.key, key.expire_at_ms);
        let payload_len = 1 + raw.len() + payload::FOOTER_LEN;
        // Numbers and headers take at most 21 bytes each; the names take 40.
        let needed = key.key.len() + payload_len + 9 * 24 + 40;
        if self.out.capacity() - self.out.len() < needed {
            self.out.reserve(needed.max(OUT_CHUNK));
        }
        let out = &mut self.out;
        if self.mode.target_rdb_version < 9 {
            // Redis 4.0 knows neither ABSTTL nor IDLETIME/FREQ: the key without expiry,
            // then its absolute expiry.
            out.extend_from_slice(b"*5\r\n$7\r\nRESTORE\r\n");
            encode_bulk_header(key.key.len(), out);
            let key_at = out.len();
            out.extend_from_slice(key.key);
            out.extend_from_slice(b"\r\n");
            encode_bulk_decimal(0, out);
            encode_bulk_header(payload_len, out);
            payload::append(out, key.rdb_type, raw, version);
            out.extend_from_slice(b"\r\n$7\r\nREPLACE\r\n");
            let mut count = 1;
            if let Some(at) = expire_at_ms {
                out.extend_from_slice(b"*3\r\n$9\r\nPEXPIREAT\r\n");
                encode_bulk(key.key, out);
                encode_bulk_decimal(at, out);
                count = 2;
            }
            let encoded = out.split().freeze();
            return WriteGroup::encoded_with_key_at(
                encoded,
                key_at..key_at + key.key.len(),
                count,
                Part::Whole,
            );
        }
        let options = usize::from(key.idle.is_some()) + usize::from(key.freq.is_some());
        out.extend_from_slice(
            [
                &b"*6\r\n$7\r\nRESTORE\r\n"[..],
                b"*8\r\n$7\r\nRESTORE\r\n",
                b"*10\r\n$7\r\nRESTORE\r\n",
            ][options],
        );
        encode_bulk_header(key.key.len(), out);
        let key_at = out.len();
        out.extend_from_slice(key.key);
        out.extend_from_slice(b"\r\n");
        encode_bulk_decimal(expire_at_ms.unwrap_or(0), out);
        encode_bulk_header(payload_len, out);
        payload::append(out, key.rdb_type, raw, version);
        out.extend_from_slice(b"\r\n$7\r\nREPLACE\r\n$6\r\nABSTTL\r\n");
        if let Some(idle) = key.idle {
            encode_bulk(b"IDLETIME", out);
            encode_bulk_decimal(i64::try_from(idle).unwrap_or(i64::MAX), out);
        }
        if let Some(freq) = key.freq {
            encode_bulk(b"FREQ", out);
            encode_bulk_decimal(i64::from(freq), out);
        }
        let encoded = out.split().freeze();
        WriteGroup::encoded_with_key_at(encoded, key_at..key_at + key.key.len(), 1, Part::Whole)
    }
}

impl Sink for SnapshotSink {
    type Error = SnapshotError;

    fn aux(&mut self, name: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        if name == b"lua" {
            self.scripts.push(Bytes::copy_from_slice(value));
        }
        Ok(())
    }

    fn header(&mut self, header: Header) -> Result<(), SnapshotError> {
        self.restore = !self.mode.force_rewrite
            && match header.magic {
                Magic::Redis => header.version <= self.mode.target_rdb_version,
                Magic::Valkey => self.mode.target_reads_valkey,
            };
        self.header = Some(header);
        Ok(())
    }

    fn select_db(&mut self, db: u32) -> Result<(), SnapshotError> {
        self.current_db = db;
        Ok(())
    }

    fn function(&mut self, function: &Function<'_>) -> Result<(), SnapshotError> {
        let code = match function {
            Function::Library { code } => *code,
            Function::PreGa { name, .. } => {
                return Err(SnapshotError::PreGaFunction {
                    library: String::from_utf8_lossy(name).into_owned(),
                })
            }
        };
        if let Some(target) = &self.no_functions {
            return Err(SnapshotError::NoFunctions {
                library: super::functions::library_name(code),
                target: target.clone(),
            });
        }
        self.libraries.push(Bytes::copy_from_slice(code));
        self.stats.libraries += 1;
        Ok(())
    }

    fn full(&self) -> bool {
        self.groups.len() >= self.max_groups || self.bytes >= self.max_bytes
    }

    fn resize_db(&mut self, keys: u64, _expires: u64) -> Result<(), SnapshotError> {
        if self.current_db == self.db {
            self.stats.expected_keys += keys;
        }
        Ok(())
    }

    fn key(&mut self, key: &Key<'_>) -> Result<Want, SnapshotError> {
        self.wanted = false;
        self.rewrite = None;
        if key.db != self.db {
            self.stats.skipped_other_db += 1;
            return Ok(Want::Nothing);
        }
        self.stats.keys += 1;
        if !self.selection.selects(key) {
            self.stats.filtered += 1;
            return Ok(Want::Nothing);
        }
        if key.expire_at_ms.is_some_and(|at| at <= self.now_ms) {
            self.stats.expired += 1;
            return Ok(Want::Nothing);
        }
        let kind = key.object_type();
        self.wanted = true;
        if self.restore {
            // Values too big to hold whole come as elements instead, and are rewritten.
            return Ok(Want::Raw);
        }
        if !rewritable(kind) {
            return Err(SnapshotError::NoRewrite {
                key: crate::apply::printable(key.key),
                kind: kind.name(),
            });
        }
        Ok(Want::Elements)
    }

    fn element(&mut self, key: &Key<'_>, element: &Element<'_>) -> Result<(), SnapshotError> {
        if !self.wanted {
            return Ok(());
        }
        let stream_v2 = self.mode.target_rdb_version >= 10;
        let rewrite = self
            .rewrite
            .get_or_insert_with(|| Rewrite::new(key, stream_v2));
        rewrite.add(element);
        if let Some(group) = rewrite.cut() {
            self.push(group);
        }
        Ok(())
    }

    fn value(&mut self, key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), SnapshotError> {
        let rewrite = self.rewrite.take();
        if !std::mem::take(&mut self.wanted) {
            return Ok(());
        }
        if let (true, Some(raw), Some(header)) = (self.restore, value.raw, self.header) {
            let group = self.restore_group(key, raw, header.version);
            self.stats.restored += 1;
            self.push(group);
            return Ok(());
        }
        if !rewritable(key.object_type()) {
            return Err(SnapshotError::NoRewrite {
                key: crate::apply::printable(key.key),
                kind: key.object_type().name(),
            });
        }
        // An empty string has no parts, so no rewrite was started for it.
        let rewrite =
            rewrite.unwrap_or_else(|| Rewrite::new(key, self.mode.target_rdb_version >= 10));
        let part = if rewrite.split {
            Part::Last
        } else {
            Part::Whole
        };
        let name = Bytes::copy_from_slice(key.key);
        let expire_at_ms = self.written_expiry(key.key, key.expire_at_ms);
        let commands = with_expiry(rewrite.finish(), &name, expire_at_ms);
        self.stats.rewritten += 1;
        self.push(WriteGroup::part(name, commands, part));
        Ok(())
    }
}

/// What each argument of a command being rewritten costs in memory besides its bytes: its
/// `Bytes` handle and its allocation's overhead.
const ARG_OVERHEAD: usize = 48;

/// What a write group costs in memory besides its encoded commands.
const GROUP_OVERHEAD: usize = 96;

/// `RESTORE`s are written into buffers of at least this size; a buffer is freed once every
/// group written into it is applied.
const OUT_CHUNK: usize = 256 << 10;

fn rewritable(kind: ObjectType) -> bool {
    matches!(
        kind,
        ObjectType::String
            | ObjectType::List
            | ObjectType::Set
            | ObjectType::Zset
            | ObjectType::Hash
            | ObjectType::Stream
    )
}

fn with_expiry(mut commands: Vec<Command>, key: &Bytes, expire_at_ms: Option<i64>) -> Vec<Command> {
    if let Some(at) = expire_at_ms {
        commands.push(
            Command::new("PEXPIREAT")
                .arg(key.clone())
                .arg(at.to_string()),
        );
    }
    commands
}

fn item(item: &Item<'_>) -> Bytes {
    Bytes::copy_from_slice(&item.to_bytes())
}

/// A score as `ZADD` reads it back to the same double: the shortest round-trip decimal, and
/// `inf`/`-inf`.
pub fn score_text(score: f64) -> String {
    if score.is_infinite() {
        if score > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{score:?}")
    }
}

impl Rewrite {
    fn new(key: &Key<'_>, stream_v2: bool) -> Self {
        let name = Bytes::copy_from_slice(key.key);
        Rewrite {
            commands: vec![Command::new("DEL").arg(name.clone())],
            bytes: 0,
            key: name,
            kind: key.object_type(),
            chunk: None,
            in_chunk: 0,
            split: false,
            written: 0,
            stream: StreamRewrite {
                v2: stream_v2,
                ..StreamRewrite::default()
            },
        }
    }

    /// Streams: `XADD` per entry, `XSETID` for the metadata, `XGROUP CREATE` per group,
    /// `XGROUP CREATECONSUMER` per consumer and `XCLAIM ... FORCE` per pending entry, with
    /// its delivery time and count.
    fn add_stream(&mut self, element: &Element<'_>) {
        let key = self.key.clone();
        let id = |id: StreamId| Bytes::from(id.to_string());
        let stream = &mut self.stream;
        let command = match element {
            Element::StreamEntry(entry) => {
                let mut xadd = Command::new("XADD").arg(key).arg(id(entry.id));
                for (field, value) in entry.fields.clone() {
                    xadd = xadd.arg(item(&field)).arg(item(&value));
                }
                xadd
            }
            Element::StreamMeta(meta) => {
                if meta.length == 0 {
                    // XSETID needs the stream to exist: create it empty.
                    self.commands.push(
                        Command::new("XADD")
                            .arg(key.clone())
                            .arg("MAXLEN")
                            .arg("0")
                            .arg("0-1")
                            .arg("_")
                            .arg("_"),
                    );
                }
                let mut xsetid = Command::new("XSETID").arg(key).arg(id(meta.last_id));
                if let (true, Some(added), Some(deleted)) =
                    (stream.v2, meta.entries_added, meta.max_deleted_entry_id)
                {
                    xsetid = xsetid
                        .arg("ENTRIESADDED")
                        .arg(added.to_string())
                        .arg("MAXDELETEDID")
                        .arg(id(deleted));
                }
                xsetid
            }
            Element::StreamGroup(group) => {
                let name = Bytes::copy_from_slice(group.name);
                stream.group = Some(name.clone());
                stream.consumer = None;
                stream.pending.clear();
                let mut create = Command::new("XGROUP")
                    .arg("CREATE")
                    .arg(key)
                    .arg(name)
                    .arg(id(group.last_id));
                // Redis saves an unknown offset (SCG_INVALID_ENTRIES_READ, -1) as 2^64-1.
                if let (true, Some(read)) = (stream.v2, group.entries_read) {
                    if i64::try_from(read).is_ok() {
                        create = create.arg("ENTRIESREAD").arg(read.to_string());
                    }
                }
                create
            }
            Element::StreamPending(nack) => {
                stream
                    .pending
                    .insert(nack.id, (nack.delivery_time, nack.delivery_count));
                return;
            }
            Element::StreamConsumer(consumer) => {
                let name = Bytes::copy_from_slice(consumer.name);
                stream.consumer = Some(name.clone());
                if !stream.v2 {
                    // No XGROUP CREATECONSUMER before 6.2: XCLAIM creates the consumers
                    // that own pending entries.
                    return;
                }
                Command::new("XGROUP")
                    .arg("CREATECONSUMER")
                    .arg(key)
                    .arg(stream.group.clone().unwrap_or_default())
                    .arg(name)
            }
            Element::StreamConsumerPending(pending) => {
                let (time, count) = stream.pending.get(pending).copied().unwrap_or((0, 1));
                Command::new("XCLAIM")
                    .arg(key)
                    .arg(stream.group.clone().unwrap_or_default())
                    .arg(stream.consumer.clone().unwrap_or_default())
                    .arg("0")
                    .arg(id(*pending))
                    .arg("TIME")
                    .arg(time.to_string())
                    .arg("RETRYCOUNT")
                    .arg(count.to_string())
                    .arg("FORCE")
                    .arg("JUSTID")
            }
            _ => return,
        };
        self.commands.push(command);
    }

    fn start(&self) -> Command {
        let name = match self.kind {
            ObjectType::List => "RPUSH",
            ObjectType::Set => "SADD",
            ObjectType::Zset => "ZADD",
            ObjectType::Hash => "HSET",
            _ if self.split => {
                // A later part of a string lands at its offset, however often it is sent.
                return Command::new("SETRANGE")
                    .arg(self.key.clone())
                    .arg(self.written.to_string());
            }
            _ => "APPEND",
        };
        Command::new(name).arg(self.key.clone())
    }

    fn add(&mut self, element: &Element<'_>) {
        if self.kind == ObjectType::Stream {
            self.add_stream(element);
            return;
        }
        let args: Vec<Bytes> = match element {
            Element::String(part) => vec![item(part)],
            Element::ListItem(i) | Element::SetMember(i) => vec![item(i)],
            Element::ZsetMember { member, score } => {
                vec![Bytes::from(score_text(*score)), item(member)]
            }
            Element::HashField { field, value, .. } => vec![item(field), item(value)],
            _ => return,
        };
        let mut chunk = self.chunk.take().unwrap_or_else(|| self.start());
        for arg in args {
            self.bytes += arg.len() + ARG_OVERHEAD;
            if self.kind == ObjectType::String {
                self.written += arg.len() as u64;
            }
            chunk = chunk.arg(arg);
        }
        if self.kind == ObjectType::List {
            self.written += 1;
        }
        self.in_chunk += 1;
        // A string is written part by part: each part is one command.
        if self.in_chunk >= REWRITE_CHUNK || self.kind == ObjectType::String {
            self.commands.push(chunk);
            self.in_chunk = 0;
        } else {
            self.chunk = Some(chunk);
        }
    }

    /// Once the commands so far reach [`GROUP_BYTES`], hands them out as a group that can be
    /// sent again on its own, and starts the next one.
    fn cut(&mut self) -> Option<WriteGroup> {
        if self.bytes < GROUP_BYTES || self.kind == ObjectType::Stream {
            return None;
        }
        if let Some(chunk) = self.chunk.take() {
            self.commands.push(chunk);
            self.in_chunk = 0;
        }
        let mut next = Vec::new();
        if self.kind == ObjectType::List {
            // Sent again after a refusal or a lost reply, the next part first drops whatever
            // of it (or of the parts after it) already landed.
            next.push(
                Command::new("LTRIM")
                    .arg(self.key.clone())
                    .arg("0")
                    .arg((self.written - 1).to_string()),
            );
        }
        let commands = std::mem::replace(&mut self.commands, next);
        let part = if self.split {
            Part::Middle
        } else {
            Part::First
        };
        self.split = true;
        self.bytes = 0;
        Some(WriteGroup::part(self.key.clone(), commands, part))
    }

    fn finish(mut self) -> Vec<Command> {
        if let Some(chunk) = self.chunk.take() {
            self.commands.push(chunk);
        }
        if self.kind == ObjectType::String && !self.split && self.commands.len() == 1 {
            // The empty string: nothing was appended.
            self.commands
                .push(Command::new("SET").arg(self.key.clone()).arg(Bytes::new()));
        }
        self.commands
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::{Config, Parser};

    fn groups(
        file: &[u8],
        mode: ValueMode,
        db: u32,
        selection: Selection,
    ) -> (Vec<WriteGroup>, SnapshotStats) {
        let mut sink = SnapshotSink::new(mode, db, selection);
        let mut parser = Parser::new(Config::default());
        parser.feed(file, &mut sink).unwrap();
        parser.finish().unwrap();
        (sink.take_groups(), sink.stats().clone())
    }

    /// REDIS0003: db 0 {"k": "v", "gone": "x" expired in 1970}, db 2 {"a:1": "b", "z": "c"}.
    const FILE: &[u8] = b"REDIS0003\xfe\x00\x00\x01k\x01v\xfc\x01\x00\x00\x00\x00\x00\x00\x00\x00\x04gone\x01x\xfe\x02\x00\x03a:1\x01b\x00\x01z\x01c\xff";

    const REWRITE: ValueMode = ValueMode {
        force_rewrite: true,
        target_rdb_version: 10,
        target_reads_valkey: false,
    };

    #[test]
    fn only_wanted_keys_become_groups() {
        let (all, stats) = groups(FILE, REWRITE, 0, Selection::default());
        let keys: Vec<&[u8]> = all.iter().map(WriteGroup::key).collect();
        assert_eq!(keys, [&b"k"[..]]);
        assert_eq!((stats.expired, stats.skipped_other_db), (1, 2));

        let selection = Selection {
            keys: KeyFilter {
                prefixes: vec![b"a:".to_vec()],
                ..KeyFilter::default()
            },
            types: Vec::new(),
        };
        let (db2, stats) = groups(FILE, REWRITE, 2, selection);
        let keys: Vec<&[u8]> = db2.iter().map(WriteGroup::key).collect();
        assert_eq!(keys, [&b"a:1"[..]]);
        assert_eq!(stats.filtered, 1);
        let commands = db2[0].commands();
        let names: Vec<&[u8]> = commands.iter().map(|c| c.name()).collect();
        assert_eq!(names, [&b"DEL"[..], b"APPEND"]);
    }

    #[test]
    fn restorable_keys_become_one_restore_each() {
        let mode = ValueMode {
            force_rewrite: false,
            ..REWRITE
        };
        let (all, stats) = groups(FILE, mode, 2, Selection::default());
        assert_eq!(stats.restored, 2);
        // Written straight into the sink's buffer: the same bytes as the command itself.
        for (group, (key, value)) in all.iter().zip([("a:1", "b"), ("z", "c")]) {
            let payload = payload::build(crate::rdb::RdbType::String, &[1, value.as_bytes()[0]], 3);
            let restore = Command::new("RESTORE")
                .arg(key)
                .arg("0")
                .arg(payload)
                .arg("REPLACE")
                .arg("ABSTTL");
            assert_eq!(group.commands(), [restore]);
            assert_eq!(group.key(), key.as_bytes());
        }
    }

    #[test]
    fn restores_carry_expiry_idle_time_and_frequency() {
        // REDIS0009: "k" = "v" expiring at 2^42 ms (in 2109), idle 300 s; "f" = "w" with LFU freq 7.
        let file = b"REDIS0009\xfe\x00\xfc\x00\x00\x00\x00\x00\x04\x00\x00\xf8\x41\x2c\x00\x01k\x01v\xf9\x07\x00\x01f\x01w\xff\x00\x00\x00\x00\x00\x00\x00\x00";
        let mode = ValueMode {
            force_rewrite: false,
            ..REWRITE
        };
        let (all, _) = groups(file, mode, 0, Selection::default());
        let payload = |v: &[u8]| payload::build(crate::rdb::RdbType::String, &[1, v[0]], 9);
        let expected = [
            Command::new("RESTORE")
                .arg("k")
                .arg((1i64 << 42).to_string())
                .arg(payload(b"v"))
                .arg("REPLACE")
                .arg("ABSTTL")
                .arg("IDLETIME")
                .arg("300"),
            Command::new("RESTORE")
                .arg("f")
                .arg("0")
                .arg(payload(b"w"))
                .arg("REPLACE")
                .arg("ABSTTL")
                .arg("FREQ")
                .arg("7"),
        ];
        let commands: Vec<Command> = all.iter().flat_map(WriteGroup::commands).collect();
        assert_eq!(commands, expected);
    }

    #[test]
    fn scores_print_so_that_redis_reads_the_same_double() {
        for score in [0.1, -2.5, 1e300, f64::MIN_POSITIVE, 3.0, 1.0 / 3.0] {
            assert_eq!(score_text(score).parse::<f64>().unwrap(), score);
        }
        assert_eq!(score_text(f64::INFINITY), "inf");
        assert_eq!(score_text(f64::NEG_INFINITY), "-inf");
    }
}
