//! What the parser tells its caller: the [`Sink`] trait and the events it receives.
//!
//! The parser calls the sink as it reads, in file order. Every method but [`Sink::key`] has a
//! default that ignores the event, so a sink implements only what it needs. Byte slices in
//! events borrow the parser's buffers: copy what must outlive the call.

use std::borrow::Cow;
use std::fmt;

use super::error::RdbError;
use super::format::{Header, ModuleId, ObjectType, RdbType, StreamId};
use super::listpack::ListpackReader;

/// The receiving end of a [`Parser`](super::Parser): the applier, `rdb inspect` and tests are
/// all sinks.
///
/// A sink error stops the parser; it comes back out of [`Parser::feed`](super::Parser::feed)
/// unchanged. Parser errors reach the caller through the same type, hence `From<RdbError>`.
pub trait Sink {
    type Error: From<RdbError>;

    /// The file's magic and version, before anything else.
    fn header(&mut self, header: Header) -> Result<(), Self::Error> {
        let _ = header;
        Ok(())
    }

    /// `RDB_OPCODE_AUX`: a name and a value (`redis-ver`, `repl-id`, `lua`...). Integers
    /// saved in their encoded form come as their decimal text.
    fn aux(&mut self, name: &[u8], value: &[u8]) -> Result<(), Self::Error> {
        let _ = (name, value);
        Ok(())
    }

    /// `RDB_OPCODE_SELECTDB`: the following keys belong to database `db`. Files without the
    /// opcode (RDB version 1) hold database 0.
    fn select_db(&mut self, db: u32) -> Result<(), Self::Error> {
        let _ = db;
        Ok(())
    }

    /// `RDB_OPCODE_RESIZEDB`: how many keys, and keys with an expire, the selected database
    /// holds.
    fn resize_db(&mut self, keys: u64, expires: u64) -> Result<(), Self::Error> {
        let _ = (keys, expires);
        Ok(())
    }

    /// `RDB_OPCODE_SLOT_INFO`: a slot's sizes (Redis 7.4+ in cluster mode).
    fn slot_info(&mut self, info: SlotInfo) -> Result<(), Self::Error> {
        let _ = info;
        Ok(())
    }

    /// `RDB_OPCODE_SLOT_IMPORT`: a slot import in progress (Valkey 9).
    fn slot_import(&mut self, import: &SlotImport<'_>) -> Result<(), Self::Error> {
        let _ = import;
        Ok(())
    }

    /// `RDB_OPCODE_MODULE_AUX`: a module's data outside the key space, kept opaque.
    fn module_aux(&mut self, aux: &ModuleAux<'_>) -> Result<(), Self::Error> {
        let _ = aux;
        Ok(())
    }

    /// `RDB_OPCODE_FUNCTION2` and `RDB_OPCODE_FUNCTION_PRE_GA`: a function library.
    fn function(&mut self, function: &Function<'_>) -> Result<(), Self::Error> {
        let _ = function;
        Ok(())
    }

    /// A key and what precedes it; the answer says what the sink wants of its value.
    fn key(&mut self, key: &Key<'_>) -> Result<Want, Self::Error>;

    /// One decoded element of the current key's value, when the sink asked for elements (or
    /// asked for raw bytes that did not fit under the limit). Elements come in file order.
    fn element(&mut self, key: &Key<'_>, element: &Element<'_>) -> Result<(), Self::Error> {
        let _ = (key, element);
        Ok(())
    }

    /// The end of the current key's value.
    fn value(&mut self, key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), Self::Error> {
        let _ = (key, value);
        Ok(())
    }

    /// Whether the sink holds as much as it should: if so, the parser returns
    /// [`Status::Paused`](super::Status::Paused) before the next event, so that the caller
    /// can drain the sink. Asked after every unit read (an element, an encoded collection).
    fn full(&self) -> bool {
        false
    }

    /// `RDB_OPCODE_EOF` and the checksum after it: the file is complete and valid.
    fn end(&mut self, checksum: Checksum) -> Result<(), Self::Error> {
        let _ = checksum;
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    type Error = S::Error;

    fn header(&mut self, header: Header) -> Result<(), Self::Error> {
        (**self).header(header)
    }
    fn aux(&mut self, name: &[u8], value: &[u8]) -> Result<(), Self::Error> {
        (**self).aux(name, value)
    }
    fn select_db(&mut self, db: u32) -> Result<(), Self::Error> {
        (**self).select_db(db)
    }
    fn resize_db(&mut self, keys: u64, expires: u64) -> Result<(), Self::Error> {
        (**self).resize_db(keys, expires)
    }
    fn slot_info(&mut self, info: SlotInfo) -> Result<(), Self::Error> {
        (**self).slot_info(info)
    }
    fn slot_import(&mut self, import: &SlotImport<'_>) -> Result<(), Self::Error> {
        (**self).slot_import(import)
    }
    fn module_aux(&mut self, aux: &ModuleAux<'_>) -> Result<(), Self::Error> {
        (**self).module_aux(aux)
    }
    fn function(&mut self, function: &Function<'_>) -> Result<(), Self::Error> {
        (**self).function(function)
    }
    fn key(&mut self, key: &Key<'_>) -> Result<Want, Self::Error> {
        (**self).key(key)
    }
    fn element(&mut self, key: &Key<'_>, element: &Element<'_>) -> Result<(), Self::Error> {
        (**self).element(key, element)
    }
    fn value(&mut self, key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), Self::Error> {
        (**self).value(key, value)
    }
    fn full(&self) -> bool {
        (**self).full()
    }
    fn end(&mut self, checksum: Checksum) -> Result<(), Self::Error> {
        (**self).end(checksum)
    }
}

/// What a sink wants of a key's value. Whatever it answers, the parser reads the whole value
/// and checks its structure, and [`Sink::value`] reports its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Want {
    /// Nothing: skip the key (filtered out, or only counted).
    Nothing,
    /// The value's bytes as the file holds them, to build a `RESTORE` payload. Values longer
    /// than [`Config::max_raw_value`](super::Config::max_raw_value) come as elements instead
    /// (modules' values, which have no elements, come without either).
    Raw,
    /// The decoded elements, to rewrite the value as commands.
    Elements,
    /// Both: elements as they are read, and the raw bytes at the end if they fit.
    RawAndElements,
}

impl Want {
    pub(super) fn raw(self) -> bool {
        matches!(self, Want::Raw | Want::RawAndElements)
    }

    pub(super) fn elements(self) -> bool {
        matches!(self, Want::Elements | Want::RawAndElements)
    }
}

/// A key, with what the opcodes before it said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key<'a> {
    /// The database selected by the last `SELECTDB`.
    pub db: u32,
    /// The key's name. Names saved as integers come as their decimal text.
    pub key: &'a [u8],
    /// How the value is serialized.
    pub rdb_type: RdbType,
    /// `RDB_OPCODE_EXPIRETIME_MS` (or `RDB_OPCODE_EXPIRETIME` times 1000): when the key
    /// expires, in Unix milliseconds.
    pub expire_at_ms: Option<i64>,
    /// `RDB_OPCODE_IDLE`: LRU idle time in seconds.
    pub idle: Option<u64>,
    /// `RDB_OPCODE_FREQ`: LFU frequency.
    pub freq: Option<u8>,
    /// For module values, the module type that saved it.
    pub module: Option<ModuleId>,
    /// Where the key's type byte is (its first opcode, if opcodes precede it, is earlier).
    pub offset: u64,
}

impl Key<'_> {
    pub fn object_type(&self) -> ObjectType {
        self.rdb_type.object_type()
    }
}

/// A string or an integer: what ziplists, listpacks and intsets hold, and what an RDB string
/// is once integer-encoded strings are kept as integers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl<'a> Item<'a> {
    /// The bytes Redis would reply with: integers as decimal text.
    pub fn to_bytes(&self) -> Cow<'a, [u8]> {
        match *self {
            Item::Str(bytes) => Cow::Borrowed(bytes),
            Item::Int(n) => Cow::Owned(n.to_string().into_bytes()),
        }
    }

    /// The integer this item is, if it is one (or a string Redis would read as one).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Item::Int(n) => Some(n),
            Item::Str(bytes) => parse_i64(bytes),
        }
    }

    /// Length of [`Item::to_bytes`].
    pub fn len(&self) -> usize {
        match *self {
            Item::Str(bytes) => bytes.len(),
            Item::Int(n) => decimal_len(n),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Str(bytes) => write!(f, "\"{}\"", bytes.escape_ascii()),
            Item::Int(n) => write!(f, "{n}"),
        }
    }
}

/// `string2ll`: a canonical decimal integer (no sign on zero, no leading zeros, no spaces).
pub(super) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let n: i64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

fn decimal_len(n: i64) -> usize {
    let digits = n.unsigned_abs().checked_ilog10().unwrap_or(0) as usize + 1;
    digits + usize::from(n < 0)
}

/// One decoded element of a value.
#[derive(Debug, Clone)]
pub enum Element<'a> {
    /// A string value, or one part of a long one: parts come in order and their bytes
    /// concatenate to the value. Strings saved as integers come as [`Item::Int`].
    String(Item<'a>),
    /// A list element, head to tail.
    ListItem(Item<'a>),
    /// A set member.
    SetMember(Item<'a>),
    /// A sorted set member and its score.
    ZsetMember { member: Item<'a>, score: f64 },
    /// A hash field, its value and, for hashes with field expiration, when the field expires
    /// (Unix milliseconds).
    HashField {
        field: Item<'a>,
        value: Item<'a>,
        expire_at_ms: Option<i64>,
    },
    /// A stream entry that is not deleted, in ID order.
    StreamEntry(StreamEntry<'a>),
    /// The stream's own fields, after its entries.
    StreamMeta(StreamMeta),
    /// A consumer group; its pending entries and consumers follow.
    StreamGroup(StreamGroup<'a>),
    /// An entry of the current group's pending entries list (PEL).
    StreamPending(StreamNack),
    /// A consumer of the current group; the IDs of its pending entries follow.
    StreamConsumer(StreamConsumer<'a>),
    /// A pending entry owned by the current consumer (its delivery data is in the group's
    /// [`Element::StreamPending`] of the same ID).
    StreamConsumerPending(StreamId),
}

/// A stream entry: its ID and its field-value pairs.
#[derive(Clone)]
pub struct StreamEntry<'a> {
    pub id: StreamId,
    pub fields: StreamFields<'a>,
}

impl fmt::Debug for StreamEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamEntry")
            .field("id", &self.id)
            .field("fields", &self.fields.clone().collect::<Vec<_>>())
            .finish()
    }
}

/// The field-value pairs of a stream entry, read in place from the listpack that holds it
/// (entries that share the master entry's fields store only their values).
#[derive(Clone)]
pub struct StreamFields<'a> {
    pub(super) master: Option<ListpackReader<'a>>,
    pub(super) entry: ListpackReader<'a>,
    pub(super) remaining: usize,
}

impl<'a> Iterator for StreamFields<'a> {
    type Item = (Item<'a>, Item<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The entry was checked whole before it was handed out, so these reads succeed.
        let field = match &mut self.master {
            Some(master) => master.next().ok().flatten()?,
            None => self.entry.next().ok().flatten()?,
        };
        let value = self.entry.next().ok().flatten()?;
        Some((field, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StreamFields<'_> {}

/// What a stream keeps besides its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMeta {
    /// Number of entries (`XLEN`).
    pub length: u64,
    pub last_id: StreamId,
    /// `RDB_TYPE_STREAM_LISTPACKS_2` and later: the first entry's ID.
    pub first_id: Option<StreamId>,
    /// `RDB_TYPE_STREAM_LISTPACKS_2` and later: the maximal deleted entry ID.
    pub max_deleted_entry_id: Option<StreamId>,
    /// `RDB_TYPE_STREAM_LISTPACKS_2` and later: entries ever added.
    pub entries_added: Option<u64>,
}

/// A consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGroup<'a> {
    pub name: &'a [u8],
    /// The last ID delivered to the group.
    pub last_id: StreamId,
    /// `RDB_TYPE_STREAM_LISTPACKS_2` and later: the group's offset (`entries-read`).
    pub entries_read: Option<u64>,
}

/// A pending entry: delivered to a consumer, not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamNack {
    pub id: StreamId,
    /// Last delivery, Unix milliseconds.
    pub delivery_time: i64,
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConsumer<'a> {
    pub name: &'a [u8],
    /// Last time the consumer was seen, Unix milliseconds.
    pub seen_time: i64,
    /// `RDB_TYPE_STREAM_LISTPACKS_3`: last time it read successfully.
    pub active_time: Option<i64>,
    /// How many [`Element::StreamConsumerPending`] follow.
    pub pending: u64,
}

/// The end of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueEnd<'a> {
    /// The value as the file holds it (everything after the key), when the sink wanted raw
    /// bytes and they fit under the limit. Prefixed by the type byte and followed by the RDB
    /// version and a CRC64 it is a `RESTORE` payload (see [`payload`](super::payload)).
    pub raw: Option<&'a [u8]>,
    /// Number of elements: list elements, set and sorted set members, hash fields, stream
    /// entries (`XLEN`), string bytes. 0 for module values.
    pub len: u64,
    /// How many bytes the value takes in the file.
    pub rdb_len: u64,
    /// Whether the sink received the value's elements.
    pub elements: bool,
}

/// `RDB_OPCODE_SLOT_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot: u64,
    pub keys: u64,
    pub expires: u64,
}

/// `RDB_OPCODE_SLOT_IMPORT`: the import job's name and the slot ranges it imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotImport<'a> {
    pub job_name: &'a [u8],
    /// Inclusive `(start, end)` slot ranges.
    pub ranges: &'a [(u64, u64)],
}

/// `RDB_OPCODE_MODULE_AUX`: kept opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleAux<'a> {
    pub module: ModuleId,
    /// `REDISMODULE_AUX_BEFORE_RDB` (1) or `REDISMODULE_AUX_AFTER_RDB` (2).
    pub when: u64,
    /// The module's data: opcodes and values up to and including the EOF opcode.
    pub data: &'a [u8],
}

/// A function library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function<'a> {
    /// `RDB_OPCODE_FUNCTION2`: the library code, as `FUNCTION LOAD` takes it.
    Library { code: &'a [u8] },
    /// `RDB_OPCODE_FUNCTION_PRE_GA` (7.0 release candidates); Redis 7.0 GA refuses these.
    PreGa {
        name: &'a [u8],
        engine: &'a [u8],
        description: Option<&'a [u8]>,
        code: &'a [u8],
    },
}

/// What the checksum after `RDB_OPCODE_EOF` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// It matched the CRC64 of the file's bytes.
    Verified(u64),
    /// It was zero: saved with `rdbchecksum no` (or sent to a replica that skips it).
    Disabled,
    /// RDB versions before 5 have none.
    Absent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_as_redis_replies_them() {
        assert_eq!(&*Item::Int(-42).to_bytes(), b"-42");
        assert_eq!(Item::Int(-42).len(), 3);
        assert_eq!(Item::Int(0).len(), 1);
        assert_eq!(Item::Int(i64::MIN).len(), 20);
        assert_eq!(Item::Int(1000).len(), 4);
        assert_eq!(Item::Str(b"12").as_i64(), Some(12));
        assert_eq!(Item::Str(b"012").as_i64(), None);
        assert_eq!(Item::Str(b"-0").as_i64(), None);
        assert_eq!(Item::Str(b" 1").as_i64(), None);
        assert_eq!(format!("{:?}", Item::Str(b"a\n")), "\"a\\n\"");
        assert!(Item::Str(b"").is_empty());
    }
}
