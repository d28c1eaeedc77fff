//! Expiry holds: the target must not expire a key before the source's stream says it did.
//!
//! The target is a master and expires keys on its own clock, while the stream it applies runs
//! behind the source. A write that the source ran just before a key expired reaches the target
//! after it: the target has dropped the key by then, so the write rebuilds it from nothing
//! (`APPEND` makes a new string without a TTL, `HINCRBY` a hash of one field) and the copy
//! differs until the source's next write of that key, for good when that write extends its
//! TTL. A Redis replica avoids this by never expiring keys itself: it waits for the master's
//! `DEL`, which the source sends at the point of the stream where the key expired there.
//!
//! ferry does the same for every expiry that could be reached while the stream lags: an
//! absolute expiry `T` (`PEXPIREAT`, `SET ... PXAT`, `RESTORE ... ABSTTL`) that falls within
//! the current lag plus [`HOLD_MARGIN_MS`] of now is written as `T +` [`HOLD_SHIFT_MS`]
//! instead, and `T` is recorded in a sorted set of the same target master
//! (`__ferry__:{tag}:held:<shard>`, score `T`). The key then lives on the target until the
//! source's `DEL` arrives, exactly as on a replica. What is recorded goes back to `T`:
//! - [`RELEASE`], run after flushes: entries whose `T` the stream has passed (the source has
//!   expired the key, its `DEL` may come late) get `PEXPIREAT key T`, which the target carries
//!   out at once; entries whose key no longer carries `T + shift` (a later write set another
//!   expiry, or deleted the key) are dropped;
//! - on a clean stop and in `ferry cleanup`, every entry gets its `T` back.
//!
//! The shift is 2^40 ms (about 35 years), so that a held expiry cannot be mistaken for one a
//! user set: the verifier reads a target expiry near `now + shift` as held and compares `T`.

use bytes::Bytes;

use crate::resp::Command;

/// Added to an expiry that is held.
pub const HOLD_SHIFT_MS: i64 = 1 << 40;

/// Expiries within the current lag plus this much of now are held: the stream may fall
/// further behind after a write (a target failover stalls it for about the cluster's node
/// timeout and the election).
pub const HOLD_MARGIN_MS: i64 = 30_000;

/// Whether `expire_at_ms`, read from a target key, is a held expiry (ferry's shift added to a
/// time within a day of `now_ms`), and the expiry it holds.
pub fn held_expiry(expire_at_ms: i64, now_ms: i64) -> Option<i64> {
    const DAY_MS: i64 = 86_400_000;
    let held = expire_at_ms.checked_sub(HOLD_SHIFT_MS)?;
    ((held - now_ms).abs() <= DAY_MS).then_some(held)
}

/// An expiry that a write was changed to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key: Bytes,
    /// The expiry the source set, in ms.
    pub expire_at_ms: i64,
}

/// When `command` sets an absolute expiry before `hold_until_ms`, rewrites it in place to the
/// held expiry and says which; other commands are left as they are.
pub fn hold(command: &mut Command, hold_until_ms: i64) -> Option<Held> {
    let argv = command.argv();
    let name = argv.first()?;
    // (index of the expiry argument, its scale to ms)
    let at = if name.eq_ignore_ascii_case(b"pexpireat") || name.eq_ignore_ascii_case(b"expireat") {
        // NX/XX/GT/LT compare with the current expiry, which may itself be held: the source's
        // 7.0+ stream never carries them (it sends the outcome), so such a command is left.
        if argv.len() != 3 {
            return None;
        }
        let scale = if name.eq_ignore_ascii_case(b"expireat") {
            1000
        } else {
            1
        };
        (2, scale)
    } else if name.eq_ignore_ascii_case(b"set") {
        let index = (3..argv.len().saturating_sub(1)).find(|&i| {
            argv[i].eq_ignore_ascii_case(b"pxat") || argv[i].eq_ignore_ascii_case(b"exat")
        })?;
        let scale = if argv[index].eq_ignore_ascii_case(b"exat") {
            1000
        } else {
            1
        };
        (index + 1, scale)
    } else if name.eq_ignore_ascii_case(b"restore") {
        if argv.len() < 4 || !argv[4..].iter().any(|a| a.eq_ignore_ascii_case(b"absttl")) {
            return None;
        }
        (2, 1)
    } else {
        return None;
    };
    let (index, scale) = at;
    let key = argv.get(1)?.clone();
    let expire_at_ms = std::str::from_utf8(argv.get(index)?)
        .ok()?
        .parse::<i64>()
        .ok()?
        .checked_mul(scale)?;
    // 0 is "no expiry" for RESTORE; anything past the window is safe as it is.
    if expire_at_ms <= 0 || expire_at_ms >= hold_until_ms {
        return None;
    }
    let mut new = argv.to_vec();
    new[index] = Bytes::from((expire_at_ms + HOLD_SHIFT_MS).to_string());
    if scale != 1 {
        // EXAT/EXPIREAT in seconds cannot carry the ms of the shift: switch to the ms form.
        if name.eq_ignore_ascii_case(b"expireat") {
            new[0] = Bytes::from_static(b"PEXPIREAT");
        } else {
            new[index - 1] = Bytes::from_static(b"PXAT");
        }
    }
    *command = Command::from_argv(new).expect("not empty");
    Some(Held { key, expire_at_ms })
}

/// Settles one sorted set of held expiries on one target master. `ARGV`: the set, how far the
/// stream has come in source time (ms; entries up to it are expired at the source), the
/// shift, the most entries to settle, and `all` to settle every entry (a clean stop). Each
/// entry whose key still carries its held expiry gets its own back (`PEXPIREAT`, which drops
/// the key at once when that time has passed); every settled entry leaves the set. Returns
/// how many entries remain.
pub const RELEASE: &str = r#"local held = ARGV[1]
local upto = ARGV[2]
local shift = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
if ARGV[5] == 'all' then upto = '+inf' end
local due = redis.call('ZRANGEBYSCORE', held, '-inf', upto, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
  local key = due[i]
  local at = tonumber(due[i + 1])
  if redis.call('PEXPIRETIME', key) == at + shift then
    redis.call('PEXPIREAT', key, at)
  end
  redis.call('ZREM', held, key)
end
return redis.call('ZCARD', held)"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> Command {
        Command::from_argv(
            line.split(' ')
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect(),
        )
        .unwrap()
    }

    fn line(command: &Command) -> String {
        command
            .argv()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn near_expiries_are_shifted_and_recorded() {
        let until = 2_000_000;
        let shifted = (1_500_000 + HOLD_SHIFT_MS).to_string();
        for (before, after) in [
            ("PEXPIREAT k 1500000", format!("PEXPIREAT k {shifted}")),
            ("EXPIREAT k 1500", format!("PEXPIREAT k {shifted}")),
            ("SET k v PXAT 1500000", format!("SET k v PXAT {shifted}")),
            (
                "SET k v XX EXAT 1500 GET",
                format!("SET k v XX PXAT {shifted} GET"),
            ),
            (
                "RESTORE k 1500000 payload REPLACE ABSTTL",
                format!("RESTORE k {shifted} payload REPLACE ABSTTL"),
            ),
        ] {
            let mut c = command(before);
            let held = hold(&mut c, until).unwrap_or_else(|| panic!("{before} not held"));
            assert_eq!(line(&c), after);
            assert_eq!(held.key.as_ref(), b"k");
            assert_eq!(held.expire_at_ms, 1_500_000);
            assert_eq!(
                held_expiry(1_500_000 + HOLD_SHIFT_MS, 1_400_000),
                Some(1_500_000)
            );
        }
    }

    #[test]
    fn other_writes_and_far_expiries_are_left_alone() {
        for before in [
            "PEXPIREAT k 2500000",
            "PEXPIREAT k 1500000 GT",
            "SET k v",
            "SET k v PXAT 2500000",
            "RESTORE k 0 payload ABSTTL",
            "RESTORE k 1500 payload",
            "APPEND k v",
            "PXAT",
        ] {
            let mut c = command(before);
            assert_eq!(hold(&mut c, 2_000_000), None, "{before}");
            assert_eq!(line(&c), before);
        }
        assert_eq!(held_expiry(1_700_000_000_000, 1_700_000_000_000), None);
    }
}
