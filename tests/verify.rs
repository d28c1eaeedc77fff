//! `ferry verify` as a person or a CI job runs it: exit 0 when consistent, 1 when
//! differences were found, 2 when it could not finish, with one `error:` line.

use std::process::{Command, Output};

use ferry_fixtures::{Deployment, LocalServer};

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("verify")
        .args(args)
        .env_remove("FERRY_SOURCE_PASSWORD")
        .env_remove("FERRY_TARGET_PASSWORD")
        .output()
        .expect("running ferry")
}

fn url(server: &LocalServer) -> String {
    server.nodes()[0].addr().url()
}

fn set(server: &LocalServer, key: &str, value: &str) {
    let _: () = server.nodes()[0]
        .query(redis::cmd("SET").arg(key).arg(value))
        .unwrap();
}

#[test]
fn exit_codes_say_consistent_different_or_failed() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    for (key, value) in [("a", "1"), ("b", "2")] {
        set(&source, key, value);
        set(&target, key, value);
    }
    let (src, tgt) = (url(&source), url(&target));
    let args = [
        "--source",
        &src,
        "--target",
        &tgt,
        "--rounds",
        "1",
        "--recheck-interval-ms",
        "10",
    ];

    let same = ferry(&[&args[..], &["--progress", "always"]].concat());
    let stdout = String::from_utf8_lossy(&same.stdout);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(stdout.starts_with("ferry verify: CONSISTENT"), "{stdout}");
    let stderr = String::from_utf8_lossy(&same.stderr);
    assert!(
        stderr.starts_with("verify: census: 2 source keys, 2 target keys"),
        "{stderr}"
    );

    set(&target, "b", "changed");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let mut with_output = args.to_vec();
    let file_arg = file.display().to_string();
    with_output.extend(["--format", "json", "--output", &file_arg]);
    let differs = ferry(&with_output);
    let stdout = String::from_utf8_lossy(&differs.stdout);
    assert_eq!(differs.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("ferry verify: INCONSISTENT"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json["verdict"], "inconsistent");
    assert_eq!(json["differences"][0]["key"], "b");
    assert_eq!(json["differences"][0]["kind"], "value");

    let junit = ferry(&[&args[..], &["--format", "junit"]].concat());
    assert_eq!(junit.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&junit.stdout).contains("<failure type=\"value\""));

    let unreachable = ferry(&["--source", &src, "--target", "redis://127.0.0.1:1"]);
    assert_eq!(unreachable.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot connect to target node 127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn a_bad_url_is_one_error_line_without_the_password() {
    let out = ferry(&[
        "--source",
        "http://alice:s3cret@host:1",
        "--target",
        "redis://h:1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: invalid source url"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_function_library_missing_on_the_target_exits_1_like_a_key() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    set(&source, "a", "1");
    set(&target, "a", "1");
    let _: String = source.nodes()[0]
        .query(
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("#!lua name=mylib\nredis.register_function('f', function() return 1 end)"),
        )
        .unwrap();
    let (src, tgt) = (url(&source), url(&target));
    let out = ferry(&[
        "--source", &src, "--target", &tgt, "--rounds", "1", "--format", "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["verdict"], "inconsistent");
    assert_eq!(json["counts"]["differences"], 0);
    assert_eq!(json["functions"]["differences"][0]["library"], "mylib");
    assert_eq!(json["functions"]["differences"][0]["kind"], "missing");
}
