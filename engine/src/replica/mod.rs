//! Replication from one source master: the identifiers its replication stream carries, and
//! the session that registers as its replica and reads that stream.

mod ids;
mod session;
mod spool;

pub use ids::{InvalidReplId, ReplId, ReplOffset};
pub use session::{Credentials, PsyncFrom, Session, SessionConfig, SessionError, SessionEvent};
pub use spool::{unix_ms, SpoolConfig, SpoolGauge};
