//! The spool between a master's socket and the code that applies what it sends: a task reads
//! the socket as fast as the master writes, keeping up to a memory cap of bytes and
//! appending the rest to a local file, so a slow target never makes the master's replica
//! output buffer overflow (which would drop the link and force a new snapshot). Nothing is
//! dropped: the consumer gets every byte, in order, from memory or from the file.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::ReadHalf;

use crate::socket::{NodeStream, ReadMark};
use tokio::sync::Notify;

/// How much a spool holds before it writes to disk, and where.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub memory_cap: usize,
    /// Directory for the spill file (the system's temporary directory by default).
    pub dir: Option<PathBuf>,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            memory_cap: 4 << 20,
            dir: None,
        }
    }
}

/// Why the socket stopped.
#[derive(Debug)]
pub(crate) enum SpoolEnd {
    Closed,
    Timeout(Duration),
    Io(io::Error),
}

/// Bytes spilled to a file, `read..written` of the spilled stream still to take. The file
/// is cut into segments of `segment` bytes: one that has been read whole is written again
/// rather than the file growing, so a long lag costs only as much disk as it is long, and
/// the pages the kernel cached for the file are reused instead of being allocated and freed
/// for every byte spilled. The file is shared so that the consumer reads it without holding
/// the spool's lock.
struct Spill {
    path: PathBuf,
    file: Arc<File>,
    read: u64,
    written: u64,
    segment: u64,
    /// File offsets of the segments holding `read..written`, in stream order: the first
    /// holds the segment `read` is in.
    segments: VecDeque<u64>,
    /// Segments read whole, to write again. Together with `segments`, every segment the
    /// file has.
    free: Vec<u64>,
}

impl Spill {
    /// Where stream offset `at` is in the file, and how many bytes from there stay in its
    /// segment. The segment must exist.
    fn locate(&self, at: u64) -> (u64, u64) {
        let index = (at / self.segment - self.read / self.segment) as usize;
        let within = at % self.segment;
        (self.segments[index] + within, self.segment - within)
    }

    /// Appends `bytes` to the spilled stream.
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.written / self.segment - self.read / self.segment == self.segments.len() as u64
            {
                let file_len = (self.segments.len() + self.free.len()) as u64 * self.segment;
                let at = self.free.pop().unwrap_or(file_len);
                self.segments.push_back(at);
            }
            let (at, room) = self.locate(self.written);
            let n = bytes.len().min(room as usize);
            self.file.write_all_at(&bytes[..n], at)?;
            self.written += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// The file offset and length of the next bytes to read (within one segment).
    fn next_read(&self) -> Option<(u64, usize)> {
        if self.read == self.written {
            return None;
        }
        let (at, room) = self.locate(self.read);
        Some((
            at,
            (self.written - self.read).min(room).min(SPILL_READ) as usize,
        ))
    }

    /// Counts `len` bytes as read; a segment read whole becomes free.
    fn consumed(&mut self, len: usize) {
        let before = self.read / self.segment;
        self.read += len as u64;
        for _ in before..self.read / self.segment {
            let done = self
                .segments
                .pop_front()
                .expect("a segment holds every byte read");
            self.free.push(done);
        }
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Default)]
struct State {
    memory: VecDeque<Bytes>,
    memory_bytes: usize,
    /// When each chunk still held arrived: (its first byte's place in the stream, Unix time
    /// in milliseconds), in stream order.
    arrivals: VecDeque<(u64, u64)>,
    /// Bytes pushed and taken so far (places in the stream).
    pushed: u64,
    taken: u64,
    spill: Option<Spill>,
    /// Spilled before: later spills of the session are not warned about again.
    spilled: bool,
    end: Option<SpoolEnd>,
}

/// Bytes waiting in a spool, readable from any thread (for metrics).
#[derive(Debug, Default)]
pub struct SpoolGauge {
    memory: AtomicU64,
    disk: AtomicU64,
}

impl SpoolGauge {
    pub fn memory(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    pub fn disk(&self) -> u64 {
        self.disk.load(Ordering::Relaxed)
    }
}

pub(crate) struct Spool {
    /// The master whose stream it holds.
    master: String,
    state: Mutex<State>,
    ready: Notify,
    config: SpoolConfig,
    gauge: Arc<SpoolGauge>,
    /// Segment size of the spill file.
    segment: u64,
}

/// The spill file's segment: what a segment read whole gives back for writing.
const SPILL_SEGMENT: u64 = 4 << 20;

static SPILL_FILES: AtomicU64 = AtomicU64::new(0);

/// A read at least this big means the master is streaming: the next one waits for more.
const STREAMING_READ: usize = 8 << 10;
/// The most bytes a read waits for (masters write 16 KiB at a time).
const STREAMING_MARK: usize = 32 << 10;
/// How long a read waits for its mark before it takes what has come: the most a pause in
/// the stream delays its last bytes.
const STREAMING_PATIENCE: Duration = Duration::from_millis(2);

/// The bytes the next read waits for, after a read of `read` bytes that waited for `want`
/// (`in_time`: they came within the patience). A small read means the master is not
/// streaming: no wait. Otherwise the mark follows the rate the bytes come at, so that it
/// is met within the patience: halved when it was not, doubled when a read brought twice
/// the mark, from [`STREAMING_READ`] to [`STREAMING_MARK`].
fn next_mark(want: usize, read: usize, in_time: bool) -> usize {
    if read < STREAMING_READ {
        return 1;
    }
    let next = if want <= 1 {
        STREAMING_READ
    } else if !in_time {
        want / 2
    } else if read >= 2 * want {
        want * 2
    } else {
        want
    };
    next.clamp(STREAMING_READ, STREAMING_MARK)
}

impl Spool {
    /// A spool for the stream of `master` (named in its log lines).
    pub(crate) fn new(master: String, config: SpoolConfig, gauge: Arc<SpoolGauge>) -> Arc<Self> {
        Arc::new(Spool {
            master,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            config,
            gauge,
            segment: SPILL_SEGMENT,
        })
    }

    /// Reads `socket` until it closes, fails or stays silent for `timeout`. While the master
    /// streams (a snapshot, a busy stream), `mark` makes each read wait for more bytes
    /// ([`next_mark`]), for at most [`STREAMING_PATIENCE`].
    pub(crate) async fn fill_from(
        self: Arc<Self>,
        mut socket: ReadHalf<NodeStream>,
        mut mark: ReadMark,
        timeout: Duration,
    ) {
        let mut want = 1;
        let end = loop {
            let mut chunk = BytesMut::with_capacity(crate::link::READ_CHUNK);
            let read = async {
                let (read, in_time) = mark
                    .read_buf(&mut socket, &mut chunk, want, STREAMING_PATIENCE)
                    .await?;
                want = next_mark(want, read, in_time);
                Ok::<_, io::Error>(read)
            };
            match tokio::time::timeout(timeout, read).await {
                Err(_) => break SpoolEnd::Timeout(timeout),
                Ok(Err(e)) => break SpoolEnd::Io(e),
                Ok(Ok(0)) => break SpoolEnd::Closed,
                Ok(Ok(_)) => {
                    if let Err(e) = self.push(chunk.freeze()) {
                        break SpoolEnd::Io(e);
                    }
                }
            }
        };
        self.state.lock().expect("spool lock").end = Some(end);
        self.ready.notify_one();
    }

    fn push(&self, chunk: Bytes) -> io::Result<()> {
        // Stamped before anything else: the time the master's bytes reached ferry, however
        // long they then wait here.
        self.push_arrived(chunk, unix_ms())
    }

    fn push_arrived(&self, chunk: Bytes, arrived_ms: u64) -> io::Result<()> {
        let mut state = self.state.lock().expect("spool lock");
        let at = state.pushed;
        state.pushed += chunk.len() as u64;
        state.arrivals.push_back((at, arrived_ms));
        if state.spill.is_none() && state.memory_bytes + chunk.len() <= self.config.memory_cap {
            state.memory_bytes += chunk.len();
            state.memory.push_back(chunk);
            self.gauge
                .memory
                .store(state.memory_bytes as u64, Ordering::Relaxed);
        } else {
            if state.spill.is_none() {
                let dir = self.config.dir.clone().unwrap_or_else(std::env::temp_dir);
                state.spill = Some(open_spill(&dir, self.segment)?);
                if state.spilled {
                    tracing::debug!(master = %self.master, dir = %dir.display(), "spilling to disk again");
                } else {
                    state.spilled = true;
                    tracing::warn!(master = %self.master, cap = self.config.memory_cap, dir = %dir.display(), "the replication stream arrives faster than the target applies it; spilling to disk");
                }
            }
            let spill = state.spill.as_mut().expect("just opened");
            spill.write(&chunk)?;
            let waiting = spill.written - spill.read;
            self.gauge.disk.store(waiting, Ordering::Relaxed);
        }
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next bytes, in order; waits for them. `Err` once everything before the end was
    /// taken.
    #[cfg(test)]
    pub(crate) async fn next(&self) -> Result<Bytes, SpoolEnd> {
        self.next_stamped().await.map(|received| received.bytes)
    }

    /// The next bytes with the times their parts arrived.
    pub(crate) async fn next_stamped(&self) -> Result<Received, SpoolEnd> {
        loop {
            if let Some(bytes) = self.take()? {
                let mut state = self.state.lock().expect("spool lock");
                let from = state.taken;
                state.taken += bytes.len() as u64;
                let until = state.taken;
                // The chunks before the one holding the first byte are done with.
                while state.arrivals.get(1).is_some_and(|&(next, _)| next <= from) {
                    state.arrivals.pop_front();
                }
                let arrivals = state
                    .arrivals
                    .iter()
                    .take_while(|&&(at, _)| at < until)
                    .map(|&(at, ms)| (at.max(from), ms))
                    .collect();
                return Ok(Received { bytes, arrivals });
            }
            self.ready.notified().await;
        }
    }

    fn take(&self) -> Result<Option<Bytes>, SpoolEnd> {
        let (file, from, len) = {
            let mut state = self.state.lock().expect("spool lock");
            if let Some(chunk) = state.memory.pop_front() {
                state.memory_bytes -= chunk.len();
                self.gauge
                    .memory
                    .store(state.memory_bytes as u64, Ordering::Relaxed);
                return Ok(Some(chunk));
            }
            let spilled = state.spill.as_ref().and_then(|spill| {
                let (at, len) = spill.next_read()?;
                Some((spill.file.clone(), at, len))
            });
            match spilled {
                Some(next) => next,
                None => {
                    return match state.end.take() {
                        Some(end) => Err(end),
                        None => Ok(None),
                    }
                }
            }
        };
        // The bytes are read without the lock, so the socket's reader never waits for the
        // disk: they are written already, and only this consumer moves `read` or drops the
        // file.
        let bytes = read_at(&file, from, len).map_err(SpoolEnd::Io)?;
        let mut state = self.state.lock().expect("spool lock");
        let spill = state
            .spill
            .as_mut()
            .expect("only the consumer drops the spill");
        spill.consumed(len);
        self.gauge
            .disk
            .store(spill.written - spill.read, Ordering::Relaxed);
        if spill.read == spill.written {
            // Drained: back to memory, the file goes.
            state.spill = None;
        }
        Ok(Some(bytes))
    }
}

/// Bytes taken from a spool and when they reached ferry.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) bytes: Bytes,
    /// (place in the stream of bytes the spool carried, Unix milliseconds): from each place
    /// on, the bytes arrived at that time; the first one is the first byte's.
    pub(crate) arrivals: Vec<(u64, u64)>,
}

/// The wall clock in Unix milliseconds (expiry times are Unix milliseconds).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The most a spilled read takes back at once.
const SPILL_READ: u64 = 1 << 20;

/// `len` bytes of `file` from `offset`, read into fresh memory that is not zeroed first.
fn read_at(file: &File, mut offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = Vec::<u8>::with_capacity(len);
    while buf.len() < len {
        let missing = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..missing];
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "spill offset"))?;
        // SAFETY: pread writes at most `spare.len()` bytes into `spare`, which belongs to
        // `buf`'s allocation and is not read before the kernel has written it.
        let n =
            unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            n => {
                let n = n as usize;
                // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                offset += n as u64;
            }
        }
    }
    Ok(Bytes::from(buf))
}

fn open_spill(dir: &Path, segment: u64) -> io::Result<Spill> {
    std::fs::create_dir_all(dir)?;
    let n = SPILL_FILES.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("ferry-spool-{}-{n}.bin", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    Ok(Spill {
        path,
        file: Arc::new(file),
        read: 0,
        written: 0,
        segment,
        segments: VecDeque::new(),
        free: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark rises with a fast stream, falls when it is not met in time, and drops to
    /// nothing when the stream trickles.
    #[test]
    fn the_mark_follows_the_stream() {
        // Not streaming: a small read keeps it off, a big one turns it on.
        assert_eq!(next_mark(1, 100, true), 1);
        assert_eq!(next_mark(1, 16 << 10, true), STREAMING_READ);
        // Reads bringing twice the mark double it, up to the most.
        assert_eq!(next_mark(8 << 10, 16 << 10, true), 16 << 10);
        assert_eq!(next_mark(16 << 10, 64 << 10, true), 32 << 10);
        assert_eq!(next_mark(32 << 10, 64 << 10, true), STREAMING_MARK);
        // Met, but not twice over: it stays.
        assert_eq!(next_mark(16 << 10, 20 << 10, true), 16 << 10);
        // Not met within the patience: halved, not below the streaming size.
        assert_eq!(next_mark(32 << 10, 20 << 10, false), 16 << 10);
        assert_eq!(next_mark(8 << 10, 9 << 10, false), STREAMING_READ);
        // A trickle: off.
        assert_eq!(next_mark(32 << 10, 3 << 10, false), 1);
    }

    #[tokio::test]
    async fn bytes_beyond_the_cap_go_to_disk_and_come_back_in_order() {
        let dir = std::env::temp_dir().join(format!("ferry-spool-test-{}", std::process::id()));
        let gauge = Arc::new(SpoolGauge::default());
        let spool = small_spool(&dir, 10, 6, &gauge);
        let chunks: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 4])).collect();
        for chunk in &chunks[..10] {
            spool.push(chunk.clone()).unwrap();
        }
        assert_eq!(gauge.memory(), 8, "two chunks fit the cap");
        assert_eq!(gauge.disk(), 32, "the rest is spilled");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend_from_slice(&spool.next().await.unwrap());
        }
        // Once spilling, new bytes queue behind the file, never in front of it.
        for chunk in &chunks[10..] {
            spool.push(chunk.clone()).unwrap();
        }
        drain(&spool, &mut got).await;
        let want: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(got, want);
        assert_eq!((gauge.memory(), gauge.disk()), (0, 0));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the spill file is removed once drained"
        );
        let _ = std::fs::remove_dir(&dir);
    }

    /// Bytes keep the time they arrived, from memory and from the spill file, also when a
    /// read from the file spans several chunks.
    #[tokio::test]
    async fn bytes_keep_their_arrival_times() {
        let dir = std::env::temp_dir().join(format!("ferry-spool-times-{}", std::process::id()));
        let gauge = Arc::new(SpoolGauge::default());
        for cap in [1 << 20, 0] {
            let spool = small_spool(&dir, cap, 64, &gauge);
            for (i, ms) in [10, 20, 30].into_iter().enumerate() {
                spool
                    .push_arrived(Bytes::from(vec![i as u8; 4]), ms)
                    .unwrap();
            }
            let mut arrivals = Vec::new();
            let mut taken = 0;
            while taken < 12 {
                let received = spool.next_stamped().await.unwrap();
                assert_eq!(received.arrivals.first().map(|a| a.0), Some(taken));
                taken += received.bytes.len() as u64;
                arrivals.extend(received.arrivals);
            }
            arrivals.dedup();
            assert_eq!(arrivals, [(0, 10), (4, 20), (8, 30)], "memory cap {cap}");
        }
        let _ = std::fs::remove_dir(&dir);
    }

    /// Ends the spool's input and takes everything left in it.
    async fn drain(spool: &Spool, got: &mut Vec<u8>) {
        spool.state.lock().unwrap().end = Some(SpoolEnd::Closed);
        loop {
            match spool.next().await {
                Ok(bytes) => got.extend_from_slice(&bytes),
                Err(SpoolEnd::Closed) => break,
                Err(other) => panic!("{other:?}"),
            }
        }
    }

    /// A spool with a memory cap of `cap` bytes and spill segments of `segment` bytes.
    fn small_spool(dir: &Path, cap: usize, segment: u64, gauge: &Arc<SpoolGauge>) -> Arc<Spool> {
        let mut spool = Spool::new(
            "127.0.0.1:6379".into(),
            SpoolConfig {
                memory_cap: cap,
                dir: Some(dir.to_path_buf()),
            },
            gauge.clone(),
        );
        Arc::get_mut(&mut spool).expect("not shared yet").segment = segment;
        spool
    }

    /// A consumer that keeps up with a lag of a few chunks: the spill file is written over
    /// where it was read, and stays the size of the lag, not of all it carried.
    #[tokio::test]
    async fn the_spill_file_is_reused_behind_the_reader() {
        let dir = std::env::temp_dir().join(format!("ferry-spool-reuse-{}", std::process::id()));
        let gauge = Arc::new(SpoolGauge::default());
        let spool = small_spool(&dir, 0, 16, &gauge);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut largest_file = 0;
        for i in 0..500u32 {
            let chunk: Vec<u8> = (0..7).map(|j| (i * 7 + j) as u8).collect();
            sent.extend_from_slice(&chunk);
            spool.push(Bytes::from(chunk)).unwrap();
            // The consumer keeps about 100 bytes behind.
            while gauge.disk() > 100 {
                got.extend_from_slice(&spool.next().await.unwrap());
            }
            let path = spool
                .state
                .lock()
                .unwrap()
                .spill
                .as_ref()
                .map(|s| s.path.clone());
            if let Some(path) = path {
                largest_file = largest_file.max(std::fs::metadata(path).unwrap().len());
            }
        }
        drain(&spool, &mut got).await;
        assert_eq!(got, sent, "every byte, in order");
        assert!(
            largest_file <= 100 + 3 * 16,
            "the file grew to {largest_file} bytes for {} spilled",
            sent.len()
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir(&dir);
    }
}
