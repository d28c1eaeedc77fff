//! Replication from one source master: the identifiers its replication stream carries.

mod ids;

pub use ids::{InvalidReplId, ReplId, ReplOffset};
