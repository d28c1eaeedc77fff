//! Engine behaviour against real servers.

mod replica;
