//! RDB files written by real servers of every supported build, from data of every type and
//! encoding: the parser reports exactly the live data, raw values restore as `DUMP` payloads,
//! and a snapshot read over a replication link parses as it streams in.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferry_engine::rdb::{Checksum, Config, Magic, Parser, RdbType};
use ferry_engine::resp::{Limits, ReplEvent, ReplicationStream};
use ferry_fixtures::data::BigKeys;
use ferry_fixtures::{conn, Dataset, Family, LocalServer, Node, ServerBinary};

use super::model::{assert_same, live, now_ms, parse_file, Abilities, Data, Parsed};
use super::payloads::{assert_dump_equals_payload, assert_payloads_restore};

/// The builds `ci/setup.sh` installs, or `None` (said loudly) when one is missing.
fn cached(name: &str) -> Option<ServerBinary> {
    match ServerBinary::cached(name) {
        Ok(binary) => Some(binary),
        Err(e) => {
            eprintln!("SKIPPED: {name} is not installed ({e}); run ci/setup.sh");
            None
        }
    }
}

fn cmd(con: &mut redis::Connection, args: &[&[u8]]) -> redis::Value {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&args.join(&b' '))))
}

/// Data of every type and encoding: the fixtures dataset (with big keys) plus what it does
/// not cover: other databases, LZF-compressible strings, plain quicklist nodes, functions,
/// and hash field expiration where the server has it.
fn fill(server: &LocalServer, binary: &ServerBinary) {
    let big = BigKeys {
        hash_fields: 3000,
        string_bytes: 300_000,
        list_elements: 20_000,
        set_members: 5000,
        zset_members: 5000,
    };
    Dataset::new(7)
        .scale(600)
        .big_keys(big)
        .load(server)
        .expect("loading the dataset");
    let mut con = server.master().connect().expect("connect");
    let modern = binary.family == Family::Valkey || binary.version.major >= 7;
    let compressible = "abc".repeat(400);
    cmd(&mut con, &[b"SET", b"lzf:string", compressible.as_bytes()]);
    cmd(
        &mut con,
        &[b"RPUSH", b"lzf:list", compressible.as_bytes(), b"x"],
    );
    cmd(&mut con, &[b"SET", b"int:big", b"-9223372036854775808"]);
    cmd(&mut con, &[b"SELECT", b"3"]);
    cmd(&mut con, &[b"SET", b"db3:string", b"in db 3"]);
    cmd(&mut con, &[b"SADD", b"db3:set", b"1", b"2", b"300000"]);
    cmd(&mut con, &[b"PEXPIRE", b"db3:set", b"86400000"]);
    cmd(
        &mut con,
        &[
            b"ZADD",
            b"db3:zset",
            b"-inf",
            b"low",
            b"inf",
            b"high",
            b"1.5",
            b"mid",
        ],
    );
    cmd(&mut con, &[b"SELECT", b"0"]);
    if modern {
        // Elements over the threshold go to plain quicklist nodes.
        cmd(
            &mut con,
            &[b"DEBUG", b"QUICKLIST-PACKED-THRESHOLD", b"1000"],
        );
        let element = "p".repeat(5000);
        cmd(
            &mut con,
            &[
                b"RPUSH",
                b"plain:list",
                b"small",
                element.as_bytes(),
                b"tail",
            ],
        );
        cmd(
            &mut con,
            &[
                b"FUNCTION",
                b"LOAD",
                b"#!lua name=ferrylib\nredis.register_function('ferry_f', function(keys, args) return 1 end)",
            ],
        );
    }
    if binary.family == Family::Valkey {
        cmd(
            &mut con,
            &[
                b"HSET",
                b"hfe:hash",
                b"f1",
                b"v1",
                b"f2",
                b"v2",
                b"f3",
                b"3",
            ],
        );
        cmd(
            &mut con,
            &[
                b"HPEXPIRE",
                b"hfe:hash",
                b"3600000",
                b"FIELDS",
                b"2",
                b"f1",
                b"f3",
            ],
        );
    }
}

/// `BGSAVE` and the file it wrote.
fn bgsave(server: &LocalServer) -> Vec<u8> {
    let node = server.master();
    let addr = node.addr();
    let mut con = node.connect().expect("connect");
    // A BGSAVE may be running already (replica sync); then wait for it and start ours.
    conn::poll("BGSAVE to start", Duration::from_secs(30), || {
        redis::cmd("BGSAVE").query::<redis::Value>(&mut con).ok()
    })
    .expect("BGSAVE");
    conn::poll("BGSAVE to finish", Duration::from_secs(60), || {
        let info = conn::info(&addr, "persistence").ok()?;
        // Nothing writes meanwhile, so the save is ours once no change is left unsaved.
        let done =
            info["rdb_bgsave_in_progress"] == "0" && info["rdb_changes_since_last_save"] == "0";
        done.then(|| assert_eq!(info["rdb_last_bgsave_status"], "ok"))
    })
    .expect("BGSAVE done");
    std::fs::read(node.dir().join("dump.rdb")).expect("dump.rdb")
}

fn send(stream: &mut TcpStream, args: &[&str]) {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(out.as_bytes()).expect("send");
}

fn expect_ok(stream: &mut TcpStream) {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("reply");
        line.push(byte[0]);
    }
    assert_eq!(line, b"+OK\r\n", "{}", line.escape_ascii());
}

/// Registers as a replica (announcing `version` when given), takes the snapshot the master
/// sends and parses it chunk by chunk as it arrives: nothing is gathered first.
fn snapshot_over_replication(server: &LocalServer, version: Option<&str>) -> Parsed {
    let addr = server.master().addr();
    let mut stream = TcpStream::connect((addr.host.as_str(), addr.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    send(&mut stream, &["REPLCONF", "capa", "eof", "capa", "psync2"]);
    expect_ok(&mut stream);
    if let Some(version) = version {
        send(&mut stream, &["REPLCONF", "version", version]);
        expect_ok(&mut stream);
    }
    send(&mut stream, &["PSYNC", "?", "-1"]);
    let mut replication = ReplicationStream::new(Limits::default());
    let mut parser = Parser::new(Config::default());
    let mut parsed = Parsed::new(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut chunks = 0;
    loop {
        let n = stream.read(&mut buf).expect("read from the master");
        assert!(
            n > 0,
            "the master closed the link: {}",
            server.master().log_tail(10)
        );
        replication.feed(&buf[..n]);
        while let Some((event, _)) = replication.next_event().expect("replication framing") {
            match event {
                ReplEvent::SnapshotChunk(chunk) => {
                    chunks += 1;
                    parser
                        .feed(&chunk, &mut parsed)
                        .expect("parsing the snapshot");
                }
                ReplEvent::SnapshotEnd { len } => {
                    parser.finish().expect("a complete snapshot");
                    assert_eq!(parser.consumed(), len);
                    assert!(chunks > 1, "the snapshot came in one piece");
                    return parsed;
                }
                ReplEvent::MasterError { message } => {
                    panic!("master refused: {}", message.escape_ascii())
                }
                _ => {}
            }
        }
    }
}

/// Everything about one build: the dump's header, model, expire times, LRU/LFU data, raw
/// payloads, the limit on raw values, and a snapshot taken as a replica.
fn check_build(binary: ServerBinary, policy: &str, magic: Magic, version: u16, types: &[RdbType]) {
    let what = binary.to_string();
    let server = LocalServer::builder()
        .binary(binary.clone())
        .config(format!("maxmemory-policy {policy}"))
        .start()
        .expect("server");
    fill(&server, &binary);
    let file = bgsave(&server);
    let abilities = Abilities {
        pexpiretime: binary.family == Family::Valkey || binary.version.major >= 7,
        field_ttls: binary.family == Family::Valkey,
    };
    let slack = if abilities.pexpiretime { 0 } else { 5000 };

    let parsed = parse_file(&file, 64 * 1024, true, Config::default()).expect(&what);
    let header = parsed.header.expect("header");
    assert_eq!((header.magic, header.version), (magic, version), "{what}");
    assert!(
        matches!(parsed.checksum, Some(Checksum::Verified(_))),
        "{what}"
    );
    let mut con = server.master().connect().expect("connect");
    let held = live(&mut con, abilities);
    assert!(held.len() > 600, "{what}: {} keys", held.len());
    assert_same(&parsed.model, &held, slack, &what);
    if policy.contains("lfu") {
        assert_eq!(parsed.freq, held.len(), "{what}: FREQ opcodes");
    } else {
        assert_eq!(parsed.idle, held.len(), "{what}: IDLE opcodes");
    }
    let expected: std::collections::BTreeSet<RdbType> = types.iter().copied().collect();
    assert_eq!(parsed.types, expected, "{what}: value types in the file");
    let kinds: std::collections::BTreeSet<&str> = parsed
        .model
        .values()
        .map(|e| e.type_name.as_str())
        .collect();
    assert_eq!(kinds.len(), 6, "{what}: {kinds:?}");
    let expiring = parsed
        .model
        .values()
        .filter(|e| e.expire_at_ms.is_some())
        .count();
    assert!(expiring > 50, "{what}: {expiring} keys with an expire time");
    assert!(parsed
        .model
        .values()
        .all(|e| e.expire_at_ms.is_none_or(|t| t > now_ms())));
    if abilities.field_ttls {
        let Data::Hash(hash) = &parsed.model[&(0, b"hfe:hash".to_vec())].data else {
            panic!("hfe:hash is not a hash")
        };
        assert!(hash[&b"f1"[..]].1.is_some() && hash[&b"f2"[..]].1.is_none());
    }
    if binary.family == Family::Valkey || binary.version.major >= 7 {
        assert_eq!(parsed.functions.len(), 1, "{what}: functions");
    }

    // Every value restores from its payload to the same digest, and is what DUMP returns.
    assert_dump_equals_payload(&mut con, &parsed, &held, &what);
    let restored = assert_payloads_restore(&mut con, &parsed, &held, &what);
    assert_eq!(restored, held.len());

    // With a small limit on raw values the big keys come as elements only, and the model
    // is the same.
    let small = Config {
        max_raw_value: 64 * 1024,
        ..Config::default()
    };
    let limited = parse_file(&file, 4096, true, small).expect(&what);
    assert_same(&limited.model, &held, slack, &what);
    let without_raw = limited.model.len() - limited.raw.len();
    assert!(
        without_raw >= 4,
        "{what}: {without_raw} values over the limit"
    );

    // Over a replication link. Valkey 9 sends its own format only to replicas that say
    // they are Valkey 9; to others it sends RDB 11, which cannot hold hash field TTLs
    // ("Can't store key in RDB version 11"), so those go first.
    if magic == Magic::Valkey {
        let snapshot = snapshot_over_replication(&server, Some("9.1.2"));
        let header = snapshot.header.expect("header");
        assert_eq!(
            (header.magic, header.version),
            (Magic::Valkey, 80),
            "{what}"
        );
        assert_same(&snapshot.model, &held, slack, &what);
        cmd(&mut con, &[b"SELECT", b"0"]);
        cmd(&mut con, &[b"DEL", b"hfe:hash"]);
    }
    let held = live(&mut con, abilities);
    let snapshot = snapshot_over_replication(&server, None);
    let header = snapshot.header.expect("header");
    let expected = match magic {
        Magic::Valkey => (Magic::Redis, 11),
        Magic::Redis => (magic, version),
    };
    assert_eq!(
        (header.magic, header.version),
        expected,
        "{what} over replication"
    );
    assert_same(&snapshot.model, &held, slack, &what);
}

#[test]
fn redis_7_0_files_parse_to_the_live_data() {
    let binary = ServerBinary::find().expect("redis-server 7.0");
    use RdbType::*;
    let types = [
        String,
        Set,
        Zset2,
        Hash,
        SetIntset,
        StreamListpacks2,
        HashListpack,
        ZsetListpack,
        ListQuicklist2,
    ];
    check_build(binary, "allkeys-lfu", Magic::Redis, 10, &types);
}

#[test]
fn redis_6_0_files_parse_to_the_live_data() {
    if let Some(binary) = cached("redis-6.0.9") {
        use RdbType::*;
        let types = [
            String,
            Set,
            Zset2,
            Hash,
            SetIntset,
            ZsetZiplist,
            HashZiplist,
            ListQuicklist,
            StreamListpacks,
        ];
        check_build(binary, "allkeys-lru", Magic::Redis, 9, &types);
    }
}

#[test]
fn redis_5_0_files_parse_to_the_live_data() {
    if let Some(binary) = cached("redis-5.0.10") {
        use RdbType::*;
        let types = [
            String,
            Set,
            Zset2,
            Hash,
            SetIntset,
            ZsetZiplist,
            HashZiplist,
            ListQuicklist,
            StreamListpacks,
        ];
        check_build(binary, "volatile-lfu", Magic::Redis, 9, &types);
    }
}

#[test]
fn valkey_9_files_parse_to_the_live_data() {
    if let Some(binary) = cached("valkey-9.1.2") {
        use RdbType::*;
        let types = [
            String,
            Set,
            Zset2,
            Hash,
            SetIntset,
            HashListpack,
            ZsetListpack,
            ListQuicklist2,
            SetListpack,
            StreamListpacks3,
            Hash2,
        ];
        check_build(binary, "allkeys-lru", Magic::Valkey, 80, &types);
    }
}
