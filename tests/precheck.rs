//! `ferry precheck` as a person runs it: exit 0 when ready, 1 when an item fails, 2 on bad
//! input, and a table or JSON that names each item.

use std::process::{Command, Output};

use ferry_fixtures::{LocalServer, Node};

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("running ferry")
}

#[test]
fn exit_codes_follow_the_verdict() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let (s, t) = (source.master().addr().url(), target.master().addr().url());

    let ready = ferry(&["precheck", "--source", &s, "--target", &t]);
    let stdout = String::from_utf8_lossy(&ready.stdout);
    assert_eq!(ready.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ready: 0 failed"), "{stdout}");

    let node: &dyn Node = target.master();
    let _: () = node.query(redis::cmd("SET").arg("k").arg("v")).unwrap();
    let blocked = ferry(&["precheck", "--source", &s, "--target", &t, "--json"]);
    assert_eq!(blocked.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&blocked.stdout).unwrap();
    assert_eq!(json["passed"], false);
    let failed: Vec<&str> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "fail")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["target-empty"]);

    let replace = ferry(&[
        "precheck",
        "--source",
        &s,
        "--target",
        &t,
        "--existing",
        "replace",
    ]);
    assert_eq!(replace.status.code(), Some(0));

    let bad = ferry(&["precheck", "--source", &s, "--target", "http://nowhere"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("must start with redis://"), "{err}");
}
