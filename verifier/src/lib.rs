//! ferry's verifier: compares a source and a target deployment key by key.
//!
//! It reads both sides through the `redis` crate and never through the engine's codecs, so a
//! codec bug cannot hide itself on both sides of a comparison. (It shares only the engine's
//! slot hashing, CRC16 of the key or its hash tag.)
//!
//! [`verify`] runs a whole comparison and returns a [`Report`]:
//!
//! 1. Both sides are discovered: cluster mode from `INFO cluster`, shards from
//!    `CLUSTER NODES`, versions, eviction counters and clocks (`TIME`) from each master, and
//!    whether the user may run `OBJECT ENCODING` and `DUMP` on the nodes read.
//! 2. A census counts keys per slot (`CLUSTER COUNTKEYSINSLOT`) or per db (`INFO keyspace`).
//! 3. Each source shard is `SCAN`ned by one thread, and the batches it finds are compared
//!    with the target by two others, each with its own connections: `TYPE`, the absolute
//!    expiry (`PEXPIRETIME`, or `TIME` + `PTTL` before 7.0), the length, and in `full` mode
//!    the value, in a few pipelines per batch written to both sides at once (see
//!    `compare/mod.rs`). One worker per target shard `SCAN`s it for keys the source lacks.
//!    Keys under `__ferry__:` (ferry's checkpoints) are never compared.
//! 4. Differing keys are re-read over rounds: those equal by then are resolved, those that
//!    changed in every round are reported as unstable (being written), not inconsistent.
//! 5. Each remaining difference gets its likely cause where the evidence shows one.
//! 6. The function libraries of every master of both sides (`FUNCTION LIST WITHCODE`) are
//!    compared: every target master must hold the source's (see `functions.rs`).
//!
//! See [`report`] for the report formats and the JSON schema.

mod catchup;
mod census;
mod compare;
mod config;
mod diagnosis;
mod diff;
mod error;
mod functions;
mod key;
mod pipe;
mod progress;
mod reply;
pub mod report;
mod run;
mod side;
mod throttle;

pub use census::{Census, DbCount, SlotCount};
pub use config::{
    parse_slots, Config, Filter, Mode, RateLimits, ReadFrom, Windows, HELD_EXPIRY_SHIFT_MS,
    RESERVED_PREFIX,
};
pub use diff::{
    Cause, Change, Detail, DiffKind, Difference, EntryChange, Facts, FieldChange, FieldValue,
    Listing, Member, Score, ScoreChange, TtlChange,
};
pub use error::{Result, VerifyError};
pub use functions::{Functions, LibraryDiffKind, LibraryDifference};
pub use key::{Excerpt, Key, KeyType};
pub use report::{Format, Report, Verdict};
pub use run::verify;
pub use side::{Endpoint, NodeAddr, NodeFacts, SideSummary};
