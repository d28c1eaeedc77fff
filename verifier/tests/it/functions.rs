//! Function libraries: every master of both sides is asked (`FUNCTION LIST WITHCODE`), and
//! libraries missing on, extra on or different on a target master make the verdict
//! inconsistent like a key would. Each test has its own servers: libraries are per server,
//! not per key prefix.

use ferry_fixtures::{Deployment, LocalCluster, LocalServer, Node, ServerBinary};
use ferry_verifier::{LibraryDiffKind, Report, Verdict};

use crate::shared::{config, run, show};

fn library(name: &str, value: &str) -> String {
    format!(
        "#!lua name={name}\nredis.register_function('f_{name}', function() return '{value}' end)"
    )
}

fn load(node: &dyn Node, name: &str, value: &str) {
    let _: String = node
        .query(
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(library(name, value)),
        )
        .unwrap();
}

/// Each library difference: name, kind and the ports of the target masters concerned.
fn differences(report: &Report) -> Vec<(String, LibraryDiffKind, Vec<u16>)> {
    report
        .functions
        .differences
        .iter()
        .map(|d| {
            (
                d.library.clone(),
                d.kind,
                d.targets.iter().map(|t| t.port).collect(),
            )
        })
        .collect()
}

fn port(node: &dyn Node) -> u16 {
    node.addr().port
}

#[test]
fn equal_libraries_are_consistent_and_missing_extra_and_different_ones_are_not() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let (s, t): (&dyn Node, &dyn Node) = (source.master(), target.master());
    for node in [s, t] {
        load(node, "same", "1");
        load(node, "changed", "1");
    }
    let equal = run(&config(&source, &target, ""));
    assert_eq!(equal.verdict, Verdict::Consistent, "{}", show(&equal));
    assert_eq!(
        (
            equal.functions.source_libraries,
            equal.functions.target_libraries
        ),
        (2, 2)
    );

    load(s, "missing", "2");
    load(t, "extra", "3");
    load(t, "changed", "other");
    let report = run(&config(&source, &target, ""));
    assert_eq!(report.verdict, Verdict::Inconsistent, "{}", show(&report));
    assert_eq!(report.counts.differences, 0, "no key differs");
    let t = port(t);
    assert_eq!(
        differences(&report),
        [
            ("changed".into(), LibraryDiffKind::Different, vec![t]),
            ("extra".into(), LibraryDiffKind::Extra, vec![t]),
            ("missing".into(), LibraryDiffKind::Missing, vec![t]),
        ]
    );
    let changed = &report.functions.differences[0];
    assert_eq!(
        changed.source_code.as_deref(),
        Some(&*library("changed", "1"))
    );
    assert_eq!(
        changed.target_code.as_deref(),
        Some(&*library("changed", "other"))
    );
    let text = show(&report);
    assert!(
        text.contains("missing   library missing: on the source, not on target master"),
        "{text}"
    );
}

#[test]
fn every_target_master_must_hold_the_union_of_the_source_masters_libraries() {
    let (source, target) = std::thread::scope(|scope| {
        let source = scope.spawn(|| LocalCluster::builder().masters(2).start().unwrap());
        let target = scope.spawn(|| LocalCluster::builder().masters(2).start().unwrap());
        (source.join().unwrap(), target.join().unwrap())
    });
    let (sources, targets) = (source.masters().unwrap(), target.masters().unwrap());
    for node in &sources {
        load(*node, "shared", "s");
    }
    // Only one source master holds this one: the source's masters disagree.
    load(sources[0], "only_one", "o");
    for name in ["shared", "only_one"] {
        load(targets[0], name, if name == "shared" { "s" } else { "o" });
    }
    load(targets[1], "shared", "s");

    let report = run(&config(&source, &target, ""));
    assert_eq!(report.verdict, Verdict::Inconsistent, "{}", show(&report));
    assert_eq!(
        differences(&report),
        [(
            "only_one".into(),
            LibraryDiffKind::Missing,
            vec![port(targets[1])]
        )]
    );
    let warning = report.functions.source_masters_differ.as_deref().unwrap();
    assert!(warning.contains("[only_one, shared]"), "{warning}");
    assert!(
        show(&report).contains("source masters hold different function libraries"),
        "{}",
        show(&report)
    );

    load(targets[1], "only_one", "o");
    let report = run(&config(&source, &target, ""));
    assert_eq!(report.verdict, Verdict::Consistent, "{}", show(&report));
    assert!(report.functions.source_masters_differ.is_some());
}

#[test]
fn a_target_without_functions_misses_the_sources_libraries() {
    let Ok(redis5) = ServerBinary::cached("redis-5.0.10") else {
        println!("SKIPPED: redis-5.0.10 is not under ~/.cache/ferry/servers");
        return;
    };
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().binary(redis5).start().unwrap();
    // A server without FUNCTION is not asked: it holds no library.
    let report = run(&config(&source, &target, ""));
    assert_eq!(report.verdict, Verdict::Consistent, "{}", show(&report));
    assert!(report.functions.not_compared.is_empty());

    load(source.master(), "lib", "1");
    let report = run(&config(&source, &target, ""));
    assert_eq!(
        differences(&report),
        [(
            "lib".into(),
            LibraryDiffKind::Missing,
            vec![port(target.master())]
        )]
    );
}
