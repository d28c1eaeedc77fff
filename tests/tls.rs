//! `rediss://` from the command line: `ferry sync` between TLS clusters (the target requiring
//! client certificates) ends exact and `ferry verify` over TLS says consistent; a missing
//! client certificate, a wrong CA, an unreadable file and TLS flags on a `redis://` URL are
//! each one clear line, and precheck's connectivity item names the TLS fix.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry_fixtures::exact::await_equal;
use ferry_fixtures::{ClientAuth, Dataset, LocalCluster, LocalServer, TlsFiles, Workload};

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_SOURCE_PASSWORD")
        .env_remove("FERRY_TARGET_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("running ferry")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `--<side>-tls-ca` and, when `client`, `--<side>-tls-cert`/`--<side>-tls-key`.
fn tls_args(side: &str, files: &TlsFiles, client: bool) -> Vec<String> {
    let mut args = vec![format!("--{side}-tls-ca"), path(&files.ca).to_string()];
    if client {
        args.extend([
            format!("--{side}-tls-cert"),
            path(&files.client_cert).to_string(),
            format!("--{side}-tls-key"),
            path(&files.client_key).to_string(),
        ]);
    }
    args
}

fn run(base: &[&str], extra: &[Vec<String>]) -> Output {
    let extra: Vec<&str> = extra.iter().flatten().map(String::as_str).collect();
    ferry(&[base, &extra].concat())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn sync_and_verify_between_tls_clusters_with_mutual_tls_on_the_target() {
    let source = LocalCluster::builder()
        .masters(2)
        .tls(ClientAuth::Optional)
        .start()
        .unwrap();
    let target = LocalCluster::builder()
        .masters(2)
        .tls(ClientAuth::Required)
        .start()
        .unwrap();
    Dataset::new(51).scale(1_000).load(&source).unwrap();
    let writes = Workload::new(52)
        .rate(1_000)
        .duration(Duration::from_secs(2))
        .spawn(&source)
        .unwrap();
    let (s, t) = (source.tls_url().unwrap(), target.tls_url().unwrap());
    let tls = [
        tls_args("source", source.tls().unwrap(), false),
        tls_args("target", target.tls().unwrap(), true),
    ];
    let synced = run(
        &[
            "sync",
            "--source",
            &s,
            "--target",
            &t,
            "--until-caught-up",
            "1",
        ],
        &tls,
    );
    assert!(synced.status.success(), "{}", text(&synced.stderr));
    writes.join().unwrap();
    let caught_up = run(
        &[
            "sync",
            "--source",
            &s,
            "--target",
            &t,
            "--until-caught-up",
            "1",
        ],
        &tls,
    );
    assert!(caught_up.status.success(), "{}", text(&caught_up.stderr));
    let diff = await_equal(&source, &target, Duration::from_secs(10)).unwrap();
    assert!(
        diff.is_empty(),
        "{} differences: {:?}",
        diff.len(),
        &diff[..diff.len().min(5)]
    );

    let verified = run(&["verify", "--source", &s, "--target", &t], &tls);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );
    assert!(
        text(&verified.stdout).contains("CONSISTENT"),
        "{}",
        text(&verified.stdout)
    );
}

#[test]
fn tls_failures_are_one_clear_line() {
    let server = LocalServer::builder()
        .tls(ClientAuth::Required)
        .start()
        .unwrap();
    let other = LocalServer::builder()
        .tls(ClientAuth::Optional)
        .start()
        .unwrap();
    let files = server.tls().unwrap();
    let (s, t) = (server.tls_url().unwrap(), other.tls_url().unwrap());
    let target_tls = tls_args("target", other.tls().unwrap(), false);
    let one_error_line = |out: &Output, expected: &str| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{err}"
        );
        assert_eq!(err.matches(expected).count(), 1, "said once: {err}");
    };

    // No client certificate for a server that requires one.
    let no_client_cert = [tls_args("source", files, false), target_tls.clone()];
    let sync = ["sync", "--source", &s, "--target", &t, "--skip-precheck"];
    one_error_line(&run(&sync, &no_client_cert), "client certificate");
    let verify = ["verify", "--source", &s, "--target", &t];
    one_error_line(&run(&verify, &no_client_cert), "client certificate");
    // A CA that did not sign the server's certificate.
    let stranger = std::env::temp_dir().join(format!("ferry-cli-stranger-{}", std::process::id()));
    let stranger_files = TlsFiles::generate(&stranger).unwrap();
    let mut wrong_ca = tls_args("source", files, true);
    wrong_ca[1] = path(&stranger_files.ca).to_string();
    let out = run(
        &["sync", "--source", &s, "--target", &t, "--skip-precheck"],
        &[wrong_ca.clone(), target_tls.clone()],
    );
    one_error_line(&out, "not signed by a trusted CA");
    let out = run(
        &["verify", "--source", &s, "--target", &t],
        &[wrong_ca, target_tls.clone()],
    );
    one_error_line(&out, "certificate");
    std::fs::remove_dir_all(&stranger).unwrap();

    // An unreadable file, and TLS flags on a plain URL.
    let out = ferry(&[
        "sync",
        "--source",
        &s,
        "--target",
        &t,
        "--source-tls-ca",
        "/nonexistent/ca.pem",
    ]);
    one_error_line(&out, "cannot read tls ca file /nonexistent/ca.pem");
    let plain = server.master().direct_addr().url();
    let out = ferry(&[
        "precheck",
        "--source",
        &plain,
        "--target",
        &t,
        "--source-tls-insecure",
    ]);
    one_error_line(&out, "need a rediss:// url");

    // Precheck's connectivity item says what to do about TLS.
    let out = run(
        &["precheck", "--source", &s, "--target", &t, "--json"],
        &[tls_args("source", files, false), target_tls.clone()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let item = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "connectivity")
        .unwrap();
    assert_eq!(item["status"], "fail", "{item}");
    assert!(
        item["detail"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{item}"
    );
    assert!(
        item["fix"].as_str().unwrap().contains("--source-tls-cert"),
        "{item}"
    );

    // And --tls-insecure gets through, with a warning.
    let out = run(
        &[
            "precheck",
            "--source",
            &s,
            "--target",
            &t,
            "--source-tls-insecure",
        ],
        &[
            vec![
                "--source-tls-cert".into(),
                path(&files.client_cert).into(),
                "--source-tls-key".into(),
                path(&files.client_key).into(),
            ],
            target_tls,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("not verified"),
        "{}",
        text(&out.stderr)
    );
}
