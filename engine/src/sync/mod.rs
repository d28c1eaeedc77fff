//! `ferry sync`: one task per source master that registers as its replica, parses the
//! snapshot while it streams in and applies it to the target as it goes.
//!
//! - `snapshot`: RDB keys to write groups (`RESTORE` or a command rewrite).
//! - `full`: the full sync of every source shard, with progress counters.
//! - `file`: an RDB file as the source.

mod file;
mod full;
mod snapshot;

pub use file::{load_file, FileError, FileReport};
pub use full::{
    FullSync, FullSyncOptions, Phase, ShardProgress, ShardReport, SyncError, SyncReport,
};
pub use snapshot::{score_text, Selection, SnapshotError, SnapshotSink, SnapshotStats, ValueMode};
