//! The command table read from real servers finds the same keys as `COMMAND GETKEYS`.

use std::time::Duration;

use bytes::Bytes;
use ferry_engine::link::Link;
use ferry_engine::resp::Frame;
use ferry_engine::route::{CommandTable, Keys};
use ferry_fixtures::{LocalServer, Node, ServerBinary};

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

fn argv(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

async fn check(binary: ServerBinary) {
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
    assert!(table.len() > 200, "{binary}: {} commands", table.len());
    for line in SAMPLES {
        let argv = argv(line);
        let mut getkeys: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
        getkeys.extend(argv.iter().map(|a| a.as_ref()));
        let expected: Vec<Bytes> = match link.call(&getkeys).await.unwrap() {
            Frame::Array(Some(keys)) => keys
                .into_iter()
                .map(|k| match k {
                    Frame::Bulk(Some(b)) => b,
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{binary}: COMMAND GETKEYS {line}: {other:?}"),
        };
        assert_eq!(table.keys(&argv), Keys::Found(expected), "{binary}: {line}");
    }
    assert_eq!(table.is_write(&argv("SET k v")), Some(true));
    assert_eq!(table.is_write(&argv("GET k")), Some(false));
    assert_eq!(table.is_write(&argv("XGROUP CREATE s g $")), Some(true));
    assert_eq!(table.keys(&argv("NOSUCHCOMMAND x")), Keys::UnknownCommand);
    assert_eq!(table.keys(&argv("SORT k STORE dest")), Keys::Unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_match_command_getkeys_on_redis_7() {
    check(ServerBinary::find().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_match_command_getkeys_on_valkey_9() {
    check(ServerBinary::cached("valkey-9.1.2").unwrap()).await;
}
