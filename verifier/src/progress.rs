//! Progress lines on stderr while a verification runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters the workers bump and a ticker thread prints.
#[derive(Default)]
pub(crate) struct Progress {
    enabled: bool,
    pub(crate) source_scanned: AtomicU64,
    pub(crate) target_scanned: AtomicU64,
    pub(crate) differing: AtomicU64,
    done: AtomicBool,
}

/// How often a progress line is printed.
const EVERY: Duration = Duration::from_secs(2);

impl Progress {
    pub(crate) fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            ..Progress::default()
        }
    }

    /// Prints `line` when progress is on.
    pub(crate) fn say(&self, line: &str) {
        if self.enabled {
            eprintln!("verify: {line}");
        }
    }

    /// Prints the counters every few seconds until [`Progress::finish`].
    pub(crate) fn tick(&self, started: Instant) {
        if !self.enabled {
            return;
        }
        let mut next = Instant::now() + EVERY;
        while !self.done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            if Instant::now() < next {
                continue;
            }
            next += EVERY;
            let rate = self.source_scanned.load(Ordering::Relaxed) as f64
                / started.elapsed().as_secs_f64().max(1e-3);
            self.say(&format!(
                "scanned {} source and {} target keys ({:.0} keys/s), {} differing so far",
                self.source_scanned.load(Ordering::Relaxed),
                self.target_scanned.load(Ordering::Relaxed),
                rate,
                self.differing.load(Ordering::Relaxed)
            ));
        }
    }

    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
