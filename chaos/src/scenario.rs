//! What a chaos scenario is: two deployments, data, a workload, how the engine runs, a fault
//! schedule, and the verdict the verifier must reach. Serde values, so scenarios can also be
//! written in TOML or JSON.

use serde::{Deserialize, Serialize};

use crate::fault::Fault;
use crate::selector::NodeSelector;

/// One scenario of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// One sentence: what happens and what must come out.
    pub about: String,
    pub source: Shape,
    pub target: Shape,
    /// Keys of the seeded dataset loaded into the source first.
    pub keys: u64,
    pub workload: Load,
    /// Extra `ferry sync` arguments (`--apply at-least-once`, `--allow-eviction`, ...).
    #[serde(default)]
    pub sync_args: Vec<String>,
    /// Run in order; each waits for its moment, then acts.
    #[serde(default)]
    pub steps: Vec<Step>,
    pub expect: Expect,
}

/// A deployment's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// 0: one standalone server (with `replicas` replicas).
    pub masters: usize,
    #[serde(default)]
    pub replicas: usize,
    /// Extra config lines for every node (`maxmemory-policy allkeys-lru`).
    #[serde(default)]
    pub config: Vec<String>,
    /// Every node sits behind a fault-injecting proxy whose port it announces, so the engine
    /// (and every other client) reaches it through the proxy.
    #[serde(default)]
    pub proxy: bool,
}

/// Live writes into the source while the scenario runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub rate: u32,
    pub seconds: f64,
    #[serde(default)]
    pub mix: Mix,
}

/// Which ops the workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mix {
    /// Every op kind of the fixtures workload.
    #[default]
    All,
    /// Unique RPUSH/LPUSH values and increments only: a replayed write always shows.
    Counting,
    /// Unique RPUSHes only.
    Pushes,
}

/// When a step acts, counted from the end of the step before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "when", rename_all = "snake_case", deny_unknown_fields)]
pub enum When {
    /// As soon as a shard is receiving its snapshot.
    Snapshot,
    /// Once every shard follows the live stream.
    Streaming,
    /// Once every shard has applied everything its source had.
    CaughtUp,
    /// After this many seconds.
    After { seconds: f64 },
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// A fault on a source node.
    Source { fault: Fault },
    /// A fault on a target node.
    Target { fault: Fault },
    /// SIGKILL the engine process.
    KillEngine,
    /// Start the engine again (the same command: it resumes from its checkpoints).
    StartEngine,
    /// Stop the workload now (the source goes quiet).
    StopWorkload,
    /// Change the proxy in front of a source (`source: true`) or target node (default: the
    /// first master).
    Proxy {
        source: bool,
        #[serde(default = "first_master")]
        node: NodeSelector,
        #[serde(flatten)]
        fault: crate::ProxyFault,
    },
    /// Run a Lua script on the source master owning the first key (controls that write
    /// behind replication's back).
    SourceScript { script: String, keys: Vec<String> },
}

/// A step of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    #[serde(flatten)]
    pub when: When,
    #[serde(flatten)]
    pub action: Action,
}

/// The verdict a scenario must reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "expect", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expect {
    /// The verifier finds no difference.
    Exact,
    /// The verifier finds differences of this kind (`missing`, `extra`, `type`, `ttl`,
    /// `value`), with this cause on at least one when given (`evicted`, `duplicated list
    /// tail`, ...).
    Divergence { kind: String, cause: Option<String> },
    /// The engine refuses to start: this precheck item fails.
    Refused { item: String },
    /// The engine stops on its own with an error that says this (never a silent divergence).
    Stopped { message: String },
}

impl Step {
    pub fn new(when: When, action: Action) -> Self {
        Step { when, action }
    }
}

fn first_master() -> NodeSelector {
    NodeSelector::Master(0)
}
