//! Expiries ferry holds on a target (2^40 ms added until the source's stream reaches them)
//! are read as the expiries they hold: equal when the source has that expiry, gone once it
//! has passed, and a real difference otherwise.

use ferry_verifier::{DiffKind, HELD_EXPIRY_SHIFT_MS};

use crate::copy::Nodes;
use crate::shared::{clusters, config, kinds, run, show};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn held_expiries_compare_as_the_expiries_they_hold() {
    let pair = clusters();
    let mut src = Nodes::new(&pair.source);
    let mut tgt = Nodes::new(&pair.target);
    let soon = now_ms() + 60_000;
    let set = |nodes: &mut Nodes, key: &str, at: i64| {
        let _: () = nodes.run(key.as_bytes(), redis::cmd("SET").arg(key).arg("v"));
        let _: () = nodes.run(key.as_bytes(), redis::cmd("PEXPIREAT").arg(key).arg(at));
    };
    // Held on the target, the same expiry on the source: equal.
    set(&mut src, "held:same", soon);
    set(&mut tgt, "held:same", soon + HELD_EXPIRY_SHIFT_MS);
    // Held, but the source has another expiry: a TTL difference.
    set(&mut src, "held:other", soon + 30_000);
    set(&mut tgt, "held:other", soon + HELD_EXPIRY_SHIFT_MS);
    // Held past its expiry (the source has deleted the key): gone on both sides.
    set(
        &mut tgt,
        "held:passed",
        now_ms() - 5_000 + HELD_EXPIRY_SHIFT_MS,
    );
    // Not held: a target-only key with a far expiry is extra.
    set(&mut tgt, "held:extra", soon);
    let report = run(&config(&pair.source, &pair.target, "held:*"));
    assert!(kinds(&report, b"held:same").is_empty(), "{}", show(&report));
    assert_eq!(
        kinds(&report, b"held:other"),
        [DiffKind::Ttl],
        "{}",
        show(&report)
    );
    assert!(
        kinds(&report, b"held:passed").is_empty(),
        "{}",
        show(&report)
    );
    assert_eq!(
        kinds(&report, b"held:extra"),
        [DiffKind::Extra],
        "{}",
        show(&report)
    );
}
