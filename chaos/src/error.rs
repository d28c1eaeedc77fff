use ferry_engine::route::InvalidSlot;
use ferry_fixtures::{FixtureError, NodeAddr, Role};

use crate::selector::NodeSelector;

/// Why a fault could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("no node is {selector}")]
    NoSuchNode { selector: NodeSelector },
    #[error("node {addr} is not part of this deployment")]
    NotInDeployment { addr: NodeAddr },
    #[error("{fault} needs a {expected:?} but {addr} is a {actual:?}")]
    WrongRole {
        fault: String,
        addr: NodeAddr,
        expected: Role,
        actual: Role,
    },
    #[error("{fault} needs a cluster deployment")]
    NeedsCluster { fault: String },
    #[error("master {addr} serves no slots")]
    NoSlots { addr: NodeAddr },
    #[error("{fault}: master {addr} has no connected replica")]
    NoReplica { fault: String, addr: NodeAddr },
    #[error("{fault}: no {kind} connection on {addr} to kill")]
    NothingKilled {
        fault: String,
        kind: String,
        addr: NodeAddr,
    },
    #[error("{fault}: {addr} still answered with a partial resync after {attempts} attempts")]
    NoFullResync {
        fault: String,
        addr: NodeAddr,
        attempts: u32,
    },
    #[error("{addr}: unexpected reply to {command}: {detail}")]
    Reply {
        addr: NodeAddr,
        command: String,
        detail: String,
    },
    #[error("engine: {0}")]
    Engine(String),
    #[error("verifier: {0}")]
    Verify(#[from] ferry_verifier::VerifyError),
    #[error(transparent)]
    InvalidSlot(#[from] InvalidSlot),
    #[error(transparent)]
    Fixture(#[from] FixtureError),
}

impl ChaosError {
    /// Wraps an error from a command sent to `addr`.
    pub(crate) fn redis(addr: &NodeAddr, source: redis::RedisError) -> Self {
        ChaosError::Fixture(FixtureError::Redis {
            addr: addr.clone(),
            source,
        })
    }
}
