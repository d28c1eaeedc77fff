//! The replication session against real masters: handshake, both snapshot framings, stream
//! offsets equal to the master's, ACKs the master sees, partial resync, every server build.

use std::time::Duration;

use ferry_engine::replica::{
    Credentials, PsyncFrom, ReplId, ReplOffset, Session, SessionConfig, SessionError, SessionEvent,
};
use ferry_engine::resp::replication::SnapshotFraming;
use ferry_fixtures::{conn, LocalServer, Node, ServerBinary};

fn config_for(node: &dyn Node) -> SessionConfig {
    let addr = node.addr();
    SessionConfig::new(addr.host, addr.port)
}

fn info_field(node: &dyn Node, section: &str, field: &str) -> String {
    conn::info(&node.addr(), section).unwrap()[field].clone()
}

fn master_offset(node: &dyn Node) -> ReplOffset {
    ReplOffset::new(
        info_field(node, "replication", "master_repl_offset")
            .parse()
            .unwrap(),
    )
}

/// What a full resynchronization brought.
struct Snapshot {
    replid: ReplId,
    offset: ReplOffset,
    framing: SnapshotFraming,
    payload: Vec<u8>,
}

async fn full_sync(session: &mut Session) -> Snapshot {
    let SessionEvent::FullResync { replid, offset } = session.next_event().await.unwrap() else {
        panic!("expected +FULLRESYNC");
    };
    let SessionEvent::SnapshotBegin(framing) = session.next_event().await.unwrap() else {
        panic!("expected the snapshot header");
    };
    let mut payload = Vec::new();
    loop {
        match session.next_event().await.unwrap() {
            SessionEvent::SnapshotChunk(bytes) => payload.extend_from_slice(&bytes),
            SessionEvent::SnapshotEnd { len } => {
                assert_eq!(len, payload.len() as u64);
                break;
            }
            other => panic!("unexpected {other:?} during the snapshot"),
        }
    }
    Snapshot {
        replid,
        offset,
        framing,
        payload,
    }
}

/// Reads commands until the session's offset reaches `target`; returns their names.
async fn commands_until(session: &mut Session, target: ReplOffset) -> Vec<String> {
    let mut names = Vec::new();
    while session.offset() < Some(target) {
        let event = tokio::time::timeout(Duration::from_secs(20), session.next_event())
            .await
            .expect("the stream stalled before reaching the master's offset")
            .unwrap();
        let SessionEvent::Command {
            command,
            offset,
            arrived_ms,
        } = event
        else {
            panic!("unexpected {event:?} while streaming");
        };
        let now = ferry_engine::replica::unix_ms();
        assert!(
            arrived_ms <= now && arrived_ms + 60_000 > now,
            "arrival {arrived_ms} stamped, now {now}"
        );
        assert!(
            offset <= target,
            "offset {offset} passed the master's {target}"
        );
        names.push(String::from_utf8_lossy(command.name()).to_ascii_lowercase());
        session.set_applied(offset);
    }
    names
}

fn write(node: &dyn Node, commands: &[&[&str]]) {
    for argv in commands {
        let mut cmd = redis::cmd(argv[0]);
        for arg in &argv[1..] {
            cmd.arg(*arg);
        }
        let _: redis::Value = node.query(&cmd).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diskless_full_sync_then_a_stream_whose_offsets_match_the_master() {
    let server = LocalServer::builder().start().unwrap();
    let master: &dyn Node = server.master();
    write(
        master,
        &[&["SET", "before", "snapshot"], &["RPUSH", "list", "a", "b"]],
    );

    let mut session = Session::connect(config_for(master), PsyncFrom::Fresh)
        .await
        .unwrap();
    let snapshot = full_sync(&mut session).await;
    assert!(
        matches!(snapshot.framing, SnapshotFraming::EofMark(_)),
        "Redis 7 is diskless by default"
    );
    assert_eq!(&snapshot.payload[..9], b"REDIS0010");
    assert!(snapshot.payload.windows(6).any(|w| w == b"before"));
    assert_eq!(
        snapshot.replid.as_str(),
        info_field(master, "replication", "master_replid")
    );

    write(
        master,
        &[
            &["SET", "k", "v"],
            &["INCR", "counter"],
            &["RPUSH", "list", "c"],
        ],
    );
    let target = master_offset(master);
    assert!(target > snapshot.offset);
    let names = commands_until(&mut session, target).await;
    let data: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !matches!(*n, "ping" | "select" | "replconf"))
        .collect();
    assert_eq!(data, ["set", "incr", "rpush"]);
    assert_eq!(session.offset(), Some(target));

    // The master learns what was applied from the ACKs sent every second.
    let applied = session.applied();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                event = session.next_event() => { event.unwrap(); }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let line = info_field(master, "replication", "slave0");
                    if line.contains(&format!("offset={applied},")) {
                        return line;
                    }
                }
            }
        }
    })
    .await
    .expect("the master never saw the applied offset");
    assert!(acked.contains("state=online"), "{acked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_snapshots_come_with_their_length() {
    let server = LocalServer::builder()
        .config("repl-diskless-sync no")
        .start()
        .unwrap();
    let master: &dyn Node = server.master();
    write(master, &[&["SET", "on", "disk"]]);
    let mut session = Session::connect(config_for(master), PsyncFrom::Fresh)
        .await
        .unwrap();
    let snapshot = full_sync(&mut session).await;
    assert_eq!(
        snapshot.framing,
        SnapshotFraming::Length(snapshot.payload.len() as u64)
    );
    assert_eq!(&snapshot.payload[..5], b"REDIS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_continues_where_the_last_one_stopped() {
    let server = LocalServer::builder().start().unwrap();
    let master: &dyn Node = server.master();
    let mut session = Session::connect(config_for(master), PsyncFrom::Fresh)
        .await
        .unwrap();
    let snapshot = full_sync(&mut session).await;
    write(master, &[&["SET", "first", "1"]]);
    commands_until(&mut session, master_offset(master)).await;
    let applied = session.applied();
    drop(session);

    write(
        master,
        &[&["SET", "while-away", "2"], &["LPUSH", "away-list", "x"]],
    );
    let from = PsyncFrom::Continue {
        replid: snapshot.replid,
        next_offset: applied.advance(1),
    };
    let mut session = Session::connect(config_for(master), from).await.unwrap();
    let event = session.next_event().await.unwrap();
    assert_eq!(
        event,
        SessionEvent::Continue {
            replid: snapshot.replid,
            offset: applied
        }
    );
    let names = commands_until(&mut session, master_offset(master)).await;
    assert!(names.contains(&"lpush".to_string()), "{names:?}");
    let sync_partial_ok = info_field(master, "stats", "sync_partial_ok");
    assert_eq!(sync_partial_ok, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_the_master_is_answered_through_getack() {
    let server = LocalServer::builder().start().unwrap();
    let master: &dyn Node = server.master();
    let mut session = Session::connect(config_for(master), PsyncFrom::Fresh)
        .await
        .unwrap();
    full_sync(&mut session).await;
    let driver = tokio::spawn(async move {
        loop {
            match session.next_event().await {
                Ok(SessionEvent::Command { offset, .. }) => session.set_applied(offset),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    });
    let addr = master.addr();
    let acked: i64 = tokio::task::spawn_blocking(move || {
        let mut conn = conn::connect(&addr).unwrap();
        let _: () = redis::cmd("SET")
            .arg("w")
            .arg("1")
            .query(&mut conn)
            .unwrap();
        redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut conn)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(acked, 1, "WAIT saw no replica acknowledge the write");
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_clear_and_never_show_the_password() {
    let server = LocalServer::builder().start().unwrap();
    let master: &dyn Node = server.master();
    // Set last: the fixture's own connections do not authenticate.
    write(master, &[&["CONFIG", "SET", "requirepass", "s3cret-pass"]]);
    let mut config = config_for(master);
    config.credentials = Some(Credentials {
        user: None,
        password: "wrong-pass".into(),
    });
    let err = match Session::connect(config.clone(), PsyncFrom::Fresh).await {
        Err(e) => e,
        Ok(_) => panic!("a wrong password was accepted"),
    };
    assert!(
        matches!(
            err,
            SessionError::Refused {
                command: "AUTH",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-pass"), "{err}");
    assert!(!format!("{config:?}").contains("wrong-pass"));

    config.credentials = Some(Credentials {
        user: None,
        password: "s3cret-pass".into(),
    });
    let mut session = Session::connect(config, PsyncFrom::Fresh).await.unwrap();
    full_sync(&mut session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_build_serves_the_session() {
    let cases = [
        ("redis-5.0.10", None, &b"REDIS0009"[..]),
        ("redis-6.0.9", None, b"REDIS0009"),
        ("valkey-9.1.2", None, b"REDIS0011"),
        ("valkey-9.1.2", Some("9.1.2"), b"VALKEY080"),
    ];
    for (build, announce, magic) in cases {
        let binary = ServerBinary::cached(build).unwrap();
        let server = LocalServer::builder()
            .binary(binary)
            .config("repl-diskless-sync yes")
            .start()
            .unwrap();
        let master: &dyn Node = server.master();
        write(master, &[&["SET", "k", "v"]]);
        let mut config = config_for(master);
        config.announce_version = announce.map(str::to_string);
        let mut session = Session::connect(config, PsyncFrom::Fresh).await.unwrap();
        let snapshot = full_sync(&mut session).await;
        assert_eq!(
            &snapshot.payload[..magic.len()],
            magic,
            "{build} announcing {announce:?}"
        );
        write(master, &[&["INCR", "n"]]);
        let names = commands_until(&mut session, master_offset(master)).await;
        assert!(names.contains(&"incr".to_string()), "{build}: {names:?}");
    }
}
