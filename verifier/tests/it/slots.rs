//! Whole clusters compared without filters: the source is listed slot by slot and the target
//! only in the slots whose key count the source's keys found there do not explain.

use ferry_engine::route::{Slot, SlotRange};
use ferry_fixtures::{Dataset, LocalCluster};
use ferry_verifier::DiffKind;

use crate::copy::{copy, Nodes};
use crate::shared::{config, kinds, run, show};

/// A name with `tag` as its hash tag, so it shares the slot of every key tagged alike.
fn tagged(tag: &[u8], name: &str) -> Vec<u8> {
    let mut key = b"{".to_vec();
    key.extend_from_slice(tag);
    key.extend_from_slice(b"}");
    key.extend_from_slice(name.as_bytes());
    key
}

#[test]
fn slot_counts_account_for_the_target_and_never_hide_a_key_only_there() {
    // Three masters into four: the slots of one target node come from several source nodes.
    let (source, target) = std::thread::scope(|s| {
        let source = s.spawn(|| LocalCluster::builder().masters(3).start());
        let target = s.spawn(|| LocalCluster::builder().masters(4).start());
        (source.join().unwrap(), target.join().unwrap())
    });
    let (source, target) = (source.unwrap(), target.unwrap());
    Dataset::new(17).scale(3_000).load(&source).unwrap();
    copy(&source, &target, "*");

    let clean = run(&config(&source, &target, ""));
    assert!(clean.differences.is_empty(), "{}", show(&clean));
    assert_eq!(clean.counts.source_keys_scanned, 3_000);
    // Every target key was accounted for by counts; none had to be listed.
    assert_eq!(clean.counts.target_keys_counted, 3_000, "{}", show(&clean));
    assert_eq!(clean.counts.target_keys_scanned, 0);
    assert_eq!(clean.counts.keys_compared, 3_000);

    let mut src = Nodes::new(&source);
    let mut tgt = Nodes::new(&target);
    // One slot: a source key missing on the target and a key only on the target, so the
    // slot's counts are equal on both sides.
    let (same, only) = (tagged(b"pair", "same"), tagged(b"pair", "only"));
    let _: () = src.run(&same, redis::cmd("SET").arg(&same).arg("s"));
    let _: () = tgt.run(&only, redis::cmd("SET").arg(&only).arg("t"));
    // A key only on the target, in a slot where the source has nothing of the kind.
    let alone = b"alone-on-target".to_vec();
    let _: () = tgt.run(&alone, redis::cmd("SADD").arg(&alone).arg("m"));
    // ferry's own keys on the target are neither listed as differences nor counted.
    let reserved = b"__ferry__:checkpoint:x".to_vec();
    let _: () = tgt.run(&reserved, redis::cmd("SET").arg(&reserved).arg("1"));

    let report = run(&config(&source, &target, ""));
    assert_eq!(
        kinds(&report, &same),
        [DiffKind::Missing],
        "{}",
        show(&report)
    );
    assert_eq!(
        kinds(&report, &only),
        [DiffKind::Extra],
        "{}",
        show(&report)
    );
    assert_eq!(
        kinds(&report, &alone),
        [DiffKind::Extra],
        "{}",
        show(&report)
    );
    assert_eq!(report.differences.len(), 3, "{}", show(&report));
    // ferry's key is left out of the census too.
    assert_eq!(report.census.target_keys, 3_002, "{}", show(&report));
    // Only the slots whose counts were not explained were listed on the target: those of
    // the three keys written there.
    let mut slots = std::collections::BTreeMap::new();
    for key in [&same, &alone, &reserved] {
        let slot = Slot::of_key(key).get();
        let n: u64 = tgt.run(key, redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot));
        slots.insert(slot, n);
    }
    let keys_there: u64 = slots.values().sum();
    assert_eq!(
        report.counts.target_keys_scanned,
        keys_there,
        "{}",
        show(&report)
    );
    assert_eq!(
        report.counts.target_keys_counted + report.counts.target_keys_scanned,
        3_000 + 3,
        "{}",
        show(&report)
    );

    // A slot range: only its slots are listed and counted.
    let mut cfg = config(&source, &target, "");
    let slot = Slot::of_key(&same);
    cfg.slots = Some(SlotRange::new(slot, slot));
    let narrow = run(&cfg);
    assert_eq!(
        kinds(&narrow, &same),
        [DiffKind::Missing],
        "{}",
        show(&narrow)
    );
    assert_eq!(
        kinds(&narrow, &only),
        [DiffKind::Extra],
        "{}",
        show(&narrow)
    );
    assert_eq!(narrow.differences.len(), 2, "{}", show(&narrow));
    assert_eq!(narrow.counts.target_keys_counted, 0);

    // A slot holding more keys than may be listed at once: both sides are scanned, with
    // the same findings.
    let mut cfg = config(&source, &target, "");
    cfg.windows.slot_keys = 3;
    let scanned = run(&cfg);
    assert_eq!(scanned.differences.len(), 3, "{}", show(&scanned));
    assert_eq!(
        kinds(&scanned, &only),
        [DiffKind::Extra],
        "{}",
        show(&scanned)
    );
    assert_eq!(scanned.counts.target_keys_counted, 0);
    assert_eq!(scanned.counts.target_keys_scanned, 3_003);
}
