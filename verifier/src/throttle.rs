//! Global caps on commands and reply bytes per second, shared by every connection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimits;

/// A token bucket per cap, refilled continuously, holding at most one second of budget.
/// Callers take what they are about to spend (commands) or just spent (bytes) and sleep
/// while the bucket is in debt.
#[derive(Debug)]
pub(crate) struct Throttle {
    limits: RateLimits,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    at: Instant,
    ops: f64,
    bytes: f64,
}

impl Throttle {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Throttle {
            limits,
            state: Mutex::new(Buckets {
                at: Instant::now(),
                ops: limits.ops_per_sec.unwrap_or(0) as f64,
                bytes: limits.bytes_per_sec.unwrap_or(0) as f64,
            }),
        }
    }

    /// Whether reply bytes are capped (so that they are worth counting).
    pub(crate) fn counts_bytes(&self) -> bool {
        self.limits.bytes_per_sec.is_some()
    }

    /// Spends `ops` commands and `bytes` reply bytes; sleeps as long as the budget is
    /// overdrawn.
    pub(crate) fn spend(&self, ops: u64, bytes: u64) {
        if self.limits.ops_per_sec.is_none() && self.limits.bytes_per_sec.is_none() {
            return;
        }
        let wait = {
            let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let elapsed = now.duration_since(b.at).as_secs_f64();
            b.at = now;
            let mut wait = 0f64;
            if let Some(rate) = self.limits.ops_per_sec {
                let rate = rate as f64;
                b.ops = (b.ops + elapsed * rate).min(rate) - ops as f64;
                wait = wait.max(-b.ops / rate);
            }
            if let Some(rate) = self.limits.bytes_per_sec {
                let rate = rate as f64;
                b.bytes = (b.bytes + elapsed * rate).min(rate) - bytes as f64;
                wait = wait.max(-b.bytes / rate);
            }
            wait
        };
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limits_never_sleep_and_debt_is_paid_back() {
        let free = Throttle::new(RateLimits::default());
        free.spend(1_000_000, 1 << 40);
        let capped = Throttle::new(RateLimits {
            ops_per_sec: Some(1_000),
            bytes_per_sec: None,
        });
        // The first second's budget is there at once.
        capped.spend(1_000, 0);
        let ops = capped.state.lock().unwrap().ops;
        assert!(ops <= 1.0, "{ops}");
    }
}
