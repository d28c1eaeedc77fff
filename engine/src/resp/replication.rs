//! Replication framing: what a master sends a replica after `PSYNC`, read by the replica.
//!
//! In order, as Redis 7 sends it:
//! 1. The reply to `PSYNC`: `+FULLRESYNC <replid> <offset>`, `+CONTINUE [<new replid>]`, or an
//!    error (`-NOMASTERLINK ...`, `-LOADING ...`, `-ERR ...`). While the master waits to start
//!    a snapshot it sends bare `\n`s first, "just to keep the connection alive".
//! 2. After `+FULLRESYNC`, more `\n`s while the snapshot is produced, then its header and
//!    payload: `$<len>\r\n` and exactly `len` bytes (from a file on disk), or
//!    `$EOF:<40-byte mark>\r\n` and the payload followed by the mark (diskless). No CRLF follows
//!    either payload.
//! 3. After the snapshot (or right after `+CONTINUE`), the replication stream: commands, every
//!    byte of which counts towards the replication offset.
//!
//! [`ReplicationStream`] takes the bytes as they come, in chunks of any size, and hands out
//! [`ReplEvent`]s, each with the exact number of bytes it took. The snapshot payload is handed
//! on in chunks as it arrives, never gathered; only when the payload ends with an EOF mark are
//! up to 39 bytes held back, in case they are the start of the mark.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::decode::CommandState;
use super::{Command, DecodeError, Limits};
use crate::replica::{ReplId, ReplOffset};

/// What the master said or sent, in the order it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplEvent {
    /// A bare newline, sent while the master prepares the snapshot to keep the link alive. It
    /// is not part of the replication stream and does not count towards the offset.
    KeepAlive,
    /// `+FULLRESYNC <replid> <offset>`: a snapshot follows, taken at `offset` of the history
    /// `replid`.
    FullResync { replid: ReplId, offset: ReplOffset },
    /// `+CONTINUE [<replid>]`: a partial resynchronization, the stream goes on from the offset
    /// the replica asked for. A master that knows PSYNC2 (Redis 4.0 and later, when the replica
    /// sent `REPLCONF capa psync2`) names its current replid, which may be new after a failover.
    Continue { replid: Option<ReplId> },
    /// The master refused `PSYNC` or gave up the transfer with an error line (its text, without
    /// the `-`): `NOMASTERLINK` and `LOADING` mean "try again later". Nothing follows.
    MasterError { message: Bytes },
    /// The snapshot's header: how its end will be recognised.
    SnapshotBegin(SnapshotFraming),
    /// The next bytes of the snapshot payload (an RDB file), as they arrived.
    SnapshotChunk(Bytes),
    /// The snapshot is over, `len` payload bytes in all (the EOF mark not included); the
    /// replication stream begins.
    SnapshotEnd { len: u64 },
    /// A command of the replication stream.
    Command(Command),
}

/// How a snapshot payload is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFraming {
    /// `$<len>\r\n`: the payload is exactly this many bytes (a disk-based transfer).
    Length(u64),
    /// `$EOF:<mark>\r\n`: the payload ends with the mark (a diskless transfer, whose length
    /// the master does not know in advance).
    EofMark(EofMark),
}

/// The 40 random bytes that close a diskless snapshot payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EofMark([u8; EofMark::LEN]);

impl EofMark {
    /// `RDB_EOF_MARK_SIZE`.
    pub const LEN: usize = 40;

    pub fn new(mark: [u8; Self::LEN]) -> Self {
        EofMark(mark)
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// How many bytes at the end of `unsent` could be the beginning of the mark: the longest
    /// suffix of `unsent` that is a proper prefix of the mark.
    fn held_back(&self, unsent: &[u8]) -> usize {
        (1..Self::LEN.min(unsent.len() + 1))
            .rev()
            .find(|&n| unsent.ends_with(&self.0[..n]))
            .unwrap_or(0)
    }
}

impl fmt::Debug for EofMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EofMark(\"{}\")", self.0.escape_ascii())
    }
}

/// Where a replica is in the transfer, named after Redis's `repl_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplState {
    /// `REPL_STATE_RECEIVE_PSYNC_REPLY`: `PSYNC` sent, waiting for the reply.
    ReceivePsyncReply,
    /// `REPL_STATE_TRANSFER`: receiving the snapshot, its header included.
    Transfer,
    /// `REPL_STATE_CONNECTED`: receiving the replication stream.
    Connected,
    /// The master answered with an error; the link is to be dropped.
    Aborted,
}

/// Bytes from a master that do not follow the replication protocol.
///
/// Offsets count bytes from the first byte fed to the [`ReplicationStream`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplError {
    #[error("line at offset {offset} is longer than {max} bytes, expected a newline within it")]
    LineTooLong { offset: u64, max: usize },
    #[error("invalid reply to psync at offset {offset}: {line}, expected {expected}")]
    InvalidPsyncReply {
        offset: u64,
        line: String,
        expected: &'static str,
    },
    #[error("invalid snapshot header at offset {offset}: {line}, expected {expected}")]
    InvalidSnapshotHeader {
        offset: u64,
        line: String,
        expected: &'static str,
    },
    #[error("invalid replication stream: {0}")]
    Stream(#[from] DecodeError),
}

/// The replica's side of one replication link, from the reply to `PSYNC` on.
///
/// Feed it the bytes the master sends ([`ReplicationStream::feed`], or read straight into
/// [`ReplicationStream::buffer_mut`]) and take events out with
/// [`ReplicationStream::next_event`] until it returns `Ok(None)`. Each event comes with the
/// number of bytes it took; together they are every byte fed, so the replication offset is
/// the one in `+FULLRESYNC` (or the one asked for in `PSYNC`, minus one, after `+CONTINUE`)
/// plus the bytes of every [`ReplEvent::Command`] since.
#[derive(Debug, Default)]
pub struct ReplicationStream {
    limits: Limits,
    /// Snapshot bytes known to be payload, handed out before `buf` (see
    /// [`ReplicationStream::feed_bytes`]).
    ready: Option<Bytes>,
    buf: BytesMut,
    state: State,
    commands: CommandState,
    consumed: u64,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    ReceivePsyncReply,
    /// `+FULLRESYNC` received, the snapshot's header not yet.
    TransferHeader,
    Transfer {
        payload: Payload,
        received: u64,
    },
    Connected,
    Aborted,
}

#[derive(Debug, Clone, Copy)]
enum Payload {
    Length { remaining: u64 },
    EofMark(EofMark),
}

impl ReplicationStream {
    /// A stream that has sent `PSYNC` and waits for the reply. `limits.max_line_len` bounds the
    /// reply and the snapshot header; the snapshot itself has no length limit, it is never
    /// held whole.
    pub fn new(limits: Limits) -> Self {
        ReplicationStream {
            limits,
            ..ReplicationStream::default()
        }
    }

    /// Appends bytes received from the master.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a chunk received from the master, without copying it where it can: when
    /// nothing is left over it becomes the buffer itself, and during a snapshot framed by an
    /// end mark, the few bytes held back because they could begin the mark are set apart
    /// (once the chunk shows they do not) so the chunk can still become the buffer.
    pub fn feed_bytes(&mut self, chunk: Bytes) {
        let own = |chunk: Bytes| {
            chunk
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
        };
        if self.buf.is_empty() {
            self.buf = own(chunk);
            return;
        }
        if let State::Transfer {
            payload: Payload::EofMark(mark),
            ..
        } = self.state
        {
            let held = self.buf.len();
            if self.ready.is_none() && held < EofMark::LEN && chunk.len() >= EofMark::LEN {
                let probe = [&self.buf[..], &chunk[..EofMark::LEN - 1]].concat();
                let mark_in_held =
                    memchr::memmem::find_iter(&probe, mark.as_bytes()).any(|at| at < held);
                if !mark_in_held {
                    self.ready = Some(self.buf.split().freeze());
                    self.buf = own(chunk);
                    return;
                }
            }
        }
        self.buf.extend_from_slice(&chunk);
    }

    /// The buffer of bytes not yet handed out, to read into directly. Append to it; bytes
    /// already in it must not be changed.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn state(&self) -> ReplState {
        match self.state {
            State::ReceivePsyncReply => ReplState::ReceivePsyncReply,
            State::TransferHeader | State::Transfer { .. } => ReplState::Transfer,
            State::Connected => ReplState::Connected,
            State::Aborted => ReplState::Aborted,
        }
    }

    /// Bytes of all events handed out so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes fed but not yet handed out in an event.
    pub fn buffered(&self) -> usize {
        self.ready.as_ref().map_or(0, Bytes::len) + self.buf.len() + self.commands.len()
    }

    /// The next event and the number of bytes it took, or `Ok(None)` until more bytes are fed
    /// (and for good once the master has answered with an error).
    pub fn next_event(&mut self) -> Result<Option<(ReplEvent, usize)>, ReplError> {
        let event = match &mut self.state {
            State::ReceivePsyncReply => self.psync_reply()?,
            State::TransferHeader => self.snapshot_header()?,
            State::Transfer { payload, received } => match self.ready.take() {
                Some(ready) => {
                    let len = ready.len();
                    *received += len as u64;
                    Some((ReplEvent::SnapshotChunk(ready), len))
                }
                None => {
                    let (payload, received) = (*payload, *received);
                    self.snapshot_payload(payload, received)
                }
            },
            State::Connected => self
                .commands
                .next(&mut self.buf, &self.limits, self.consumed)?
                .map(|(command, len)| (ReplEvent::Command(command), len)),
            State::Aborted => None,
        };
        if let Some((_, len)) = &event {
            self.consumed += *len as u64;
        }
        Ok(event)
    }

    /// The reply to `PSYNC`, or a keep-alive before it.
    fn psync_reply(&mut self) -> Result<Option<(ReplEvent, usize)>, ReplError> {
        let Some((content, len)) = self.line()? else {
            return Ok(None);
        };
        let line = &self.buf[..content];
        let invalid = |expected| ReplError::InvalidPsyncReply {
            offset: self.consumed,
            line: quoted(line),
            expected,
        };
        let event = if line.is_empty() {
            ReplEvent::KeepAlive
        } else if let Some(rest) = line.strip_prefix(b"+FULLRESYNC ") {
            const EXPECTED: &str = "+FULLRESYNC <40 hex characters> <offset>";
            let (replid, offset) = split_once(rest, b' ').ok_or_else(|| invalid(EXPECTED))?;
            let replid = ReplId::parse(replid).map_err(|_| invalid(EXPECTED))?;
            let offset = decimal(offset).ok_or_else(|| invalid(EXPECTED))?;
            self.state = State::TransferHeader;
            ReplEvent::FullResync {
                replid,
                offset: ReplOffset::new(offset),
            }
        } else if let Some(rest) = line.strip_prefix(b"+CONTINUE") {
            let replid = match rest {
                [] => None,
                [b' ', replid @ ..] => Some(
                    ReplId::parse(replid)
                        .map_err(|_| invalid("+CONTINUE or +CONTINUE <40 hex characters>"))?,
                ),
                _ => return Err(invalid("+CONTINUE or +CONTINUE <40 hex characters>")),
            };
            self.state = State::Connected;
            ReplEvent::Continue { replid }
        } else if line.starts_with(b"-") {
            return Ok(Some(self.master_error(content, len)));
        } else {
            return Err(invalid(
                "+FULLRESYNC <replid> <offset>, +CONTINUE [<replid>] or an error",
            ));
        };
        self.buf.advance(len.min(self.buf.len()));
        Ok(Some((event, len)))
    }

    /// The snapshot's header, or a keep-alive before it.
    fn snapshot_header(&mut self) -> Result<Option<(ReplEvent, usize)>, ReplError> {
        let Some((content, len)) = self.line()? else {
            return Ok(None);
        };
        let line = &self.buf[..content];
        let invalid = |expected| ReplError::InvalidSnapshotHeader {
            offset: self.consumed,
            line: quoted(line),
            expected,
        };
        let event = if line.is_empty() {
            ReplEvent::KeepAlive
        } else if let Some(mark) = line.strip_prefix(b"$EOF:") {
            let mark = EofMark(
                mark.try_into()
                    .map_err(|_| invalid("$EOF: and a mark of 40 bytes"))?,
            );
            self.state = State::Transfer {
                payload: Payload::EofMark(mark),
                received: 0,
            };
            ReplEvent::SnapshotBegin(SnapshotFraming::EofMark(mark))
        } else if let Some(digits) = line.strip_prefix(b"$") {
            let remaining =
                decimal(digits).ok_or_else(|| invalid("$<payload length> or $EOF:<mark>"))?;
            self.state = State::Transfer {
                payload: Payload::Length { remaining },
                received: 0,
            };
            ReplEvent::SnapshotBegin(SnapshotFraming::Length(remaining))
        } else if line.starts_with(b"-") {
            return Ok(Some(self.master_error(content, len)));
        } else {
            return Err(invalid("$<payload length>, $EOF:<mark> or an error"));
        };
        self.buf.advance(len.min(self.buf.len()));
        Ok(Some((event, len)))
    }

    /// `-<message>`: the master gives up; nothing more is read.
    fn master_error(&mut self, content: usize, len: usize) -> (ReplEvent, usize) {
        self.state = State::Aborted;
        let line = self.buf.split_to(len.min(self.buf.len())).freeze();
        let message = line.slice(1.min(content)..content);
        (ReplEvent::MasterError { message }, len)
    }

    /// The next chunk of the payload, or its end.
    fn snapshot_payload(&mut self, payload: Payload, received: u64) -> Option<(ReplEvent, usize)> {
        let (chunk_len, remaining) = match payload {
            Payload::Length { remaining: 0 } => {
                self.state = State::Connected;
                return Some((ReplEvent::SnapshotEnd { len: received }, 0));
            }
            Payload::Length { remaining } => {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                (
                    n,
                    Payload::Length {
                        remaining: remaining - n as u64,
                    },
                )
            }
            Payload::EofMark(mark) => match memchr::memmem::find(&self.buf, mark.as_bytes()) {
                Some(0) => {
                    self.buf.advance(EofMark::LEN);
                    self.state = State::Connected;
                    return Some((ReplEvent::SnapshotEnd { len: received }, EofMark::LEN));
                }
                Some(start) => (start, payload),
                None => (self.buf.len() - mark.held_back(&self.buf), payload),
            },
        };
        if chunk_len == 0 {
            return None;
        }
        self.state = State::Transfer {
            payload: remaining,
            received: received + chunk_len as u64,
        };
        let chunk = self.buf.split_to(chunk_len).freeze();
        Some((ReplEvent::SnapshotChunk(chunk), chunk_len))
    }

    /// The line at the front of the buffer as Redis's `connSyncReadLine` reads it: up to `\n`,
    /// a `\r` before it dropped. Returns the length of its content and of the whole line.
    fn line(&self) -> Result<Option<(usize, usize)>, ReplError> {
        let max = self.limits.max_line_len;
        let window = &self.buf[..self.buf.len().min(max.saturating_add(2))];
        match memchr::memchr(b'\n', window) {
            Some(newline) => {
                let content = if newline > 0 && window[newline - 1] == b'\r' {
                    newline - 1
                } else {
                    newline
                };
                if content > max {
                    return Err(ReplError::LineTooLong {
                        offset: self.consumed,
                        max,
                    });
                }
                Ok(Some((content, newline + 1)))
            }
            None if self.buf.len() > max.saturating_add(1) => Err(ReplError::LineTooLong {
                offset: self.consumed,
                max,
            }),
            None => Ok(None),
        }
    }
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(separator, bytes)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// A non-negative decimal number, digits only.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &digit| {
        if digit.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        } else {
            None
        }
    })
}

/// A line from the wire for an error message: escaped, and cut short if long.
fn quoted(line: &[u8]) -> String {
    const SHOWN: usize = 80;
    let shown = &line[..line.len().min(SHOWN)];
    let more = if line.len() > SHOWN { "..." } else { "" };
    format!("\"{}\"{more}", shown.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const DISKLESS: &[u8] = include_bytes!("testdata/redis7-diskless.bin");
    const DISKLESS_KEEPALIVE: &[u8] = include_bytes!("testdata/redis7-diskless-keepalive.bin");
    const DISK: &[u8] = include_bytes!("testdata/redis7-disk.bin");
    const DISK_KEEPALIVE: &[u8] = include_bytes!("testdata/redis7-disk-keepalive.bin");
    const CONTINUE_PSYNC2: &[u8] = include_bytes!("testdata/redis7-continue-psync2.bin");
    const CONTINUE: &[u8] = include_bytes!("testdata/redis7-continue.bin");
    const NOMASTERLINK: &[u8] = include_bytes!("testdata/redis7-nomasterlink.bin");

    /// What the master propagated after each full sync: `SELECT 0`, `SET k2 hello`,
    /// `INCR counter`.
    const COMMANDS: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$2\r\nk2\r\n$5\r\nhello\r\n*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n";

    fn commands() -> Vec<ReplEvent> {
        vec![
            ReplEvent::Command(Command::new("SELECT").arg("0")),
            ReplEvent::Command(Command::new("SET").arg("k2").arg("hello")),
            ReplEvent::Command(Command::new("INCR").arg("counter")),
        ]
    }

    fn replid(id: &str) -> ReplId {
        id.parse().unwrap()
    }

    fn mark(mark: &[u8]) -> EofMark {
        EofMark(mark.try_into().unwrap())
    }

    /// Feeds `input` in pieces of the sizes `chunks` gives (cycling), taking every event out
    /// after each piece. Consecutive snapshot chunks are joined into one, and every event's
    /// byte count is checked against what the stream says it consumed.
    fn run(
        input: &[u8],
        chunks: &[usize],
    ) -> Result<(Vec<ReplEvent>, ReplicationStream), ReplError> {
        run_fed(input, chunks, false)
    }

    /// [`run`], the chunks fed as slices or (`owned`) as `Bytes` the stream may keep.
    fn run_fed(
        input: &[u8],
        chunks: &[usize],
        owned: bool,
    ) -> Result<(Vec<ReplEvent>, ReplicationStream), ReplError> {
        let mut stream = ReplicationStream::default();
        let mut events: Vec<ReplEvent> = Vec::new();
        let mut counted = 0u64;
        let mut rest = input;
        for &chunk in chunks.iter().cycle() {
            let (now, later) = rest.split_at(chunk.max(1).min(rest.len()));
            if owned {
                stream.feed_bytes(Bytes::copy_from_slice(now));
            } else {
                stream.feed(now);
            }
            rest = later;
            while let Some((event, len)) = stream.next_event()? {
                counted += len as u64;
                if let ReplEvent::SnapshotChunk(bytes) = &event {
                    assert_eq!(bytes.len(), len);
                    if let Some(ReplEvent::SnapshotChunk(previous)) = events.last_mut() {
                        *previous = [&previous[..], &bytes[..]].concat().into();
                        continue;
                    }
                }
                events.push(event);
            }
            assert_eq!(counted, stream.consumed());
            if rest.is_empty() {
                break;
            }
        }
        Ok((events, stream))
    }

    /// The snapshot payload in a capture: from the end of its header line to `end`.
    fn payload<'a>(capture: &'a [u8], header: &[u8], end: usize) -> &'a [u8] {
        let start = memchr::memmem::find(capture, header).unwrap() + header.len();
        &capture[start..end]
    }

    /// Every way of feeding `input`: at once, a byte at a time, and in two pieces split at
    /// every position. They must all give `expected` and take every byte.
    fn assert_every_split(input: &[u8], expected: &[ReplEvent]) {
        let mut feeds: Vec<Vec<usize>> = vec![vec![input.len()], vec![1]];
        feeds.extend((1..input.len()).map(|split| vec![split, input.len()]));
        for chunks in feeds {
            let (events, stream) = run(input, &chunks).unwrap();
            assert_eq!(events, expected, "fed in chunks of {chunks:?}");
            assert_eq!(stream.consumed(), input.len() as u64, "{chunks:?}");
            assert_eq!(stream.buffered(), 0, "{chunks:?}");
        }
    }

    #[test]
    fn redis7_diskless_full_sync() {
        let eof = b"3cb6d7e82ee4f4dd97e6f25e9de557656886d451";
        assert!(DISKLESS.ends_with(COMMANDS));
        let mark_at = DISKLESS.len() - COMMANDS.len() - EofMark::LEN;
        let rdb = payload(
            DISKLESS,
            b"$EOF:3cb6d7e82ee4f4dd97e6f25e9de557656886d451\r\n",
            mark_at,
        );
        assert!(rdb.starts_with(b"REDIS0010"));
        let mut expected = vec![
            ReplEvent::FullResync {
                replid: replid("ab19b1563af1702a8cabbb7ff57695434ac833a1"),
                offset: ReplOffset::new(0),
            },
            ReplEvent::SnapshotBegin(SnapshotFraming::EofMark(mark(eof))),
            ReplEvent::SnapshotChunk(Bytes::copy_from_slice(rdb)),
            ReplEvent::SnapshotEnd {
                len: rdb.len() as u64,
            },
        ];
        expected.extend(commands());
        assert_every_split(DISKLESS, &expected);

        let (_, stream) = run(DISKLESS, &[7]).unwrap();
        assert_eq!(stream.state(), ReplState::Connected);
    }

    #[test]
    fn redis7_keepalives_before_fullresync() {
        assert!(DISKLESS_KEEPALIVE.starts_with(b"\n\n\n\n+FULLRESYNC"));
        let mark_at = DISKLESS_KEEPALIVE.len() - COMMANDS.len() - EofMark::LEN;
        let rdb = payload(DISKLESS_KEEPALIVE, b"268\r\n", mark_at);
        let mut expected = vec![ReplEvent::KeepAlive; 4];
        expected.extend([
            ReplEvent::FullResync {
                replid: replid("8d536e71c12a35ad7455886b3156f44fcefe40b8"),
                offset: ReplOffset::new(396),
            },
            ReplEvent::SnapshotBegin(SnapshotFraming::EofMark(mark(
                b"6dfbe86804e37df2a7e764c923cb3ae0a962c268",
            ))),
            ReplEvent::SnapshotChunk(Bytes::copy_from_slice(rdb)),
            ReplEvent::SnapshotEnd {
                len: rdb.len() as u64,
            },
        ]);
        expected.extend(commands());
        assert_every_split(DISKLESS_KEEPALIVE, &expected);
    }

    #[test]
    fn redis7_disk_full_sync() {
        let rdb = payload(DISK, b"$220\r\n", DISK.len() - COMMANDS.len());
        assert_eq!(rdb.len(), 220);
        let mut expected = vec![
            ReplEvent::FullResync {
                replid: replid("f198d2adcd12e0f47062d8a678a336bb3a347812"),
                offset: ReplOffset::new(0),
            },
            ReplEvent::SnapshotBegin(SnapshotFraming::Length(220)),
            ReplEvent::SnapshotChunk(Bytes::copy_from_slice(rdb)),
            ReplEvent::SnapshotEnd { len: 220 },
        ];
        expected.extend(commands());
        assert_every_split(DISK, &expected);
    }

    #[test]
    fn redis7_keepalives_before_the_snapshot_header() {
        let rdb = payload(
            DISK_KEEPALIVE,
            b"$228\r\n",
            DISK_KEEPALIVE.len() - COMMANDS.len(),
        );
        let mut expected = vec![
            ReplEvent::FullResync {
                replid: replid("a4214f06e589cef31218f6866bb3b793dbd78fa6"),
                offset: ReplOffset::new(264),
            },
            ReplEvent::KeepAlive,
            ReplEvent::KeepAlive,
            ReplEvent::KeepAlive,
            ReplEvent::SnapshotBegin(SnapshotFraming::Length(228)),
            ReplEvent::SnapshotChunk(Bytes::copy_from_slice(rdb)),
            ReplEvent::SnapshotEnd { len: 228 },
        ];
        expected.extend(commands());
        assert_every_split(DISK_KEEPALIVE, &expected);
    }

    #[test]
    fn redis7_partial_resync() {
        let backlog = [
            ReplEvent::Command(Command::new("SELECT").arg("0")),
            ReplEvent::Command(Command::new("SET").arg("k2").arg("v2")),
            ReplEvent::Command(Command::new("DEL").arg("k1")),
        ];
        let mut expected = vec![ReplEvent::Continue {
            replid: Some(replid("2ebc72d7c526553d33ee474ba3f60a63426e61ac")),
        }];
        expected.extend(backlog.clone());
        assert_every_split(CONTINUE_PSYNC2, &expected);

        let mut expected = vec![ReplEvent::Continue { replid: None }];
        expected.extend(backlog);
        assert_every_split(CONTINUE, &expected);

        // Only the commands count towards the offset.
        let (events, stream) = run(CONTINUE, &[CONTINUE.len()]).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(stream.consumed(), 11 + 73);
    }

    #[test]
    fn redis7_refuses_psync_without_a_master_link() {
        let expected = [ReplEvent::MasterError {
            message: Bytes::from_static(
                b"NOMASTERLINK Can't SYNC while not connected with my master",
            ),
        }];
        assert_every_split(NOMASTERLINK, &expected);
        let mut stream = ReplicationStream::default();
        stream.feed(NOMASTERLINK);
        stream.feed(b"+FULLRESYNC");
        assert!(stream.next_event().unwrap().is_some());
        assert_eq!(stream.state(), ReplState::Aborted);
        assert_eq!(stream.next_event(), Ok(None));
    }

    #[test]
    fn the_master_may_abort_before_the_header() {
        let input =
            b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n\n-ERR BGSAVE failed\r\n";
        let (events, stream) = run(input, &[input.len()]).unwrap();
        assert_eq!(
            events[2],
            ReplEvent::MasterError {
                message: Bytes::from_static(b"ERR BGSAVE failed")
            }
        );
        assert_eq!(stream.state(), ReplState::Aborted);
    }

    const REPLID: &[u8] = b"8de1787ba490483314a4d30f1c628bc5025eb761";
    const MARK: &[u8; 40] = b"d3b4ef6c1e8a7b9f0c2d5e4a3b6c9d8e7f1a2b3c";

    /// A diskless transfer whose payload holds partial copies of the mark: its first 39
    /// bytes, its first byte, and its last 39 bytes.
    fn tricky_diskless() -> (Vec<u8>, Vec<u8>) {
        let mut rdb = b"REDIS0011".to_vec();
        rdb.extend_from_slice(&MARK[..39]);
        rdb.push(b'!');
        rdb.extend_from_slice(&MARK[..1]);
        rdb.extend_from_slice(&MARK[1..]);
        rdb.pop();
        rdb.extend_from_slice(b"\xff\x00\x01\x02\x03\x04\x05\x06\x07");
        rdb.extend_from_slice(&MARK[..20]);
        let mut input = b"\n+FULLRESYNC ".to_vec();
        input.extend_from_slice(REPLID);
        input.extend_from_slice(b" 12345\r\n\r\n\n$EOF:");
        input.extend_from_slice(MARK);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&rdb);
        input.extend_from_slice(MARK);
        input.extend_from_slice(
            b"*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n",
        );
        (input, rdb)
    }

    #[test]
    fn held_back_bytes_that_begin_the_mark_are_not_payload_when_fed_owned() {
        // A mark that overlaps itself: held back, "a" x 39 may be one byte of payload and the
        // mark's first 38 bytes.
        let mark = [&[b'a'; 39][..], b"b"].concat();
        let mut header = b"+FULLRESYNC ".to_vec();
        header.extend_from_slice(REPLID);
        header.extend_from_slice(b" 1\r\n$EOF:");
        header.extend_from_slice(&mark);
        header.extend_from_slice(b"\r\n");
        let payload = b"REDIS0011Xa";
        let input = [
            &header[..],
            payload,
            &mark,
            b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        ]
        .concat();
        for owned in [false, true] {
            // The first chunk ends 38 bytes into the mark.
            let first = header.len() + payload.len() + 38;
            let (events, stream) = run_fed(&input, &[first, 1000], owned).unwrap();
            let chunks: Vec<&Bytes> = events
                .iter()
                .filter_map(|e| match e {
                    ReplEvent::SnapshotChunk(bytes) => Some(bytes),
                    _ => None,
                })
                .collect();
            assert_eq!(chunks, [&Bytes::from_static(payload)], "owned {owned}");
            assert_eq!(stream.consumed(), input.len() as u64);
            assert_eq!(stream.state(), ReplState::Connected);
        }
    }

    fn tricky_events(rdb: &[u8]) -> Vec<ReplEvent> {
        vec![
            ReplEvent::KeepAlive,
            ReplEvent::FullResync {
                replid: ReplId::parse(REPLID).unwrap(),
                offset: ReplOffset::new(12345),
            },
            ReplEvent::KeepAlive,
            ReplEvent::KeepAlive,
            ReplEvent::SnapshotBegin(SnapshotFraming::EofMark(EofMark(*MARK))),
            ReplEvent::SnapshotChunk(Bytes::copy_from_slice(rdb)),
            ReplEvent::SnapshotEnd {
                len: rdb.len() as u64,
            },
            ReplEvent::Command(Command::new("PING")),
            ReplEvent::Command(Command::new("REPLCONF").arg("GETACK").arg("*")),
        ]
    }

    #[test]
    fn the_eof_mark_is_found_across_chunks_and_partial_copies_are_payload() {
        let (input, rdb) = tricky_diskless();
        assert_every_split(&input, &tricky_events(&rdb));
    }

    #[test]
    fn payload_chunks_are_handed_on_not_gathered() {
        let rdb: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        for diskless in [false, true] {
            let mut stream = ReplicationStream::default();
            let header = if diskless {
                format!("$EOF:{}\r\n", std::str::from_utf8(MARK).unwrap())
            } else {
                format!("${}\r\n", rdb.len())
            };
            stream.feed(b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n");
            stream.feed(header.as_bytes());
            let (mut received, mut ended) = (0, false);
            let mut take_events = |stream: &mut ReplicationStream| {
                while let Some((event, len)) = stream.next_event().unwrap() {
                    if let ReplEvent::SnapshotChunk(chunk) = &event {
                        assert!(chunk.len() <= 4096 + EofMark::LEN);
                        assert_eq!(chunk[..], rdb[received..received + len]);
                        received += len;
                    }
                    ended |= event
                        == ReplEvent::SnapshotEnd {
                            len: rdb.len() as u64,
                        };
                }
            };
            for piece in rdb.chunks(4096) {
                stream.feed(piece);
                take_events(&mut stream);
                assert!(stream.buffered() < EofMark::LEN, "{}", stream.buffered());
            }
            if diskless {
                stream.feed(MARK);
            }
            take_events(&mut stream);
            assert!(ended);
            assert_eq!(received, rdb.len());
            assert_eq!(stream.state(), ReplState::Connected);
        }
    }

    #[test]
    fn an_empty_length_framed_snapshot_ends_at_once() {
        let input =
            b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 7\r\n$0\r\n*1\r\n$4\r\nPING\r\n";
        let expected = [
            ReplEvent::FullResync {
                replid: ReplId::parse(REPLID).unwrap(),
                offset: ReplOffset::new(7),
            },
            ReplEvent::SnapshotBegin(SnapshotFraming::Length(0)),
            ReplEvent::SnapshotEnd { len: 0 },
            ReplEvent::Command(Command::new("PING")),
        ];
        assert_every_split(input, &expected);
    }

    #[test]
    fn protocol_violations_are_errors_at_their_offset() {
        let cases: [(&[u8], u64, &str); 10] = [
            (b"+FULLRESYNC abc 0\r\n", 0, "expected +FULLRESYNC <40 hex characters> <offset>"),
            (
                b"\n+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 -1\r\n",
                1,
                "invalid reply to psync at offset 1",
            ),
            (b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761\r\n", 0, "<offset>"),
            (b"+CONTINUE abc\r\n", 0, "+CONTINUE or +CONTINUE <40 hex characters>"),
            (b"+CONTINUEX\r\n", 0, "+CONTINUE or"),
            (b"+OK\r\n", 0, "invalid reply to psync at offset 0: \"+OK\""),
            (b"$5\r\nhello", 0, "expected +FULLRESYNC <replid> <offset>"),
            (
                b"+CONTINUE\r\n*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n",
                29,
                "invalid replication stream: unexpected byte ':' at offset 29, expected '$'",
            ),
            (
                b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n\n$EOF:abc\r\n",
                57,
                "invalid snapshot header at offset 57: \"$EOF:abc\", expected $EOF: and a mark of 40 bytes",
            ),
            (
                b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n*1\r\n",
                56,
                "expected $<payload length>, $EOF:<mark> or an error",
            ),
        ];
        for (input, offset, message) in cases {
            let error = run(input, &[input.len()]).expect_err(&format!("{input:?}"));
            let text = error.to_string();
            assert!(text.contains(message), "{input:?}: {text}");
            let at = match &error {
                ReplError::InvalidPsyncReply { offset, .. }
                | ReplError::InvalidSnapshotHeader { offset, .. }
                | ReplError::LineTooLong { offset, .. } => *offset,
                ReplError::Stream(error) => error.offset(),
            };
            assert_eq!(at, offset, "{input:?}: {text}");
            // Byte by byte, the same error at the same place.
            assert_eq!(run(input, &[1]).map(|_| ()), Err(error), "{input:?}");
        }
    }

    #[test]
    fn lines_without_a_newline_are_bounded() {
        let limits = Limits {
            max_line_len: 64,
            ..Limits::default()
        };
        let mut stream = ReplicationStream::new(limits);
        stream.feed(&[b'+'; 65]);
        assert_eq!(stream.next_event(), Ok(None));
        stream.feed(b"+");
        assert_eq!(
            stream.next_event(),
            Err(ReplError::LineTooLong { offset: 0, max: 64 })
        );
        let long_error = format!("-{}\r\n", "E".repeat(64));
        let mut stream = ReplicationStream::new(limits);
        stream.feed(long_error.as_bytes());
        assert!(matches!(
            stream.next_event(),
            Err(ReplError::LineTooLong { .. })
        ));
    }

    #[test]
    fn held_back_bytes_are_the_longest_start_of_the_mark() {
        let mark = EofMark(*MARK);
        assert_eq!(mark.held_back(b""), 0);
        assert_eq!(mark.held_back(b"xyz"), 0);
        assert_eq!(mark.held_back(b"xyzd"), 1);
        assert_eq!(mark.held_back(&MARK[..39]), 39);
        assert_eq!(mark.held_back(&[b"abc", &MARK[..39]].concat()), 39);
        assert_eq!(mark.held_back(&MARK[..]), 0);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(chunks in vec(1usize..64, 1..64), owned in any::<bool>()) {
            let (input, rdb) = tricky_diskless();
            let (events, stream) = run_fed(&input, &chunks, owned).unwrap();
            prop_assert_eq!(events, tricky_events(&rdb));
            prop_assert_eq!(stream.consumed(), input.len() as u64);
            for capture in [DISKLESS, DISKLESS_KEEPALIVE, DISK, DISK_KEEPALIVE, CONTINUE_PSYNC2] {
                let (_, stream) = run_fed(capture, &chunks, owned).unwrap();
                prop_assert_eq!(stream.consumed(), capture.len() as u64);
                prop_assert_eq!(stream.state(), ReplState::Connected);
            }
        }

        #[test]
        fn any_bytes_give_events_or_an_error(
            input in vec(prop_oneof![
                Just(b'\n'), Just(b'\r'), Just(b'$'), Just(b'+'), Just(b'-'), Just(b'*'),
                any::<u8>(),
            ], 0..128),
            chunks in vec(1usize..16, 1..16),
        ) {
            let mut prefixed = b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n".to_vec();
            prefixed.extend_from_slice(&input);
            for input in [&input[..], &prefixed[..]] {
                if let Ok((_, stream)) = run(input, &chunks) {
                    prop_assert_eq!(stream.consumed() + stream.buffered() as u64, input.len() as u64);
                }
            }
        }
    }
}
