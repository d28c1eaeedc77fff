//! One model of a data set for both sides of the comparisons: what the parser reports
//! ([`Parsed`], a sink) and what a live server holds ([`live`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_engine::rdb::{
    Checksum, Config, Element, Function, Header, Key, ModuleAux, Parser, RdbError, RdbType, Sink,
    Status, ValueEnd, Want,
};
use redis::Value;

/// A value, in the form both sides can produce.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    /// Ordered as `ZRANGE` orders them: by score, then member.
    Zset(Vec<(Vec<u8>, f64)>),
    /// Field, value and the field's expire time.
    Hash(BTreeMap<Vec<u8>, (Vec<u8>, Option<i64>)>),
    Stream(StreamData),
    /// Module values: the module type name.
    Module(String),
}

/// A stream entry: its ID and field-value pairs.
pub type StreamEntryData = (String, Vec<(Vec<u8>, Vec<u8>)>);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamData {
    pub entries: Vec<StreamEntryData>,
    pub length: u64,
    pub last_id: String,
    pub groups: Vec<GroupData>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupData {
    pub name: Vec<u8>,
    pub last_id: String,
    /// Pending entries: ID, owner, delivery count.
    pub pending: Vec<(String, Vec<u8>, u64)>,
    pub consumers: BTreeSet<Vec<u8>>,
}

/// A key: its `TYPE`, when it expires, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub type_name: String,
    pub expire_at_ms: Option<i64>,
    pub data: Data,
}

/// Keys by database and name.
pub type Model = BTreeMap<(u32, Vec<u8>), Entry>;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A sink that builds the [`Model`] from elements, and keeps each value's raw bytes when they
/// came.
#[derive(Default)]
pub struct Parsed {
    pub header: Option<Header>,
    pub aux: Vec<(Vec<u8>, Vec<u8>)>,
    pub functions: Vec<Vec<u8>>,
    pub model: Model,
    /// Raw value bytes with their type, by key.
    pub raw: BTreeMap<(u32, Vec<u8>), (RdbType, Vec<u8>)>,
    /// The value types seen.
    pub types: BTreeSet<RdbType>,
    /// Keys that had an IDLE or FREQ opcode.
    pub idle: usize,
    pub freq: usize,
    pub checksum: Option<Checksum>,
    /// Raw values and elements both requested.
    pub want_raw: bool,
    /// Bytes fed after the end of the file.
    pub trailing: usize,
    /// `RDB_OPCODE_MODULE_AUX` sections, by module type name.
    pub module_aux: Vec<String>,
    current: Option<(u32, Vec<u8>, Entry)>,
    pending: BTreeMap<String, u64>,
    consumer: Vec<u8>,
}

impl Parsed {
    pub fn new(want_raw: bool) -> Self {
        Parsed {
            want_raw,
            ..Parsed::default()
        }
    }

    /// The model without keys that have expired, as a loading master drops them.
    pub fn unexpired(&self) -> Model {
        let now = now_ms();
        self.model
            .iter()
            .filter(|(_, e)| e.expire_at_ms.is_none_or(|at| at > now))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    fn stream(&mut self) -> &mut StreamData {
        match self.current.as_mut().map(|c| &mut c.2.data) {
            Some(Data::Stream(stream)) => stream,
            other => panic!("stream element for {other:?}"),
        }
    }
}

/// Parses `file` fed in chunks of `chunk` bytes.
pub fn parse_file(
    file: &[u8],
    chunk: usize,
    want_raw: bool,
    config: Config,
) -> Result<Parsed, RdbError> {
    let mut parser = Parser::new(config);
    let mut parsed = Parsed::new(want_raw);
    for piece in file.chunks(chunk) {
        if let Status::Done { unused } = parser.feed(piece, &mut parsed)? {
            parsed.trailing += unused;
        }
    }
    parser.finish()?;
    Ok(parsed)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Sink for Parsed {
    type Error = RdbError;

    fn header(&mut self, header: Header) -> Result<(), RdbError> {
        self.header = Some(header);
        Ok(())
    }

    fn aux(&mut self, name: &[u8], value: &[u8]) -> Result<(), RdbError> {
        self.aux.push((name.to_vec(), value.to_vec()));
        Ok(())
    }

    fn module_aux(&mut self, aux: &ModuleAux<'_>) -> Result<(), RdbError> {
        assert_eq!(
            aux.data.last(),
            Some(&0),
            "module data ends with its EOF opcode"
        );
        self.module_aux.push(aux.module.name());
        Ok(())
    }

    fn function(&mut self, function: &Function<'_>) -> Result<(), RdbError> {
        if let Function::Library { code } = function {
            self.functions.push(code.to_vec());
        }
        Ok(())
    }

    fn key(&mut self, key: &Key<'_>) -> Result<Want, RdbError> {
        let object_type = key.object_type();
        let (type_name, data) = match object_type {
            ferry_engine::rdb::ObjectType::String => ("string".into(), Data::String(Vec::new())),
            ferry_engine::rdb::ObjectType::List => ("list".into(), Data::List(Vec::new())),
            ferry_engine::rdb::ObjectType::Set => ("set".into(), Data::Set(BTreeSet::new())),
            ferry_engine::rdb::ObjectType::Zset => ("zset".into(), Data::Zset(Vec::new())),
            ferry_engine::rdb::ObjectType::Hash => ("hash".into(), Data::Hash(BTreeMap::new())),
            ferry_engine::rdb::ObjectType::Stream => {
                ("stream".into(), Data::Stream(StreamData::default()))
            }
            ferry_engine::rdb::ObjectType::Module => {
                let name = key.module.map(|m| m.name()).unwrap_or_default();
                (name.clone(), Data::Module(name))
            }
        };
        self.types.insert(key.rdb_type);
        self.idle += usize::from(key.idle.is_some());
        self.freq += usize::from(key.freq.is_some());
        self.current = Some((
            key.db,
            key.key.to_vec(),
            Entry {
                type_name,
                expire_at_ms: key.expire_at_ms,
                data,
            },
        ));
        Ok(if self.want_raw {
            Want::RawAndElements
        } else {
            Want::Elements
        })
    }

    fn element(&mut self, _key: &Key<'_>, element: &Element<'_>) -> Result<(), RdbError> {
        let data = &mut self.current.as_mut().expect("element outside a key").2.data;
        match (data, element) {
            (Data::String(s), Element::String(part)) => s.extend_from_slice(&part.to_bytes()),
            (Data::List(l), Element::ListItem(item)) => l.push(item.to_bytes().into_owned()),
            (Data::Set(set), Element::SetMember(m)) => {
                assert!(set.insert(m.to_bytes().into_owned()), "duplicate member");
            }
            (Data::Zset(z), Element::ZsetMember { member, score }) => {
                z.push((member.to_bytes().into_owned(), *score));
            }
            (
                Data::Hash(h),
                Element::HashField {
                    field,
                    value,
                    expire_at_ms,
                },
            ) => {
                let old = h.insert(
                    field.to_bytes().into_owned(),
                    (value.to_bytes().into_owned(), *expire_at_ms),
                );
                assert!(old.is_none(), "duplicate field");
            }
            (Data::Stream(_), element) => match element {
                Element::StreamEntry(entry) => {
                    let fields = entry
                        .fields
                        .clone()
                        .map(|(f, v)| (f.to_bytes().into_owned(), v.to_bytes().into_owned()))
                        .collect();
                    self.stream().entries.push((entry.id.to_string(), fields));
                }
                Element::StreamMeta(meta) => {
                    let stream = self.stream();
                    stream.length = meta.length;
                    stream.last_id = meta.last_id.to_string();
                }
                Element::StreamGroup(group) => {
                    self.pending.clear();
                    let group = GroupData {
                        name: group.name.to_vec(),
                        last_id: group.last_id.to_string(),
                        ..GroupData::default()
                    };
                    self.stream().groups.push(group);
                }
                Element::StreamPending(nack) => {
                    self.pending
                        .insert(nack.id.to_string(), nack.delivery_count);
                }
                Element::StreamConsumer(consumer) => {
                    self.consumer = consumer.name.to_vec();
                    let name = consumer.name.to_vec();
                    let group = self
                        .stream()
                        .groups
                        .last_mut()
                        .expect("consumer outside a group");
                    group.consumers.insert(name);
                }
                Element::StreamConsumerPending(id) => {
                    let id = id.to_string();
                    let count = *self
                        .pending
                        .get(&id)
                        .expect("consumer PEL entry not in the group PEL");
                    let consumer = self.consumer.clone();
                    let group = self
                        .stream()
                        .groups
                        .last_mut()
                        .expect("PEL outside a group");
                    group.pending.push((id, consumer, count));
                }
                other => panic!("{other:?} in a stream"),
            },
            (data, element) => panic!("{element:?} in {data:?}"),
        }
        Ok(())
    }

    fn value(&mut self, key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), RdbError> {
        let (db, name, mut entry) = self.current.take().expect("value outside a key");
        match &mut entry.data {
            Data::Zset(z) => {
                z.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
                assert_eq!(z.len() as u64, value.len);
            }
            Data::Stream(s) => {
                for group in &mut s.groups {
                    group.pending.sort();
                }
                s.groups.sort_by(|a, b| a.name.cmp(&b.name));
                assert_eq!(s.length, value.len);
                assert_eq!(s.entries.len() as u64, value.len, "stream length");
            }
            Data::List(l) => assert_eq!(l.len() as u64, value.len),
            Data::Set(set) => assert_eq!(set.len() as u64, value.len),
            Data::Hash(h) => assert_eq!(h.len() as u64, value.len),
            Data::String(s) => assert_eq!(s.len() as u64, value.len),
            Data::Module(_) => {}
        }
        if let Some(raw) = value.raw {
            self.raw
                .insert((db, name.clone()), (key.rdb_type, raw.to_vec()));
        }
        let old = self.model.insert((db, name), entry);
        assert!(old.is_none(), "duplicate key");
        Ok(())
    }

    fn end(&mut self, checksum: Checksum) -> Result<(), RdbError> {
        self.checksum = Some(checksum);
        Ok(())
    }
}

/// What a server can tell about itself.
#[derive(Debug, Clone, Copy)]
pub struct Abilities {
    /// `PEXPIRETIME` (Redis 7+, Valkey): exact expire times; else `PTTL` from now.
    pub pexpiretime: bool,
    /// `HPEXPIRETIME` (Valkey 9).
    pub field_ttls: bool,
}

pub fn bulk(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Int(n) => n.to_string().into_bytes(),
        other => panic!("expected a string, got {other:?}"),
    }
}

pub fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::BulkString(b) => text(b).parse().expect("integer"),
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// `XINFO`-style flat arrays of names and values.
fn fields(v: &Value) -> BTreeMap<String, Value> {
    array(v)
        .chunks(2)
        .map(|pair| (text(&bulk(&pair[0])), pair[1].clone()))
        .collect()
}

fn q(con: &mut redis::Connection, cmd: &mut redis::Cmd) -> Value {
    cmd.query(con).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Reads every key of databases `0..16` through commands.
pub fn live(con: &mut redis::Connection, abilities: Abilities) -> Model {
    let mut model = Model::new();
    for db in 0..16u32 {
        q(con, redis::cmd("SELECT").arg(db));
        let mut cursor = 0u64;
        let mut keys = BTreeSet::new();
        loop {
            let reply = q(con, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000));
            let parts = array(&reply);
            cursor = text(&bulk(&parts[0])).parse().expect("cursor");
            keys.extend(array(&parts[1]).iter().map(bulk));
            if cursor == 0 {
                break;
            }
        }
        for key in keys {
            let entry = live_entry(con, &key, abilities);
            model.insert((db, key), entry);
        }
    }
    model
}

fn live_entry(con: &mut redis::Connection, key: &[u8], abilities: Abilities) -> Entry {
    let type_name = text(&bulk(&q(con, redis::cmd("TYPE").arg(key))));
    let expire_at_ms = if abilities.pexpiretime {
        int(&q(con, redis::cmd("PEXPIRETIME").arg(key)))
    } else {
        match int(&q(con, redis::cmd("PTTL").arg(key))) {
            ttl if ttl >= 0 => now_ms() + ttl,
            ttl => ttl,
        }
    };
    let data = match type_name.as_str() {
        "string" => Data::String(bulk(&q(con, redis::cmd("GET").arg(key)))),
        "list" => Data::List(
            array(&q(con, redis::cmd("LRANGE").arg(key).arg(0).arg(-1)))
                .iter()
                .map(bulk)
                .collect(),
        ),
        "set" => Data::Set(
            array(&q(con, redis::cmd("SMEMBERS").arg(key)))
                .iter()
                .map(bulk)
                .collect(),
        ),
        "zset" => {
            let reply = q(
                con,
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            );
            Data::Zset(
                array(&reply)
                    .chunks(2)
                    .map(|p| {
                        let score = text(&bulk(&p[1]));
                        let score = match score.as_str() {
                            "inf" => f64::INFINITY,
                            "-inf" => f64::NEG_INFINITY,
                            s => s.parse().expect("score"),
                        };
                        (bulk(&p[0]), score)
                    })
                    .collect(),
            )
        }
        "hash" => {
            let reply = q(con, redis::cmd("HGETALL").arg(key));
            let mut hash: BTreeMap<Vec<u8>, (Vec<u8>, Option<i64>)> = array(&reply)
                .chunks(2)
                .map(|p| (bulk(&p[0]), (bulk(&p[1]), None)))
                .collect();
            if abilities.field_ttls && !hash.is_empty() {
                let names: Vec<Vec<u8>> = hash.keys().cloned().collect();
                let mut cmd = redis::cmd("HPEXPIRETIME");
                cmd.arg(key).arg("FIELDS").arg(names.len());
                for name in &names {
                    cmd.arg(name);
                }
                let times = q(con, &mut cmd);
                for (name, at) in names.iter().zip(array(&times)) {
                    let at = int(at);
                    if at >= 0 {
                        hash.get_mut(name).expect("field").1 = Some(at);
                    }
                }
            }
            Data::Hash(hash)
        }
        "stream" => Data::Stream(live_stream(con, key)),
        other => panic!("type {other} of {}", key.escape_ascii()),
    };
    Entry {
        type_name,
        expire_at_ms: (expire_at_ms >= 0).then_some(expire_at_ms),
        data,
    }
}

fn live_stream(con: &mut redis::Connection, key: &[u8]) -> StreamData {
    let entries = array(&q(con, redis::cmd("XRANGE").arg(key).arg("-").arg("+")))
        .iter()
        .map(|e| {
            let e = array(e);
            let fields = array(&e[1])
                .chunks(2)
                .map(|p| (bulk(&p[0]), bulk(&p[1])))
                .collect();
            (text(&bulk(&e[0])), fields)
        })
        .collect();
    let info = fields(&q(con, redis::cmd("XINFO").arg("STREAM").arg(key)));
    let mut groups = Vec::new();
    for group in array(&q(con, redis::cmd("XINFO").arg("GROUPS").arg(key))) {
        let group = fields(group);
        let name = bulk(&group["name"]);
        let pending = array(&q(
            con,
            redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .arg("-")
                .arg("+")
                .arg(1_000_000),
        ))
        .iter()
        .map(|p| {
            let p = array(p);
            (text(&bulk(&p[0])), bulk(&p[1]), int(&p[3]) as u64)
        })
        .collect();
        let consumers = array(&q(
            con,
            redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name),
        ))
        .iter()
        .map(|c| bulk(&fields(c)["name"]))
        .collect();
        groups.push(GroupData {
            name,
            last_id: text(&bulk(&group["last-delivered-id"])),
            pending,
            consumers,
        });
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    StreamData {
        entries,
        length: int(&info["length"]) as u64,
        last_id: text(&bulk(&info["last-generated-id"])),
        groups,
    }
}

/// Asserts both models hold the same keys, types, values and expire times (within
/// `ttl_slack_ms`, for servers without `PEXPIRETIME`).
pub fn assert_same(parsed: &Model, live: &Model, ttl_slack_ms: i64, what: &str) {
    let parsed_keys: BTreeSet<_> = parsed.keys().collect();
    let live_keys: BTreeSet<_> = live.keys().collect();
    let only_parsed: Vec<_> = parsed_keys.difference(&live_keys).take(5).collect();
    let only_live: Vec<_> = live_keys.difference(&parsed_keys).take(5).collect();
    assert!(
        only_parsed.is_empty() && only_live.is_empty(),
        "{what}: keys only parsed {only_parsed:?}, only live {only_live:?}"
    );
    for (key, p) in parsed {
        let l = &live[key];
        let name = format!("{what}: db {} key {}", key.0, key.1.escape_ascii());
        assert_eq!(p.type_name, l.type_name, "{name}: type");
        assert_eq!(p.data, l.data, "{name}: value");
        match (p.expire_at_ms, l.expire_at_ms) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= ttl_slack_ms,
                "{name}: expires at {a}, live {b}"
            ),
            (a, b) => panic!("{name}: expire {a:?}, live {b:?}"),
        }
    }
}
