//! The command table read from real servers finds the same keys as `COMMAND GETKEYS`: for
//! common commands, and for every command a server flags `movablekeys` (found by the servers'
//! own procedures where no key spec says).

use std::time::Duration;

use bytes::Bytes;
use ferry_engine::link::Link;
use ferry_engine::resp::Frame;
use ferry_engine::route::{CommandTable, Keys};
use ferry_fixtures::{LocalServer, Node, ServerBinary, CACHED_BUILDS};

const SAMPLES: &[&str] = &[
    "SET k v",
    "GET k",
    "MSET a 1 b 2 c 3",
    "DEL a b c",
    "INCRBY counter 5",
    "RPUSH list x y z",
    "LMOVE src dst LEFT RIGHT",
    "BLMOVE src dst LEFT RIGHT 0",
    "LMPOP 2 l1 l2 LEFT COUNT 3",
    "ZUNIONSTORE dest 2 z1 z2 WEIGHTS 1 2",
    "ZINTERSTORE dest 3 z1 z2 z3",
    "EVAL return 1 2 k1 k2 arg",
    "EVALSHA abc 1 k1",
    "XADD stream * f v",
    "XREAD COUNT 2 STREAMS s1 s2 0 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS s1 s2 > >",
    "XGROUP CREATE s g $ MKSTREAM",
    "XAUTOCLAIM s g c 10 0",
    "OBJECT ENCODING k",
    "RENAME a b",
    "SMOVE s1 s2 m",
    "GEOADD geo 13.4 52.5 berlin",
    "BITOP AND dest k1 k2 k3",
    "PFMERGE dest h1 h2",
    "COPY a b",
    "SINTERCARD 2 s1 s2 LIMIT 1",
    "EXPIRE k 10",
    "HSET h f v f2 v2",
];

/// Argument shapes for every command some server flags `movablekeys` (a double space is an
/// empty argument): numkeys 1 to 3, each keyword option, the option that names a key given
/// twice. A server's movablekeys command missing here fails the test.
const MOVABLE_SAMPLES: &[(&str, &[&str])] = &[
    (
        "zunionstore",
        &[
            "ZUNIONSTORE d 1 a",
            "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
            "ZUNIONSTORE d 3 a b c AGGREGATE MAX",
            "ZUNIONSTORE d 2 a b WEIGHTS 2 3 AGGREGATE MIN",
        ],
    ),
    (
        "zinterstore",
        &[
            "ZINTERSTORE d 1 a",
            "ZINTERSTORE d 2 a b WEIGHTS 1 2",
            "ZINTERSTORE d 3 a b c AGGREGATE SUM",
            "ZINTERSTORE d 2 a b WEIGHTS 2 3 AGGREGATE MAX",
        ],
    ),
    (
        "zdiffstore",
        &[
            "ZDIFFSTORE d 1 a",
            "ZDIFFSTORE d 2 a b",
            "ZDIFFSTORE d 3 a b c",
        ],
    ),
    (
        "zunion",
        &[
            "ZUNION 1 a",
            "ZUNION 2 a b WEIGHTS 1 2 WITHSCORES",
            "ZUNION 3 a b c AGGREGATE MAX",
        ],
    ),
    (
        "zinter",
        &[
            "ZINTER 1 a",
            "ZINTER 2 a b WEIGHTS 1 2 WITHSCORES",
            "ZINTER 3 a b c AGGREGATE MIN",
        ],
    ),
    (
        "zdiff",
        &["ZDIFF 1 a", "ZDIFF 2 a b WITHSCORES", "ZDIFF 3 a b c"],
    ),
    (
        "zintercard",
        &[
            "ZINTERCARD 1 a",
            "ZINTERCARD 2 a b LIMIT 5",
            "ZINTERCARD 3 a b c",
        ],
    ),
    (
        "eval",
        &[
            "EVAL s 0",
            "EVAL s 1 k",
            "EVAL s 2 k1 k2 arg",
            "EVAL s 3 k1 k2 k3 a b",
        ],
    ),
    (
        "evalsha",
        &[
            "EVALSHA h 0 a",
            "EVALSHA h 1 k",
            "EVALSHA h 2 k1 k2",
            "EVALSHA h 3 k1 k2 k3 a",
        ],
    ),
    (
        "eval_ro",
        &["EVAL_RO s 0", "EVAL_RO s 1 k", "EVAL_RO s 3 k1 k2 k3 a"],
    ),
    ("evalsha_ro", &["EVALSHA_RO h 0", "EVALSHA_RO h 2 k1 k2 a"]),
    (
        "fcall",
        &["FCALL f 0", "FCALL f 1 k", "FCALL f 3 k1 k2 k3 a"],
    ),
    ("fcall_ro", &["FCALL_RO f 0 a", "FCALL_RO f 2 k1 k2"]),
    (
        "sort",
        &[
            "SORT k",
            "SORT k STORE d",
            "SORT k BY w GET # GET store STORE d",
            "SORT k LIMIT 0 10 ALPHA DESC STORE d",
            "SORT k STORE a STORE b",
            "SORT k BY store",
        ],
    ),
    (
        "sort_ro",
        &["SORT_RO k", "SORT_RO k BY w GET # LIMIT 0 1 ALPHA"],
    ),
    (
        "migrate",
        &[
            "MIGRATE h 1 k 0 5000",
            "MIGRATE h 1 k 0 5000 COPY REPLACE",
            "MIGRATE h 1  0 5000 KEYS a b",
            "MIGRATE h 1  0 5000 COPY REPLACE AUTH pw KEYS a b c",
            "MIGRATE h 1  0 5000 AUTH2 u pw KEYS a",
        ],
    ),
    (
        "georadius",
        &[
            "GEORADIUS g 13 52 100 km",
            "GEORADIUS g 13 52 100 km WITHDIST COUNT 3 ASC STORE d",
            "GEORADIUS g 13 52 100 km STOREDIST d",
            "GEORADIUS g 13 52 100 km STORE a STOREDIST b",
        ],
    ),
    (
        "georadius_ro",
        &[
            "GEORADIUS_RO g 13 52 100 km",
            "GEORADIUS_RO g 13 52 100 km WITHCOORD COUNT 2 DESC",
        ],
    ),
    (
        "georadiusbymember",
        &[
            "GEORADIUSBYMEMBER g m 100 km",
            "GEORADIUSBYMEMBER g m 100 km STORE d",
            "GEORADIUSBYMEMBER g m 100 km STOREDIST d COUNT 2",
            "GEORADIUSBYMEMBER g m 100 km STORE a STOREDIST b",
        ],
    ),
    (
        "georadiusbymember_ro",
        &[
            "GEORADIUSBYMEMBER_RO g m 100 km",
            "GEORADIUSBYMEMBER_RO g m 100 km WITHDIST ASC",
        ],
    ),
    (
        "xread",
        &[
            "XREAD STREAMS s 0",
            "XREAD COUNT 2 BLOCK 0 STREAMS s1 s2 0 0",
            "XREAD STREAMS s1 s2 s3 0 0 0",
        ],
    ),
    (
        "xreadgroup",
        &[
            "XREADGROUP GROUP g c STREAMS s >",
            "XREADGROUP GROUP g c COUNT 1 NOACK STREAMS s1 s2 > >",
            "XREADGROUP GROUP streams c BLOCK 10 STREAMS s1 s2 s3 0 0 0",
        ],
    ),
    (
        "stralgo",
        &[
            "STRALGO LCS KEYS a b",
            "STRALGO LCS LEN KEYS a b",
            "STRALGO LCS IDX KEYS a b MINMATCHLEN 2 WITHMATCHLEN",
            "STRALGO LCS STRINGS x y",
        ],
    ),
    (
        "memory",
        &["MEMORY USAGE k", "MEMORY USAGE k SAMPLES 5", "MEMORY STATS"],
    ),
    (
        "lmpop",
        &[
            "LMPOP 1 l LEFT",
            "LMPOP 2 l1 l2 RIGHT COUNT 2",
            "LMPOP 3 a b c LEFT",
        ],
    ),
    (
        "blmpop",
        &[
            "BLMPOP 0 1 l LEFT",
            "BLMPOP 1.5 2 l1 l2 RIGHT COUNT 2",
            "BLMPOP 0 3 a b c LEFT",
        ],
    ),
    (
        "zmpop",
        &[
            "ZMPOP 1 z MIN",
            "ZMPOP 2 a b MAX COUNT 3",
            "ZMPOP 3 a b c MIN",
        ],
    ),
    (
        "bzmpop",
        &[
            "BZMPOP 0 1 z MIN",
            "BZMPOP 0 2 a b MAX COUNT 3",
            "BZMPOP 1 3 a b c MIN",
        ],
    ),
    (
        "sintercard",
        &[
            "SINTERCARD 1 a",
            "SINTERCARD 2 a b LIMIT 1",
            "SINTERCARD 3 a b c",
        ],
    ),
    (
        "msetex",
        &[
            "MSETEX 1 a 1",
            "MSETEX 2 a 1 b 2 EX 10",
            "MSETEX 3 a 1 b 2 c 3 NX PX 100",
        ],
    ),
];

fn argv(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

/// A started server, a link to it and its command table.
async fn start(binary: &ServerBinary) -> (LocalServer, Link, CommandTable) {
    let server = LocalServer::builder()
        .binary(binary.clone())
        .start()
        .unwrap();
    let addr = (server.master() as &dyn Node).addr();
    let mut link = Link::connect(
        &addr.host,
        addr.port,
        &ferry_engine::endpoint::Endpoint::plain(&addr.host, addr.port),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let table = CommandTable::from_reply(&link.call(&["COMMAND"]).await.unwrap()).unwrap();
    assert!(table.len() > 150, "{binary}: {} commands", table.len());
    (server, link, table)
}

/// `COMMAND GETKEYS` for `argv`; a line without keys is an error reply on every version
/// ("Invalid arguments specified for command", "The command has no key arguments").
async fn getkeys(link: &mut Link, binary: &ServerBinary, argv: &[Bytes]) -> Vec<Bytes> {
    let mut line: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
    line.extend(argv.iter().map(|a| a.as_ref()));
    match link.call(&line).await.unwrap() {
        Frame::Array(Some(keys)) => keys
            .into_iter()
            .map(|k| match k {
                Frame::Bulk(Some(b)) => b,
                other => panic!("{other:?}"),
            })
            .collect(),
        Frame::Error(e)
            if e.as_ref() == b"ERR Invalid arguments specified for command"
                || e.as_ref() == b"ERR The command has no key arguments" =>
        {
            Vec::new()
        }
        other => panic!("{binary}: COMMAND GETKEYS {argv:?}: {other:?}"),
    }
}

async fn check(binary: ServerBinary) {
    let (_server, mut link, table) = start(&binary).await;
    for line in SAMPLES {
        let argv = argv(line);
        let expected = getkeys(&mut link, &binary, &argv).await;
        assert_eq!(table.keys(&argv), Keys::Found(expected), "{binary}: {line}");
    }
    assert_eq!(table.is_write(&argv("SET k v")), Some(true));
    assert_eq!(table.is_write(&argv("GET k")), Some(false));
    assert_eq!(table.is_write(&argv("XGROUP CREATE s g $")), Some(true));
    assert_eq!(table.keys(&argv("NOSUCHCOMMAND x")), Keys::UnknownCommand);
    assert_eq!(
        table.keys(&argv("SORT k STORE dest")),
        Keys::Found(vec![Bytes::from("k"), Bytes::from("dest")]),
        "{binary}: the STORE key spec is unknown; the server's procedure finds it"
    );
}

/// Every command `binary` flags `movablekeys` (subcommands too) finds the keys `COMMAND
/// GETKEYS` finds on each of its sample lines.
async fn check_movable(binary: ServerBinary) {
    let (_server, mut link, table) = start(&binary).await;
    let mut movable: Vec<&str> = table
        .commands()
        .flat_map(|c| std::iter::once(c).chain(c.subcommands.values()))
        .filter(|c| c.flags.iter().any(|f| f == "movablekeys"))
        .map(|c| c.name.as_str())
        .collect();
    movable.sort_unstable();
    assert!(
        movable.contains(&"zunionstore") && movable.contains(&"eval"),
        "{binary}: {movable:?}"
    );
    let unsampled: Vec<&str> = movable
        .iter()
        .copied()
        .filter(|name| !MOVABLE_SAMPLES.iter().any(|(n, _)| n == name))
        .collect();
    assert!(
        unsampled.is_empty(),
        "{binary} flags movablekeys commands without samples in MOVABLE_SAMPLES: {unsampled:?}"
    );
    let mut checked = 0;
    for (_, lines) in MOVABLE_SAMPLES.iter().filter(|(n, _)| movable.contains(n)) {
        for line in *lines {
            let argv = argv(line);
            let expected = getkeys(&mut link, &binary, &argv).await;
            assert_eq!(table.keys(&argv), Keys::Found(expected), "{binary}: {line}");
            checked += 1;
        }
    }
    eprintln!(
        "{binary}: {} movablekeys commands, {checked} lines match COMMAND GETKEYS",
        movable.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movable_keys_match_command_getkeys_on_every_server_build() {
    check_movable(ServerBinary::find().unwrap()).await;
    for name in CACHED_BUILDS {
        if let Some(binary) =
            ServerBinary::cached_or_skip(name, "movable keys against its COMMAND GETKEYS")
        {
            check_movable(binary).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_match_command_getkeys_on_redis_7() {
    check(ServerBinary::find().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_match_command_getkeys_on_valkey_9() {
    check(ServerBinary::cached("valkey-9.1.2").unwrap()).await;
}
