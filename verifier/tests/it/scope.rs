//! Scope and safety: `__ferry__:` keys, dbs, type and name filters, slot ranges, sampling,
//! replica reads, rate caps, and failures that stop a run.

use std::time::Duration;

use ferry_engine::route::Slot;
use ferry_fixtures::{Dataset, Deployment, LocalServer};
use ferry_verifier::{parse_slots, verify, DiffKind, Endpoint, KeyType, ReadFrom, VerifyError};

use crate::copy::{copy, Nodes};
use crate::shared::{clusters, config, kinds, run, show};

#[test]
fn filters_slots_and_sampling_narrow_the_comparison() {
    let pair = clusters();
    let pattern = "*scope:*";
    Dataset::new(71)
        .prefix("scope")
        .scale(2_000)
        .load(&pair.source)
        .unwrap();
    copy(&pair.source, &pair.target, pattern);
    let mut tgt = Nodes::new(&pair.target);
    let _: () = tgt.run(b"scope:only", redis::cmd("SET").arg("scope:only").arg("v"));
    let _: () = tgt.run(
        b"scope:h",
        redis::cmd("HSET").arg("scope:h").arg("f").arg("v"),
    );
    // ferry's checkpoints are never compared.
    let _: () = tgt.run(
        b"__ferry__:{scope}:checkpoint",
        redis::cmd("HSET")
            .arg("__ferry__:{scope}:checkpoint")
            .arg("offset")
            .arg(1),
    );
    let cfg = config(&pair.source, &pair.target, pattern);
    let all = run(&cfg);
    assert_eq!(
        kinds(&all, b"scope:only"),
        [DiffKind::Extra],
        "{}",
        show(&all)
    );
    assert_eq!(all.counts.differing_keys, 2, "{}", show(&all));

    let mut only_hashes = cfg.clone();
    only_hashes.filter.types = vec![KeyType::Hash];
    let hashes = run(&only_hashes);
    assert_eq!(hashes.counts.differing_keys, 1, "{}", show(&hashes));
    assert!(hashes.counts.out_of_scope > 0);

    let mut excluded = cfg.clone();
    excluded.filter.exclude_prefixes = vec![b"scope:only".to_vec()];
    assert_eq!(run(&excluded).counts.differing_keys, 1);

    let slot = Slot::of_key(b"scope:only").get();
    let mut narrow = cfg.clone();
    narrow.slots = Some(parse_slots(&format!("{slot}-{slot}")).unwrap());
    let narrowed = run(&narrow);
    assert_eq!(kinds(&narrowed, b"scope:only"), [DiffKind::Extra]);
    assert!(narrowed.counts.keys_compared < 20, "{:?}", narrowed.counts);
    let other = if slot == 0 { 1 } else { slot - 1 };
    narrow.slots = Some(parse_slots(&other.to_string()).unwrap());
    assert!(run(&narrow)
        .differences
        .iter()
        .all(|d| d.key.as_bytes() != b"scope:only"));

    let mut sampled = cfg.clone();
    sampled.sample = Some(0.25);
    let estimate = run(&sampled);
    let sample = estimate.sample.as_ref().expect("a sample estimate");
    assert!(
        sample.keys_sampled > 200 && sample.keys_sampled < 1_000,
        "{sample:?}"
    );
    assert!(sample.share_low <= sample.share && sample.share <= sample.share_high);

    let mut capped = cfg.clone();
    capped.rate.ops_per_sec = Some(200_000);
    capped.rate.bytes_per_sec = Some(50 << 20);
    assert_eq!(run(&capped).counts.differing_keys, 2);
}

#[test]
fn standalone_dbs_and_replica_reads() {
    let source = LocalServer::builder().replicas(1).start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    let master = source.master();
    let mut conn = (master as &dyn ferry_fixtures::Node).connect().unwrap();
    for db in [0, 2] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut conn).unwrap();
        for n in 0..50 {
            let _: () = redis::cmd("SET")
                .arg(format!("db:{n}"))
                .arg(db)
                .query(&mut conn)
                .unwrap();
        }
    }
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5_000)
        .query(&mut conn)
        .unwrap();
    // Only db 0 is copied.
    copy(&source, &target, "db:*");
    let mut cfg = config(&source, &target, "db:*");
    cfg.read_from = ReadFrom::Replica;
    let report = run(&cfg);
    assert_eq!(report.scope.dbs, [0, 2]);
    assert_eq!(report.count(DiffKind::Missing), 50, "{}", show(&report));
    assert!(report.differences.iter().all(|d| d.db == 2));
    assert_eq!(report.source.read_from, ReadFrom::Replica);
    cfg.filter.dbs = vec![0];
    assert!(run(&cfg).is_consistent());
    // A cluster has only db 0.
    let pair = clusters();
    let mut wrong = config(&source, &pair.target, "db:*");
    wrong.filter.dbs = vec![2];
    assert!(matches!(
        verify(&wrong),
        Err(VerifyError::ClusterDb { db: 2, .. })
    ));
}

#[test]
fn unreachable_servers_fail_with_the_address() {
    let server = LocalServer::builder().start().unwrap();
    let url = crate::shared::url(&server);
    let mut cfg = ferry_verifier::Config::new(
        Endpoint::parse("source", &url).unwrap(),
        Endpoint::parse("target", "redis://127.0.0.1:1").unwrap(),
    );
    cfg.recheck_interval = Duration::ZERO;
    let err = verify(&cfg).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot connect to target node 127.0.0.1:1"),
        "{err}"
    );
    let _ = server.topology();
}

/// Reading a cluster's replicas (`READONLY`) gives the same verdicts as reading masters.
#[test]
fn cluster_replicas_can_be_read() {
    use ferry_fixtures::LocalCluster;
    let source = LocalCluster::builder()
        .masters(2)
        .replicas(1)
        .start()
        .unwrap();
    let pair = clusters();
    let pattern = "*replica:*";
    Dataset::new(91)
        .prefix("replica")
        .scale(1_000)
        .load(&source)
        .unwrap();
    // Every replica has what its master has (WAIT would only count this connection's
    // writes, and the dataset came through others).
    for master in source.masters().unwrap() {
        let addr = master.addr();
        ferry_fixtures::conn::poll("replicas to catch up", Duration::from_secs(10), || {
            let info = ferry_fixtures::conn::info(&addr, "replication").ok()?;
            let offset: u64 = info.get("master_repl_offset")?.parse().ok()?;
            let acked: u64 = info
                .get("slave0")?
                .split(',')
                .find_map(|f| f.strip_prefix("offset="))?
                .parse()
                .ok()?;
            (acked >= offset).then_some(())
        })
        .unwrap();
    }
    copy(&source, &pair.target, pattern);
    let mut tgt = Nodes::new(&pair.target);
    let _: () = tgt.run(
        b"replica:extra",
        redis::cmd("SET").arg("replica:extra").arg("v"),
    );
    let mut cfg = config(&source, &pair.target, pattern);
    cfg.read_from = ReadFrom::Replica;
    let report = run(&cfg);
    assert_eq!(report.source.read_from, ReadFrom::Replica);
    let differing: Vec<String> = report
        .differences
        .iter()
        .map(|d| d.key.to_string())
        .collect();
    assert_eq!(differing, ["replica:extra"], "{}", show(&report));
    assert!(report.counts.keys_compared >= 1_000);
}

/// A user whose ACL denies `DUMP` and `OBJECT` gets the same differences: values of small
/// encodings are then read element by element instead of compared as `DUMP` payloads.
#[test]
fn a_user_without_dump_or_object_gets_the_same_differences() {
    let source = LocalServer::builder().start().unwrap();
    let target = LocalServer::builder().start().unwrap();
    for server in [&source, &target] {
        let mut conn = (server.master() as &dyn ferry_fixtures::Node)
            .connect()
            .unwrap();
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("reader")
            .arg(&["on", ">secret", "~*", "+@all", "-dump", "-object"][..])
            .query(&mut conn)
            .unwrap();
    }
    Dataset::new(93)
        .prefix("acl")
        .scale(500)
        .load(&source)
        .unwrap();
    let mut src = Nodes::new(&source);
    let _: () = src.run(
        b"acl:h",
        redis::cmd("HSET")
            .arg("acl:h")
            .arg(&["f", "v", "g", "w"][..]),
    );
    let _: () = src.run(
        b"acl:z",
        redis::cmd("ZADD")
            .arg("acl:z")
            .arg(&["1", "a", "2", "b"][..]),
    );
    let _: () = src.run(
        b"acl:s",
        redis::cmd("SADD").arg("acl:s").arg(&[1, 2, 3][..]),
    );
    copy(&source, &target, "*acl:*");
    let mut tgt = Nodes::new(&target);
    let _: () = tgt.run(
        b"acl:h",
        redis::cmd("HSET").arg("acl:h").arg(&["g", "W"][..]),
    );
    let _: () = tgt.run(
        b"acl:z",
        redis::cmd("ZADD").arg("acl:z").arg(&["5", "a"][..]),
    );
    let _: () = tgt.run(b"acl:s", redis::cmd("SADD").arg("acl:s").arg(4));
    let _: () = tgt.run(b"acl:h", redis::cmd("PEXPIRE").arg("acl:h").arg(3_600_000));

    let everyone = run(&config(&source, &target, "*acl:*"));
    let as_reader = |deployment: &dyn Deployment, side| {
        let addr = deployment.nodes()[0].addr();
        Endpoint::parse(
            side,
            &format!("redis://reader:secret@{}:{}", addr.host, addr.port),
        )
        .unwrap()
    };
    let mut cfg = config(&source, &target, "*acl:*");
    cfg.source = as_reader(&source, "source");
    cfg.target = as_reader(&target, "target");
    let reader = run(&cfg);
    let text = show(&reader);
    let mut differing: Vec<String> = reader
        .differences
        .iter()
        .map(|d| format!("{} {:?}", d.key, d.kind))
        .collect();
    differing.sort();
    assert_eq!(
        differing,
        ["acl:h Ttl", "acl:h Value", "acl:s Value", "acl:z Value"],
        "{text}"
    );
    let json = |report: &ferry_verifier::Report| {
        serde_json::to_string_pretty(&report.differences).unwrap()
    };
    assert_eq!(json(&everyone), json(&reader));
    assert!(reader.counts.keys_compared >= 500, "{:?}", reader.counts);
}
