//! Expiries of sources older than Redis 7.0 made absolute (sans-IO).
//!
//! Before 7.0 a master replicates relative expiries as its clients sent them (`EXPIRE`,
//! `PEXPIRE`, `SETEX`, `PSETEX`, `SET ... EX|PX`, `RESTORE key <ttl>` without `ABSTTL`; 6.2
//! turns `SET ... EX` and `GETEX` into `SET ... PX` and `PEXPIRE`): applied as they are, every
//! expiry on the target would be stretched by however long the command took to get there.
//! Each becomes an absolute form (`PEXPIREAT`, `SET ... PXAT`, `RESTORE ... ABSTTL`) counted
//! from when the command reached ferry ([`Arrival`]), which for a live stream is within the
//! network's delay of when the master ran it.
//!
//! Commands a master had already run when ferry connected (its backlog after a restart of
//! ferry, what it buffered while sending a snapshot) arrive late by an unknown amount: for
//! them the expiry is read back from the source master ([`Probe`]) before the write is
//! applied. So is the expiry of a key written by a plain `SET key value` from a source older
//! than 6.0, which is also how those versions replicate `INCRBYFLOAT` (the key keeps its
//! expiry there; a replica of it loses it).

use bytes::Bytes;

use crate::deployment::{Family, ServerInfo};
use crate::resp::Command;

/// Which of its replicated forms a source's stream needs rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceForms {
    /// Expiries come relative to when the master ran the command (Redis before 7.0).
    pub relative_expiry: bool,
    /// `INCRBYFLOAT` comes as a plain `SET key value` that drops the key's expiry (Redis
    /// before 6.0, which has no `KEEPTTL`).
    pub float_as_set: bool,
}

impl SourceForms {
    pub fn of(server: &ServerInfo) -> Self {
        let redis = server.family == Family::Redis;
        SourceForms {
            relative_expiry: redis && server.version < (7, 0, 0),
            float_as_set: redis && server.version < (6, 0, 0),
        }
    }
}

/// When a stream command reached ferry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Unix milliseconds: the master ran the command at or before this.
    pub ms: u64,
    /// The master had already run it when the link was set up (backlog, snapshot buffer):
    /// `ms` says little about when.
    pub replayed: bool,
}

/// An expiry to read from the source master before a write is applied: `commands[at]` of
/// the write is a placeholder (`PTTL key`, harmless if it ever ran) that becomes
/// `PEXPIREAT key <the source's expiry>`; when the source holds the key without an expiry or
/// not at all, it becomes `PEXPIREAT key <fallback_ms>`, or goes when there is no fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub at: usize,
    pub key: Bytes,
    pub fallback_ms: Option<u64>,
}

impl Probe {
    /// The command that replaces the placeholder, given the source's `PTTL` of the key and
    /// its clock (Unix milliseconds) read right after it; `None`: the placeholder goes.
    pub fn resolve(&self, pttl: i64, source_now_ms: u64) -> Option<Command> {
        let at = if pttl >= 0 {
            source_now_ms.checked_add(pttl as u64)?
        } else {
            self.fallback_ms?
        };
        Some(pexpireat(self.key.clone(), at))
    }
}

/// The commands that replace one stream command, and the expiry to read from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub commands: Vec<Command>,
    pub probe: Option<Probe>,
}

impl Converted {
    fn one(command: Command) -> Self {
        Converted {
            commands: vec![command],
            probe: None,
        }
    }
}

/// `command` (named `name`, lowercase) with its expiry made absolute for the target.
/// `restore_absttl`: the target knows `RESTORE ... ABSTTL` (Redis 5.0+, Valkey).
pub fn absolute(
    name: &str,
    command: Command,
    forms: SourceForms,
    arrival: Arrival,
    restore_absttl: bool,
) -> Converted {
    if !forms.relative_expiry {
        return Converted::one(command);
    }
    let converted = match name {
        "expire" => expire(&command, 1000, arrival),
        "pexpire" => expire(&command, 1, arrival),
        "setex" => setex(&command, 1000, arrival),
        "psetex" => setex(&command, 1, arrival),
        "set" => set(&command, forms, arrival),
        "restore" | "restore-asking" => restore(&command, arrival, restore_absttl),
        _ => None,
    };
    converted.unwrap_or_else(|| Converted::one(command))
}

/// `at_ms + ttl * scale` as Unix milliseconds, if `ttl` is a number and the sum fits.
fn expire_at(ttl: &[u8], scale: i64, arrival: Arrival) -> Option<u64> {
    let ttl: i64 = std::str::from_utf8(ttl).ok()?.parse().ok()?;
    let at = (arrival.ms as i64).checked_add(ttl.checked_mul(scale)?)?;
    // A master propagates an expiry in the past as `DEL`; one here is left to the target.
    u64::try_from(at).ok().filter(|&at| at > 0)
}

fn pexpireat(key: Bytes, at_ms: u64) -> Command {
    Command::new("PEXPIREAT").arg(key).arg(at_ms.to_string())
}

/// `commands`, then the probe of `key` falling back to `fallback_ms`.
fn probed(mut commands: Vec<Command>, key: Bytes, fallback_ms: Option<u64>) -> Converted {
    let at = commands.len();
    commands.push(Command::new("PTTL").arg(key.clone()));
    Converted {
        commands,
        probe: Some(Probe {
            at,
            key,
            fallback_ms,
        }),
    }
}

/// `EXPIRE key s`, `PEXPIRE key ms` -> `PEXPIREAT key at`.
fn expire(command: &Command, scale: i64, arrival: Arrival) -> Option<Converted> {
    let [_, key, ttl] = command.argv() else {
        return None;
    };
    let at = expire_at(ttl, scale, arrival)?;
    Some(if arrival.replayed {
        probed(Vec::new(), key.clone(), Some(at))
    } else {
        Converted::one(pexpireat(key.clone(), at))
    })
}

/// `SETEX key s value`, `PSETEX key ms value` -> `SET key value PXAT at`.
fn setex(command: &Command, scale: i64, arrival: Arrival) -> Option<Converted> {
    let [_, key, ttl, value] = command.argv() else {
        return None;
    };
    let at = expire_at(ttl, scale, arrival)?;
    let set = Command::new("SET").arg(key.clone()).arg(value.clone());
    Some(if arrival.replayed {
        probed(vec![set], key.clone(), Some(at))
    } else {
        Converted::one(set.arg("PXAT").arg(at.to_string()))
    })
}

/// `SET key value [NX|XX] [GET] EX s|PX ms` -> `SET key value [NX|XX] [GET] PXAT at`; a plain
/// `SET key <number>` from a source that replicates `INCRBYFLOAT` that way is probed.
fn set(command: &Command, forms: SourceForms, arrival: Arrival) -> Option<Converted> {
    let argv = command.argv();
    if argv.len() < 3 {
        return None;
    }
    let key = argv[1].clone();
    let mut kept = argv[..3].to_vec();
    let mut at = None;
    let mut i = 3;
    while i < argv.len() {
        let option = &argv[i];
        let scale = if option.eq_ignore_ascii_case(b"ex") {
            Some(1000)
        } else if option.eq_ignore_ascii_case(b"px") {
            Some(1)
        } else {
            None
        };
        match scale {
            Some(scale) => {
                at = Some(expire_at(argv.get(i + 1)?, scale, arrival)?);
                i += 2;
            }
            None => {
                kept.push(option.clone());
                i += 1;
            }
        }
    }
    let Some(at) = at else {
        if forms.float_as_set && argv.len() == 3 && is_float_text(&argv[2]) {
            return Some(probed(vec![command.clone()], key, None));
        }
        return None;
    };
    let set = Command::from_argv(kept).expect("not empty");
    Some(if arrival.replayed {
        probed(vec![set], key, Some(at))
    } else {
        Converted::one(set.arg("PXAT").arg(at.to_string()))
    })
}

/// `RESTORE key ttl payload [REPLACE] [IDLETIME s] [FREQ f]` with a relative `ttl` ->
/// `RESTORE key at payload ... ABSTTL` (or `RESTORE key 0 ...` and `PEXPIREAT` for targets
/// without `ABSTTL`).
fn restore(command: &Command, arrival: Arrival, restore_absttl: bool) -> Option<Converted> {
    let argv = command.argv();
    if argv.len() < 4
        || argv[2].as_ref() == b"0"
        || argv[4..].iter().any(|a| a.eq_ignore_ascii_case(b"absttl"))
    {
        return None;
    }
    let key = argv[1].clone();
    let at = expire_at(&argv[2], 1, arrival)?;
    let mut without = argv.to_vec();
    without[2] = Bytes::from_static(b"0");
    let without = Command::from_argv(without).expect("not empty");
    Some(if arrival.replayed {
        probed(vec![without], key, Some(at))
    } else if restore_absttl {
        let mut absolute = argv.to_vec();
        absolute[2] = Bytes::from(at.to_string());
        absolute.push(Bytes::from_static(b"ABSTTL"));
        Converted::one(Command::from_argv(absolute).expect("not empty"))
    } else {
        Converted {
            commands: vec![without, pexpireat(key, at)],
            probe: None,
        }
    })
}

/// The text `INCRBYFLOAT` leaves in a key (Redis's "human friendly" long double: no
/// exponent, trailing zeros trimmed): `-?[0-9]+(\.[0-9]+)?`.
fn is_float_text(value: &[u8]) -> bool {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let (whole, fraction) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    let all_digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    all_digits(whole) && fraction.is_none_or(all_digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> Command {
        Command::from_argv(
            line.split(' ')
                .map(|w| Bytes::from(w.to_string()))
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

    const OLD: SourceForms = SourceForms {
        relative_expiry: true,
        float_as_set: true,
    };
    const LIVE: Arrival = Arrival {
        ms: 1_700_000_000_000,
        replayed: false,
    };
    const REPLAYED: Arrival = Arrival {
        ms: 1_700_000_000_000,
        replayed: true,
    };

    fn convert(text: &str, forms: SourceForms, arrival: Arrival) -> (Vec<String>, Option<Probe>) {
        let command = command(text);
        let name = String::from_utf8_lossy(command.name()).to_ascii_lowercase();
        let converted = absolute(&name, command, forms, arrival, true);
        (
            converted.commands.iter().map(line).collect(),
            converted.probe,
        )
    }

    #[test]
    fn relative_forms_count_from_the_arrival() {
        let cases = [
            ("EXPIRE k 100", "PEXPIREAT k 1700000100000"),
            ("pexpire k 1500", "PEXPIREAT k 1700000001500"),
            ("SETEX k 10 v", "SET k v PXAT 1700000010000"),
            ("PSETEX k 250 v", "SET k v PXAT 1700000000250"),
            ("SET k v EX 10", "SET k v PXAT 1700000010000"),
            ("SET k v px 10 NX", "SET k v NX PXAT 1700000000010"),
            ("SET k v XX PX 10 GET", "SET k v XX GET PXAT 1700000000010"),
            (
                "RESTORE k 5000 payload REPLACE",
                "RESTORE k 1700000005000 payload REPLACE ABSTTL",
            ),
        ];
        for (from, to) in cases {
            assert_eq!(
                convert(from, OLD, LIVE),
                (vec![to.to_string()], None),
                "{from}"
            );
        }
    }

    #[test]
    fn absolute_and_unparsable_forms_stay() {
        for same in [
            "PEXPIREAT k 1700000100000",
            "SET k v PXAT 1700000100000",
            "SET k v KEEPTTL",
            "SET k hello",
            "RESTORE k 0 payload",
            "RESTORE k 1700000100000 payload ABSTTL",
            "EXPIRE k soon",
            "EXPIRE k 9223372036854775807",
            "INCR k",
        ] {
            assert_eq!(
                convert(same, OLD, LIVE),
                (vec![same.to_string()], None),
                "{same}"
            );
        }
    }

    #[test]
    fn the_source_version_decides_the_forms() {
        let forms = |family, version| SourceForms::of(&ServerInfo { family, version });
        let both = SourceForms {
            relative_expiry: true,
            float_as_set: true,
        };
        assert_eq!(forms(Family::Redis, (4, 0, 14)), both);
        assert_eq!(forms(Family::Redis, (5, 0, 10)), both);
        let relative = SourceForms {
            relative_expiry: true,
            float_as_set: false,
        };
        assert_eq!(forms(Family::Redis, (6, 0, 9)), relative);
        assert_eq!(forms(Family::Redis, (6, 2, 16)), relative);
        // 7.0 replicates PEXPIREAT, SET ... PXAT, RESTORE ... ABSTTL; Valkey forked 7.2.
        assert_eq!(forms(Family::Redis, (7, 0, 0)), SourceForms::default());
        assert_eq!(forms(Family::Valkey, (7, 2, 5)), SourceForms::default());
    }

    #[test]
    fn sources_from_7_0_are_left_alone() {
        let new = SourceForms::default();
        for same in [
            "EXPIRE k 100",
            "SETEX k 10 v",
            "SET k 1.5",
            "RESTORE k 10 p",
        ] {
            assert_eq!(convert(same, new, REPLAYED), (vec![same.to_string()], None));
        }
        let six = SourceForms {
            relative_expiry: true,
            float_as_set: false,
        };
        assert_eq!(
            convert("SET k 1.5", six, LIVE),
            (vec!["SET k 1.5".to_string()], None),
            "6.x replicates INCRBYFLOAT with KEEPTTL"
        );
    }

    #[test]
    fn replayed_forms_read_the_expiry_from_the_source() {
        let probe = |at, key: &str, fallback_ms| {
            Some(Probe {
                at,
                key: Bytes::from(key.to_string()),
                fallback_ms,
            })
        };
        assert_eq!(
            convert("EXPIRE k 100", OLD, REPLAYED),
            (
                vec!["PTTL k".into()],
                probe(0, "k", Some(1_700_000_100_000))
            )
        );
        assert_eq!(
            convert("SET k v PX 10 NX", OLD, REPLAYED),
            (
                vec!["SET k v NX".into(), "PTTL k".into()],
                probe(1, "k", Some(1_700_000_000_010))
            )
        );
        assert_eq!(
            convert("RESTORE k 10 p REPLACE", OLD, REPLAYED),
            (
                vec!["RESTORE k 0 p REPLACE".into(), "PTTL k".into()],
                probe(1, "k", Some(1_700_000_000_010))
            )
        );
        // A float written by a plain SET (INCRBYFLOAT before 6.0): live or not.
        for arrival in [LIVE, REPLAYED] {
            assert_eq!(
                convert("SET n -12.75", OLD, arrival),
                (
                    vec!["SET n -12.75".into(), "PTTL n".into()],
                    probe(1, "n", None)
                )
            );
        }
    }

    #[test]
    fn a_probe_takes_the_source_expiry_or_its_fallback() {
        let probe = Probe {
            at: 0,
            key: Bytes::from_static(b"k"),
            fallback_ms: Some(500),
        };
        let at = |c: Option<Command>| c.map(|c| line(&c));
        assert_eq!(
            at(probe.resolve(250, 1000)),
            Some("PEXPIREAT k 1250".into())
        );
        assert_eq!(at(probe.resolve(-1, 1000)), Some("PEXPIREAT k 500".into()));
        assert_eq!(at(probe.resolve(-2, 1000)), Some("PEXPIREAT k 500".into()));
        let float = Probe {
            fallback_ms: None,
            ..probe
        };
        assert_eq!(at(float.resolve(-1, 1000)), None);
        assert_eq!(at(float.resolve(10, 1000)), Some("PEXPIREAT k 1010".into()));
    }

    #[test]
    fn restore_without_absttl_on_old_targets_is_followed_by_pexpireat() {
        let command = command("RESTORE k 10 p");
        let converted = absolute("restore", command, OLD, LIVE, false);
        let lines: Vec<String> = converted.commands.iter().map(line).collect();
        assert_eq!(lines, ["RESTORE k 0 p", "PEXPIREAT k 1700000000010"]);
    }

    #[test]
    fn float_text_is_what_incrbyfloat_writes() {
        for yes in [
            "1",
            "-1",
            "10.5",
            "0.000001",
            "-0",
            "123456789012345678901234",
        ] {
            assert!(is_float_text(yes.as_bytes()), "{yes}");
        }
        for no in [
            "", "-", "1.", ".5", "1e5", "inf", "1.5x", "+1", "1.2.3", "abc",
        ] {
            assert!(!is_float_text(no.as_bytes()), "{no}");
        }
    }
}
