//! Engine behaviour against real servers.

mod apply;
mod precheck;
mod replica;
