//! What to compare and how: built once at the edge (the CLI, a test) and read everywhere.

use std::time::Duration;

use ferry_engine::route::{glob_match, Slot, SlotRange};
use serde::Serialize;

use crate::error::VerifyError;
use crate::key::KeyType;
use crate::side::Endpoint;

/// The prefix of ferry's own keys (checkpoints) on the target; never compared.
pub const RESERVED_PREFIX: &[u8] = b"__ferry__:";

/// What ferry adds to an expiry it holds on the target until the source's stream reaches it
/// (2^40 ms): a target key whose expiry is this much past a time near now carries that time.
pub const HELD_EXPIRY_SHIFT_MS: i64 = 1 << 40;

/// The expiry a target key really has when ferry holds it (see [`HELD_EXPIRY_SHIFT_MS`]).
pub fn held_expiry(expire_at_ms: i64, now_ms: i64) -> Option<i64> {
    const DAY_MS: i64 = 86_400_000;
    let held = expire_at_ms.checked_sub(HELD_EXPIRY_SHIFT_MS)?;
    ((held - now_ms).abs() <= DAY_MS).then_some(held)
}

/// How deep the comparison goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Existence, type and TTL.
    Outline,
    /// Outline plus the length (`STRLEN`, `LLEN`, `SCARD`, `ZCARD`, `HLEN`, `XLEN`).
    Length,
    /// Outline plus the whole value.
    #[default]
    Full,
}

impl Mode {
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "outline" => Some(Mode::Outline),
            "length" => Some(Mode::Length),
            "full" => Some(Mode::Full),
            _ => None,
        }
    }
}

/// Which node of each shard is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Master,
    /// A replica of each shard (`READONLY` in a cluster); the master where a shard has none.
    Replica,
}

/// Which keys are in scope. Empty lists select everything.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    /// Databases to compare (standalone only; a cluster has db 0). Empty: every db that has
    /// keys on either side.
    pub dbs: Vec<u32>,
    /// A key is in scope when it starts with one of these prefixes (or any, when empty)...
    #[serde(serialize_with = "texts")]
    pub prefixes: Vec<Vec<u8>>,
    /// ...and matches one of these glob patterns, as `KEYS`/`SCAN MATCH` read them...
    #[serde(serialize_with = "texts")]
    pub patterns: Vec<Vec<u8>>,
    /// ...and starts with none of these...
    #[serde(serialize_with = "texts")]
    pub exclude_prefixes: Vec<Vec<u8>>,
    /// ...and matches none of these patterns...
    #[serde(serialize_with = "texts")]
    pub exclude_patterns: Vec<Vec<u8>>,
    /// ...and has one of these types on either side (any, when empty).
    pub types: Vec<KeyType>,
}

impl Filter {
    /// Whether the name of `key` is in scope (the type is checked once it is known).
    pub fn selects_name(&self, key: &[u8]) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p)))
            && (self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, key)))
            && !self.exclude_prefixes.iter().any(|p| key.starts_with(p))
            && !self.exclude_patterns.iter().any(|p| glob_match(p, key))
    }

    /// Whether a key with these types on the source and the target is in scope.
    pub fn selects_types(&self, source: Option<KeyType>, target: Option<KeyType>) -> bool {
        self.types.is_empty()
            || [source, target]
                .into_iter()
                .flatten()
                .any(|t| self.types.contains(&t))
    }
}

/// Byte strings as text (escaped where not UTF-8).
fn texts<S: serde::Serializer>(items: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().map(|b| crate::key::text(b)))
}

/// Sizes of the windows values are read in; together they bound memory.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Windows {
    /// `SCAN ... COUNT` hint, and keys compared per batch.
    pub scan_count: usize,
    /// Elements per `LRANGE`/`HSCAN`/`SSCAN`/`ZSCAN`/`XRANGE`/`XPENDING` window.
    pub elements: usize,
    /// Bytes per `GETRANGE` window.
    pub string_bytes: usize,
    /// Collections up to this many elements are read whole, in one pipeline with other keys
    /// (by default one window's worth: reading such a value in windows would take as many
    /// elements per reply, in more round trips of their own).
    pub small_elements: u64,
    /// Strings up to this many bytes are read whole, in one pipeline with other keys.
    pub small_string_bytes: u64,
    /// Bytes of values one pipeline of whole-value reads may fetch (estimated for
    /// collections at 64 bytes per element).
    pub pipeline_bytes: u64,
    /// The most keys a slot may hold for clusters to be listed slot by slot (`CLUSTER
    /// GETKEYSINSLOT` has no cursor: a bigger slot would be one long command and one big
    /// reply); above it, both sides are `SCAN`ned.
    pub slot_keys: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            scan_count: 1_000,
            elements: 1_000,
            string_bytes: 1 << 20,
            small_elements: 1_000,
            small_string_bytes: 512 << 10,
            pipeline_bytes: 8 << 20,
            slot_keys: 50_000,
        }
    }
}

/// Global caps on the load the verifier puts on the servers, summed over both sides.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RateLimits {
    /// Commands per second.
    pub ops_per_sec: Option<u64>,
    /// Reply bytes per second.
    pub bytes_per_sec: Option<u64>,
}

/// Everything a verification needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Endpoint,
    pub target: Endpoint,
    pub mode: Mode,
    /// Largest difference between the two absolute expiry times that still counts as equal.
    pub ttl_tolerance: Duration,
    /// Re-checks of differing keys after the first pass.
    pub rounds: u32,
    /// Pause before each re-check round, so a live copy can catch up.
    pub recheck_interval: Duration,
    /// When the target holds ferry's checkpoints: how long a re-check round waits for the
    /// target to apply what the source had (instead of the pause).
    pub catch_up_limit: Duration,
    pub filter: Filter,
    /// Only keys whose slot is in this range.
    pub slots: Option<SlotRange>,
    /// Compare only this share of keys (0 < R ≤ 1), chosen by a hash of the name so both
    /// sides pick the same keys, and estimate the rest.
    pub sample: Option<f64>,
    pub rate: RateLimits,
    pub read_from: ReadFrom,
    pub windows: Windows,
    /// Differences kept with their details (and re-checked); beyond this only counted.
    pub max_differences: usize,
    /// Print progress lines on stderr.
    pub progress: bool,
}

impl Config {
    /// Defaults for everything but the two endpoints.
    pub fn new(source: Endpoint, target: Endpoint) -> Self {
        Config {
            source,
            target,
            mode: Mode::Full,
            ttl_tolerance: Duration::from_millis(1_000),
            rounds: 3,
            recheck_interval: Duration::from_millis(1_000),
            catch_up_limit: Duration::from_secs(10),
            filter: Filter::default(),
            slots: None,
            sample: None,
            rate: RateLimits::default(),
            read_from: ReadFrom::Master,
            windows: Windows::default(),
            max_differences: 10_000,
            progress: false,
        }
    }

    /// Rejects settings that make no sense, naming the value.
    pub fn validate(&self) -> crate::error::Result<()> {
        if let Some(rate) = self.sample {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(VerifyError::Config(format!(
                    "sample rate {rate} is not in (0, 1]"
                )));
            }
        }
        let w = &self.windows;
        if w.scan_count == 0 || w.elements == 0 || w.string_bytes == 0 {
            return Err(VerifyError::Config("window sizes must be positive".into()));
        }
        if self.rate.ops_per_sec == Some(0) || self.rate.bytes_per_sec == Some(0) {
            return Err(VerifyError::Config("rate caps must be positive".into()));
        }
        Ok(())
    }

    /// Whether every key of every slot in range is in scope: no name or type filter and no
    /// sample.
    pub(crate) fn selects_whole_slots(&self) -> bool {
        let f = &self.filter;
        f.prefixes.is_empty()
            && f.patterns.is_empty()
            && f.exclude_prefixes.is_empty()
            && f.exclude_patterns.is_empty()
            && f.types.is_empty()
            && self.sample.is_none_or(|rate| rate >= 1.0)
    }

    /// Whether `key` (by name and slot) is in scope for this run.
    pub(crate) fn selects(&self, key: &[u8]) -> bool {
        if key.starts_with(RESERVED_PREFIX) || !self.filter.selects_name(key) {
            return false;
        }
        if let Some(range) = self.slots {
            if !range.contains(Slot::of_key(key)) {
                return false;
            }
        }
        match self.sample {
            Some(rate) if rate < 1.0 => sample_point(key) < rate,
            _ => true,
        }
    }
}

/// Parses `A-B` or `N` into a slot range.
pub fn parse_slots(text: &str) -> crate::error::Result<SlotRange> {
    let bad = |reason: &str| VerifyError::Config(format!("slot range {text:?}: {reason}"));
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let slot = |n: &str| -> crate::error::Result<Slot> {
        let n: u16 = n
            .trim()
            .parse()
            .map_err(|_| bad("not a number between 0 and 16383"))?;
        Slot::new(n).map_err(|e| bad(&e.to_string()))
    };
    let (first, last) = (slot(first)?, slot(last)?);
    if first > last {
        return Err(bad("the first slot is after the last"));
    }
    Ok(SlotRange::new(first, last))
}

/// Where in [0, 1) the key falls for sampling: a hash of the name (FNV-1a), the same on
/// every run and every machine.
fn sample_point(key: &[u8]) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Mix the high bits down: FNV's low bits are weak.
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 32;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_includes_and_excludes() {
        let filter = Filter {
            prefixes: vec![b"a:".to_vec(), b"b:".to_vec()],
            exclude_patterns: vec![b"*:tmp".to_vec()],
            ..Filter::default()
        };
        assert!(filter.selects_name(b"a:1"));
        assert!(!filter.selects_name(b"c:1"));
        assert!(!filter.selects_name(b"b:tmp"));
        let types = Filter {
            types: vec![KeyType::Hash],
            ..Filter::default()
        };
        assert!(types.selects_types(Some(KeyType::String), Some(KeyType::Hash)));
        assert!(!types.selects_types(Some(KeyType::String), None));
    }

    #[test]
    fn slot_ranges_parse_and_reject_nonsense() {
        let range = parse_slots("100-200").unwrap();
        assert_eq!((range.first.get(), range.last.get()), (100, 200));
        assert_eq!(parse_slots("7").unwrap().len(), 1);
        assert!(parse_slots("200-100").is_err());
        assert!(parse_slots("0-16384").is_err());
        assert!(parse_slots("x").is_err());
    }

    #[test]
    fn sampling_is_stable_and_near_the_rate() {
        let picked = (0..20_000)
            .filter(|i| sample_point(format!("key:{i}").as_bytes()) < 0.1)
            .count();
        assert!((1_600..2_400).contains(&picked), "{picked}");
        assert_eq!(sample_point(b"x"), sample_point(b"x"));
    }
}
