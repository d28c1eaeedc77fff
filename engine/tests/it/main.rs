//! Engine behaviour against real servers.

mod apply;
mod commands;
mod precheck;
mod rdb;
mod replica;
mod sync;
