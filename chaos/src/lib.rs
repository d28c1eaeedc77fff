//! ferry's chaos runner.
//!
//! This crate holds the fault primitives: a [`Fault`] names what to do ("kill", "pause",
//! "cluster failover", "client kill type replica", "force a full resync", "flushall",
//! "maxmemory") and which node to do it to, by address or by its place in the live topology
//! ([`NodeSelector`]). [`Fault::apply`] does it to a [`ferry_fixtures::Deployment`] and
//! returns a [`FaultOutcome`] with what Redis then reported (the promoted replica, `sync_full`
//! before and after, the keys flushed...). Faults are serde values, so scenarios can list them
//! in TOML or JSON.

mod error;
mod fault;
mod info;
mod outcome;
mod selector;

pub use error::ChaosError;
pub use fault::{ClientType, Fault, MaxmemoryPolicy, UnknownPolicy, MIN_BACKLOG_SIZE};
pub use ferry_fixtures::FailoverMode;
pub use outcome::{Effect, FaultOutcome};
pub use selector::NodeSelector;
