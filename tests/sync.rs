//! `ferry sync --mode full` as a person runs it: db selection and mapping, key filters,
//! and the copy proven by `ferry verify`.

use std::process::{Command, Output};

use ferry_fixtures::{Deployment, LocalCluster, LocalServer, Node};

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("running ferry")
}

fn write(node: &dyn Node, db: u32, keys: &[&str]) {
    let mut conn = node.connect().unwrap();
    let _: () = redis::cmd("SELECT").arg(db).query(&mut conn).unwrap();
    for key in keys {
        let _: () = redis::cmd("RPUSH")
            .arg(*key)
            .arg("x")
            .arg("y")
            .query(&mut conn)
            .unwrap();
    }
}

fn dbsize(node: &dyn Node, db: u32) -> u64 {
    let mut conn = node.connect().unwrap();
    let _: () = redis::cmd("SELECT").arg(db).query(&mut conn).unwrap();
    redis::cmd("DBSIZE").query(&mut conn).unwrap()
}

#[test]
fn one_db_of_a_standalone_source_goes_to_another_db_filtered() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let (s, t): (&dyn Node, &dyn Node) = (source.master(), target.master());
    write(s, 0, &["a:0", "b:0"]);
    write(s, 2, &["a:1", "a:2", "a:tmp", "b:1"]);
    let out = ferry(&[
        "sync",
        "--mode",
        "full",
        "--source",
        &format!("{}/2", s.addr().url()),
        "--target",
        &format!("{}/3", t.addr().url()),
        "--prefix",
        "a:",
        "--exclude",
        "*:tmp",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 keys") && stdout.contains("2 filtered out"),
        "{stdout}"
    );
    assert_eq!((dbsize(t, 0), dbsize(t, 3)), (0, 2));
    let mut conn = t.connect().unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut conn).unwrap();
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg("a:2")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(items, ["x", "y"]);
}

#[test]
fn four_masters_into_two_then_verify_agrees() {
    let source = LocalCluster::builder().masters(4).start().unwrap();
    let target = LocalCluster::builder().masters(2).start().unwrap();
    ferry_fixtures::Dataset::new(11)
        .scale(4_000)
        .load(&source)
        .unwrap();
    let (s, t) = (
        source.nodes()[0].addr().url(),
        target.nodes()[0].addr().url(),
    );
    let out = ferry(&["sync", "--source", &s, "--target", &t, "--mode", "full"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("shard ").count(), 4, "{stdout}");
    assert!(stdout.contains("full sync done: 4000 keys"), "{stdout}");
    let verify = ferry(&["verify", "--source", &s, "--target", &t, "--format", "json"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let _ = target.topology().unwrap();
}

#[test]
fn bad_credentials_and_blocked_targets_write_nothing() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let (s, t): (&dyn Node, &dyn Node) = (source.master(), target.master());
    write(s, 0, &["a:1"]);
    let _: () = s
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("requirepass")
                .arg("right"),
        )
        .unwrap();
    let source_url = format!("redis://:wrong@{}", s.addr());
    let out = ferry(&[
        "sync",
        "--mode",
        "full",
        "--source",
        &source_url,
        "--target",
        &t.addr().url(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("precheck connectivity") && stderr.contains("AUTH"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong"), "the password leaked: {stderr}");
    assert_eq!(dbsize(t, 0), 0);

    // The right password from the environment, but an evicting target: refused, nothing written.
    let _: () = t
        .query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg("allkeys-lru"),
        )
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "sync",
            "--mode",
            "full",
            "--source",
            &s.addr().url(),
            "--target",
            &t.addr().url(),
        ])
        .env("FERRY_SOURCE_PASSWORD", "right")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("precheck eviction-policy"), "{stderr}");
    assert_eq!(dbsize(t, 0), 0);

    // Allowed explicitly, it copies.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "sync",
            "--mode",
            "full",
            "--allow-eviction",
            "--source",
            &s.addr().url(),
            "--target",
            &t.addr().url(),
        ])
        .env("FERRY_SOURCE_PASSWORD", "right")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dbsize(t, 0), 1);
}
