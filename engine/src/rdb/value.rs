//! Reading one value, unit by unit (`rdbLoadObject`, turned inside out so it can stop
//! wherever the input ends).
//!
//! A value is a short sequence of units: a count, then that many elements; or one string that
//! holds a ziplist, listpack, intset or zipmap; or a stream's nodes, metadata and consumer
//! groups. [`ValueState`] says which unit comes next. A unit is read whole before anything in
//! it goes to the sink, so reading it again after [`Short::NeedMore`] hands out nothing twice.

use super::error::{Malformed, RdbError};
use super::format::{ModuleId, RdbType, StreamId};
use super::input::{parse_double, Reader, Short};
use super::intset::IntsetReader;
use super::listpack::ListpackReader;
use super::sink::{Element, Item, Key, Sink, StreamConsumer, StreamGroup, StreamMeta, StreamNack};
use super::stream::StreamNode;
use super::ziplist::ZiplistReader;
use super::zipmap::ZipmapReader;

/// `QUICKLIST_NODE_CONTAINER_PLAIN`: a node holding one large element as is.
const CONTAINER_PLAIN: u64 = 1;
/// `QUICKLIST_NODE_CONTAINER_PACKED`: a node holding a listpack.
const CONTAINER_PACKED: u64 = 2;

/// `RDB_MODULE_OPCODE_EOF`: end of module value.
const MODULE_OPCODE_EOF: u64 = 0;
/// `RDB_MODULE_OPCODE_SINT`: signed integer.
const MODULE_OPCODE_SINT: u64 = 1;
/// `RDB_MODULE_OPCODE_UINT`: unsigned integer.
pub(super) const MODULE_OPCODE_UINT: u64 = 2;
/// `RDB_MODULE_OPCODE_FLOAT`: float.
const MODULE_OPCODE_FLOAT: u64 = 3;
/// `RDB_MODULE_OPCODE_DOUBLE`: double.
const MODULE_OPCODE_DOUBLE: u64 = 4;
/// `RDB_MODULE_OPCODE_STRING`: string.
const MODULE_OPCODE_STRING: u64 = 5;

/// `EB_EXPIRE_TIME_MAX`: the latest expire time a hash field may have (2^48 - 1 ms).
const HASH_FIELD_EXPIRE_MAX: u64 = (1 << 48) - 1;

/// String values longer than this are handed out in parts as their bytes arrive, so a large
/// string never has to be buffered whole.
pub(super) const STRING_PART_LEN: usize = 64 * 1024;

/// Which unit of the current value comes next.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ValueState {
    /// `RDB_TYPE_STRING`: the string, or the header of a long one.
    String,
    /// The rest of a long string, read in parts.
    StringPart {
        remaining: usize,
    },
    /// The number of elements (or quicklist nodes) that follow.
    Count(Units),
    /// Elements left.
    Units {
        units: Units,
        remaining: u64,
    },
    /// The 8-byte minimum field expire time Redis 7.4 writes first.
    MinExpire(AfterMinExpire),
    /// One string holding the whole collection.
    Blob(Blob),
    Stream(StreamState),
    /// `RDB_TYPE_MODULE_2`: module opcodes up to `RDB_MODULE_OPCODE_EOF`.
    Module,
    Done,
}

/// The element units of the counted encodings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Units {
    /// `RDB_TYPE_LIST`: a string.
    List,
    /// `RDB_TYPE_SET`: a string.
    Set,
    /// `RDB_TYPE_ZSET`: a member and its score as text.
    Zset,
    /// `RDB_TYPE_ZSET_2`: a member and its score as a binary double.
    Zset2,
    /// `RDB_TYPE_HASH`: a field and its value.
    Hash,
    /// `RDB_TYPE_HASH_2` (Valkey): a field, its value and its expire time in ms (-1: none).
    Hash2,
    /// `RDB_TYPE_HASH_METADATA(_PRE_GA)`: a TTL, a field and its value. The TTL is absolute
    /// before GA; since GA it is relative to the minimum expire time, plus one (0: none).
    HashTtl { min_expire: Option<u64> },
    /// `RDB_TYPE_LIST_QUICKLIST`: a ziplist node.
    QuicklistNode,
    /// `RDB_TYPE_LIST_QUICKLIST_2`: a container kind and a plain or packed node.
    Quicklist2Node,
}

/// What follows the minimum expire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterMinExpire {
    /// `RDB_TYPE_HASH_METADATA`: counted fields with relative TTLs.
    HashMetadata,
    /// `RDB_TYPE_HASH_LISTPACK_EX`: a listpack of field, value, TTL triplets.
    ListpackEx,
}

/// The single-string encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blob {
    HashZipmap,
    ListZiplist,
    SetIntset,
    ZsetZiplist,
    HashZiplist,
    HashListpack,
    ZsetListpack,
    SetListpack,
    /// `RDB_TYPE_HASH_LISTPACK_EX(_PRE_GA)`: field, value, absolute expire time (0: none).
    HashListpackEx,
}

impl Blob {
    fn encoding(self) -> &'static str {
        match self {
            Blob::HashZipmap => "zipmap",
            Blob::ListZiplist | Blob::ZsetZiplist | Blob::HashZiplist => "ziplist",
            Blob::SetIntset => "intset",
            Blob::HashListpack | Blob::ZsetListpack | Blob::SetListpack | Blob::HashListpackEx => {
                "listpack"
            }
        }
    }
}

/// The parts of a stream (`RDB_TYPE_STREAM_LISTPACKS*`), in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamState {
    /// The number of nodes (listpacks).
    Nodes,
    /// Nodes left: a master ID and a listpack each.
    Node { remaining: u64 },
    /// Length, last ID, (first ID, max deleted ID, entries added), number of groups.
    Meta,
    /// Groups left; next is a group's name, last ID, (entries read) and PEL size.
    Group { groups_left: u64 },
    /// The current group's PEL entries left; then its number of consumers.
    GroupPending { groups_left: u64, remaining: u64 },
    /// The current group's consumers left; next is a name, seen time, (active time), PEL size.
    Consumer {
        groups_left: u64,
        consumers_left: u64,
    },
    /// The current consumer's PEL IDs left.
    ConsumerPending {
        groups_left: u64,
        consumers_left: u64,
        remaining: u64,
    },
}

impl ValueState {
    /// The first unit of a value of `rdb_type`. `RDB_TYPE_MODULE_PRE_GA` is refused before.
    pub fn initial(rdb_type: RdbType) -> ValueState {
        match rdb_type {
            RdbType::String => ValueState::String,
            RdbType::List => ValueState::Count(Units::List),
            RdbType::Set => ValueState::Count(Units::Set),
            RdbType::Zset => ValueState::Count(Units::Zset),
            RdbType::Zset2 => ValueState::Count(Units::Zset2),
            RdbType::Hash => ValueState::Count(Units::Hash),
            RdbType::Hash2 => ValueState::Count(Units::Hash2),
            RdbType::HashMetadataPreGa => ValueState::Count(Units::HashTtl { min_expire: None }),
            RdbType::HashMetadata => ValueState::MinExpire(AfterMinExpire::HashMetadata),
            RdbType::HashListpackEx => ValueState::MinExpire(AfterMinExpire::ListpackEx),
            RdbType::HashListpackExPreGa => ValueState::Blob(Blob::HashListpackEx),
            RdbType::HashZipmap => ValueState::Blob(Blob::HashZipmap),
            RdbType::ListZiplist => ValueState::Blob(Blob::ListZiplist),
            RdbType::SetIntset => ValueState::Blob(Blob::SetIntset),
            RdbType::ZsetZiplist => ValueState::Blob(Blob::ZsetZiplist),
            RdbType::HashZiplist => ValueState::Blob(Blob::HashZiplist),
            RdbType::HashListpack => ValueState::Blob(Blob::HashListpack),
            RdbType::ZsetListpack => ValueState::Blob(Blob::ZsetListpack),
            RdbType::SetListpack => ValueState::Blob(Blob::SetListpack),
            RdbType::ListQuicklist => ValueState::Count(Units::QuicklistNode),
            RdbType::ListQuicklist2 => ValueState::Count(Units::Quicklist2Node),
            RdbType::StreamListpacks | RdbType::StreamListpacks2 | RdbType::StreamListpacks3 => {
                ValueState::Stream(StreamState::Nodes)
            }
            RdbType::Module2 | RdbType::ModulePreGa => ValueState::Module,
        }
    }

    /// What the next unit is, for errors when the input ends before it.
    pub fn expected(&self) -> &'static str {
        match self {
            ValueState::String | ValueState::StringPart { .. } => "the bytes of a string value",
            ValueState::Count(Units::QuicklistNode | Units::Quicklist2Node) => {
                "the number of quicklist nodes"
            }
            ValueState::Count(_) => "the number of elements of a value",
            ValueState::Units { units, .. } => match units {
                Units::List => "a list element",
                Units::Set => "a set member",
                Units::Zset | Units::Zset2 => "a sorted set member and its score",
                Units::Hash | Units::Hash2 | Units::HashTtl { .. } => "a hash field and its value",
                Units::QuicklistNode | Units::Quicklist2Node => "a quicklist node",
            },
            ValueState::MinExpire(_) => "the minimum expire time of a hash",
            ValueState::Blob(_) => "the string holding an encoded value",
            ValueState::Stream(stream) => match stream {
                StreamState::Nodes => "the number of stream nodes",
                StreamState::Node { .. } => "a stream node (master ID and listpack)",
                StreamState::Meta => "a stream's length and IDs",
                StreamState::Group { .. } => "a stream consumer group",
                StreamState::GroupPending { .. } => "a consumer group's pending entry",
                StreamState::Consumer { .. } => "a stream consumer",
                StreamState::ConsumerPending { .. } => "a consumer's pending entry ID",
            },
            ValueState::Module => "a module value opcode",
            ValueState::Done => "the end of a value",
        }
    }
}

/// The key whose value is being read, and what the sink wants of it.
#[derive(Debug, Clone)]
pub(super) struct CurrentKey {
    pub name: Vec<u8>,
    pub db: u32,
    pub rdb_type: RdbType,
    pub expire_at_ms: Option<i64>,
    pub idle: Option<u64>,
    pub freq: Option<u8>,
    pub module: Option<ModuleId>,
    pub offset: u64,
    /// Elements go to the sink.
    pub emit: bool,
    /// Strings are loaded and encodings decoded (false: the value is only read past, for
    /// its raw bytes; see `Config::decode_raw_values`).
    pub decode: bool,
    /// Elements counted so far (string bytes, stream length).
    pub len: u64,
}

impl CurrentKey {
    pub fn view(&self) -> Key<'_> {
        Key {
            db: self.db,
            key: &self.name,
            rdb_type: self.rdb_type,
            expire_at_ms: self.expire_at_ms,
            idle: self.idle,
            freq: self.freq,
            module: self.module,
            offset: self.offset,
        }
    }
}

/// Why reading stopped: input ran out, the bytes are invalid, or the sink said stop.
#[derive(Debug)]
/// The errors are boxed so that a step's result stays small on the path where nothing goes
/// wrong.
pub(super) enum Halt<E> {
    NeedMore,
    Rdb(Box<RdbError>),
    Sink(Box<E>),
}

impl<E> Halt<E> {
    /// The sink's error.
    pub fn sink(error: E) -> Self {
        Halt::Sink(Box::new(error))
    }
}

impl<E> From<Short> for Halt<E> {
    fn from(short: Short) -> Self {
        match short {
            Short::NeedMore => Halt::NeedMore,
            Short::Invalid(error) => Halt::Rdb(error),
        }
    }
}

impl<E> From<RdbError> for Halt<E> {
    fn from(error: RdbError) -> Self {
        Halt::Rdb(Box::new(error))
    }
}

fn emit<S: Sink + ?Sized>(
    key: &CurrentKey,
    sink: &mut S,
    element: Element<'_>,
) -> Result<(), Halt<S::Error>> {
    if key.emit {
        sink.element(&key.view(), &element).map_err(Halt::sink)?;
    }
    Ok(())
}

/// A zset score kept in a ziplist or listpack: an integer, or a double as text.
fn score(item: Item<'_>) -> Option<f64> {
    match item {
        Item::Int(n) => Some(n as f64),
        Item::Str(text) => parse_double(text),
    }
}

/// A hash field's expire time from a listpack or `RDB_TYPE_HASH_2`, checked.
fn field_expire(expire: i64, none: i64, offset: u64) -> Result<Option<i64>, RdbError> {
    if expire == none {
        return Ok(None);
    }
    if expire < 0 || expire as u64 > HASH_FIELD_EXPIRE_MAX {
        return Err(RdbError::Corrupt {
            offset,
            expected: "a hash field expire time below 2^48 ms",
        });
    }
    Ok(Some(expire))
}

/// Limits a unit is read under.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnitLimits {
    pub max_string_len: usize,
    pub stream_v2: bool,
    pub stream_v3: bool,
}

/// Reads the next unit of the value from `r`, hands what it holds to the sink and moves
/// `state` on. Errors leave `state` as it was.
pub(super) fn read_unit<S: Sink + ?Sized>(
    state: &mut ValueState,
    r: &mut Reader<'_>,
    key: &mut CurrentKey,
    scratch: &mut Vec<u8>,
    limits: UnitLimits,
    sink: &mut S,
) -> Result<(), Halt<S::Error>> {
    let max = limits.max_string_len;
    match *state {
        ValueState::String | ValueState::Blob(_) if !key.decode => {
            r.string(max)?;
            *state = ValueState::Done;
        }
        ValueState::String => {
            let mut probe = r.clone();
            if let Some(len) = probe.string_len(max)? {
                if len > STRING_PART_LEN {
                    *r = probe;
                    key.len = len as u64;
                    *state = ValueState::StringPart { remaining: len };
                    return Ok(());
                }
            }
            let loaded = r.string(max)?.load(scratch)?;
            key.len = loaded.len() as u64;
            emit(key, sink, Element::String(loaded.item(scratch)))?;
            *state = ValueState::Done;
        }
        ValueState::StringPart { remaining } => {
            let n = remaining.min(r.remaining());
            if n == 0 {
                return Err(Halt::NeedMore);
            }
            let part = r.take(n)?;
            emit(key, sink, Element::String(Item::Str(part)))?;
            *state = match remaining - n {
                0 => ValueState::Done,
                remaining => ValueState::StringPart { remaining },
            };
        }
        ValueState::Count(units) => {
            let n = r.len()?;
            *state = match n {
                0 => ValueState::Done,
                remaining => ValueState::Units { units, remaining },
            };
        }
        ValueState::Units { units, remaining } => {
            read_element(units, r, key, scratch, max, sink)?;
            *state = match remaining - 1 {
                0 => ValueState::Done,
                remaining => ValueState::Units { units, remaining },
            };
        }
        ValueState::MinExpire(then) => {
            let offset = r.offset();
            let min_expire = r.millis()?;
            *state = match then {
                AfterMinExpire::HashMetadata => {
                    let min_expire = u64::try_from(min_expire)
                        .ok()
                        .filter(|&t| t <= HASH_FIELD_EXPIRE_MAX + 1)
                        .ok_or(RdbError::Corrupt {
                            offset,
                            expected: "a hash's minimum expire time below 2^48 ms",
                        })?;
                    ValueState::Count(Units::HashTtl {
                        min_expire: Some(min_expire),
                    })
                }
                AfterMinExpire::ListpackEx => ValueState::Blob(Blob::HashListpackEx),
            };
        }
        ValueState::Blob(blob) => {
            let offset = r.offset();
            let loaded = r.string(max)?.load_bytes(scratch)?;
            let bytes = loaded.get(scratch);
            key.len += read_blob(blob, bytes, key, sink)
                .map_err(|e| e.map_malformed(offset, blob.encoding()))?;
            *state = ValueState::Done;
        }
        ValueState::Stream(stream) => {
            *state = ValueState::Stream(read_stream_unit(stream, r, key, scratch, limits, sink)?)
                .finished();
        }
        ValueState::Module => {
            if read_module_opcode(r, max)? {
                *state = ValueState::Done;
            }
        }
        ValueState::Done => {}
    }
    Ok(())
}

impl ValueState {
    /// A stream whose last group is read is done.
    fn finished(self) -> ValueState {
        match self {
            ValueState::Stream(StreamState::Group { groups_left: 0 }) => ValueState::Done,
            other => other,
        }
    }
}

/// Reads one module opcode and its operand; true at `RDB_MODULE_OPCODE_EOF`.
pub(super) fn read_module_opcode(r: &mut Reader<'_>, max: usize) -> Result<bool, Short> {
    let offset = r.offset();
    match r.len()? {
        MODULE_OPCODE_EOF => return Ok(true),
        MODULE_OPCODE_SINT | MODULE_OPCODE_UINT => {
            r.len()?;
        }
        MODULE_OPCODE_FLOAT => {
            r.binary_float()?;
        }
        MODULE_OPCODE_DOUBLE => {
            r.binary_double()?;
        }
        MODULE_OPCODE_STRING => {
            r.string(max)?;
        }
        _ => {
            return Err(RdbError::Corrupt {
                offset,
                expected: "a module value opcode (0 to 5)",
            }
            .into())
        }
    }
    Ok(false)
}

/// A blob's error: malformed encoding (needs the string's offset), or the sink's.
enum BlobError<E> {
    Malformed(Malformed),
    Halt(Halt<E>),
}

impl<E> From<Malformed> for BlobError<E> {
    fn from(m: Malformed) -> Self {
        BlobError::Malformed(m)
    }
}

impl<E> From<Halt<E>> for BlobError<E> {
    fn from(h: Halt<E>) -> Self {
        BlobError::Halt(h)
    }
}

impl<E> BlobError<E> {
    fn map_malformed(self, offset: u64, encoding: &'static str) -> Halt<E> {
        match self {
            BlobError::Malformed(m) => Halt::Rdb(Box::new(m.in_string(offset, encoding))),
            BlobError::Halt(h) => h,
        }
    }
}

/// Pairs or triplets from a flat sequence of items.
fn next_n<'b, const N: usize>(
    mut next: impl FnMut() -> Result<Option<Item<'b>>, Malformed>,
    at: usize,
) -> Result<Option<[Item<'b>; N]>, Malformed> {
    let Some(first) = next()? else {
        return Ok(None);
    };
    let mut group = [first; N];
    for slot in group.iter_mut().skip(1) {
        *slot = next()?.ok_or(Malformed {
            at,
            expected: "a whole number of field-value groups",
        })?;
    }
    Ok(Some(group))
}

/// Decodes an encoded collection, hands its elements to the sink, and counts them.
fn read_blob<S: Sink + ?Sized>(
    blob: Blob,
    bytes: &[u8],
    key: &CurrentKey,
    sink: &mut S,
) -> Result<u64, BlobError<S::Error>> {
    let mut count = 0u64;
    match blob {
        Blob::HashZipmap => {
            let mut zipmap = ZipmapReader::new(bytes)?;
            while let Some((field, value)) = zipmap.next()? {
                count += 1;
                emit(
                    key,
                    sink,
                    Element::HashField {
                        field: Item::Str(field),
                        value: Item::Str(value),
                        expire_at_ms: None,
                    },
                )?;
            }
        }
        Blob::SetIntset => {
            for member in IntsetReader::new(bytes)? {
                count += 1;
                emit(key, sink, Element::SetMember(Item::Int(member)))?;
            }
        }
        Blob::ListZiplist => {
            let mut ziplist = ZiplistReader::new(bytes)?;
            while let Some(item) = ziplist.next()? {
                count += 1;
                emit(key, sink, Element::ListItem(item))?;
            }
        }
        Blob::ZsetZiplist | Blob::HashZiplist => {
            let mut ziplist = ZiplistReader::new(bytes)?;
            let at = bytes.len();
            while let Some([a, b]) = next_n(|| ziplist.next(), at)? {
                count += 1;
                emit(key, sink, pair_element(blob, a, b, at)?)?;
            }
        }
        Blob::SetListpack => {
            let mut listpack = ListpackReader::new(bytes)?;
            while let Some(item) = listpack.next()? {
                count += 1;
                emit(key, sink, Element::SetMember(item))?;
            }
        }
        Blob::ZsetListpack | Blob::HashListpack => {
            let mut listpack = ListpackReader::new(bytes)?;
            let at = bytes.len();
            while let Some([a, b]) = next_n(|| listpack.next(), at)? {
                count += 1;
                emit(key, sink, pair_element(blob, a, b, at)?)?;
            }
        }
        Blob::HashListpackEx => {
            let mut listpack = ListpackReader::new(bytes)?;
            let at = bytes.len();
            while let Some([field, value, ttl]) = next_n(|| listpack.next(), at)? {
                let expire_at_ms = match ttl.as_i64() {
                    Some(0) => None,
                    Some(t) if (1..=HASH_FIELD_EXPIRE_MAX as i64).contains(&t) => Some(t),
                    _ => {
                        return Err(Malformed {
                            at,
                            expected: "a field expire time of 0 (none) or below 2^48 ms",
                        }
                        .into())
                    }
                };
                count += 1;
                emit(
                    key,
                    sink,
                    Element::HashField {
                        field,
                        value,
                        expire_at_ms,
                    },
                )?;
            }
        }
    }
    Ok(count)
}

fn pair_element<'b>(
    blob: Blob,
    a: Item<'b>,
    b: Item<'b>,
    at: usize,
) -> Result<Element<'b>, Malformed> {
    Ok(match blob {
        Blob::ZsetZiplist | Blob::ZsetListpack => Element::ZsetMember {
            member: a,
            score: score(b).ok_or(Malformed {
                at,
                expected: "a score as a number",
            })?,
        },
        _ => Element::HashField {
            field: a,
            value: b,
            expire_at_ms: None,
        },
    })
}

/// Reads one element unit of a counted encoding.
fn read_element<S: Sink + ?Sized>(
    units: Units,
    r: &mut Reader<'_>,
    key: &mut CurrentKey,
    scratch: &mut Vec<u8>,
    max: usize,
    sink: &mut S,
) -> Result<(), Halt<S::Error>> {
    match units {
        Units::List | Units::Set if !key.decode => {
            r.string(max)?;
        }
        Units::List | Units::Set => {
            let loaded = r.string(max)?.load(scratch)?;
            let item = loaded.item(scratch);
            key.len += 1;
            let element = match units {
                Units::List => Element::ListItem(item),
                _ => Element::SetMember(item),
            };
            emit(key, sink, element)?;
        }
        Units::Zset | Units::Zset2 => {
            let member = r.string(max)?.load(scratch)?;
            let score = match units {
                Units::Zset => r.string_double()?,
                _ => r.binary_double()?,
            };
            key.len += 1;
            let member = member.item(scratch);
            emit(key, sink, Element::ZsetMember { member, score })?;
        }
        Units::Hash | Units::Hash2 | Units::HashTtl { .. } => {
            let ttl_offset = r.offset();
            let ttl = match units {
                Units::HashTtl { .. } => r.len()?,
                _ => 0,
            };
            let field = r.string(max)?.load(scratch)?;
            let value = r.string(max)?.load(scratch)?;
            let expire_at_ms = match units {
                Units::Hash2 => {
                    let offset = r.offset();
                    field_expire(r.millis()?, -1, offset)?
                }
                Units::HashTtl { min_expire } => {
                    let absolute = match (ttl, min_expire) {
                        (0, _) => None,
                        (ttl, Some(min)) => {
                            Some(ttl.checked_add(min).and_then(|t| t.checked_sub(1)))
                        }
                        (ttl, None) => Some(Some(ttl)),
                    };
                    match absolute {
                        None => None,
                        Some(Some(at)) if at <= HASH_FIELD_EXPIRE_MAX => Some(at as i64),
                        Some(_) => {
                            return Err(RdbError::Corrupt {
                                offset: ttl_offset,
                                expected: "a hash field TTL below 2^48 ms",
                            }
                            .into())
                        }
                    }
                }
                _ => None,
            };
            key.len += 1;
            let element = Element::HashField {
                field: field.item(scratch),
                value: value.item(scratch),
                expire_at_ms,
            };
            emit(key, sink, element)?;
        }
        Units::QuicklistNode | Units::Quicklist2Node => {
            let container_offset = r.offset();
            let container = match units {
                Units::Quicklist2Node => r.len()?,
                _ => CONTAINER_PACKED,
            };
            if container != CONTAINER_PLAIN && container != CONTAINER_PACKED {
                return Err(RdbError::Corrupt {
                    offset: container_offset,
                    expected: "a quicklist container of 1 (plain) or 2 (packed)",
                }
                .into());
            }
            let offset = r.offset();
            if !key.decode {
                r.string(max)?;
                return Ok(());
            }
            let loaded = r.string(max)?.load(scratch)?;
            if loaded.len() == 0 {
                return Err(RdbError::Corrupt {
                    offset,
                    expected: "a non-empty quicklist node",
                }
                .into());
            }
            if container == CONTAINER_PLAIN {
                key.len += 1;
                emit(key, sink, Element::ListItem(loaded.item(scratch)))?;
                return Ok(());
            }
            let bytes = loaded.into_bytes(scratch);
            let bytes = bytes.get(scratch);
            let ziplist = units == Units::QuicklistNode;
            let encoding = if ziplist { "ziplist" } else { "listpack" };
            let count = read_node(ziplist, bytes, key, sink)
                .map_err(|e| e.map_malformed(offset, encoding))?;
            key.len += count;
        }
    }
    Ok(())
}

/// The elements of a packed quicklist node: a ziplist, or a listpack.
fn read_node<S: Sink + ?Sized>(
    ziplist: bool,
    bytes: &[u8],
    key: &CurrentKey,
    sink: &mut S,
) -> Result<u64, BlobError<S::Error>> {
    let mut count = 0;
    if ziplist {
        let mut ziplist = ZiplistReader::new(bytes)?;
        while let Some(item) = ziplist.next()? {
            count += 1;
            emit(key, sink, Element::ListItem(item))?;
        }
    } else {
        let mut listpack = ListpackReader::new(bytes)?;
        while let Some(item) = listpack.next()? {
            count += 1;
            emit(key, sink, Element::ListItem(item))?;
        }
    }
    Ok(count)
}

/// Reads a stream ID saved as two lengths.
fn stream_id(r: &mut Reader<'_>) -> Result<StreamId, Short> {
    Ok(StreamId {
        ms: r.len()?,
        seq: r.len()?,
    })
}

/// Reads one unit of a stream and says what comes next.
fn read_stream_unit<S: Sink + ?Sized>(
    stream: StreamState,
    r: &mut Reader<'_>,
    key: &mut CurrentKey,
    scratch: &mut Vec<u8>,
    limits: UnitLimits,
    sink: &mut S,
) -> Result<StreamState, Halt<S::Error>> {
    let max = limits.max_string_len;
    Ok(match stream {
        StreamState::Nodes => match r.len()? {
            0 => StreamState::Meta,
            remaining => StreamState::Node { remaining },
        },
        StreamState::Node { remaining } if !key.decode => {
            r.string(max)?;
            r.string(max)?;
            match remaining - 1 {
                0 => StreamState::Meta,
                remaining => StreamState::Node { remaining },
            }
        }
        StreamState::Node { remaining } => {
            let id_offset = r.offset();
            let node_key = r.string(max)?.load_bytes(scratch)?;
            let lp_offset = r.offset();
            let lp = r.string(max)?.load_bytes(scratch)?;
            let node_key: [u8; 16] =
                node_key
                    .get(scratch)
                    .try_into()
                    .map_err(|_| RdbError::Corrupt {
                        offset: id_offset,
                        expected: "a 16-byte stream node master ID",
                    })?;
            let lp = lp.get(scratch);
            let node = StreamNode::new(StreamId::from_be_bytes(node_key), lp)
                .map_err(|m| m.in_string(lp_offset, "stream listpack"))?;
            if key.emit {
                for entry in node.entries() {
                    emit(key, sink, Element::StreamEntry(entry))?;
                }
            }
            match remaining - 1 {
                0 => StreamState::Meta,
                remaining => StreamState::Node { remaining },
            }
        }
        StreamState::Meta => {
            let length = r.len()?;
            let last_id = stream_id(r)?;
            let (first_id, max_deleted_entry_id, entries_added) = if limits.stream_v2 {
                (Some(stream_id(r)?), Some(stream_id(r)?), Some(r.len()?))
            } else {
                (None, None, None)
            };
            let groups = r.len()?;
            key.len = length;
            let meta = StreamMeta {
                length,
                last_id,
                first_id,
                max_deleted_entry_id,
                entries_added,
            };
            emit(key, sink, Element::StreamMeta(meta))?;
            StreamState::Group {
                groups_left: groups,
            }
        }
        StreamState::Group { groups_left } => {
            let name = r.string(max)?.load_bytes(scratch)?;
            let last_id = stream_id(r)?;
            let entries_read = if limits.stream_v2 {
                Some(r.len()?)
            } else {
                None
            };
            let pending = r.len()?;
            let group = StreamGroup {
                name: name.get(scratch),
                last_id,
                entries_read,
            };
            emit(key, sink, Element::StreamGroup(group))?;
            StreamState::GroupPending {
                groups_left,
                remaining: pending,
            }
        }
        StreamState::GroupPending {
            groups_left,
            remaining: 0,
        } => StreamState::Consumer {
            groups_left,
            consumers_left: r.len()?,
        },
        StreamState::GroupPending {
            groups_left,
            remaining,
        } => {
            let id = StreamId::from_be_bytes(r.array()?);
            let delivery_time = r.millis()?;
            let delivery_count = r.len()?;
            let nack = StreamNack {
                id,
                delivery_time,
                delivery_count,
            };
            emit(key, sink, Element::StreamPending(nack))?;
            StreamState::GroupPending {
                groups_left,
                remaining: remaining - 1,
            }
        }
        StreamState::Consumer {
            groups_left,
            consumers_left: 0,
        } => StreamState::Group {
            groups_left: groups_left - 1,
        },
        StreamState::Consumer {
            groups_left,
            consumers_left,
        } => {
            let name = r.string(max)?.load_bytes(scratch)?;
            let seen_time = r.millis()?;
            let active_time = if limits.stream_v3 {
                Some(r.millis()?)
            } else {
                None
            };
            let pending = r.len()?;
            let consumer = StreamConsumer {
                name: name.get(scratch),
                seen_time,
                active_time,
                pending,
            };
            emit(key, sink, Element::StreamConsumer(consumer))?;
            match pending {
                0 => StreamState::Consumer {
                    groups_left,
                    consumers_left: consumers_left - 1,
                },
                remaining => StreamState::ConsumerPending {
                    groups_left,
                    consumers_left,
                    remaining,
                },
            }
        }
        StreamState::ConsumerPending {
            groups_left,
            consumers_left,
            remaining,
        } => {
            let id = StreamId::from_be_bytes(r.array()?);
            emit(key, sink, Element::StreamConsumerPending(id))?;
            match remaining - 1 {
                0 => StreamState::Consumer {
                    groups_left,
                    consumers_left: consumers_left - 1,
                },
                remaining => StreamState::ConsumerPending {
                    groups_left,
                    consumers_left,
                    remaining,
                },
            }
        }
    })
}
