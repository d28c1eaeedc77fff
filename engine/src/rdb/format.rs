//! The numbers of the RDB format: the header, the opcodes and the value types of `rdb.h`, for
//! Redis (`REDIS0001`..`REDIS0012`) and Valkey (`VALKEY080`).
//!
//! Types 0 to 21 mean the same in both forks. From 22 up they differ: Redis 7.4 (RDB 12) added
//! the hash-field-expiration types 22 to 25, Valkey 9.0 (RDB 80) gave 22 to its own
//! field-expiring hash and 23 to path hashes (RDB 81). The magic string decides which table
//! applies; a `DUMP` payload has no magic, so its RDB version decides (Valkey's start at 80).

use std::fmt;

/// `RDB_OPCODE_SLOT_IMPORT`: a slot import in progress (Valkey 9, atomic slot migration).
pub const OPCODE_SLOT_IMPORT: u8 = 243;
/// `RDB_OPCODE_SLOT_INFO`: a slot's key and expire counts (Redis 7.4+ in cluster mode).
pub const OPCODE_SLOT_INFO: u8 = 244;
/// `RDB_OPCODE_FUNCTION2`: function library data.
pub const OPCODE_FUNCTION2: u8 = 245;
/// `RDB_OPCODE_FUNCTION_PRE_GA`: old function library data for 7.0 rc1 and rc2.
pub const OPCODE_FUNCTION_PRE_GA: u8 = 246;
/// `RDB_OPCODE_MODULE_AUX`: module auxiliary data.
pub const OPCODE_MODULE_AUX: u8 = 247;
/// `RDB_OPCODE_IDLE`: LRU idle time.
pub const OPCODE_IDLE: u8 = 248;
/// `RDB_OPCODE_FREQ`: LFU frequency.
pub const OPCODE_FREQ: u8 = 249;
/// `RDB_OPCODE_AUX`: RDB aux field.
pub const OPCODE_AUX: u8 = 250;
/// `RDB_OPCODE_RESIZEDB`: hash table resize hint.
pub const OPCODE_RESIZEDB: u8 = 251;
/// `RDB_OPCODE_EXPIRETIME_MS`: expire time in milliseconds.
pub const OPCODE_EXPIRETIME_MS: u8 = 252;
/// `RDB_OPCODE_EXPIRETIME`: old expire time in seconds.
pub const OPCODE_EXPIRETIME: u8 = 253;
/// `RDB_OPCODE_SELECTDB`: DB number of the following keys.
pub const OPCODE_SELECTDB: u8 = 254;
/// `RDB_OPCODE_EOF`: end of the RDB file.
pub const OPCODE_EOF: u8 = 255;

/// The newest `REDIS00NN` version read: Redis 7.4 to 8.0.
pub const REDIS_MAX_VERSION: u16 = 12;
/// The `VALKEYNNN` versions read: Valkey 9.0 and 9.1.
pub const VALKEY_VERSIONS: std::ops::RangeInclusive<u16> = 80..=80;
/// `RDB_FOREIGN_VERSION_MAX`: RDB versions above it are Valkey's.
const FOREIGN_VERSION_MAX: u16 = 79;

/// Who wrote the file, as its magic string says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// `REDIS` followed by a 4-digit version.
    Redis,
    /// `VALKEY` followed by a 3-digit version (Valkey 9 and later).
    Valkey,
}

impl Magic {
    /// The type table a `DUMP` payload of this RDB version uses.
    pub fn of_version(version: u16) -> Magic {
        if version > FOREIGN_VERSION_MAX {
            Magic::Valkey
        } else {
            Magic::Redis
        }
    }
}

/// The 9 bytes every RDB file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub magic: Magic,
    /// `RDB_VERSION` of the writer: 1 to 12 for Redis, 80 for Valkey 9.
    pub version: u16,
}

impl Header {
    /// The header's length: `REDIS0011`, `VALKEY080`.
    pub const LEN: usize = 9;

    /// The header as it is written.
    pub fn to_bytes(self) -> [u8; Header::LEN] {
        let text = match self.magic {
            Magic::Redis => format!("REDIS{:04}", self.version),
            Magic::Valkey => format!("VALKEY{:03}", self.version),
        };
        let mut bytes = [b'0'; Header::LEN];
        bytes.copy_from_slice(&text.as_bytes()[..Header::LEN]);
        bytes
    }

    /// Whether an 8-byte CRC64 follows the EOF opcode (RDB version 5 and later).
    pub fn has_checksum(self) -> bool {
        self.version >= 5
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// What the `TYPE` command calls a value (`OBJ_STRING`, `OBJ_LIST`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    String,
    List,
    Set,
    Zset,
    Hash,
    Stream,
    Module,
}

impl ObjectType {
    /// The `TYPE` reply; module values answer with their module type name instead, which the
    /// key's [`ModuleId`] gives.
    pub fn name(self) -> &'static str {
        match self {
            ObjectType::String => "string",
            ObjectType::List => "list",
            ObjectType::Set => "set",
            ObjectType::Zset => "zset",
            ObjectType::Hash => "hash",
            ObjectType::Stream => "stream",
            ObjectType::Module => "module",
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type byte before a key: how its value is serialized (`RDB_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RdbType {
    /// `RDB_TYPE_STRING` (0).
    String,
    /// `RDB_TYPE_LIST` (1): a linked list, each element a string.
    List,
    /// `RDB_TYPE_SET` (2): a hash table of members.
    Set,
    /// `RDB_TYPE_ZSET` (3): members with scores saved as strings.
    Zset,
    /// `RDB_TYPE_HASH` (4): a hash table of fields and values.
    Hash,
    /// `RDB_TYPE_ZSET_2` (5): zset version 2 with doubles stored in binary.
    Zset2,
    /// `RDB_TYPE_MODULE_PRE_GA` (6): used in 4.0 release candidates.
    ModulePreGa,
    /// `RDB_TYPE_MODULE_2` (7): module value with annotations for parsing without the
    /// generating module being loaded.
    Module2,
    /// `RDB_TYPE_HASH_ZIPMAP` (9): a zipmap (Redis 2.4 and earlier).
    HashZipmap,
    /// `RDB_TYPE_LIST_ZIPLIST` (10).
    ListZiplist,
    /// `RDB_TYPE_SET_INTSET` (11).
    SetIntset,
    /// `RDB_TYPE_ZSET_ZIPLIST` (12).
    ZsetZiplist,
    /// `RDB_TYPE_HASH_ZIPLIST` (13).
    HashZiplist,
    /// `RDB_TYPE_LIST_QUICKLIST` (14): a list of ziplists (Redis 3.2 to 6.2).
    ListQuicklist,
    /// `RDB_TYPE_STREAM_LISTPACKS` (15): a stream (Redis 5 and 6).
    StreamListpacks,
    /// `RDB_TYPE_HASH_LISTPACK` (16), added in RDB 10 (7.0).
    HashListpack,
    /// `RDB_TYPE_ZSET_LISTPACK` (17).
    ZsetListpack,
    /// `RDB_TYPE_LIST_QUICKLIST_2` (18): a list of plain or packed (listpack) nodes.
    ListQuicklist2,
    /// `RDB_TYPE_STREAM_LISTPACKS_2` (19): adds the first and max-deleted IDs, entries-added
    /// and consumer group offsets (7.0).
    StreamListpacks2,
    /// `RDB_TYPE_SET_LISTPACK` (20), added in RDB 11 (7.2).
    SetListpack,
    /// `RDB_TYPE_STREAM_LISTPACKS_3` (21): adds consumers' active time (7.2).
    StreamListpacks3,
    /// `RDB_TYPE_HASH_METADATA_PRE_GA` (Redis, 22): hash with field TTLs, 7.4 RC.
    HashMetadataPreGa,
    /// `RDB_TYPE_HASH_LISTPACK_EX_PRE_GA` (Redis, 23): listpack hash with field TTLs, 7.4 RC.
    HashListpackExPreGa,
    /// `RDB_TYPE_HASH_METADATA` (Redis, 24): hash with field TTLs, min TTL first.
    HashMetadata,
    /// `RDB_TYPE_HASH_LISTPACK_EX` (Redis, 25): listpack hash with field TTLs, min TTL first.
    HashListpackEx,
    /// `RDB_TYPE_HASH_2` (Valkey, 22): hash with field-level expiration, RDB 80 (9.0).
    Hash2,
}

impl RdbType {
    /// The type `byte` means in a file with this magic, if it is a value type.
    pub fn from_byte(byte: u8, magic: Magic) -> Option<RdbType> {
        Some(match (byte, magic) {
            (0, _) => RdbType::String,
            (1, _) => RdbType::List,
            (2, _) => RdbType::Set,
            (3, _) => RdbType::Zset,
            (4, _) => RdbType::Hash,
            (5, _) => RdbType::Zset2,
            (6, _) => RdbType::ModulePreGa,
            (7, _) => RdbType::Module2,
            (9, _) => RdbType::HashZipmap,
            (10, _) => RdbType::ListZiplist,
            (11, _) => RdbType::SetIntset,
            (12, _) => RdbType::ZsetZiplist,
            (13, _) => RdbType::HashZiplist,
            (14, _) => RdbType::ListQuicklist,
            (15, _) => RdbType::StreamListpacks,
            (16, _) => RdbType::HashListpack,
            (17, _) => RdbType::ZsetListpack,
            (18, _) => RdbType::ListQuicklist2,
            (19, _) => RdbType::StreamListpacks2,
            (20, _) => RdbType::SetListpack,
            (21, _) => RdbType::StreamListpacks3,
            (22, Magic::Redis) => RdbType::HashMetadataPreGa,
            (23, Magic::Redis) => RdbType::HashListpackExPreGa,
            (24, Magic::Redis) => RdbType::HashMetadata,
            (25, Magic::Redis) => RdbType::HashListpackEx,
            (22, Magic::Valkey) => RdbType::Hash2,
            _ => return None,
        })
    }

    /// The byte written before the key.
    pub fn byte(self) -> u8 {
        match self {
            RdbType::String => 0,
            RdbType::List => 1,
            RdbType::Set => 2,
            RdbType::Zset => 3,
            RdbType::Hash => 4,
            RdbType::Zset2 => 5,
            RdbType::ModulePreGa => 6,
            RdbType::Module2 => 7,
            RdbType::HashZipmap => 9,
            RdbType::ListZiplist => 10,
            RdbType::SetIntset => 11,
            RdbType::ZsetZiplist => 12,
            RdbType::HashZiplist => 13,
            RdbType::ListQuicklist => 14,
            RdbType::StreamListpacks => 15,
            RdbType::HashListpack => 16,
            RdbType::ZsetListpack => 17,
            RdbType::ListQuicklist2 => 18,
            RdbType::StreamListpacks2 => 19,
            RdbType::SetListpack => 20,
            RdbType::StreamListpacks3 => 21,
            RdbType::HashMetadataPreGa | RdbType::Hash2 => 22,
            RdbType::HashListpackExPreGa => 23,
            RdbType::HashMetadata => 24,
            RdbType::HashListpackEx => 25,
        }
    }

    /// The kind of value, as `TYPE` reports it.
    pub fn object_type(self) -> ObjectType {
        match self {
            RdbType::String => ObjectType::String,
            RdbType::List
            | RdbType::ListZiplist
            | RdbType::ListQuicklist
            | RdbType::ListQuicklist2 => ObjectType::List,
            RdbType::Set | RdbType::SetIntset | RdbType::SetListpack => ObjectType::Set,
            RdbType::Zset | RdbType::Zset2 | RdbType::ZsetZiplist | RdbType::ZsetListpack => {
                ObjectType::Zset
            }
            RdbType::Hash
            | RdbType::HashZipmap
            | RdbType::HashZiplist
            | RdbType::HashListpack
            | RdbType::HashMetadataPreGa
            | RdbType::HashListpackExPreGa
            | RdbType::HashMetadata
            | RdbType::HashListpackEx
            | RdbType::Hash2 => ObjectType::Hash,
            RdbType::StreamListpacks | RdbType::StreamListpacks2 | RdbType::StreamListpacks3 => {
                ObjectType::Stream
            }
            RdbType::ModulePreGa | RdbType::Module2 => ObjectType::Module,
        }
    }

    /// How the value is laid out in the file, in the words `OBJECT ENCODING` uses for the
    /// same structures in memory.
    pub fn encoding(self) -> &'static str {
        match self {
            RdbType::String => "string",
            RdbType::List => "linkedlist",
            RdbType::Set
            | RdbType::Hash
            | RdbType::HashMetadataPreGa
            | RdbType::HashMetadata
            | RdbType::Hash2 => "hashtable",
            RdbType::Zset | RdbType::Zset2 => "skiplist",
            RdbType::ModulePreGa | RdbType::Module2 => "module",
            RdbType::HashZipmap => "zipmap",
            RdbType::ListZiplist | RdbType::ZsetZiplist | RdbType::HashZiplist => "ziplist",
            RdbType::SetIntset => "intset",
            RdbType::ListQuicklist | RdbType::ListQuicklist2 => "quicklist",
            RdbType::StreamListpacks | RdbType::StreamListpacks2 | RdbType::StreamListpacks3 => {
                "stream"
            }
            RdbType::HashListpack | RdbType::ZsetListpack | RdbType::SetListpack => "listpack",
            RdbType::HashListpackExPreGa | RdbType::HashListpackEx => "listpackex",
        }
    }

    /// The name `rdb.h` gives the type.
    pub fn name(self) -> &'static str {
        match self {
            RdbType::String => "RDB_TYPE_STRING",
            RdbType::List => "RDB_TYPE_LIST",
            RdbType::Set => "RDB_TYPE_SET",
            RdbType::Zset => "RDB_TYPE_ZSET",
            RdbType::Hash => "RDB_TYPE_HASH",
            RdbType::Zset2 => "RDB_TYPE_ZSET_2",
            RdbType::ModulePreGa => "RDB_TYPE_MODULE_PRE_GA",
            RdbType::Module2 => "RDB_TYPE_MODULE_2",
            RdbType::HashZipmap => "RDB_TYPE_HASH_ZIPMAP",
            RdbType::ListZiplist => "RDB_TYPE_LIST_ZIPLIST",
            RdbType::SetIntset => "RDB_TYPE_SET_INTSET",
            RdbType::ZsetZiplist => "RDB_TYPE_ZSET_ZIPLIST",
            RdbType::HashZiplist => "RDB_TYPE_HASH_ZIPLIST",
            RdbType::ListQuicklist => "RDB_TYPE_LIST_QUICKLIST",
            RdbType::StreamListpacks => "RDB_TYPE_STREAM_LISTPACKS",
            RdbType::HashListpack => "RDB_TYPE_HASH_LISTPACK",
            RdbType::ZsetListpack => "RDB_TYPE_ZSET_LISTPACK",
            RdbType::ListQuicklist2 => "RDB_TYPE_LIST_QUICKLIST_2",
            RdbType::StreamListpacks2 => "RDB_TYPE_STREAM_LISTPACKS_2",
            RdbType::SetListpack => "RDB_TYPE_SET_LISTPACK",
            RdbType::StreamListpacks3 => "RDB_TYPE_STREAM_LISTPACKS_3",
            RdbType::HashMetadataPreGa => "RDB_TYPE_HASH_METADATA_PRE_GA",
            RdbType::HashListpackExPreGa => "RDB_TYPE_HASH_LISTPACK_EX_PRE_GA",
            RdbType::HashMetadata => "RDB_TYPE_HASH_METADATA",
            RdbType::HashListpackEx => "RDB_TYPE_HASH_LISTPACK_EX",
            RdbType::Hash2 => "RDB_TYPE_HASH_2",
        }
    }
}

impl fmt::Display for RdbType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A module type's 64-bit ID: a 9-character name in the upper 54 bits and a 10-bit encoding
/// version in the lower 10 (`moduleTypeNameByID`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleId(pub u64);

/// `ModuleTypeNameCharSet`: the 64 characters a module type name may use.
const MODULE_NAME_CHARSET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl ModuleId {
    /// The module type name, as `TYPE` reports its values (`MBbloom--`).
    pub fn name(self) -> String {
        let mut id = self.0 >> 10;
        let mut name = [0u8; 9];
        for slot in name.iter_mut().rev() {
            *slot = MODULE_NAME_CHARSET[(id & 63) as usize];
            id >>= 6;
        }
        name.iter().map(|&b| char::from(b)).collect()
    }

    /// The encoding version the module saved the value with.
    pub fn encver(self) -> u16 {
        (self.0 & 1023) as u16
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleId({}, encver {})", self.name(), self.encver())
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A stream entry ID, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// An ID as streams store it in keys of their radix tree and PELs: two big-endian u64.
    pub fn from_be_bytes(bytes: [u8; 16]) -> StreamId {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&bytes[..8]);
        seq.copy_from_slice(&bytes[8..]);
        StreamId {
            ms: u64::from_be_bytes(ms),
            seq: u64::from_be_bytes(seq),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_table_depends_on_the_magic_from_22_up() {
        for byte in 0..=21u8 {
            assert_eq!(
                RdbType::from_byte(byte, Magic::Redis),
                RdbType::from_byte(byte, Magic::Valkey)
            );
            if let Some(t) = RdbType::from_byte(byte, Magic::Redis) {
                assert_eq!(t.byte(), byte);
            }
        }
        assert_eq!(RdbType::from_byte(8, Magic::Redis), None);
        assert_eq!(
            RdbType::from_byte(22, Magic::Redis),
            Some(RdbType::HashMetadataPreGa)
        );
        assert_eq!(RdbType::from_byte(22, Magic::Valkey), Some(RdbType::Hash2));
        assert_eq!(
            RdbType::from_byte(25, Magic::Redis),
            Some(RdbType::HashListpackEx)
        );
        assert_eq!(RdbType::from_byte(23, Magic::Valkey), None);
        assert_eq!(RdbType::from_byte(26, Magic::Redis), None);
        for byte in 0..=255u8 {
            for magic in [Magic::Redis, Magic::Valkey] {
                if let Some(t) = RdbType::from_byte(byte, magic) {
                    assert_eq!(t.byte(), byte);
                    assert!(t.name().starts_with("RDB_TYPE_"));
                }
            }
        }
        assert_eq!(Magic::of_version(11), Magic::Redis);
        assert_eq!(Magic::of_version(80), Magic::Valkey);
    }

    #[test]
    fn headers_print_as_written() {
        let redis = Header {
            magic: Magic::Redis,
            version: 11,
        };
        assert_eq!(&redis.to_bytes(), b"REDIS0011");
        assert!(redis.has_checksum());
        let valkey = Header {
            magic: Magic::Valkey,
            version: 80,
        };
        assert_eq!(valkey.to_string(), "VALKEY080");
    }

    #[test]
    fn module_ids_name_their_type() {
        // "MBbloom--" encver 1, as RedisBloom registers it.
        let name = b"MBbloom--";
        let mut id = 0u64;
        for &c in name {
            let index = MODULE_NAME_CHARSET.iter().position(|&x| x == c).unwrap() as u64;
            id = (id << 6) | index;
        }
        let id = ModuleId((id << 10) | 1);
        assert_eq!(id.name(), "MBbloom--");
        assert_eq!(id.encver(), 1);
        assert_eq!(format!("{id:?}"), "ModuleId(MBbloom--, encver 1)");
    }

    #[test]
    fn stream_ids_read_big_endian() {
        let mut bytes = [0u8; 16];
        bytes[7] = 5;
        bytes[15] = 2;
        assert_eq!(StreamId::from_be_bytes(bytes).to_string(), "5-2");
    }
}
