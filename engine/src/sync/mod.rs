//! `ferry sync`: one task per source master that registers as its replica, parses the
//! snapshot while it streams in and applies it to the target as it goes.
//!
//! - `snapshot`: RDB keys to write groups (`RESTORE` or a command rewrite).
//! - `run`: the sync of every source shard (snapshot, then the stream), progress counters.
//! - `follow`: a shard's incremental part: resume, full resyncs, the stream loop, heartbeat.
//! - `stream`: replication-stream commands to target writes (sans-IO).
//! - `expiry`: relative expiries of sources before Redis 7.0 made absolute (sans-IO).
//! - `writer`: the exactly-once (or at-least-once) apply of the stream, per target master.
//! - `probe`: expiries read back from a source master where the stream cannot give them.
//! - `checkpoint`: what the target has applied, stored in the target.
//! - `hold`: expiries the target must not carry out before the source's stream does.
//! - `verbatim`: scripts a source replicates verbatim, applied exactly once by a wrapper.
//! - `file`: an RDB file as the source.
//! - `functions`: a snapshot's function libraries on every target master.

mod checkpoint;
mod expiry;
mod file;
mod follow;
mod functions;
mod hold;
mod probe;
mod run;
mod snapshot;
mod stream;
mod verbatim;
mod writer;

pub use checkpoint::{
    checkpoint_key, checkpoint_key_of, cleanup, heartbeat_key, held_key, scripts_key,
    scripts_key_of, Checkpoint, ShardId,
};
pub use expiry::{Arrival, Probe, SourceForms};
pub use file::{load_file, FileError, FileReport};
pub(crate) use functions::library_names_on;
pub use functions::{FunctionStats, Others};
pub use hold::{held_expiry, HOLD_MARGIN_MS, HOLD_SHIFT_MS};
pub use run::{
    Phase, ShardProgress, ShardReport, Sync, SyncError, SyncMode, SyncOptions, SyncReport,
};
pub use snapshot::{score_text, Selection, SnapshotError, SnapshotSink, SnapshotStats, ValueMode};
pub use stream::{RouteError, Routed, StreamRouter, Write};
pub use writer::{release_holds, ApplyMode};
