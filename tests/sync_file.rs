//! `ferry sync --source FILE.rdb`: an RDB file loaded into a cluster, checked by
//! `ferry verify` against the server that wrote it; a corrupt file is a one-line error.

use std::process::{Command, Output};

use ferry_fixtures::{Dataset, Deployment, LocalCluster, LocalServer, Node};

/// A file of Redis's own test corpus whose ziplist is corrupt.
const CORRUPT_RDB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/rdb-corpus/redis-tests/corrupt_ziplist.rdb"
);

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("running ferry")
}

#[test]
fn an_rdb_file_loads_into_a_cluster_exactly() {
    let source = LocalServer::builder().start().unwrap();
    Dataset::new(3).scale(2_000).load(&source).unwrap();
    let node: &dyn Node = source.master();
    let _: () = node.query(&redis::cmd("SAVE")).unwrap();
    let file = source.master().dir().join("dump.rdb");
    let target = LocalCluster::builder().masters(3).start().unwrap();
    let target_url = target.nodes()[0].addr().url();

    let out = ferry(&[
        "sync",
        "--source",
        file.to_str().unwrap(),
        "--target",
        &target_url,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rdb file done: 2000 keys"), "{stdout}");

    let verify = ferry(&[
        "verify",
        "--source",
        &node.addr().url(),
        "--target",
        &target_url,
    ]);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{report}");

    // A second load is refused by the precheck: the target is no longer empty.
    let again = ferry(&[
        "sync",
        "--source",
        file.to_str().unwrap(),
        "--target",
        &target_url,
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("precheck target-empty"));
}

#[test]
fn a_corrupt_file_is_a_one_line_error_naming_the_offset() {
    let target = LocalServer::builder().start().unwrap();
    let file = CORRUPT_RDB;
    let out = ferry(&[
        "sync",
        "--source",
        file,
        "--target",
        &target.master().addr().url(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("offset"),
        "{err}"
    );
}

#[test]
fn source_tls_flags_with_an_rdb_file_are_refused_in_one_line() {
    let file = CORRUPT_RDB;
    let out = ferry(&[
        "sync",
        "--source",
        file,
        "--target",
        "redis://127.0.0.1:1",
        "--source-tls-insecure",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("is an RDB file: --source-tls-*"),
        "{err}"
    );
}
