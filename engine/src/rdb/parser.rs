//! The push parser: bytes in as they arrive, events out to a [`Sink`] (`rdbLoadRio`, turned
//! inside out).

use super::error::RdbError;
use super::format::{
    Header, Magic, ModuleId, ObjectType, RdbType, OPCODE_AUX, OPCODE_EOF, OPCODE_EXPIRETIME,
    OPCODE_EXPIRETIME_MS, OPCODE_FREQ, OPCODE_FUNCTION2, OPCODE_FUNCTION_PRE_GA, OPCODE_IDLE,
    OPCODE_MODULE_AUX, OPCODE_RESIZEDB, OPCODE_SELECTDB, OPCODE_SLOT_IMPORT, OPCODE_SLOT_INFO,
    REDIS_MAX_VERSION, VALKEY_VERSIONS,
};
use super::input::{bounded, Input};
use super::sink::{Checksum, Function, ModuleAux, Sink, SlotImport, SlotInfo, ValueEnd};
use super::value::{
    read_module_opcode, read_unit, CurrentKey, Halt, UnitLimits, ValueState, MODULE_OPCODE_UINT,
};

/// `CLUSTER_SLOTS`: no import can have more ranges than there are slots.
const MAX_SLOT_RANGES: usize = 16384;

/// Limits and policies of a [`Parser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The longest value whose raw bytes a sink can get whole ([`Want::Raw`](super::Want::Raw)); longer values
    /// come as elements. This much of a value is buffered at most, except for module values
    /// (which have no elements), kept up to `max_string_len`. Default 512 MiB.
    pub max_raw_value: usize,
    /// The longest single string accepted: a key, an element, an encoded collection (ziplist,
    /// listpack...), before and after LZF decompression. Default 512 MiB, Redis's
    /// `proto-max-bulk-len`. String values longer than 64 KiB are read in parts and may be
    /// longer.
    pub max_string_len: usize,
    /// What to do with empty collections.
    pub empty_keys: EmptyKeys,
    /// Whether a value handed out raw (and not as elements) is decoded all the same: its
    /// strings decompressed, its encodings (listpack, ziplist, intset...) walked and checked,
    /// its elements counted. Off, the parser only reads past its strings; `ValueEnd::len` is
    /// then 0 and empty collections are not told apart. The sync turns it off: a `RESTORE`
    /// payload gets the checks a Redis replica gives a snapshot (the target's own, and the
    /// file's checksum at the end). Default on.
    pub decode_raw_values: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_raw_value: 512 * 1024 * 1024,
            max_string_len: 512 * 1024 * 1024,
            empty_keys: EmptyKeys::Refuse,
            decode_raw_values: true,
        }
    }
}

/// Empty lists, sets, sorted sets and hashes, which no server writes today but older ones
/// could (Redis issue #8453). Redis skips them when it loads a file; `RESTORE` refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmptyKeys {
    /// An error naming the key's offset.
    Refuse,
    /// Report them like any key, with `len` 0; the sink decides.
    Report,
}

/// Where the parser stands after [`Parser::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The bytes so far end inside the file: feed more.
    NeedMore,
    /// The sink said it was [full](super::Sink::full): the parser stopped before the next
    /// event and holds the rest of the input. Drain the sink, then call
    /// [`Parser::feed`] again (with the next bytes, or none).
    Paused,
    /// The file ended (EOF opcode and checksum read). The last `unused` bytes of the input
    /// fed last are not part of it.
    Done { unused: usize },
}

/// What comes next in the file.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Header,
    /// A type byte or an opcode with its operands.
    Opcode,
    /// The key after the type byte at `offset` (and a module value's module ID).
    Key {
        rdb_type: RdbType,
        offset: u64,
    },
    Value(ValueState),
    /// `RDB_OPCODE_MODULE_AUX`'s data, opcodes up to EOF.
    ModuleAux {
        module: ModuleId,
        when: u64,
        data_start: u64,
    },
    /// The 8 bytes after `RDB_OPCODE_EOF`.
    Checksum,
    Done,
    Failed,
}

/// Opcodes that apply to the next key.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    expire_at_ms: Option<i64>,
    idle: Option<u64>,
    freq: Option<u8>,
}

/// A push-based, resumable RDB parser.
///
/// Feed it the file in chunks of any size as they arrive ([`Parser::feed`]); it drives the
/// sink with every event the bytes complete and keeps only what it cannot use yet: the unit it
/// is inside (an opcode, a key, one element, one encoded collection, each bounded by
/// [`Config::max_string_len`]) and, when the sink asked for raw bytes, the current value up to
/// [`Config::max_raw_value`]. At the end of the input, [`Parser::finish`] says whether the file
/// was complete.
///
/// ```
/// use ferry_engine::rdb::{Config, Key, Parser, RdbError, Sink, Status, Want};
///
/// struct Keys(Vec<Vec<u8>>);
/// impl Sink for Keys {
///     type Error = RdbError;
///     fn key(&mut self, key: &Key<'_>) -> Result<Want, RdbError> {
///         self.0.push(key.key.to_vec());
///         Ok(Want::Nothing)
///     }
/// }
///
/// // REDIS0003, SELECTDB 0, a string "k" = "v", EOF.
/// let file = b"REDIS0003\xfe\x00\x00\x01k\x01v\xff";
/// let mut parser = Parser::new(Config::default());
/// let mut keys = Keys(Vec::new());
/// for chunk in file.chunks(4) {
///     parser.feed(chunk, &mut keys)?;
/// }
/// parser.finish()?;
/// assert_eq!(keys.0, vec![b"k".to_vec()]);
/// # Ok::<(), RdbError>(())
/// ```
#[derive(Debug)]
pub struct Parser {
    config: Config,
    input: Input,
    state: State,
    header: Option<Header>,
    db: u32,
    pending: Pending,
    key: CurrentKey,
    /// Retain the current value's bytes for the sink.
    raw: bool,
    value_start: u64,
    /// Where `RDB_OPCODE_EOF` ends: the checksum covers the file up to there.
    eof_end: Option<u64>,
    /// Decompressed strings and integers as text, for the unit being read.
    scratch: Vec<u8>,
}

impl Parser {
    pub fn new(config: Config) -> Self {
        Parser {
            config,
            input: Input::default(),
            state: State::Header,
            header: None,
            db: 0,
            pending: Pending::default(),
            key: CurrentKey {
                name: Vec::new(),
                db: 0,
                rdb_type: RdbType::String,
                expire_at_ms: None,
                idle: None,
                freq: None,
                module: None,
                offset: 0,
                emit: false,
                decode: true,
                len: 0,
            },
            raw: false,
            value_start: 0,
            eof_end: None,
            scratch: Vec::new(),
        }
    }

    /// The file's header, once read.
    pub fn header(&self) -> Option<Header> {
        self.header
    }

    /// Bytes of the file consumed so far: every event up to here has been delivered. It moves
    /// back once per value whose raw bytes outgrew [`Config::max_raw_value`], when the value
    /// is read again from its start to hand out its elements; `consumed() + buffered()` is
    /// always every byte fed that is part of the file.
    pub fn consumed(&self) -> u64 {
        self.input.offset()
    }

    /// Bytes fed and held, not yet consumed.
    pub fn buffered(&self) -> usize {
        self.input.unconsumed()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `input`, the next bytes of the file, and hands the sink every event they
    /// complete.
    ///
    /// `Ok(Status::NeedMore)`: everything fed so far is the beginning of a file. Errors are the
    /// sink's own, or an [`RdbError`] naming the offset of the first bad byte; after one, the
    /// parser refuses further input.
    pub fn feed<S: Sink + ?Sized>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<Status, S::Error> {
        match self.state {
            State::Done => {
                return Ok(Status::Done {
                    unused: input.len(),
                })
            }
            State::Failed => {
                return Err(RdbError::Stopped {
                    offset: self.input.offset(),
                }
                .into())
            }
            _ => {}
        }
        self.input.extend(input);
        loop {
            match self.step(sink) {
                Ok(()) if self.state == State::Done => {
                    let unused = self.input.unconsumed();
                    self.input.drop_unconsumed();
                    self.compact();
                    return Ok(Status::Done { unused });
                }
                Ok(()) if sink.full() => {
                    self.compact();
                    return Ok(Status::Paused);
                }
                Ok(()) => {}
                Err(Halt::NeedMore) => {
                    if !self.check_raw_limit(true) {
                        self.compact();
                        return Ok(Status::NeedMore);
                    }
                }
                Err(halt) => return self.fail(halt),
            }
        }
    }

    /// Says whether the file was complete when the input ended: `Ok` after the checksum,
    /// else [`RdbError::Truncated`] with what was expected next.
    pub fn finish(&self) -> Result<(), RdbError> {
        match &self.state {
            State::Done => Ok(()),
            State::Failed => Err(RdbError::Stopped {
                offset: self.input.offset(),
            }),
            state => Err(RdbError::Truncated {
                offset: self.input.end(),
                expected: expected(state),
            }),
        }
    }

    fn fail<E: From<RdbError>>(&mut self, halt: Halt<E>) -> Result<Status, E> {
        self.state = State::Failed;
        match halt {
            Halt::Rdb(error) => Err((*error).into()),
            Halt::Sink(error) => Err(*error),
            Halt::NeedMore => Ok(Status::NeedMore),
        }
    }

    fn compact(&mut self) {
        let crc_until = self.eof_end.unwrap_or(u64::MAX);
        self.input.compact(crc_until);
    }

    fn limits(&self) -> UnitLimits {
        let rdb_type = self.key.rdb_type;
        UnitLimits {
            max_string_len: self.config.max_string_len,
            stream_v2: matches!(
                rdb_type,
                RdbType::StreamListpacks2 | RdbType::StreamListpacks3
            ),
            stream_v3: rdb_type == RdbType::StreamListpacks3,
        }
    }

    /// Reads one unit and moves the state on.
    fn step<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), Halt<S::Error>> {
        match self.state.clone() {
            State::Header => self.read_header(sink),
            State::Opcode => self.read_opcode(sink),
            State::Key { rdb_type, offset } => self.read_key(rdb_type, offset, sink),
            State::Value(ValueState::Done) => self.end_value(sink),
            State::Value(mut value) => {
                let limits = self.limits();
                let mut r = self.input.reader();
                self.scratch.clear();
                read_unit(
                    &mut value,
                    &mut r,
                    &mut self.key,
                    &mut self.scratch,
                    limits,
                    sink,
                )?;
                let n = r.pos();
                self.input.advance(n);
                self.state = State::Value(value);
                Ok(())
            }
            State::ModuleAux {
                module,
                when,
                data_start,
            } => {
                let mut r = self.input.reader();
                let eof = read_module_opcode(&mut r, self.config.max_string_len)?;
                let n = r.pos();
                self.input.advance(n);
                if eof {
                    let aux = ModuleAux {
                        module,
                        when,
                        data: self.input.since(data_start),
                    };
                    sink.module_aux(&aux).map_err(Halt::sink)?;
                    self.input.retain_from(None);
                    self.state = State::Opcode;
                } else if self.input.offset() - data_start > self.config.max_raw_value as u64 {
                    return Err(RdbError::TooLong {
                        offset: data_start,
                        what: "module aux data",
                        len: self.input.offset() - data_start,
                        max: self.config.max_raw_value as u64,
                    }
                    .into());
                }
                Ok(())
            }
            State::Checksum => self.read_checksum(sink),
            State::Done | State::Failed => Ok(()),
        }
    }

    fn read_header<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), Halt<S::Error>> {
        let mut r = self.input.reader();
        let bytes: [u8; Header::LEN] = r.array()?;
        let header = parse_header(&bytes)?;
        sink.header(header).map_err(Halt::sink)?;
        self.input.advance(Header::LEN);
        self.header = Some(header);
        self.state = State::Opcode;
        Ok(())
    }

    fn read_opcode<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), Halt<S::Error>> {
        let header = self.header.unwrap_or(Header {
            magic: Magic::Redis,
            version: REDIS_MAX_VERSION,
        });
        let max = self.config.max_string_len;
        let scratch = &mut self.scratch;
        scratch.clear();
        let mut r = self.input.reader();
        let offset = r.offset();
        let byte = r.u8()?;
        let mut next = State::Opcode;
        match byte {
            OPCODE_EXPIRETIME_MS => self.pending.expire_at_ms = Some(r.millis()?),
            OPCODE_EXPIRETIME => {
                self.pending.expire_at_ms = Some(i64::from(r.seconds()?) * 1000);
            }
            OPCODE_FREQ => self.pending.freq = Some(r.u8()?),
            OPCODE_IDLE => self.pending.idle = Some(r.len()?),
            OPCODE_EOF => {
                self.eof_end = Some(r.offset());
                next = State::Checksum;
            }
            OPCODE_SELECTDB => {
                let db_offset = r.offset();
                let db = r.len()?;
                let db = u32::try_from(db).map_err(|_| RdbError::Corrupt {
                    offset: db_offset,
                    expected: "a database number below 2^32",
                })?;
                sink.select_db(db).map_err(Halt::sink)?;
                self.db = db;
            }
            OPCODE_RESIZEDB => {
                let keys = r.len()?;
                let expires = r.len()?;
                sink.resize_db(keys, expires).map_err(Halt::sink)?;
            }
            OPCODE_SLOT_INFO => {
                let info = SlotInfo {
                    slot: r.len()?,
                    keys: r.len()?,
                    expires: r.len()?,
                };
                sink.slot_info(info).map_err(Halt::sink)?;
            }
            OPCODE_SLOT_IMPORT if header.magic == Magic::Valkey => {
                let job_name = r.string(max)?.load_bytes(scratch)?;
                let count_offset = r.offset();
                let count = r.len()?;
                let count = bounded(count, MAX_SLOT_RANGES, count_offset, "slot import ranges")?;
                let mut ranges = Vec::with_capacity(count.min(r.remaining() / 2));
                for _ in 0..count {
                    ranges.push((r.len()?, r.len()?));
                }
                let import = SlotImport {
                    job_name: job_name.get(scratch),
                    ranges: &ranges,
                };
                sink.slot_import(&import).map_err(Halt::sink)?;
            }
            OPCODE_AUX => {
                let name = r.string(max)?.load_bytes(scratch)?;
                let value = r.string(max)?.load_bytes(scratch)?;
                sink.aux(name.get(scratch), value.get(scratch))
                    .map_err(Halt::sink)?;
            }
            OPCODE_MODULE_AUX => {
                let module = ModuleId(r.len()?);
                let when_offset = r.offset();
                if r.len()? != MODULE_OPCODE_UINT {
                    return Err(RdbError::Corrupt {
                        offset: when_offset,
                        expected: "the module aux `when` opcode (2, unsigned integer)",
                    }
                    .into());
                }
                let when = r.len()?;
                let data_start = r.offset();
                next = State::ModuleAux {
                    module,
                    when,
                    data_start,
                };
            }
            OPCODE_FUNCTION_PRE_GA => {
                let name = r.string(max)?.load_bytes(scratch)?;
                let engine = r.string(max)?.load_bytes(scratch)?;
                let description = match r.len()? {
                    0 => None,
                    _ => Some(r.string(max)?.load_bytes(scratch)?),
                };
                let code = r.string(max)?.load_bytes(scratch)?;
                let function = Function::PreGa {
                    name: name.get(scratch),
                    engine: engine.get(scratch),
                    description: description.as_ref().map(|d| d.get(scratch)),
                    code: code.get(scratch),
                };
                sink.function(&function).map_err(Halt::sink)?;
            }
            OPCODE_FUNCTION2 => {
                let code = r.string(max)?.load_bytes(scratch)?;
                sink.function(&Function::Library {
                    code: code.get(scratch),
                })
                .map_err(Halt::sink)?;
            }
            byte => match RdbType::from_byte(byte, header.magic) {
                Some(RdbType::ModulePreGa) => {
                    return Err(RdbError::Unsupported {
                        offset,
                        what: "a module value in the pre-release format (RDB_TYPE_MODULE_PRE_GA)",
                    }
                    .into())
                }
                Some(rdb_type) => next = State::Key { rdb_type, offset },
                None => {
                    return Err(RdbError::UnknownType {
                        offset,
                        byte,
                        expected: match header.magic {
                            Magic::Redis => "a value type (0-7, 9-25) or an opcode (244-255)",
                            Magic::Valkey => "a value type (0-7, 9-22) or an opcode (243-255)",
                        },
                    }
                    .into())
                }
            },
        }
        let n = r.pos();
        self.input.advance(n);
        if let State::ModuleAux { data_start, .. } = next {
            self.input.retain_from(Some(data_start));
        }
        self.state = next;
        Ok(())
    }

    fn read_key<S: Sink + ?Sized>(
        &mut self,
        rdb_type: RdbType,
        offset: u64,
        sink: &mut S,
    ) -> Result<(), Halt<S::Error>> {
        let max = self.config.max_string_len;
        self.scratch.clear();
        let mut r = self.input.reader();
        let name = r.string(max)?.load_bytes(&mut self.scratch)?;
        let value_start = r.offset();
        let module = match rdb_type {
            RdbType::Module2 => Some(ModuleId(r.len()?)),
            _ => None,
        };
        let key = &mut self.key;
        key.name.clear();
        key.name.extend_from_slice(name.get(&self.scratch));
        let consumed = r.pos();
        key.db = self.db;
        key.rdb_type = rdb_type;
        key.expire_at_ms = self.pending.expire_at_ms;
        key.idle = self.pending.idle;
        key.freq = self.pending.freq;
        key.module = module;
        key.offset = offset;
        key.len = 0;
        key.emit = false;
        let want = sink.key(&key.view()).map_err(Halt::sink)?;
        key.emit = want.elements();
        key.decode = key.emit || !want.raw() || self.config.decode_raw_values;
        self.pending = Pending::default();
        self.raw = want.raw();
        self.value_start = value_start;
        self.input.retain_from(self.raw.then_some(value_start));
        self.input.advance(consumed);
        self.state = State::Value(ValueState::initial(rdb_type));
        Ok(())
    }

    /// When the raw bytes of the value outgrow `max_raw_value`: stop keeping them, and if the
    /// sink did not ask for elements, rewind to the value's start to read it again handing
    /// them out (true). `buffered` counts bytes fed beyond the parse position.
    fn check_raw_limit(&mut self, buffered: bool) -> bool {
        if !self.raw {
            return false;
        }
        let end = if buffered {
            self.input.end()
        } else {
            self.input.offset()
        };
        // Module values have no elements to fall back on: they are kept whole up to the
        // longest string accepted.
        let limit = if self.key.rdb_type.object_type() == ObjectType::Module {
            self.config.max_raw_value.max(self.config.max_string_len)
        } else {
            self.config.max_raw_value
        };
        if end - self.value_start <= limit as u64 {
            return false;
        }
        self.raw = false;
        self.input.retain_from(None);
        let rdb_type = self.key.rdb_type;
        if self.key.emit || rdb_type.object_type() == ObjectType::Module {
            return false;
        }
        // Read again from the value's start, handing out elements this time.
        self.input.rewind(self.value_start);
        self.key.emit = true;
        self.key.decode = true;
        self.key.len = 0;
        self.state = State::Value(ValueState::initial(rdb_type));
        true
    }

    fn end_value<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), Halt<S::Error>> {
        if self.check_raw_limit(false) {
            return Ok(());
        }
        let key = &self.key;
        let object_type = key.rdb_type.object_type();
        let collection = !matches!(
            object_type,
            ObjectType::String | ObjectType::Stream | ObjectType::Module
        );
        if collection && key.decode && key.len == 0 && self.config.empty_keys == EmptyKeys::Refuse {
            return Err(RdbError::EmptyKey {
                offset: key.offset,
                object_type,
            }
            .into());
        }
        let rdb_len = self.input.offset() - self.value_start;
        let end = ValueEnd {
            raw: self.raw.then(|| self.input.since(self.value_start)),
            len: key.len,
            rdb_len,
            elements: key.emit,
        };
        sink.value(&key.view(), &end).map_err(Halt::sink)?;
        self.raw = false;
        self.input.retain_from(None);
        self.state = State::Opcode;
        Ok(())
    }

    fn read_checksum<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), Halt<S::Error>> {
        let has_checksum = self.header.is_some_and(Header::has_checksum);
        let eof_end = self.eof_end.unwrap_or(0);
        let checksum = if has_checksum {
            let mut r = self.input.reader();
            let stored = u64::from_le_bytes(r.array()?);
            let computed = self.input.checksum_to(eof_end);
            if stored == 0 {
                Checksum::Disabled
            } else if stored == computed {
                Checksum::Verified(stored)
            } else {
                return Err(RdbError::BadChecksum {
                    offset: eof_end,
                    stored,
                    computed,
                }
                .into());
            }
        } else {
            Checksum::Absent
        };
        sink.end(checksum).map_err(Halt::sink)?;
        if has_checksum {
            self.input.advance(8);
        }
        self.state = State::Done;
        Ok(())
    }
}

/// Reads the 9-byte header: `REDIS` and 4 digits, or `VALKEY` and 3.
fn parse_header(bytes: &[u8; Header::LEN]) -> Result<Header, RdbError> {
    let (magic, digits) = if let Some(digits) = bytes.strip_prefix(b"REDIS") {
        (Magic::Redis, digits)
    } else if let Some(digits) = bytes.strip_prefix(b"VALKEY") {
        (Magic::Valkey, digits)
    } else {
        return Err(RdbError::BadMagic {
            found: bytes.to_vec(),
        });
    };
    let version = std::str::from_utf8(digits)
        .ok()
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u16>().ok());
    let supported = match (magic, version) {
        (Magic::Redis, Some(v)) => (1..=REDIS_MAX_VERSION).contains(&v),
        (Magic::Valkey, Some(v)) => VALKEY_VERSIONS.contains(&v),
        (_, None) => false,
    };
    match version {
        Some(version) if supported => Ok(Header { magic, version }),
        _ => Err(RdbError::UnsupportedVersion {
            found: bytes.to_vec(),
        }),
    }
}

/// What the parser expects in `state`, for [`RdbError::Truncated`].
fn expected(state: &State) -> &'static str {
    match state {
        State::Header => "the 9-byte header (REDIS0011, VALKEY080)",
        State::Opcode => "a type or opcode",
        State::Key { .. } => "a key",
        State::Value(value) => value.expected(),
        State::ModuleAux { .. } => "module aux data",
        State::Checksum => "the 8-byte checksum",
        State::Done | State::Failed => "nothing",
    }
}
