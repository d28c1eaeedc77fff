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
//! - `file`: an RDB file as the source.

mod checkpoint;
mod expiry;
mod file;
mod follow;
mod probe;
mod run;
mod snapshot;
mod stream;
mod writer;

pub use checkpoint::{
    checkpoint_key, checkpoint_key_of, cleanup, heartbeat_key, Checkpoint, ShardId,
};
pub use expiry::{Arrival, Probe, SourceForms};
pub use file::{load_file, FileError, FileReport};
pub use run::{
    Phase, ShardProgress, ShardReport, Sync, SyncError, SyncMode, SyncOptions, SyncReport,
};
pub use snapshot::{score_text, Selection, SnapshotError, SnapshotSink, SnapshotStats, ValueMode};
pub use stream::{RouteError, Routed, StreamRouter, Write};
pub use writer::ApplyMode;
