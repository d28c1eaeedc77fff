//! Engine behaviour against real servers.

mod apply;
mod commands;
mod incr;
mod precheck;
mod rdb;
mod replica;
mod stream_router;
mod sync;
mod tls;
mod ttl;
