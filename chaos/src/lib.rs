//! ferry's chaos runner.
//!
//! A [`Scenario`] is two deployments, data, a workload, how the engine runs, a fault schedule
//! and the verdict the verifier must reach; [`catalogue`] names the ones `ferry chaos` runs,
//! [`run`] runs one (the engine as a `ferry sync` child process, so SIGKILL is real) and
//! [`report`] renders the results.
//!
//! Under it are the fault primitives: a [`Fault`] names what to do ("kill", "pause",
//! "cluster failover", "client kill type replica", "force a full resync", "flushall",
//! "maxmemory") and which node to do it to, by address or by its place in the live topology
//! ([`NodeSelector`]). [`Fault::apply`] does it to a [`ferry_fixtures::Deployment`] and
//! returns a [`FaultOutcome`] with what Redis then reported (the promoted replica, `sync_full`
//! before and after, the keys flushed...). Faults are serde values, so scenarios can list them
//! in TOML or JSON.

mod backend;
pub mod catalogue;
mod engine;
mod error;
mod fault;
pub mod fuzz;
mod info;
mod outcome;
pub mod report;
mod runner;
mod scenario;
mod selector;

pub use backend::Backend;
pub use engine::{Engine, Status};
pub use error::ChaosError;
pub use fault::{ClientType, Fault, MaxmemoryPolicy, UnknownPolicy, MIN_BACKLOG_SIZE};
pub use ferry_fixtures::proxy::{Conditions, Proxy, ProxyFault};
pub use ferry_fixtures::FailoverMode;
pub use outcome::{Effect, FaultOutcome};
pub use runner::{describe, run, Event, RunConfig, ScenarioReport};
pub use scenario::{Action, Expect, Load, Mix, Scenario, Shape, Step, When};
pub use selector::NodeSelector;
