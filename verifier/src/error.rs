use crate::side::NodeAddr;

/// Why a verification could not finish.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("invalid {side} url {url}: {reason}")]
    Url {
        side: &'static str,
        /// The URL with any password replaced by `***`.
        url: String,
        reason: String,
    },
    // The redis error is part of the message and deliberately not a `source`: printing the
    // chain would repeat it (and its I/O cause) after the message.
    #[error("cannot connect to {side} node {addr}: {error}")]
    Connect {
        side: &'static str,
        addr: NodeAddr,
        error: redis::RedisError,
    },
    #[error("tls with {side} node {addr} failed: {reason}")]
    Tls {
        side: &'static str,
        addr: NodeAddr,
        reason: String,
    },
    #[error("{side} node {addr}: {error}")]
    Redis {
        side: &'static str,
        addr: NodeAddr,
        error: redis::RedisError,
    },
    #[error("{side} node {addr}: unexpected reply to {command}: {detail}")]
    Reply {
        side: &'static str,
        addr: NodeAddr,
        command: &'static str,
        detail: String,
    },
    #[error("{side}: no node owns slot {slot}")]
    SlotUncovered { side: &'static str, slot: u16 },
    #[error("{side} is a cluster, which has only db 0, but db {db} is selected")]
    ClusterDb { side: &'static str, db: u32 },
    #[error("invalid option: {0}")]
    Config(String),
}

pub type Result<T, E = VerifyError> = std::result::Result<T, E>;
