//! RDB, the snapshot format of Redis and Valkey: a push parser for whole files as a master
//! streams them to its replicas, and `DUMP` payloads.
//!
//! Sans-IO: bytes in, events out. A [`Parser`] takes the file in chunks of any size as they
//! arrive and drives a [`Sink`] (the applier, `rdb inspect`, tests) with what they hold: the
//! header, aux fields, database selection and resize hints, slot info, module aux data and
//! function libraries, and for each key its database, name, type, expire time and LRU/LFU
//! data. For each value, the sink chooses ([`Want`]): its raw bytes, to build a `RESTORE`
//! payload without re-encoding ([`payload`]); its decoded elements one by one, to rewrite it as
//! commands; both; or nothing. The end of the file comes with its CRC64 verified.
//!
//! Formats: `REDIS0001` to `REDIS0012` (Redis 1.0 to 7.4/8.0, including 7.4's hash field
//! expiration types) and `VALKEY080` (Valkey 9, whose types from 22 up differ from Redis's).
//! Every encoding: strings raw, as integers and LZF-compressed; linked lists, ziplists,
//! quicklists (v1 and v2, plain and packed nodes); hash tables, intsets and listpack sets;
//! sorted sets with text and binary scores, ziplists and listpacks; hashes as hash tables,
//! zipmaps, ziplists and listpacks, with or without field TTLs; streams v1 to v3 with consumer
//! groups; module values, kept opaque.
//!
//! Memory stays bounded: the parser holds the unit it is reading (one element, one encoded
//! collection, each at most [`Config::max_string_len`]) and, for a sink that wants raw bytes,
//! the value up to [`Config::max_raw_value`]; longer values come as elements instead. Every
//! length is checked against those limits before anything is allocated. Truncated input is
//! "need more" ([`Status::NeedMore`]) until [`Parser::finish`] makes it an error; invalid
//! bytes are an [`RdbError`] naming their offset and what was expected there.

mod crc64;
mod error;
mod format;
mod input;
mod intset;
mod listpack;
mod lzf;
mod parser;
pub mod payload;
mod sink;
mod stream;
mod value;
mod ziplist;
mod zipmap;

pub use crc64::crc64;
pub use error::RdbError;
pub use format::{Header, Magic, ModuleId, ObjectType, RdbType, StreamId};
pub use parser::{Config, EmptyKeys, Parser, Status};
pub use sink::{
    Checksum, Element, Function, Item, Key, ModuleAux, Sink, SlotImport, SlotInfo, StreamConsumer,
    StreamEntry, StreamFields, StreamGroup, StreamMeta, StreamNack, ValueEnd, Want,
};

#[cfg(test)]
mod tests;
