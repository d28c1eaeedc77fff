//! The servers' own key-finding procedures (`getkeys_proc` in Redis's command table) for the
//! commands whose keys move with their arguments (`movablekeys`). A server without key specs
//! (Redis before 7.0) describes such a command only by that flag, so ferry finds its keys the
//! way the server's procedure does; a server with key specs falls back to the same procedures
//! where a spec cannot be followed (`SORT ... STORE`, `MIGRATE ... KEYS`). Sans-IO.
//!
//! Each procedure returns the key positions in the server's order. Where versions differ, it
//! is only for command lines the server itself refuses (a `numkeys` below 1, say), which never
//! reach a replication stream; `MIGRATE`'s `AUTH`/`AUTH2` values are the one exception and
//! are followed per version.

use bytes::Bytes;

/// How one command's keys are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Procedure {
    /// `[store] numkeys key... options` (`genericGetKeys`): the `count` argument says how many
    /// keys follow from `first`; `store` is the destination, returned after them.
    NumKeys {
        store: Option<usize>,
        count: usize,
        first: usize,
    },
    /// `SORT key ... [STORE dest]` (the last `STORE` wins; `LIMIT`, `GET`, `BY` are skipped
    /// with their values).
    Sort,
    /// `SORT_RO key ...`: the first argument only.
    First,
    /// `MIGRATE host port key|"" db timeout ... [KEYS key...]`.
    Migrate,
    /// `GEORADIUS key ... [STORE dest] [STOREDIST dest]` (the last of them wins).
    Georadius,
    /// `XREAD|XREADGROUP [options] STREAMS key... id...`.
    Xread,
    /// `STRALGO LCS ... KEYS a b` before `STRINGS`.
    Lcs,
    /// `MEMORY USAGE key`.
    MemoryUsage,
}

/// The procedures by lowercase command name: every command a server before 7.0 flags
/// `movablekeys`, and those whose key specs are incomplete on later servers.
const PROCEDURES: &[(&str, Procedure)] = &[
    ("zunionstore", STORE_NUMKEYS),
    ("zinterstore", STORE_NUMKEYS),
    ("zdiffstore", STORE_NUMKEYS),
    ("zunion", NUMKEYS),
    ("zinter", NUMKEYS),
    ("zdiff", NUMKEYS),
    ("eval", SCRIPT),
    ("evalsha", SCRIPT),
    ("sort", Procedure::Sort),
    ("sort_ro", Procedure::First),
    ("migrate", Procedure::Migrate),
    ("georadius", Procedure::Georadius),
    ("georadius_ro", Procedure::Georadius),
    ("georadiusbymember", Procedure::Georadius),
    ("georadiusbymember_ro", Procedure::Georadius),
    ("xread", Procedure::Xread),
    ("xreadgroup", Procedure::Xread),
    ("stralgo", Procedure::Lcs),
    ("memory", Procedure::MemoryUsage),
];

const STORE_NUMKEYS: Procedure = Procedure::NumKeys {
    store: Some(1),
    count: 2,
    first: 3,
};
const NUMKEYS: Procedure = Procedure::NumKeys {
    store: None,
    count: 1,
    first: 2,
};
const SCRIPT: Procedure = Procedure::NumKeys {
    store: None,
    count: 2,
    first: 3,
};

/// The procedure of the command `name` (lowercase, as `COMMAND` lists it), where ferry
/// knows it.
pub(crate) fn procedure(name: &str) -> Option<Procedure> {
    PROCEDURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, procedure)| *procedure)
}

impl Procedure {
    /// The keys of `argv` (a line of this procedure's command) as the server finds them.
    /// `key_specs` says whether the server has key specs (7.0+), which is where `MIGRATE`
    /// learned to skip `AUTH` and `AUTH2` values.
    pub(crate) fn keys(self, argv: &[Bytes], key_specs: bool) -> Vec<Bytes> {
        let positions = match self {
            Procedure::NumKeys {
                store,
                count,
                first,
            } => numkeys(argv, store, count, first),
            Procedure::Sort => sort(argv),
            Procedure::First => (argv.len() > 1).then_some(1).into_iter().collect(),
            Procedure::Migrate => migrate(argv, key_specs),
            Procedure::Georadius => georadius(argv),
            Procedure::Xread => xread(argv),
            Procedure::Lcs => lcs(argv),
            Procedure::MemoryUsage => memory_usage(argv),
        };
        positions.into_iter().map(|i| argv[i].clone()).collect()
    }
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// C's `atoi`, which the procedures use for `numkeys`: leading blanks, a sign, the digits up
/// to the first other byte; 0 when there are none.
fn atoi(arg: &[u8]) -> i64 {
    let mut rest = arg;
    while let [b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c, tail @ ..] = rest {
        rest = tail;
    }
    let negative = matches!(rest.first(), Some(b'-'));
    if matches!(rest.first(), Some(b'-' | b'+')) {
        rest = &rest[1..];
    }
    let mut value: i64 = 0;
    for &byte in rest.iter().take_while(|b| b.is_ascii_digit()) {
        value = value
            .saturating_mul(10)
            .saturating_add(i64::from(byte - b'0'));
    }
    if negative {
        -value
    } else {
        value
    }
}

/// `genericGetKeys`: no keys unless `1 <= numkeys <= the arguments after first`.
fn numkeys(argv: &[Bytes], store: Option<usize>, count: usize, first: usize) -> Vec<usize> {
    let Some(num) = argv.get(count).map(|n| atoi(n)) else {
        return Vec::new();
    };
    let available = argv.len().saturating_sub(first) as i64;
    if num < 1 || num > available {
        return Vec::new();
    }
    let mut keys: Vec<usize> = (first..first + num as usize).collect();
    keys.extend(store);
    keys
}

/// `sortGetKeys`.
fn sort(argv: &[Bytes]) -> Vec<usize> {
    if argv.len() < 2 {
        return Vec::new();
    }
    let mut store = None;
    let mut i = 2;
    while i < argv.len() {
        let arg = &argv[i];
        if is(arg, "limit") {
            i += 2;
        } else if is(arg, "get") || is(arg, "by") {
            i += 1;
        } else if is(arg, "store") && i + 1 < argv.len() {
            store = Some(i + 1);
        }
        i += 1;
    }
    std::iter::once(1).chain(store).collect()
}

/// `migrateGetKeys`: the key at 3, or with an empty key there the arguments after `KEYS`.
/// Servers with key specs skip the values of `AUTH password` and `AUTH2 user password` while
/// looking for `KEYS`, and find no key when `KEYS` follows a non-empty key.
fn migrate(argv: &[Bytes], skips_auth: bool) -> Vec<usize> {
    if argv.len() < 4 {
        return Vec::new();
    }
    let mut i = 6;
    while i < argv.len() {
        let arg = &argv[i];
        if is(arg, "keys") {
            if argv[3].is_empty() {
                return (i + 1..argv.len()).collect();
            }
            if skips_auth {
                return Vec::new();
            }
        } else if skips_auth && is(arg, "auth") {
            i += 1;
        } else if skips_auth && is(arg, "auth2") {
            i += 2;
        }
        i += 1;
    }
    vec![3]
}

/// `georadiusGetKeys`.
fn georadius(argv: &[Bytes]) -> Vec<usize> {
    if argv.len() < 2 {
        return Vec::new();
    }
    let mut store = None;
    let mut i = 5;
    while i < argv.len() {
        let arg = &argv[i];
        if (is(arg, "store") || is(arg, "storedist")) && i + 1 < argv.len() {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    std::iter::once(1).chain(store).collect()
}

/// `xreadGetKeys`: the first half of the arguments after `STREAMS`.
fn xread(argv: &[Bytes]) -> Vec<usize> {
    let mut streams = None;
    let mut i = 1;
    while i < argv.len() {
        let arg = &argv[i];
        if is(arg, "block") || is(arg, "count") {
            i += 1;
        } else if is(arg, "group") {
            i += 2;
        } else if is(arg, "streams") {
            streams = Some(i);
            break;
        } else if !is(arg, "noack") {
            break;
        }
        i += 1;
    }
    let Some(streams) = streams else {
        return Vec::new();
    };
    let num = argv.len() - streams - 1;
    if num == 0 || num % 2 != 0 {
        return Vec::new();
    }
    (streams + 1..streams + 1 + num / 2).collect()
}

/// `lcsGetKeys`: `KEYS a b`, unless `STRINGS` comes first.
fn lcs(argv: &[Bytes]) -> Vec<usize> {
    for i in 1..argv.len() {
        let more = argv.len() - 1 - i;
        if is(&argv[i], "strings") {
            break;
        }
        if is(&argv[i], "keys") && more >= 2 {
            return vec![i + 1, i + 2];
        }
    }
    Vec::new()
}

/// `memoryGetKeys`.
fn memory_usage(argv: &[Bytes]) -> Vec<usize> {
    if argv.len() >= 3 && is(&argv[1], "usage") {
        vec![2]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn found(line: &str, key_specs: bool) -> Vec<String> {
        let argv = argv(line);
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        procedure(&name)
            .unwrap()
            .keys(&argv, key_specs)
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn numkeys_commands_return_sources_then_destination() {
        assert_eq!(
            found("ZUNIONSTORE d 2 a b WEIGHTS 1 2", false),
            ["a", "b", "d"]
        );
        assert_eq!(found("zinter 3 a b c", false), ["a", "b", "c"]);
        assert_eq!(found("EVAL s 1 k arg", false), ["k"]);
        assert!(found("ZUNIONSTORE d 0 a", false).is_empty());
        assert!(found("ZUNIONSTORE d 3 a b", false).is_empty());
        assert!(found("EVAL s x k", false).is_empty());
        assert_eq!(found("EVAL s 1x k", false), ["k"]);
    }

    #[test]
    fn keyword_options_are_followed_as_the_server_does() {
        assert_eq!(found("SORT k GET store STORE d", false), ["k", "d"]);
        assert_eq!(found("SORT k STORE a STORE b", false), ["k", "b"]);
        assert_eq!(found("SORT k LIMIT store 1 BY w", false), ["k"]);
        assert_eq!(
            found("GEORADIUS g 1 2 3 km STORE a STOREDIST b", false),
            ["g", "b"]
        );
        assert_eq!(found("GEORADIUS g 1 2 3 km STORE", false), ["g"]);
        assert_eq!(
            found("XREADGROUP GROUP streams c COUNT 1 STREAMS a b > >", false),
            ["a", "b"]
        );
        assert!(found("XREAD STREAMS a b 0", false).is_empty());
        assert_eq!(found("STRALGO LCS KEYS a b", false), ["a", "b"]);
        assert!(found("STRALGO LCS STRINGS keys b", false).is_empty());
        assert_eq!(found("MEMORY USAGE k", false), ["k"]);
        assert!(found("MEMORY STATS", false).is_empty());
    }

    #[test]
    fn migrate_skips_auth_values_only_with_key_specs() {
        assert_eq!(found("MIGRATE h 1 k 0 5", false), ["k"]);
        assert_eq!(found("MIGRATE h 1  0 5 COPY KEYS a b", false), ["a", "b"]);
        assert_eq!(
            found("MIGRATE h 1  0 5 AUTH keys KEYS a", false),
            ["KEYS", "a"]
        );
        assert_eq!(found("MIGRATE h 1  0 5 AUTH keys KEYS a", true), ["a"]);
        assert!(found("MIGRATE h 1 k 0 5 KEYS a", true).is_empty());
        assert_eq!(found("MIGRATE h 1 k 0 5 KEYS a", false), ["k"]);
    }

    #[test]
    fn commands_without_a_procedure_are_none() {
        assert_eq!(procedure("set"), None);
        assert_eq!(procedure("memory|usage"), None);
        assert_eq!(procedure("zunionstore"), Some(STORE_NUMKEYS));
    }
}
