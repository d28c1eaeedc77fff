//! ferry's sync engine.
//!
//! Bytes enter through the replication sessions, are decoded by the sans-IO codecs, routed to
//! the target node that owns their slot and leave through a node writer. This crate grows one
//! module per stage; see ARCHITECTURE.md for the code map.

pub mod apply;
pub mod deployment;
pub mod endpoint;
pub mod link;
pub mod metrics;
pub mod precheck;
pub mod rdb;
pub mod replica;
pub mod resp;
pub mod route;
pub mod socket;
pub mod sync;
pub mod tls;
