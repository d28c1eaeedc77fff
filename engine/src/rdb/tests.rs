//! Parser tests over files written here byte by byte: every opcode and encoding, any
//! chunking, raw bytes and the limit on them, and every kind of error.

use proptest::prelude::*;

use super::format::{
    OPCODE_AUX, OPCODE_EOF, OPCODE_EXPIRETIME, OPCODE_EXPIRETIME_MS, OPCODE_FREQ, OPCODE_FUNCTION2,
    OPCODE_FUNCTION_PRE_GA, OPCODE_IDLE, OPCODE_MODULE_AUX, OPCODE_RESIZEDB, OPCODE_SELECTDB,
    OPCODE_SLOT_IMPORT, OPCODE_SLOT_INFO,
};
use super::intset::tests::intset;
use super::listpack::tests::listpack;
use super::lzf::tests::compress;
use super::stream::tests::node;
use super::ziplist::tests::ziplist;
use super::zipmap::tests::zipmap;
use super::*;

/// Writes RDB files the way `rdb.c` saves them.
struct RdbFile {
    bytes: Vec<u8>,
    header: Header,
}

impl RdbFile {
    fn new(magic: Magic, version: u16) -> Self {
        let header = Header { magic, version };
        RdbFile {
            bytes: header.to_bytes().to_vec(),
            header,
        }
    }

    fn redis(version: u16) -> Self {
        RdbFile::new(Magic::Redis, version)
    }

    fn byte(&mut self, b: u8) -> &mut Self {
        self.bytes.push(b);
        self
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// `rdbSaveLen`.
    fn len(&mut self, n: u64) -> &mut Self {
        if n < 64 {
            self.byte(n as u8)
        } else if n < 16384 {
            self.byte(0x40 | (n >> 8) as u8).byte(n as u8)
        } else if n <= u64::from(u32::MAX) {
            self.byte(0x80).raw(&(n as u32).to_be_bytes())
        } else {
            self.byte(0x81).raw(&n.to_be_bytes())
        }
    }

    fn string(&mut self, s: &[u8]) -> &mut Self {
        self.len(s.len() as u64).raw(s)
    }

    fn int_string(&mut self, n: i64) -> &mut Self {
        if let Ok(n) = i8::try_from(n) {
            self.byte(0xc0).raw(&n.to_le_bytes())
        } else if let Ok(n) = i16::try_from(n) {
            self.byte(0xc1).raw(&n.to_le_bytes())
        } else {
            self.byte(0xc2).raw(&(n as i32).to_le_bytes())
        }
    }

    fn lzf_string(&mut self, s: &[u8]) -> &mut Self {
        let compressed = compress(s);
        self.byte(0xc3)
            .len(compressed.len() as u64)
            .len(s.len() as u64)
            .raw(&compressed)
    }

    fn millis(&mut self, t: i64) -> &mut Self {
        self.raw(&t.to_le_bytes())
    }

    fn key(&mut self, rdb_type: RdbType, key: &[u8]) -> &mut Self {
        self.byte(rdb_type.byte()).string(key)
    }

    fn select_db(&mut self, db: u64) -> &mut Self {
        self.byte(OPCODE_SELECTDB).len(db)
    }

    fn aux(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        self.byte(OPCODE_AUX).string(name).string(value)
    }

    /// EOF and, from version 5, the CRC64 of everything before.
    fn finish(&mut self) -> Vec<u8> {
        self.byte(OPCODE_EOF);
        if self.header.has_checksum() {
            let crc = crc64(0, &self.bytes);
            self.raw(&crc.to_le_bytes());
        }
        self.bytes.clone()
    }
}

/// An element with owned bytes; integers as their text, so encodings compare equal.
#[derive(Debug, Clone, PartialEq)]
enum El {
    String(Vec<u8>),
    List(Vec<u8>),
    Set(Vec<u8>),
    Zset(Vec<u8>, f64),
    Hash(Vec<u8>, Vec<u8>, Option<i64>),
    Entry(StreamId, Vec<(Vec<u8>, Vec<u8>)>),
    Meta(StreamMeta),
    Group(Vec<u8>, StreamId, Option<u64>),
    Pending(StreamNack),
    Consumer(Vec<u8>, i64, Option<i64>, u64),
    ConsumerPending(StreamId),
}

fn owned(element: &Element<'_>) -> El {
    match element {
        Element::String(i) => El::String(i.to_bytes().into_owned()),
        Element::ListItem(i) => El::List(i.to_bytes().into_owned()),
        Element::SetMember(i) => El::Set(i.to_bytes().into_owned()),
        Element::ZsetMember { member, score } => El::Zset(member.to_bytes().into_owned(), *score),
        Element::HashField {
            field,
            value,
            expire_at_ms,
        } => El::Hash(
            field.to_bytes().into_owned(),
            value.to_bytes().into_owned(),
            *expire_at_ms,
        ),
        Element::StreamEntry(entry) => El::Entry(
            entry.id,
            entry
                .fields
                .clone()
                .map(|(f, v)| (f.to_bytes().into_owned(), v.to_bytes().into_owned()))
                .collect(),
        ),
        Element::StreamMeta(meta) => El::Meta(*meta),
        Element::StreamGroup(g) => El::Group(g.name.to_vec(), g.last_id, g.entries_read),
        Element::StreamPending(nack) => El::Pending(*nack),
        Element::StreamConsumer(c) => {
            El::Consumer(c.name.to_vec(), c.seen_time, c.active_time, c.pending)
        }
        Element::StreamConsumerPending(id) => El::ConsumerPending(*id),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Header(Header),
    Aux(Vec<u8>, Vec<u8>),
    SelectDb(u32),
    ResizeDb(u64, u64),
    SlotInfo(SlotInfo),
    SlotImport(Vec<u8>, Vec<(u64, u64)>),
    ModuleAux(ModuleId, u64, Vec<u8>),
    Function(Vec<Option<Vec<u8>>>),
    Key {
        db: u32,
        key: Vec<u8>,
        rdb_type: RdbType,
        expire_at_ms: Option<i64>,
        idle: Option<u64>,
        freq: Option<u8>,
        module: Option<ModuleId>,
    },
    Element(El),
    Value {
        raw: Option<Vec<u8>>,
        len: u64,
        rdb_len: u64,
        elements: bool,
    },
    End(Checksum),
}

/// Records every event; wants `want` of every value.
struct Events {
    want: Want,
    events: Vec<Event>,
}

impl Events {
    fn new(want: Want) -> Self {
        Events {
            want,
            events: Vec::new(),
        }
    }
}

impl Sink for Events {
    type Error = RdbError;

    fn header(&mut self, header: Header) -> Result<(), RdbError> {
        self.events.push(Event::Header(header));
        Ok(())
    }
    fn aux(&mut self, name: &[u8], value: &[u8]) -> Result<(), RdbError> {
        self.events.push(Event::Aux(name.to_vec(), value.to_vec()));
        Ok(())
    }
    fn select_db(&mut self, db: u32) -> Result<(), RdbError> {
        self.events.push(Event::SelectDb(db));
        Ok(())
    }
    fn resize_db(&mut self, keys: u64, expires: u64) -> Result<(), RdbError> {
        self.events.push(Event::ResizeDb(keys, expires));
        Ok(())
    }
    fn slot_info(&mut self, info: SlotInfo) -> Result<(), RdbError> {
        self.events.push(Event::SlotInfo(info));
        Ok(())
    }
    fn slot_import(&mut self, import: &SlotImport<'_>) -> Result<(), RdbError> {
        self.events.push(Event::SlotImport(
            import.job_name.to_vec(),
            import.ranges.to_vec(),
        ));
        Ok(())
    }
    fn module_aux(&mut self, aux: &ModuleAux<'_>) -> Result<(), RdbError> {
        self.events
            .push(Event::ModuleAux(aux.module, aux.when, aux.data.to_vec()));
        Ok(())
    }
    fn function(&mut self, function: &Function<'_>) -> Result<(), RdbError> {
        let parts = match *function {
            Function::Library { code } => vec![Some(code.to_vec())],
            Function::PreGa {
                name,
                engine,
                description,
                code,
            } => vec![
                Some(name.to_vec()),
                Some(engine.to_vec()),
                description.map(<[u8]>::to_vec),
                Some(code.to_vec()),
            ],
        };
        self.events.push(Event::Function(parts));
        Ok(())
    }
    fn key(&mut self, key: &Key<'_>) -> Result<Want, RdbError> {
        self.events.push(Event::Key {
            db: key.db,
            key: key.key.to_vec(),
            rdb_type: key.rdb_type,
            expire_at_ms: key.expire_at_ms,
            idle: key.idle,
            freq: key.freq,
            module: key.module,
        });
        Ok(self.want)
    }
    fn element(&mut self, _key: &Key<'_>, element: &Element<'_>) -> Result<(), RdbError> {
        let element = owned(element);
        // String parts depend on how the input was cut: keep them joined.
        if let (El::String(part), Some(Event::Element(El::String(so_far)))) =
            (&element, self.events.last_mut())
        {
            so_far.extend_from_slice(part);
            return Ok(());
        }
        self.events.push(Event::Element(element));
        Ok(())
    }
    fn value(&mut self, _key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), RdbError> {
        self.events.push(Event::Value {
            raw: value.raw.map(<[u8]>::to_vec),
            len: value.len,
            rdb_len: value.rdb_len,
            elements: value.elements,
        });
        Ok(())
    }
    fn end(&mut self, checksum: Checksum) -> Result<(), RdbError> {
        self.events.push(Event::End(checksum));
        Ok(())
    }
}

fn parse_with(
    file: &[u8],
    chunk: usize,
    want: Want,
    config: Config,
) -> Result<Vec<Event>, RdbError> {
    let mut parser = Parser::new(config);
    let mut sink = Events::new(want);
    let mut unused = 0;
    for piece in file.chunks(chunk.max(1)) {
        if let Status::Done { unused: n } = parser.feed(piece, &mut sink)? {
            unused += n;
        }
    }
    parser.finish()?;
    assert_eq!(parser.consumed() + unused as u64, file.len() as u64);
    Ok(sink.events)
}

fn parse(file: &[u8], want: Want) -> Result<Vec<Event>, RdbError> {
    parse_with(file, file.len(), want, Config::default())
}

/// Parses whole, byte by byte and in odd chunks; all three must agree.
fn parse_every_way(file: &[u8], want: Want) -> Vec<Event> {
    let whole = parse(file, want).unwrap();
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(
            parse_with(file, chunk, want, Config::default()).unwrap(),
            whole,
            "chunks of {chunk}"
        );
    }
    whole
}

fn elements(events: &[Event]) -> Vec<El> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Element(el) => Some(el.clone()),
            _ => None,
        })
        .collect()
}

fn values(events: &[Event]) -> Vec<(Option<Vec<u8>>, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Value { raw, len, .. } => Some((raw.clone(), *len)),
            _ => None,
        })
        .collect()
}

fn s(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

#[test]
fn minimal_files_of_every_version() {
    for version in 1..=12 {
        let file = RdbFile::redis(version).finish();
        let events = parse_every_way(&file, Want::Elements);
        let checksum = if version >= 5 {
            Checksum::Verified(crc64(0, &file[..file.len() - 8]))
        } else {
            Checksum::Absent
        };
        assert_eq!(
            events,
            vec![
                Event::Header(Header {
                    magic: Magic::Redis,
                    version
                }),
                Event::End(checksum)
            ]
        );
    }
    let file = RdbFile::new(Magic::Valkey, 80).finish();
    assert!(parse(&file, Want::Nothing).is_ok());
}

#[test]
fn opcodes_before_and_between_keys() {
    let mut file = RdbFile::redis(11);
    file.aux(b"redis-ver", b"7.2.0")
        .byte(OPCODE_AUX)
        .string(b"redis-bits")
        .int_string(64)
        .select_db(3)
        .byte(OPCODE_RESIZEDB)
        .len(2)
        .len(1)
        .byte(OPCODE_SLOT_INFO)
        .len(866)
        .len(2)
        .len(1)
        .byte(OPCODE_EXPIRETIME_MS)
        .millis(1_700_000_000_123)
        .byte(OPCODE_IDLE)
        .len(300)
        .key(RdbType::String, b"a")
        .string(b"1")
        .byte(OPCODE_FREQ)
        .byte(9)
        .byte(OPCODE_EXPIRETIME)
        .raw(&1_700_000_000i32.to_le_bytes())
        .key(RdbType::String, b"b")
        .int_string(-5)
        .byte(OPCODE_FUNCTION2)
        .string(b"#!lua name=lib\nredis.register_function('f', function() return 1 end)");
    let events = parse_every_way(&file.finish(), Want::Elements);
    let key = |key: &[u8], expire_at_ms, idle, freq| Event::Key {
        db: 3,
        key: key.to_vec(),
        rdb_type: RdbType::String,
        expire_at_ms,
        idle,
        freq,
        module: None,
    };
    assert_eq!(
        events[1..events.len() - 1],
        [
            Event::Aux(s(b"redis-ver"), s(b"7.2.0")),
            Event::Aux(s(b"redis-bits"), s(b"64")),
            Event::SelectDb(3),
            Event::ResizeDb(2, 1),
            Event::SlotInfo(SlotInfo {
                slot: 866,
                keys: 2,
                expires: 1
            }),
            key(b"a", Some(1_700_000_000_123), Some(300), None),
            Event::Element(El::String(s(b"1"))),
            Event::Value {
                raw: None,
                len: 1,
                rdb_len: 2,
                elements: true
            },
            key(b"b", Some(1_700_000_000_000), None, Some(9)),
            Event::Element(El::String(s(b"-5"))),
            Event::Value {
                raw: None,
                len: 2,
                rdb_len: 2,
                elements: true
            },
            Event::Function(vec![Some(s(
                b"#!lua name=lib\nredis.register_function('f', function() return 1 end)"
            ))]),
        ]
    );
}

#[test]
fn strings_raw_int_lzf_and_long() {
    let long: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let compressible = vec![b'z'; 10_000];
    let mut file = RdbFile::redis(9);
    file.key(RdbType::String, b"raw")
        .string(b"hello")
        .key(RdbType::String, b"int8")
        .int_string(-128)
        .key(RdbType::String, b"int16")
        .int_string(30000)
        .key(RdbType::String, b"int32")
        .int_string(-2_000_000_000)
        .key(RdbType::String, b"lzf")
        .lzf_string(&compressible)
        .key(RdbType::String, b"long")
        .string(&long)
        .key(RdbType::String, b"empty")
        .string(b"");
    // An integer-encoded and an LZF-compressed key name.
    file.byte(0).int_string(12345).string(b"v");
    file.byte(0).lzf_string(&[b'k'; 40]).string(b"w");
    let file = file.finish();
    let events = parse_every_way(&file, Want::RawAndElements);
    assert_eq!(
        elements(&events),
        vec![
            El::String(s(b"hello")),
            El::String(s(b"-128")),
            El::String(s(b"30000")),
            El::String(s(b"-2000000000")),
            El::String(compressible.clone()),
            El::String(long.clone()),
            El::String(s(b"")),
            El::String(s(b"v")),
            El::String(s(b"w")),
        ]
    );
    let lens: Vec<u64> = values(&events).iter().map(|v| v.1).collect();
    assert_eq!(lens, [5, 4, 5, 11, 10_000, 200_000, 0, 1, 1]);
    let keys: Vec<Vec<u8>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Key { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys[7], b"12345");
    assert_eq!(keys[8], vec![b'k'; 40]);
    // Raw bytes are the value's bytes in the file.
    let raws: Vec<Vec<u8>> = values(&events).into_iter().map(|v| v.0.unwrap()).collect();
    assert_eq!(raws[0], b"\x05hello");
    assert_eq!(raws[1], b"\xc0\x80");
    assert!(file.windows(raws[5].len()).any(|w| w == raws[5]));
}

#[test]
fn lists_sets_zsets_and_hashes_in_every_encoding() {
    let big = vec![b'B'; 20_000];
    let mut file = RdbFile::redis(11);
    // RDB_TYPE_LIST, with an integer and an LZF element.
    file.key(RdbType::List, b"list")
        .len(3)
        .string(b"a")
        .int_string(7)
        .lzf_string(&[b'c'; 30]);
    // RDB_TYPE_LIST_ZIPLIST.
    file.key(RdbType::ListZiplist, b"lzl")
        .string(&ziplist(&[Item::Str(b"x"), Item::Int(-3)]));
    // RDB_TYPE_LIST_QUICKLIST: two ziplist nodes, one empty (skipped as Redis does).
    file.key(RdbType::ListQuicklist, b"ql")
        .len(3)
        .string(&ziplist(&[Item::Str(b"q1")]))
        .string(&ziplist(&[]))
        .lzf_string(&ziplist(&[Item::Str(&[b'q'; 40]), Item::Int(1)]));
    // RDB_TYPE_LIST_QUICKLIST_2: a plain node and a packed one.
    file.key(RdbType::ListQuicklist2, b"ql2")
        .len(2)
        .len(1)
        .string(&big)
        .len(2)
        .string(&listpack(&[Item::Int(1000), Item::Str(b"p")]));
    // Sets: hash table, intset, listpack.
    file.key(RdbType::Set, b"set")
        .len(2)
        .string(b"m1")
        .int_string(2);
    file.key(RdbType::SetIntset, b"iset")
        .string(&intset(4, &[-70000, 5, 70000]));
    file.key(RdbType::SetListpack, b"lset")
        .string(&listpack(&[Item::Str(b"a"), Item::Int(-1)]));
    // Sorted sets: text scores, binary scores, ziplist, listpack.
    file.key(RdbType::Zset, b"z1")
        .len(4)
        .string(b"a")
        .byte(3)
        .raw(b"1.5")
        .string(b"b")
        .byte(254)
        .string(b"c")
        .byte(255)
        .string(b"d")
        .byte(5)
        .raw(b"1e+20");
    file.key(RdbType::Zset2, b"z2")
        .len(1)
        .string(b"m")
        .raw(&0.1f64.to_le_bytes());
    file.key(RdbType::ZsetZiplist, b"zz").string(&ziplist(&[
        Item::Str(b"m"),
        Item::Int(3),
        Item::Str(b"n"),
        Item::Str(b"-2.25"),
    ]));
    file.key(RdbType::ZsetListpack, b"zl")
        .string(&listpack(&[Item::Str(b"m"), Item::Str(b"0.5")]));
    // Hashes: hash table, zipmap, ziplist, listpack.
    file.key(RdbType::Hash, b"h")
        .len(1)
        .string(b"f")
        .lzf_string(&[b'v'; 50]);
    file.key(RdbType::HashZipmap, b"hzm")
        .string(&zipmap(&[(b"f1", b"v1"), (b"f2", b"")]));
    file.key(RdbType::HashZiplist, b"hzl")
        .string(&ziplist(&[Item::Str(b"f"), Item::Int(1)]));
    file.key(RdbType::HashListpack, b"hlp")
        .lzf_string(&listpack(&[Item::Str(&[b'f'; 30]), Item::Str(b"v")]));
    let events = parse_every_way(&file.finish(), Want::Elements);
    let hash = |f: &[u8], v: &[u8]| El::Hash(s(f), s(v), None);
    assert_eq!(
        elements(&events),
        vec![
            El::List(s(b"a")),
            El::List(s(b"7")),
            El::List(vec![b'c'; 30]),
            El::List(s(b"x")),
            El::List(s(b"-3")),
            El::List(s(b"q1")),
            El::List(vec![b'q'; 40]),
            El::List(s(b"1")),
            El::List(big.clone()),
            El::List(s(b"1000")),
            El::List(s(b"p")),
            El::Set(s(b"m1")),
            El::Set(s(b"2")),
            El::Set(s(b"-70000")),
            El::Set(s(b"5")),
            El::Set(s(b"70000")),
            El::Set(s(b"a")),
            El::Set(s(b"-1")),
            El::Zset(s(b"a"), 1.5),
            El::Zset(s(b"b"), f64::INFINITY),
            El::Zset(s(b"c"), f64::NEG_INFINITY),
            El::Zset(s(b"d"), 1e20),
            El::Zset(s(b"m"), 0.1),
            El::Zset(s(b"m"), 3.0),
            El::Zset(s(b"n"), -2.25),
            El::Zset(s(b"m"), 0.5),
            hash(b"f", &[b'v'; 50]),
            hash(b"f1", b"v1"),
            hash(b"f2", b""),
            hash(b"f", b"1"),
            hash(&[b'f'; 30], b"v"),
        ]
    );
    let lens: Vec<u64> = values(&events).iter().map(|v| v.1).collect();
    assert_eq!(lens, [3, 2, 3, 3, 2, 3, 2, 4, 1, 2, 1, 1, 2, 1, 1]);
}

#[test]
fn hashes_with_field_expiration_redis_and_valkey() {
    // Redis 7.4 RC: absolute TTLs; GA: TTL relative to the minimum, plus one.
    let mut file = RdbFile::redis(12);
    file.key(RdbType::HashMetadataPreGa, b"pre")
        .len(2)
        .len(0)
        .string(b"f")
        .string(b"v")
        .len(1_800_000_000_000)
        .string(b"g")
        .string(b"w");
    file.key(RdbType::HashMetadata, b"ga")
        .millis(1_800_000_000_000)
        .len(2)
        .len(0)
        .string(b"f")
        .string(b"v")
        .len(1001)
        .string(b"g")
        .string(b"w");
    file.key(RdbType::HashListpackExPreGa, b"lpre")
        .string(&listpack(&[Item::Str(b"f"), Item::Str(b"v"), Item::Int(0)]));
    file.key(RdbType::HashListpackEx, b"lga")
        .millis(1_800_000_000_000)
        .string(&listpack(&[
            Item::Str(b"f"),
            Item::Int(5),
            Item::Int(1_800_000_000_000),
        ]));
    let events = parse_every_way(&file.finish(), Want::Elements);
    let at = Some(1_800_000_000_000);
    assert_eq!(
        elements(&events),
        vec![
            El::Hash(s(b"f"), s(b"v"), None),
            El::Hash(s(b"g"), s(b"w"), at),
            El::Hash(s(b"f"), s(b"v"), None),
            El::Hash(s(b"g"), s(b"w"), Some(1_800_000_001_000)),
            El::Hash(s(b"f"), s(b"v"), None),
            El::Hash(s(b"f"), s(b"5"), at),
        ]
    );
    // Valkey 9: type 22 is a hash whose fields carry an expire time, -1 for none.
    let mut file = RdbFile::new(Magic::Valkey, 80);
    file.key(RdbType::Hash2, b"vh")
        .len(2)
        .string(b"f")
        .string(b"v")
        .millis(-1)
        .string(b"g")
        .string(b"w")
        .millis(1_800_000_000_000);
    let events = parse_every_way(&file.finish(), Want::Elements);
    assert_eq!(
        elements(&events),
        vec![
            El::Hash(s(b"f"), s(b"v"), None),
            El::Hash(s(b"g"), s(b"w"), at)
        ]
    );
    // The same byte in a Redis file is RDB_TYPE_HASH_METADATA_PRE_GA.
    let Event::Key { rdb_type, .. } = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(*rdb_type, RdbType::Hash2);
    // A zero minimum expire time: the TTL minus one (found by fuzzing as an overflow).
    let mut file = RdbFile::redis(12);
    file.key(RdbType::HashMetadata, b"zero")
        .millis(0)
        .len(1)
        .len(5)
        .string(b"f")
        .string(b"v");
    let events = parse(&file.finish(), Want::Elements).unwrap();
    assert_eq!(elements(&events), vec![El::Hash(s(b"f"), s(b"v"), Some(4))]);
    // Expire times beyond 2^48 are corrupt.
    let mut file = RdbFile::redis(12);
    file.key(RdbType::HashMetadataPreGa, b"bad")
        .len(1)
        .len(1 << 50)
        .string(b"f")
        .string(b"v");
    assert!(matches!(
        parse(&file.finish(), Want::Elements),
        Err(RdbError::Corrupt { .. })
    ));
}

/// A stream of `version` (1 to 3) with two nodes, a deleted entry and a group with a
/// consumer owning one of two pending entries.
fn stream_file(version: u8) -> Vec<u8> {
    let rdb_type = match version {
        1 => RdbType::StreamListpacks,
        2 => RdbType::StreamListpacks2,
        _ => RdbType::StreamListpacks3,
    };
    let id = |ms: u64, seq: u64| {
        let mut b = ms.to_be_bytes().to_vec();
        b.extend_from_slice(&seq.to_be_bytes());
        b
    };
    let mut file = RdbFile::redis(11);
    file.key(rdb_type, b"s").len(2);
    file.string(&id(1000, 0)).string(&node(
        &[b"f"],
        &[
            (0, 0, false, vec![(b"f", b"v1")]),
            (1, 0, true, vec![(b"f", b"gone")]),
            (2, 0, false, vec![(b"g", b"v3"), (b"h", b"v4")]),
        ],
    ));
    file.string(&id(2000, 5))
        .lzf_string(&node(&[b"f"], &[(0, 0, false, vec![(b"f", &[b'x'; 40])])]));
    file.len(3).len(2000).len(5);
    if version >= 2 {
        file.len(1000).len(0).len(1001).len(0).len(4);
    }
    file.len(1).string(b"group").len(1002).len(0);
    if version >= 2 {
        file.len(2);
    }
    file.len(2)
        .raw(&id(1000, 0))
        .millis(1_700_000_000_000)
        .len(1)
        .raw(&id(1002, 0))
        .millis(1_700_000_000_001)
        .len(3);
    file.len(1).string(b"alice").millis(1_700_000_000_002);
    if version >= 3 {
        file.millis(1_700_000_000_003);
    }
    file.len(1).raw(&id(1002, 0));
    file.finish()
}

#[test]
fn streams_v1_to_v3_with_groups() {
    for version in 1..=3u8 {
        let events = parse_every_way(&stream_file(version), Want::Elements);
        let v2 = version >= 2;
        let sid = |ms, seq| StreamId { ms, seq };
        assert_eq!(
            elements(&events),
            vec![
                El::Entry(sid(1000, 0), vec![(s(b"f"), s(b"v1"))]),
                El::Entry(sid(1002, 0), vec![(s(b"g"), s(b"v3")), (s(b"h"), s(b"v4"))]),
                El::Entry(sid(2000, 5), vec![(s(b"f"), vec![b'x'; 40])]),
                El::Meta(StreamMeta {
                    length: 3,
                    last_id: sid(2000, 5),
                    first_id: v2.then_some(sid(1000, 0)),
                    max_deleted_entry_id: v2.then_some(sid(1001, 0)),
                    entries_added: v2.then_some(4),
                }),
                El::Group(s(b"group"), sid(1002, 0), v2.then_some(2)),
                El::Pending(StreamNack {
                    id: sid(1000, 0),
                    delivery_time: 1_700_000_000_000,
                    delivery_count: 1
                }),
                El::Pending(StreamNack {
                    id: sid(1002, 0),
                    delivery_time: 1_700_000_000_001,
                    delivery_count: 3
                }),
                El::Consumer(
                    s(b"alice"),
                    1_700_000_000_002,
                    (version >= 3).then_some(1_700_000_000_003),
                    1
                ),
                El::ConsumerPending(sid(1002, 0)),
            ],
            "stream v{version}"
        );
        assert_eq!(values(&events)[0].1, 3);
    }
}

#[test]
fn modules_kept_opaque_and_module_aux() {
    let module = ModuleId((0x1234_5678 << 10) | 3);
    let mut file = RdbFile::redis(9);
    file.byte(OPCODE_MODULE_AUX)
        .len(module.0)
        .len(2)
        .len(1)
        .len(2)
        .len(42)
        .len(0);
    let value_start = file.bytes.len() + 3;
    file.key(RdbType::Module2, b"m")
        .len(module.0)
        .len(1)
        .len(7)
        .len(3)
        .raw(&1.5f32.to_le_bytes())
        .len(4)
        .raw(&2.5f64.to_le_bytes())
        .len(5)
        .lzf_string(&[b'm'; 64])
        .len(5)
        .int_string(3)
        .len(0);
    let value_end = file.bytes.len();
    let file = file.finish();
    let events = parse_every_way(&file, Want::RawAndElements);
    assert_eq!(events[1], Event::ModuleAux(module, 1, vec![2, 42, 0]));
    let Event::Key {
        module: Some(m), ..
    } = &events[2]
    else {
        panic!("{events:?}")
    };
    assert_eq!(*m, module);
    assert_eq!(
        events[3],
        Event::Value {
            raw: Some(file[value_start..value_end].to_vec()),
            len: 0,
            rdb_len: (value_end - value_start) as u64,
            elements: true
        }
    );
    // Module values have no elements to come as: they are kept whole past `max_raw_value`, up
    // to `max_string_len`.
    let config = Config {
        max_raw_value: 10,
        ..Config::default()
    };
    let events = parse_with(&file, 5, Want::Raw, config).unwrap();
    assert_eq!(
        values(&events),
        vec![(Some(file[value_start..value_end].to_vec()), 0)]
    );

    // A bad module opcode.
    let mut bad = file.clone();
    bad[value_start + 9] = 9;
    assert!(matches!(
        parse(&bad, Want::Raw),
        Err(RdbError::Corrupt { .. })
    ));
    // Pre-GA module values cannot be skipped without their module.
    let mut file = RdbFile::redis(8);
    let at = file.bytes.len() as u64;
    file.key(RdbType::ModulePreGa, b"m").len(1);
    assert_eq!(
        parse(&file.finish(), Want::Raw).unwrap_err(),
        RdbError::Unsupported {
            offset: at,
            what: "a module value in the pre-release format (RDB_TYPE_MODULE_PRE_GA)"
        }
    );
}

#[test]
fn functions_slot_imports_and_valkey_opcodes() {
    let mut file = RdbFile::new(Magic::Valkey, 80);
    file.byte(OPCODE_SLOT_IMPORT)
        .string(&[b'a'; 40])
        .len(2)
        .len(0)
        .len(100)
        .len(5000)
        .len(5460);
    file.byte(OPCODE_FUNCTION_PRE_GA)
        .string(b"lib")
        .string(b"LUA")
        .len(1)
        .string(b"desc")
        .string(b"code");
    file.byte(OPCODE_FUNCTION_PRE_GA)
        .string(b"lib2")
        .string(b"LUA")
        .len(0)
        .string(b"code2");
    let events = parse_every_way(&file.finish(), Want::Nothing);
    assert_eq!(
        events[1..4],
        [
            Event::SlotImport(vec![b'a'; 40], vec![(0, 100), (5000, 5460)]),
            Event::Function(vec![
                Some(s(b"lib")),
                Some(s(b"LUA")),
                Some(s(b"desc")),
                Some(s(b"code"))
            ]),
            Event::Function(vec![
                Some(s(b"lib2")),
                Some(s(b"LUA")),
                None,
                Some(s(b"code2"))
            ]),
        ]
    );
    // 243 is an unknown opcode in a Redis file.
    let mut file = RdbFile::redis(11);
    file.byte(OPCODE_SLOT_IMPORT);
    assert!(matches!(
        parse(&file.finish(), Want::Nothing),
        Err(RdbError::UnknownType {
            offset: 9,
            byte: 243,
            ..
        })
    ));
    // Absurd range counts are refused before anything is allocated.
    let mut file = RdbFile::new(Magic::Valkey, 80);
    file.byte(OPCODE_SLOT_IMPORT).string(b"job").len(1 << 62);
    assert!(matches!(
        parse(&file.finish(), Want::Nothing),
        Err(RdbError::TooLong { .. })
    ));
}

#[test]
fn raw_values_over_the_limit_come_as_elements() {
    let members: Vec<Vec<u8>> = (0..100u32)
        .map(|i| format!("member-{i}").into_bytes())
        .collect();
    let mut file = RdbFile::redis(11);
    file.key(RdbType::Set, b"big").len(members.len() as u64);
    for m in &members {
        file.string(m);
    }
    file.key(RdbType::Set, b"small").len(1).string(b"x");
    let long = vec![b'L'; 300_000];
    file.key(RdbType::String, b"long").string(&long);
    let file = file.finish();
    let config = Config {
        max_raw_value: 200,
        ..Config::default()
    };
    for (chunk, decode) in [1, 13, 100, 4096, file.len()]
        .into_iter()
        .flat_map(|chunk| [(chunk, true), (chunk, false)])
    {
        let config = Config {
            decode_raw_values: decode,
            ..config
        };
        let events = parse_with(&file, chunk, Want::Raw, config).unwrap();
        let mut expected: Vec<El> = members.iter().map(|m| El::Set(m.clone())).collect();
        expected.push(El::String(long.clone()));
        assert_eq!(elements(&events), expected, "chunks of {chunk}");
        let values = values(&events);
        assert_eq!(values[0], (None, 100));
        // Not decoded, a raw value's elements are not counted.
        let small_len = u64::from(decode);
        assert_eq!(values[1], (Some(b"\x01\x01x".to_vec()), small_len));
        assert_eq!(values[2], (None, 300_000));
    }
    // With the default limit everything comes raw, and without elements.
    let events = parse_with(&file, 1000, Want::Raw, Config::default()).unwrap();
    assert!(elements(&events).is_empty());
    assert!(values(&events).iter().all(|v| v.0.is_some()));
}

#[test]
fn long_strings_are_not_buffered_whole() {
    struct Lengths {
        parts: usize,
        bytes: u64,
    }
    impl Sink for Lengths {
        type Error = RdbError;
        fn key(&mut self, _: &Key<'_>) -> Result<Want, RdbError> {
            Ok(Want::Elements)
        }
        fn element(&mut self, _: &Key<'_>, element: &Element<'_>) -> Result<(), RdbError> {
            if let Element::String(part) = element {
                self.parts += 1;
                self.bytes += part.len() as u64;
            }
            Ok(())
        }
    }
    let len = 8 << 20;
    let mut file = RdbFile::redis(11);
    file.key(RdbType::String, b"huge").len(len);
    let mut parser = Parser::new(Config::default());
    let mut sink = Lengths { parts: 0, bytes: 0 };
    parser.feed(&file.bytes, &mut sink).unwrap();
    let chunk = vec![b'h'; 65536];
    let mut max_buffered = 0;
    for _ in 0..len / 65536 {
        assert_eq!(parser.feed(&chunk, &mut sink).unwrap(), Status::NeedMore);
        max_buffered = max_buffered.max(parser.buffered());
    }
    assert_eq!(max_buffered, 0);
    assert_eq!(sink.bytes, len);
    assert_eq!(sink.parts, 128);
    let tail = [OPCODE_EOF, 0, 0, 0, 0, 0, 0, 0, 0, b'+', b'O'];
    assert_eq!(
        parser.feed(&tail, &mut sink).unwrap(),
        Status::Done { unused: 2 }
    );
    parser.finish().unwrap();
    assert_eq!(
        parser.feed(b"more", &mut sink).unwrap(),
        Status::Done { unused: 4 }
    );
}

#[test]
fn empty_keys_are_refused_or_reported() {
    let mut file = RdbFile::redis(10);
    file.key(RdbType::Set, b"set").len(0);
    file.key(RdbType::ZsetListpack, b"zl")
        .string(&listpack(&[]));
    file.key(RdbType::ListQuicklist, b"ql")
        .len(1)
        .string(&ziplist(&[]));
    file.key(RdbType::String, b"s").string(b"");
    let file = file.finish();
    assert_eq!(
        parse(&file, Want::Nothing).unwrap_err(),
        RdbError::EmptyKey {
            offset: 9,
            object_type: ObjectType::Set
        }
    );
    let config = Config {
        empty_keys: EmptyKeys::Report,
        ..Config::default()
    };
    let events = parse_with(&file, 3, Want::Raw, config).unwrap();
    let lens: Vec<u64> = values(&events).iter().map(|v| v.1).collect();
    assert_eq!(lens, [0, 0, 0, 0]);
}

#[test]
fn errors_name_the_offset_and_what_was_expected() {
    // Not an RDB file.
    assert!(matches!(
        parse(b"GIF89a...\xff", Want::Nothing),
        Err(RdbError::BadMagic { .. })
    ));
    for header in [
        &b"REDIS0013"[..],
        b"REDIS0000",
        b"REDIS00x1",
        b"VALKEY079",
        b"VALKEY081",
    ] {
        assert!(
            matches!(
                parse(&[header, b"\xff"].concat(), Want::Nothing),
                Err(RdbError::UnsupportedVersion { .. })
            ),
            "{header:?}"
        );
    }
    // An unknown type.
    let mut file = RdbFile::redis(11);
    file.key(RdbType::String, b"k").string(b"v").byte(8);
    assert_eq!(
        parse(&file.finish(), Want::Nothing).unwrap_err(),
        RdbError::UnknownType {
            offset: 14,
            byte: 8,
            expected: "a value type (0-7, 9-25) or an opcode (244-255)"
        }
    );
    // A bad checksum.
    let mut file = RdbFile::redis(11).finish();
    file[10] ^= 0xff;
    assert!(matches!(
        parse(&file, Want::Nothing),
        Err(RdbError::BadChecksum { offset: 10, .. })
    ));
    // A zero checksum is not checked.
    let mut file = RdbFile::redis(11).finish();
    file[10..].fill(0);
    let events = parse(&file, Want::Nothing).unwrap();
    assert_eq!(events.last(), Some(&Event::End(Checksum::Disabled)));
    // An absurd length.
    let mut file = RdbFile::redis(11);
    file.byte(0).len(1 << 62);
    assert_eq!(
        parse(&file.finish(), Want::Nothing).unwrap_err(),
        RdbError::TooLong {
            offset: 10,
            what: "string",
            len: 1 << 62,
            max: 512 << 20
        }
    );
    // A corrupt ziplist inside a value names the string's offset.
    let mut zl = ziplist(&[Item::Str(b"a")]);
    zl[8] = 5;
    let mut file = RdbFile::redis(6);
    file.key(RdbType::ListZiplist, b"l").string(&zl);
    assert_eq!(
        parse(&file.finish(), Want::Nothing).unwrap_err(),
        RdbError::BadEncoding {
            offset: 12,
            encoding: "ziplist",
            at: 8,
            expected: "as many entries as zllen declares"
        }
    );
    // Truncation: "need more" until finish().
    let file = stream_file(3);
    let mut parser = Parser::new(Config::default());
    let mut sink = Events::new(Want::Elements);
    assert_eq!(
        parser.feed(&file[..30], &mut sink).unwrap(),
        Status::NeedMore
    );
    assert_eq!(
        parser.finish().unwrap_err(),
        RdbError::Truncated {
            offset: 30,
            expected: "a stream node (master ID and listpack)"
        }
    );
    // After an error the parser refuses more input.
    let mut parser = Parser::new(Config::default());
    assert!(parser.feed(b"NOTANRDB!", &mut sink).is_err());
    assert_eq!(
        parser.feed(b"", &mut sink).unwrap_err(),
        RdbError::Stopped { offset: 0 }
    );
}

#[test]
fn sink_errors_stop_the_parser() {
    #[derive(Debug)]
    enum AppError {
        Rdb(RdbError),
        Full,
    }
    impl From<RdbError> for AppError {
        fn from(e: RdbError) -> Self {
            AppError::Rdb(e)
        }
    }
    struct Stops;
    impl Sink for Stops {
        type Error = AppError;
        fn key(&mut self, _: &Key<'_>) -> Result<Want, AppError> {
            Err(AppError::Full)
        }
    }
    let mut file = RdbFile::redis(11);
    file.key(RdbType::String, b"k").string(b"v");
    let file = file.finish();
    let mut parser = Parser::new(Config::default());
    assert!(matches!(
        parser.feed(&file, &mut Stops),
        Err(AppError::Full)
    ));
    assert!(matches!(
        parser.feed(&file, &mut Stops),
        Err(AppError::Rdb(RdbError::Stopped { .. }))
    ));
}

/// Every opcode and encoding in one file, for the robustness tests.
fn kitchen_sink() -> Vec<u8> {
    let mut file = RdbFile::redis(11);
    file.aux(b"redis-ver", b"7.2.4").select_db(0);
    file.key(RdbType::String, b"s").lzf_string(&[b'a'; 30]);
    file.key(RdbType::List, b"l")
        .len(2)
        .string(b"a")
        .int_string(1);
    file.key(RdbType::ListQuicklist2, b"q")
        .len(2)
        .len(1)
        .string(b"plain")
        .len(2)
        .string(&listpack(&[Item::Int(1), Item::Str(b"x")]));
    file.key(RdbType::SetIntset, b"i")
        .string(&intset(2, &[1, 2]));
    file.key(RdbType::Zset2, b"z")
        .len(1)
        .string(b"m")
        .raw(&1.0f64.to_le_bytes());
    file.key(RdbType::HashZiplist, b"h")
        .string(&ziplist(&[Item::Str(b"f"), Item::Str(b"v")]));
    file.key(RdbType::HashZipmap, b"hz")
        .string(&zipmap(&[(b"f", b"v")]));
    file.raw(&stream_file(3)[9..stream_file(3).len() - 9]);
    file.finish()
}

#[test]
fn truncation_at_every_offset_is_need_more_never_a_panic() {
    for file in [kitchen_sink(), stream_file(1), stream_file(2)] {
        let whole = parse(&file, Want::RawAndElements).unwrap();
        for cut in 0..file.len() {
            let mut parser = Parser::new(Config::default());
            let mut sink = Events::new(Want::RawAndElements);
            assert_eq!(
                parser.feed(&file[..cut], &mut sink).unwrap(),
                Status::NeedMore,
                "cut at {cut}"
            );
            assert!(matches!(
                parser.finish(),
                Err(RdbError::Truncated { offset, .. }) if offset == cut as u64
            ));
            // The rest completes the same file.
            parser.feed(&file[cut..], &mut sink).unwrap();
            parser.finish().unwrap();
            assert_eq!(sink.events, whole, "resumed at {cut}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Flipped bits give an error or a file, never a panic, and never an allocation beyond the
    /// limits (the test runs with small ones).
    #[test]
    fn bit_flips_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), 0..8u8), 1..6), chunk in 1..200usize) {
        let mut file = kitchen_sink();
        for (index, bit) in flips {
            let i = index.index(file.len());
            file[i] ^= 1 << bit;
        }
        for decode_raw_values in [true, false] {
            let config = Config { max_raw_value: 1 << 16, max_string_len: 1 << 16, empty_keys: EmptyKeys::Report, decode_raw_values };
            for want in [Want::Nothing, Want::RawAndElements, Want::Raw] {
                let _ = parse_with(&file, chunk, want, config);
            }
        }
    }

    /// Any bytes after a valid header: an error or a file, never a panic.
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        for magic in [&b"REDIS0011"[..], b"VALKEY080", b"REDIS0003"] {
            let file = [magic, &body].concat();
            let config = Config { max_raw_value: 1 << 12, max_string_len: 1 << 12, empty_keys: EmptyKeys::Refuse, decode_raw_values: true };
            let _ = parse_with(&file, 7, Want::RawAndElements, config);
        }
    }

    /// Chunking never changes what the sink sees.
    #[test]
    fn chunking_is_invisible(chunk in 1..300usize) {
        let file = kitchen_sink();
        prop_assert_eq!(
            parse_with(&file, chunk, Want::RawAndElements, Config::default()).unwrap(),
            parse(&file, Want::RawAndElements).unwrap()
        );
    }
}

#[test]
fn raw_values_read_past_without_decoding_are_the_same_bytes() {
    // Everything but the element counts, which are not kept where nothing was decoded.
    let uncounted = |events: Vec<Event>| -> Vec<Event> {
        events
            .into_iter()
            .map(|event| match event {
                Event::Value {
                    raw,
                    rdb_len,
                    elements,
                    ..
                } => Event::Value {
                    raw,
                    len: 0,
                    rdb_len,
                    elements,
                },
                other => other,
            })
            .collect()
    };
    let config = Config {
        decode_raw_values: false,
        ..Config::default()
    };
    for file in [kitchen_sink(), stream_file(1), stream_file(2)] {
        let decoded = uncounted(parse(&file, Want::Raw).unwrap());
        for chunk in [1, 2, 7, 64, file.len()] {
            let events = parse_with(&file, chunk, Want::Raw, config).unwrap();
            assert_eq!(uncounted(events), decoded, "chunks of {chunk}");
        }
    }
    // A damaged encoding goes by unread: the target's checks are what is left.
    let mut file = RdbFile::redis(11);
    file.key(RdbType::SetIntset, b"i").string(b"not an intset");
    let file = file.finish();
    assert!(parse(&file, Want::Raw).is_err());
    let events = parse_with(&file, 3, Want::Raw, config).unwrap();
    assert_eq!(values(&events), [(Some(b"\x0dnot an intset".to_vec()), 0)]);
}

#[test]
fn raw_values_restore_as_payloads() {
    // The raw bytes plus type byte and footer read back as the same payload.
    let events = parse(&kitchen_sink(), Want::Raw).unwrap();
    let mut rdb_type = None;
    let mut checked = 0;
    for event in &events {
        match event {
            Event::Key { rdb_type: t, .. } => rdb_type = Some(*t),
            Event::Value { raw: Some(raw), .. } => {
                let t = rdb_type.unwrap();
                let bytes = payload::build(t, raw, 11);
                let read = payload::Payload::read(&bytes).unwrap();
                assert_eq!((read.rdb_type, read.value, read.version), (t, &raw[..], 11));
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, 8);
}
