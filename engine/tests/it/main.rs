//! Engine behaviour against real servers.

mod apply;
mod replica;
