//! `RESTORE` payloads built from the raw value bytes the parser hands out.

use ferry_engine::rdb::payload::{self, Payload};
use ferry_engine::rdb::RdbType;

use super::model::{bulk, Model, Parsed};

fn digest(con: &mut redis::Connection, key: &[u8]) -> Vec<u8> {
    let reply: redis::Value = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(con)
        .expect("DEBUG DIGEST-VALUE");
    match &reply {
        redis::Value::Array(digests) => bulk(&digests[0]),
        one => bulk(one),
    }
}

/// For every key of `keys`: the payload built from its raw bytes restores (`RESTORE key
/// <expire> payload ABSTTL`) to the same `DEBUG DIGEST-VALUE` as the key the server loaded
/// (the digest covers whether a key has an expire time). Returns how many.
pub fn assert_payloads_restore(
    con: &mut redis::Connection,
    parsed: &Parsed,
    keys: &Model,
    what: &str,
) -> usize {
    let version = parsed.header.expect("header").version;
    let mut restored = 0;
    for (i, ((db, key), entry)) in keys.iter().enumerate() {
        let (rdb_type, raw) = parsed
            .raw
            .get(&(*db, key.clone()))
            .unwrap_or_else(|| panic!("{what}: no raw bytes for {}", key.escape_ascii()));
        let payload = payload::build(*rdb_type, raw, version);
        let _: () = redis::cmd("SELECT").arg(*db).query(con).expect("SELECT");
        let copy = format!("ferry:restored:{i}");
        let _: () = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(entry.expire_at_ms.unwrap_or(0))
            .arg(&payload)
            .arg("REPLACE")
            .arg("ABSTTL")
            .query(con)
            .unwrap_or_else(|e| {
                panic!(
                    "{what}: RESTORE of {} ({rdb_type}): {e}",
                    key.escape_ascii()
                )
            });
        assert_eq!(
            digest(con, key),
            digest(con, copy.as_bytes()),
            "{what}: digest of {} restored from its {rdb_type} payload",
            key.escape_ascii()
        );
        let _: () = redis::cmd("DEL").arg(&copy).query(con).expect("DEL");
        restored += 1;
    }
    restored
}

/// For every key of `keys`: `DUMP` on the server that wrote the file returns the payload
/// built from the parsed raw bytes (both come from `rdbSaveObject`): the same bytes, but for
/// hash tables, whose iteration order may change between two walks (Valkey 9 resizes them).
pub fn assert_dump_equals_payload(
    con: &mut redis::Connection,
    parsed: &Parsed,
    keys: &Model,
    what: &str,
) {
    let version = parsed.header.expect("header").version;
    for (db, key) in keys.keys() {
        let (rdb_type, raw) = &parsed.raw[&(*db, key.clone())];
        let _: () = redis::cmd("SELECT").arg(*db).query(con).expect("SELECT");
        let dumped: Vec<u8> = redis::cmd("DUMP").arg(key).query(con).expect("DUMP");
        let read = Payload::read(&dumped)
            .unwrap_or_else(|e| panic!("{what}: DUMP of {}: {e}", key.escape_ascii()));
        assert_eq!(read.rdb_type, *rdb_type, "{what}: {}", key.escape_ascii());
        assert_eq!(read.version, version, "{what}: {}", key.escape_ascii());
        assert_eq!(
            read.value.len(),
            raw.len(),
            "{what}: {}",
            key.escape_ascii()
        );
        let hash_table = matches!(
            rdb_type,
            RdbType::Set | RdbType::Hash | RdbType::Zset2 | RdbType::Hash2
        );
        if hash_table {
            continue;
        }
        assert!(
            read.value == &raw[..],
            "{what}: DUMP of {} differs from the file's bytes: {} vs {}",
            key.escape_ascii(),
            read.value.escape_ascii(),
            raw.escape_ascii()
        );
        assert_eq!(dumped, payload::build(*rdb_type, raw, version));
    }
}
