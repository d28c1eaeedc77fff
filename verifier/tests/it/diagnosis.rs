//! Causes: eviction on a target under memory pressure, keys expiring while read.

use ferry_chaos::{Fault, MaxmemoryPolicy, NodeSelector};
use ferry_fixtures::{Deployment, LocalServer};
use ferry_verifier::{Cause, DiffKind};

use crate::copy::{copy, Nodes};
use crate::shared::{config, run, show};

#[test]
fn keys_evicted_by_the_target_are_attributed_to_eviction() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let mut src = Nodes::new(&source);
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for n in 0..100 {
            pipe.cmd("SET")
                .arg(format!("evict:{chunk}:{n}"))
                .arg("v".repeat(1_000))
                .ignore();
        }
        let _: () = pipe.query(src.for_key(b"x")).unwrap();
    }
    copy(&source, &target, "evict:*");
    let used: String = redis::cmd("INFO")
        .arg("memory")
        .query(Nodes::new(&target).for_key(b"x"))
        .unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Fault::SetMaxmemory {
        node: NodeSelector::Master(0),
        bytes: used * 3 / 4,
        policy: MaxmemoryPolicy::AllkeysRandom,
    }
    .apply(&target)
    .unwrap();
    // A write makes the server evict until it is under the limit.
    let mut tgt = Nodes::new(&target);
    let _: () = tgt.run(b"x", redis::cmd("SET").arg("unrelated").arg("v"));
    // Every command the verifier sends makes the target evict again while it is over its
    // limit (replies count as memory), so some keys vanish between two reads.
    let report = run(&config(&source, &target, "evict:*"));
    let text = show(&report);
    let missing: Vec<_> = report
        .differences
        .iter()
        .filter(|d| d.kind == DiffKind::Missing)
        .collect();
    assert!(!missing.is_empty(), "{text}");
    for diff in &report.differences {
        match &diff.cause {
            Some(Cause::Evicted {
                evicted_keys,
                maxmemory_policy,
                ..
            }) => {
                assert!(*evicted_keys > 0);
                assert_eq!(maxmemory_policy, "allkeys-random");
            }
            other => panic!("{other:?}\n{text}"),
        }
    }
    assert!(report.target.masters[0].evicted_keys > 0);
    let _ = target.topology();
}

#[test]
fn a_key_about_to_expire_is_expired_in_flight() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let mut src = Nodes::new(&source);
    let _: () = src.run(
        b"x",
        redis::cmd("SET")
            .arg("soon:a")
            .arg("v")
            .arg("PX")
            .arg(20_000),
    );
    let _: () = src.run(b"x", redis::cmd("SET").arg("soon:b").arg("v"));
    let mut cfg = config(&source, &target, "soon:*");
    cfg.rounds = 0;
    cfg.ttl_tolerance = std::time::Duration::from_secs(30);
    let report = run(&cfg);
    let text = show(&report);
    let a = crate::shared::of(&report, b"soon:a");
    assert!(
        matches!(a[0].cause, Some(Cause::ExpiredInFlight { remaining_ttl_ms }) if remaining_ttl_ms > 0),
        "{text}"
    );
    let b = crate::shared::of(&report, b"soon:b");
    assert_eq!(b[0].kind, DiffKind::Missing);
    assert_eq!(b[0].cause, None, "{text}");
}
