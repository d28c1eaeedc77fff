//! Engine behaviour against real servers.

mod apply;
mod commands;
mod functions;
mod incr;
mod legacy;
mod precheck;
mod rdb;
mod replica;
mod stream_router;
mod sync;
mod tls;
mod ttl;
mod verbatim;
