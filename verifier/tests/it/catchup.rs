//! Re-checks of a live copy by `ferry sync`: with ferry's checkpoints on the target, a round
//! waits until the target applied what the source had, instead of a blind pause.

use std::time::{Duration, Instant};

use ferry_engine::route::Slot;
use ferry_engine::sync::{checkpoint_key, ShardId};
use ferry_fixtures::{conn, LocalServer, Node};

use crate::shared::{config, run, show};

/// The checkpoint value for the source master's current position, minus `behind` bytes.
fn position(source: &LocalServer, behind: u64) -> String {
    let info = conn::info(&source.master().addr(), "replication").unwrap();
    let offset: u64 = info["master_repl_offset"].parse().unwrap();
    format!(
        "{} {} 0",
        info["master_replid"],
        offset.saturating_sub(behind)
    )
}

fn set(node: &dyn Node, key: &[u8], value: &str) {
    let _: () = node.query(redis::cmd("SET").arg(key).arg(value)).unwrap();
}

#[test]
fn a_round_waits_for_the_target_to_apply_the_source_position() {
    let (source, target) = std::thread::scope(|s| {
        // A replica makes the source keep a replication offset, as ferry attached does.
        let a = s.spawn(|| LocalServer::builder().replicas(1).start().unwrap());
        let b = s.spawn(|| LocalServer::builder().start().unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let slot0 = Slot::new(0).unwrap();
    let checkpoint = checkpoint_key(slot0);
    let field = ShardId::from_first_slot(slot0);
    // The source wrote `k` = new; the target applied it only up to before that write.
    set(source.master(), b"catchup:k", "old");
    set(target.master(), b"catchup:k", "old");
    let before = position(&source, 0);
    set(source.master(), b"catchup:k", "new");
    let hset = |value: &str| {
        let _: () = (target.master() as &dyn Node)
            .query(
                redis::cmd("HSET")
                    .arg(&checkpoint[..])
                    .arg(field.as_str())
                    .arg(value),
            )
            .unwrap();
    };
    hset(&before);

    let mut cfg = config(&source, &target, "catchup:*");
    cfg.rounds = 1;
    cfg.recheck_interval = Duration::from_millis(0);
    cfg.catch_up_limit = Duration::from_secs(10);
    let started = Instant::now();
    let report = std::thread::scope(|s| {
        let verifier = s.spawn(|| run(&cfg));
        // The "sync" applies the write 600 ms later, then moves its checkpoint.
        std::thread::sleep(Duration::from_millis(600));
        set(target.master(), b"catchup:k", "new");
        hset(&position(&source, 0));
        verifier.join().unwrap()
    });
    assert!(report.is_consistent(), "{}", show(&report));
    let round = &report.rounds[0];
    let waited = round
        .caught_up_ms
        .expect("the round waited for the checkpoints");
    assert!(
        waited >= 300 && started.elapsed() < Duration::from_secs(8),
        "waited {waited} ms"
    );
    assert_eq!(round.resolved, 1);

    // No checkpoints: the round pauses instead and says nothing about catching up.
    let _: () = (target.master() as &dyn Node)
        .query(redis::cmd("DEL").arg(&checkpoint[..]))
        .unwrap();
    set(source.master(), b"catchup:k", "newer");
    let report = run(&cfg);
    assert_eq!(report.rounds[0].caught_up_ms, None);
    assert!(!report.is_consistent());
}
