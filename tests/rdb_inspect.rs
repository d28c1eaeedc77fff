//! `ferry rdb inspect` as a person runs it: JSON lines per key and a summary, a table without
//! `--json`, and one error line with the byte offset (exit 2) for a bad or missing file.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use ferry_fixtures::{LocalServer, Node};
use serde_json::Value;

fn corpus(name: &str) -> String {
    format!("{}/../shared/rdb-corpus/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("running ferry")
}

/// The key lines and the summary of `ferry rdb inspect --json FILE`.
fn inspect_json(file: &str) -> (Vec<Value>, Value) {
    let output = ferry(&["rdb", "inspect", "--json", file]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let mut lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary = lines.pop().expect("a summary line")["summary"].clone();
    assert!(summary.is_object(), "the last line is the summary");
    (lines, summary)
}

/// Exit 2 and exactly one `error: ...` line on stderr, nothing on stdout.
fn assert_fails(args: &[&str]) -> String {
    let output = ferry(args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(output.stdout.is_empty());
    stderr
}

#[test]
fn keys_with_expiry_report_the_expire_time_and_count_as_expired() {
    let (keys, summary) = inspect_json(&corpus("rdb-tools/keys_with_expiry.rdb"));
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["db"], 0);
    assert_eq!(key["key"], "expires_ms_precision");
    assert_eq!(key["key_escaped"], false);
    assert_eq!(key["type"], "string");
    assert_eq!(key["encoding"], "string");
    assert_eq!(key["expire_at_ms"], 1_671_963_072_573i64);
    assert_eq!(key["len"], 27);
    assert!(key["rdb_bytes"].as_u64().unwrap() >= 27);
    assert_eq!(summary["keys"], 1);
    assert_eq!(summary["keys_with_expiry"], 1);
    // It expired in 2022.
    assert_eq!(summary["expired_keys"], 1);
    assert_eq!(summary["rdb_version"], 4);
    assert_eq!(summary["header"], "REDIS0004");
    assert_eq!(summary["checksum"], "absent");
}

#[test]
fn keys_carry_their_database_and_the_summary_counts_each() {
    let (keys, summary) = inspect_json(&corpus("rdb-tools/multiple_databases.rdb"));
    let found: Vec<(u64, &str)> = keys
        .iter()
        .map(|k| (k["db"].as_u64().unwrap(), k["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [(0, "key_in_zeroth_database"), (2, "key_in_second_database")]
    );
    for key in &keys {
        assert_eq!(key["expire_at_ms"], Value::Null);
    }
    assert_eq!(summary["databases"], serde_json::json!({"0": 1, "2": 1}));
    assert_eq!(summary["by_type"]["string"]["keys"], 2);
}

#[test]
fn summary_counts_types_and_encodings_and_orders_the_biggest_keys() {
    let file = corpus("redis-tests/encodings.rdb");
    let (keys, summary) = inspect_json(&file);
    assert_eq!(keys.len(), 13);
    assert_eq!(summary["keys"], 13);
    let by_type: BTreeMap<String, u64> = summary["by_type"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, tally)| (name.clone(), tally["keys"].as_u64().unwrap()))
        .collect();
    let expected: BTreeMap<String, u64> = [
        ("hash", 2),
        ("list", 2),
        ("set", 4),
        ("string", 3),
        ("zset", 2),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    assert_eq!(by_type, expected);
    let intsets = summary["by_encoding"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "set" && e["encoding"] == "intset")
        .expect("intset sets");
    assert_eq!(intsets["keys"], 3);

    let biggest = summary["biggest_keys"].as_array().unwrap();
    assert_eq!(biggest.len(), 10);
    let sizes: Vec<u64> = biggest
        .iter()
        .map(|k| k["rdb_bytes"].as_u64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    let largest = keys
        .iter()
        .map(|k| k["rdb_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(sizes[0], largest);
    let total: u64 = keys.iter().map(|k| k["rdb_bytes"].as_u64().unwrap()).sum();
    assert_eq!(summary["rdb_bytes"], total);
    assert_eq!(
        summary["file_bytes"],
        std::fs::metadata(&file).unwrap().len()
    );

    // Without --json: a table of the summary and the biggest keys, not every key.
    let table = ferry(&["rdb", "inspect", &file]);
    assert_eq!(table.status.code(), Some(0));
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("REDIS0004"), "{table}");
    assert!(table.contains("biggest keys"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("set") && l.contains("intset") && l.contains(" 3 ")),
        "{table}"
    );
    let smallest = keys
        .iter()
        .min_by_key(|k| k["rdb_bytes"].as_u64().unwrap())
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!table.contains(&format!(" {smallest}\n")), "{table}");
    let listed = ferry(&["rdb", "inspect", "--keys", "--top", "1", &file]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains(&format!(" {smallest}\n")), "{listed}");
}

#[test]
fn aux_fields_and_checksum_are_in_the_summary() {
    let (keys, summary) = inspect_json(&corpus("rdb-tools/non_ascii_values.rdb"));
    assert_eq!(keys.len(), 6);
    assert_eq!(summary["aux"]["redis-ver"], "3.2.6");
    assert_eq!(summary["checksum"], "verified");
    assert_eq!(summary["rdb_version"], 7);
}

#[test]
fn a_file_saved_by_redis_with_binary_keys_and_a_stream() {
    let server = LocalServer::builder().start().unwrap();
    let node: &dyn Node = server.master();
    let binary_key: &[u8] = b"bin\x00\xff\n";
    let _: () = node
        .query(redis::cmd("SET").arg(binary_key).arg("v"))
        .unwrap();
    let _: () = node
        .query(redis::cmd("SET").arg("caf\u{e9}\n").arg("v"))
        .unwrap();
    let _: () = node
        .query(
            redis::cmd("SET")
                .arg("soon")
                .arg("v")
                .arg("PX")
                .arg(600_000),
        )
        .unwrap();
    for i in 0..5 {
        let _: String = node
            .query(
                redis::cmd("XADD")
                    .arg("events")
                    .arg(format!("{}-0", i + 1))
                    .arg("n")
                    .arg(i),
            )
            .unwrap();
    }
    let _: () = node
        .query(
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg("events")
                .arg("g")
                .arg("0"),
        )
        .unwrap();
    let _: () = node
        .query(redis::cmd("HSET").arg("h").arg("f").arg("v"))
        .unwrap();
    let _: () = node.query(&redis::cmd("SAVE")).unwrap();
    let dump = server.master().dir().join("dump.rdb");
    let (keys, summary) = inspect_json(dump.to_str().unwrap());

    let by_name: BTreeMap<&str, &Value> = keys
        .iter()
        .map(|k| (k["key"].as_str().unwrap(), k))
        .collect();
    let binary = by_name[r"bin\x00\xff\n"];
    assert_eq!(binary["key_escaped"], true);
    let text = by_name["caf\u{e9}\n"];
    assert_eq!(text["key_escaped"], false);
    let stream = by_name["events"];
    assert_eq!(stream["type"], "stream");
    assert_eq!(stream["encoding"], "stream");
    assert_eq!(stream["len"], 5);
    let hash = by_name["h"];
    assert_eq!(
        (&hash["type"], &hash["encoding"]),
        (&"hash".into(), &"listpack".into())
    );
    let soon = by_name["soon"]["expire_at_ms"].as_i64().unwrap();
    assert!(soon > summary["expired_as_of_ms"].as_i64().unwrap());
    assert_eq!(summary["keys_with_expiry"], 1);
    assert_eq!(summary["expired_keys"], 0);
    assert_eq!(summary["keys"], 5);
    assert_eq!(summary["header"], "REDIS0010");
    assert_eq!(summary["checksum"], "verified");
    let redis_ver: String = summary["aux"]["redis-ver"].as_str().unwrap().to_string();
    assert!(redis_ver.starts_with("7."), "{redis_ver}");
}

#[test]
fn empty_collections_are_counted_not_refused() {
    // Redis loads this file and drops its empty keys; RESTORE would refuse them.
    let (keys, summary) = inspect_json(&corpus("redis-tests/corrupt_empty_keys.rdb"));
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k["len"] == 0));
    assert_eq!(summary["empty_keys"], keys.len());
}

#[test]
fn a_corrupt_file_is_one_error_line_with_the_offset() {
    let stderr = assert_fails(&["rdb", "inspect", &corpus("redis-tests/corrupt_ziplist.rdb")]);
    assert!(stderr.contains("corrupt_ziplist.rdb"), "{stderr}");
    assert!(stderr.contains("invalid ziplist"), "{stderr}");
    assert!(stderr.contains("at offset 488"), "{stderr}");
}

#[test]
fn a_truncated_file_names_where_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(corpus("rdb-tools/dictionary.rdb")).unwrap();
    let cut = dir.path().join("cut.rdb");
    std::fs::write(&cut, &whole[..70_000]).unwrap();
    let stderr = assert_fails(&["rdb", "inspect", "--json", cut.to_str().unwrap()]);
    assert!(stderr.contains("input ends at offset 70000"), "{stderr}");

    let not_rdb = dir.path().join("notes.txt");
    std::fs::write(&not_rdb, "hello, this is not an rdb file\n").unwrap();
    let stderr = assert_fails(&["rdb", "inspect", not_rdb.to_str().unwrap()]);
    assert!(stderr.contains("not an rdb file"), "{stderr}");
    assert!(stderr.contains("offset 0"), "{stderr}");
}

#[test]
fn a_missing_file_is_one_error_line() {
    let stderr = assert_fails(&["rdb", "inspect", "/nonexistent/dump.rdb"]);
    assert!(stderr.contains("/nonexistent/dump.rdb"), "{stderr}");
}
