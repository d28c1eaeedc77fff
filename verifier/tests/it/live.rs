//! Live writes on the source while the test keeps the copy up to date: the verifier must
//! report no difference (keys being written are unstable, never inconsistent).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_fixtures::{Dataset, Workload};

use crate::copy::{copy_with, Nodes};

/// Sets the flag when dropped, so helper threads stop even when an assertion fails.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
use crate::shared::{clusters, config, run, show};

#[test]
fn live_writes_with_a_copy_kept_up_to_date_give_no_false_positive() {
    let pair = clusters();
    let pattern = "*live:*";
    Dataset::new(81)
        .prefix("live")
        .scale(1_000)
        .load(&pair.source)
        .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let copier = scope.spawn(|| {
            let mut src = Nodes::new(&pair.source);
            let mut tgt = Nodes::new(&pair.target);
            let mut loops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                copy_with(&mut src, &mut tgt, pattern);
                loops += 1;
            }
            loops
        });
        let workload = Workload::new(82)
            .prefix("live")
            .key_space(50)
            .rate(1_000)
            .spawn(&pair.source)
            .unwrap();
        // Let the copy catch up once before verifying.
        std::thread::sleep(Duration::from_millis(500));
        // Re-checks wait far longer than one copy loop takes.
        let mut cfg = config(&pair.source, &pair.target, pattern);
        cfg.rounds = 3;
        cfg.recheck_interval = Duration::from_secs(1);
        let report = run(&cfg);
        let ops = workload.stop().unwrap();
        stop.store(true, Ordering::Relaxed);
        let loops = copier.join().unwrap();
        assert!(ops.ops > 0 && loops > 1, "{ops} / {loops} copies");
        assert!(report.is_consistent(), "{}", show(&report));
        assert!(report.counts.keys_compared >= 1_000, "{:?}", report.counts);
        eprintln!(
            "live: {} ops, {loops} copies, rounds {:?}, {} unstable",
            ops.ops, report.rounds, report.counts.unstable_keys
        );
    });
}

/// A key rewritten all the time on the source and never copied changes in every round: it
/// is unstable, not inconsistent; a key that differs and stays put is inconsistent.
#[test]
fn keys_changing_in_every_round_are_unstable_not_inconsistent() {
    let pair = clusters();
    let mut src = Nodes::new(&pair.source);
    let _: () = src.run(
        b"churn:stable",
        redis::cmd("SET").arg("churn:stable").arg("v"),
    );
    let _: () = src.run(
        b"churn:counter",
        redis::cmd("SET").arg("churn:counter").arg(0),
    );
    // Copied once; from then on the target's counter lags behind for good, and its other
    // key differs and stays put.
    crate::copy::copy(&pair.source, &pair.target, "churn:*");
    let mut tgt = Nodes::new(&pair.target);
    let _: () = tgt.run(
        b"churn:stable",
        redis::cmd("SET").arg("churn:stable").arg("w"),
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let writer = scope.spawn(|| {
            let mut src = Nodes::new(&pair.source);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: i64 = src.run(b"churn:counter", redis::cmd("INCR").arg("churn:counter"));
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut cfg = config(&pair.source, &pair.target, "churn:*");
        cfg.rounds = 3;
        cfg.recheck_interval = Duration::from_millis(100);
        let report = run(&cfg);
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
        let text = show(&report);
        let unstable: Vec<String> = report.unstable.iter().map(|u| u.key.to_string()).collect();
        assert_eq!(unstable, ["churn:counter"], "{text}");
        assert_eq!(report.unstable[0].rounds_changed, 3);
        let differing: Vec<String> = report
            .differences
            .iter()
            .map(|d| d.key.to_string())
            .collect();
        assert_eq!(differing, ["churn:stable"], "{text}");
        assert_eq!(report.counts.unstable_keys, 1);
        assert!(text.contains("unstable keys"), "{text}");
    });
}
