//! An RDB file as the source: the file read in chunks through the same parser and sink as a
//! replication snapshot, applied to the target as it is read.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::functions::{FunctionStats, Others};
use super::run::SyncOptions;
use super::snapshot::{SnapshotError, SnapshotSink, SnapshotStats, ValueMode};
use crate::apply::{Applier, ApplyError, ApplyStats};
use crate::deployment::{Deployment, DiscoverError};
use crate::endpoint::Endpoint;
use crate::rdb::{Parser, Status};

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

/// What loading a file did.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub bytes: u64,
    pub snapshot: SnapshotStats,
    pub apply: ApplyStats,
    /// Function libraries loaded and deleted on the target.
    pub functions: FunctionStats,
    pub elapsed: Duration,
}

/// Why loading a file failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Snapshot { path: String, source: SnapshotError },
    #[error("discovering the target: {0}")]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Applies every key of the RDB file at `path` (of db `options.db`) to the target.
pub async fn load_file(
    path: &Path,
    target: &Endpoint,
    options: &SyncOptions,
) -> Result<FileReport, FileError> {
    let started = Instant::now();
    let shown = path.display().to_string();
    let read_error = |source| FileError::Read {
        path: shown.clone(),
        source,
    };
    let snapshot_error = |source| FileError::Snapshot {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let target = Deployment::discover(target, options.timeout).await?;
    let mode = ValueMode::for_target(&target.server, options.rewrite);
    let target_server = target.server.clone();
    let mut applier = Applier::new(target.clone(), options.apply.clone());
    let mut parser = Parser::new(options.parser_config(false));
    let mut sink = SnapshotSink::new(mode, options.db, options.selection.clone())
        .batch_limits(options.batch_keys, options.batch_bytes)
        .target_server(&target_server);
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        let mut input = &buf[..n];
        while parser.feed(input, &mut sink).map_err(snapshot_error)? == Status::Paused {
            input = &[];
            let batch = sink.take_groups();
            applier.apply(batch).await?;
        }
    }
    parser
        .finish()
        .map_err(|e| snapshot_error(SnapshotError::Rdb(e)))?;
    let batch = sink.take_groups();
    applier.apply(batch).await?;
    // The file is the whole source: target libraries it lacks are deleted.
    let functions = super::functions::install(
        &target,
        sink.libraries(),
        &Others::DeleteExcept(Default::default()),
        options.apply.connect_timeout,
    )
    .await?;
    Ok(FileReport {
        functions,
        bytes,
        snapshot: sink.stats().clone(),
        apply: applier.stats().clone(),
        elapsed: started.elapsed(),
    })
}
