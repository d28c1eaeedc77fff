//! Seeded differences of every kind on every type, on a clean copy of a dataset: each found
//! with the right kind, and nothing else reported.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_fixtures::data::{Expiry, KeySpec};
use ferry_fixtures::Dataset;
use ferry_verifier::{Cause, Detail, DiffKind, Format, KeyType, TtlChange};

use crate::copy::{copy, Nodes};
use crate::shared::{clusters, config, kinds, of, run, show};

const PATTERN: &str = "*kinds:*";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Picks distinct keys of a type, with or without a TTL.
struct Picker {
    specs: Vec<KeySpec>,
    used: BTreeSet<Vec<u8>>,
}

impl Picker {
    fn take(&mut self, ty: &str, ttl: Option<bool>, binary: bool) -> Vec<u8> {
        let spec = self
            .specs
            .iter()
            .find(|s| {
                s.kind.redis_type() == ty
                    && !self.used.contains(&s.key)
                    && ttl.is_none_or(|t| t == matches!(s.expiry, Expiry::At(_)))
                    && std::str::from_utf8(&s.key).is_err() == binary
            })
            .unwrap_or_else(|| panic!("no {ty} key with ttl {ttl:?} binary {binary} left"));
        self.used.insert(spec.key.clone());
        spec.key.clone()
    }
}

const TYPES: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];

#[test]
fn every_kind_on_every_type_is_found_with_its_kind() {
    let pair = clusters();
    let dataset = Dataset::new(41).prefix("kinds").scale(3_000);
    dataset.load(&pair.source).unwrap();
    copy(&pair.source, &pair.target, PATTERN);
    let clean = run(&config(&pair.source, &pair.target, PATTERN));
    assert!(clean.is_consistent(), "{}", show(&clean));

    let mut src = Nodes::new(&pair.source);
    let mut tgt = Nodes::new(&pair.target);
    let mut pick = Picker {
        specs: dataset.keys().collect(),
        used: BTreeSet::new(),
    };
    let mut expected: BTreeMap<Vec<u8>, Vec<DiffKind>> = BTreeMap::new();
    let later = now_ms() + 7_200_000;
    for ty in TYPES {
        // Missing: deleted on the target.
        let key = pick.take(ty, None, false);
        let _: () = tgt.run(&key, redis::cmd("DEL").arg(&key));
        expected.insert(key, vec![DiffKind::Missing]);
        // Extra: deleted on the source.
        let key = pick.take(ty, None, false);
        let _: () = src.run(&key, redis::cmd("DEL").arg(&key));
        expected.insert(key, vec![DiffKind::Extra]);
        // Type: replaced by another type on the target.
        let key = pick.take(ty, None, false);
        let _: () = tgt.run(&key, redis::cmd("DEL").arg(&key));
        if ty == "string" {
            let _: () = tgt.run(&key, redis::cmd("SADD").arg(&key).arg("m"));
        } else {
            let _: () = tgt.run(&key, redis::cmd("SET").arg(&key).arg("v"));
        }
        expected.insert(key, vec![DiffKind::Type]);
        // TTL lost, added and changed.
        let key = pick.take(ty, Some(true), false);
        let _: () = tgt.run(&key, redis::cmd("PERSIST").arg(&key));
        expected.insert(key, vec![DiffKind::Ttl]);
        let key = pick.take(ty, Some(false), false);
        let _: () = tgt.run(&key, redis::cmd("PEXPIREAT").arg(&key).arg(later));
        expected.insert(key, vec![DiffKind::Ttl]);
        let key = pick.take(ty, Some(true), false);
        let at: i64 = tgt.run(&key, redis::cmd("PEXPIRETIME").arg(&key));
        let _: () = tgt.run(&key, redis::cmd("PEXPIREAT").arg(&key).arg(at + 60_000));
        expected.insert(key, vec![DiffKind::Ttl]);
        // Value: changed on the target.
        let key = pick.take(ty, None, false);
        change_value(&mut tgt, ty, &key);
        expected.insert(key, vec![DiffKind::Value]);
        // A value and a TTL change on one key.
        let key = pick.take(ty, Some(true), false);
        change_value(&mut tgt, ty, &key);
        let _: () = tgt.run(&key, redis::cmd("PERSIST").arg(&key));
        expected.insert(key, vec![DiffKind::Ttl, DiffKind::Value]);
    }
    // Binary names, missing and changed.
    let binary_missing = pick.take("string", None, true);
    let _: () = tgt.run(&binary_missing, redis::cmd("DEL").arg(&binary_missing));
    expected.insert(binary_missing.clone(), vec![DiffKind::Missing]);
    let binary_changed = pick.take("hash", None, true);
    change_value(&mut tgt, "hash", &binary_changed);
    expected.insert(binary_changed, vec![DiffKind::Value]);
    // Keys only on the target, of every type, under names the source never had.
    for ty in TYPES {
        let key = format!("kinds:only-target:{ty}").into_bytes();
        create(&mut tgt, ty, &key);
        expected.insert(key, vec![DiffKind::Extra]);
    }

    let mut cfg = config(&pair.source, &pair.target, PATTERN);
    cfg.rounds = 2;
    let report = run(&cfg);
    let text = show(&report);
    assert!(!report.is_consistent());
    let found: BTreeMap<Vec<u8>, Vec<DiffKind>> = report
        .differences
        .iter()
        .map(|d| (d.key.as_bytes().to_vec(), kinds(&report, d.key.as_bytes())))
        .collect();
    for (key, want) in &expected {
        assert_eq!(
            found.get(key),
            Some(want),
            "key {}\n{text}",
            key.escape_ascii()
        );
    }
    assert_eq!(
        found.len(),
        expected.len(),
        "unexpected differences:\n{text}"
    );
    assert!(report.unstable.is_empty(), "{text}");
    assert_eq!(report.counts.differing_keys, expected.len() as u64);
    // Every type and kind is in the breakdown.
    for ty in [
        KeyType::String,
        KeyType::List,
        KeyType::Set,
        KeyType::Zset,
        KeyType::Hash,
        KeyType::Stream,
    ] {
        for kind in DiffKind::ALL {
            assert!(
                report
                    .breakdown
                    .iter()
                    .any(|r| r.key_type == ty && r.kind == kind && r.count > 0),
                "no {kind} {ty} in the breakdown\n{text}"
            );
        }
    }
    // The binary name is escaped in JSON and flagged.
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    let escaped = binary_missing.escape_ascii().to_string();
    let entry = json["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == escaped.as_str())
        .unwrap_or_else(|| panic!("{escaped} not in the JSON report"));
    assert_eq!(entry["key_escaped"], true);
    // TTL details say what happened.
    let ttl_changes: BTreeSet<String> = report
        .differences
        .iter()
        .filter_map(|d| match &d.detail {
            Some(Detail::Ttl { change, .. }) => Some(format!("{change:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(ttl_changes.len(), 3, "{ttl_changes:?}");
    let _ = TtlChange::Lost;
    // No cause is made up for these differences.
    assert!(
        report
            .differences
            .iter()
            .all(|d| !matches!(d.cause, Some(Cause::Evicted { .. }))),
        "{text}"
    );
    let _ = of(&report, b"");
}

/// Changes the value of `key` (of type `ty`) on `nodes` in place.
fn change_value(nodes: &mut Nodes, ty: &str, key: &[u8]) {
    let cmd = match ty {
        "string" => {
            let mut cmd = redis::cmd("APPEND");
            cmd.arg(key).arg("!");
            cmd
        }
        "list" => {
            let mut cmd = redis::cmd("LSET");
            cmd.arg(key).arg(0).arg("changed");
            cmd
        }
        "set" => {
            let mut cmd = redis::cmd("SADD");
            cmd.arg(key).arg("added-member");
            cmd
        }
        "zset" => {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(key).arg(1.5).arg("added-member");
            cmd
        }
        "hash" => {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(key).arg("added-field").arg("v");
            cmd
        }
        "stream" => {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(key).arg("*").arg("f").arg("v");
            cmd
        }
        other => panic!("{other}"),
    };
    let _: redis::Value = nodes.run(key, &cmd);
}

/// Creates `key` of type `ty`.
fn create(nodes: &mut Nodes, ty: &str, key: &[u8]) {
    let mut cmd = match ty {
        "string" => redis::cmd("SET"),
        "list" => redis::cmd("RPUSH"),
        "set" => redis::cmd("SADD"),
        "zset" => {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(key).arg(1);
            let _: redis::Value = nodes.run(key, cmd.arg("m"));
            return;
        }
        "hash" => {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(key).arg("f");
            let _: redis::Value = nodes.run(key, cmd.arg("v"));
            return;
        }
        "stream" => {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(key).arg("*").arg("f");
            let _: redis::Value = nodes.run(key, cmd.arg("v"));
            return;
        }
        other => panic!("{other}"),
    };
    cmd.arg(key).arg("v");
    let _: redis::Value = nodes.run(key, &cmd);
}
