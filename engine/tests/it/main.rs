//! Engine behaviour against real servers.

mod apply;
mod precheck;
mod rdb;
mod replica;
mod sync;
