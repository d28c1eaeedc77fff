//! `ferry sync`: one task per source master that registers as its replica, parses the
//! snapshot while it streams in and applies it to the target as it goes.
//!
//! - `snapshot`: RDB keys to write groups (`RESTORE` or a command rewrite).
//! - `run`: the sync of every source shard (snapshot, then the stream), progress counters.
//! - `follow`: a shard's incremental part: resume, full resyncs, the stream loop, heartbeat.
//! - `stream`: replication-stream commands to target writes (sans-IO).
//! - `writer`: the exactly-once (or at-least-once) apply of the stream, per target master.
//! - `checkpoint`: what the target has applied, stored in the target.
//! - `verbatim`: scripts a source replicates verbatim, applied exactly once by a wrapper.
//! - `file`: an RDB file as the source.

mod checkpoint;
mod file;
mod follow;
mod run;
mod snapshot;
mod stream;
mod verbatim;
mod writer;

pub use checkpoint::{
    checkpoint_key, checkpoint_key_of, cleanup, heartbeat_key, scripts_key, scripts_key_of,
    Checkpoint, ShardId,
};
pub use file::{load_file, FileError, FileReport};
pub use run::{
    Phase, ShardProgress, ShardReport, Sync, SyncError, SyncMode, SyncOptions, SyncReport,
};
pub use snapshot::{score_text, Selection, SnapshotError, SnapshotSink, SnapshotStats, ValueMode};
pub use stream::{RouteError, Routed, StreamRouter, Write};
pub use writer::ApplyMode;
