//! One replication link to a source master, as a replica sees it: the handshake, `PSYNC`, the
//! snapshot, then the replication stream with `REPLCONF ACK`s going back.
//!
//! The session does the I/O and keeps the offsets; the bytes are understood by
//! [`ReplicationStream`]. What the caller applies is its business: it reports progress with
//! [`Session::set_applied`], and that offset is what the session acknowledges, every
//! [`SessionConfig::ack_interval`] and whenever the master asks with `REPLCONF GETACK`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::spool::{Spool, SpoolConfig, SpoolEnd, SpoolGauge};
use super::{ReplId, ReplOffset};
use crate::resp::replication::{
    ReplError, ReplEvent, ReplState, ReplicationStream, SnapshotFraming,
};
use crate::resp::{encode_command, Command, DecodeError, Frame, FrameDecoder, Limits};
use crate::socket::{ConnectError, NodeStream, ReadMark};
use crate::tls::TlsConfig;

/// A user name (for ACL users; Redis 6+) and password to `AUTH` with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password, even in debug output.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach a master and behave as its replica.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub host: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
    /// TLS settings when the master's endpoint is `rediss://`.
    pub tls: Option<TlsConfig>,
    /// Announced as `REPLCONF listening-port` (default: the local port of this connection).
    /// Reconnections announce the same port so the master lists one replica throughout.
    pub listening_port: Option<u16>,
    /// Sent as `REPLCONF version` (Valkey 9 sends its own RDB format, `VALKEY080`, only to
    /// replicas that announce a version); `None` sends nothing.
    pub announce_version: Option<String>,
    /// How often `REPLCONF ACK` is sent once the stream runs (Redis replicas: every second).
    pub ack_interval: Duration,
    /// Limit for connecting and for each handshake reply.
    pub handshake_timeout: Duration,
    /// A link that brings no byte for this long is dead (the master PINGs every
    /// `repl-ping-replica-period`, 10 s by default; Redis's own `repl-timeout` is 60 s).
    pub read_timeout: Duration,
    pub limits: Limits,
    /// Where bytes wait when they arrive faster than they are consumed.
    pub spool: SpoolConfig,
    /// Counts the bytes waiting in the spool (for metrics).
    pub spool_gauge: Arc<SpoolGauge>,
}

impl SessionConfig {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        SessionConfig {
            host: host.into(),
            port,
            credentials: None,
            tls: None,
            listening_port: None,
            announce_version: None,
            ack_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            spool: SpoolConfig::default(),
            spool_gauge: Arc::default(),
        }
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Where to start: a full resynchronization, or the stream of history `replid` from
/// `next_offset` (the first byte not yet applied, i.e. the applied offset + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsyncFrom {
    Fresh,
    Continue {
        replid: ReplId,
        next_offset: ReplOffset,
    },
}

/// What the link brought, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A snapshot of history `replid` taken at `offset` follows.
    FullResync {
        replid: ReplId,
        offset: ReplOffset,
    },
    /// The master accepted the partial resynchronization: the stream goes on after `offset`,
    /// in history `replid` (new after a failover: the old one is now the master's replid2).
    Continue {
        replid: ReplId,
        offset: ReplOffset,
    },
    SnapshotBegin(SnapshotFraming),
    /// The next bytes of the snapshot (an RDB file), as they arrived.
    SnapshotChunk(Bytes),
    /// The snapshot is complete (`len` bytes); the stream starts at the `FullResync` offset.
    SnapshotEnd {
        len: u64,
    },
    /// A command of the replication stream and the offset right after it. `PING`, `SELECT`
    /// and `REPLCONF GETACK` come too: every byte counts towards the offset. `arrived_ms`
    /// is when its first byte reached ferry (Unix milliseconds), stamped as the socket was
    /// read, before any wait in the spool or for the target.
    Command {
        command: Command,
        offset: ReplOffset,
        arrived_ms: u64,
    },
}

/// Why a replication link failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("link to {addr} failed: {source}")]
    Io { addr: String, source: io::Error },
    #[error("{addr} sent nothing for {waited:?} while {what}")]
    Timeout {
        addr: String,
        what: &'static str,
        waited: Duration,
    },
    #[error("{addr} refused {command}: {reply}")]
    Refused {
        addr: String,
        command: &'static str,
        reply: String,
    },
    #[error("{addr} closed the link while {what}")]
    Closed { addr: String, what: &'static str },
    #[error("{addr} sent an invalid reply: {source}")]
    Reply { addr: String, source: DecodeError },
    #[error("{addr} broke the replication protocol: {source}")]
    Protocol { addr: String, source: ReplError },
}

/// A live replication link.
pub struct Session {
    config: SessionConfig,
    addr: String,
    /// The connection during the handshake; afterwards its read half feeds `spool` from a
    /// task of its own and its write half is `out`.
    socket: Option<NodeStream>,
    out: Option<WriteHalf<NodeStream>>,
    spool: Option<Arc<Spool>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    stream: ReplicationStream,
    /// The offset of the last byte of the replication stream processed; `None` until the
    /// master named it (`+FULLRESYNC`) or accepted ours (`+CONTINUE`).
    offset: Option<ReplOffset>,
    /// What the caller has applied, and what ACKs report.
    applied: ReplOffset,
    requested: PsyncFrom,
    ack: Interval,
    /// When the bytes fed to `stream` arrived: (place among the bytes the spool carried,
    /// Unix milliseconds), from the chunk holding the next event's first byte on.
    arrivals: VecDeque<(u64, u64)>,
    /// How many of the spool's bytes `stream` has turned into events.
    consumed: u64,
}

impl Session {
    /// Connects, authenticates, announces itself as a replica (`REPLCONF listening-port`,
    /// `capa eof`, `capa psync2`) and sends `PSYNC`. The reply comes as the first event.
    pub async fn connect(config: SessionConfig, from: PsyncFrom) -> Result<Self, SessionError> {
        let addr = config.addr();
        let socket = crate::socket::connect(
            &config.host,
            config.port,
            config.tls.as_ref(),
            config.handshake_timeout,
        )
        .await?;
        let mut ack = tokio::time::interval(config.ack_interval);
        ack.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut session = Session {
            addr,
            socket: Some(socket),
            out: None,
            spool: None,
            reader: None,
            stream: ReplicationStream::new(config.limits),
            offset: None,
            applied: ReplOffset::default(),
            requested: from,
            ack,
            arrivals: VecDeque::new(),
            consumed: 0,
            config,
        };
        session.handshake().await?;
        // From here on the master streams: a task reads everything it sends into the spool.
        let socket = session.socket.take().expect("connected");
        let mark = ReadMark::of(&socket);
        let (read, write) = tokio::io::split(socket);
        let spool = Spool::new(
            session.addr.clone(),
            session.config.spool.clone(),
            session.config.spool_gauge.clone(),
        );
        session.reader = Some(tokio::spawn(spool.clone().fill_from(
            read,
            mark,
            session.config.read_timeout,
        )));
        session.spool = Some(spool);
        session.out = Some(write);
        Ok(session)
    }

    async fn handshake(&mut self) -> Result<(), SessionError> {
        let mut replies = FrameDecoder::new(self.config.limits);
        if let Some(credentials) = self.config.credentials.clone() {
            let mut argv: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &credentials.user {
                argv.push(user.as_bytes());
            }
            argv.push(credentials.password.as_bytes());
            self.expect_ok(&mut replies, "AUTH", &argv).await?;
        }
        // PING first, as Redis replicas do: an error here (NOAUTH, NOPERM) is clearer than one
        // on a REPLCONF.
        let pong = self.request(&mut replies, "PING", &[b"PING"]).await?;
        if let Frame::Error(message) = pong {
            return Err(self.refused("PING", &message));
        }
        let port = self
            .config
            .listening_port
            .or_else(|| {
                let socket = self.socket.as_ref()?;
                Some(socket.local_addr().ok()?.port())
            })
            .unwrap_or_default();
        self.config.listening_port = Some(port);
        let port = port.to_string();
        self.expect_ok(
            &mut replies,
            "REPLCONF listening-port",
            &[b"REPLCONF", b"listening-port", port.as_bytes()],
        )
        .await?;
        self.expect_ok(
            &mut replies,
            "REPLCONF capa",
            &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"],
        )
        .await?;
        if let Some(version) = self.config.announce_version.clone() {
            // Servers that do not know the option answer with an error: that is fine.
            self.request(
                &mut replies,
                "REPLCONF version",
                &[b"REPLCONF", b"version", version.as_bytes()],
            )
            .await?;
        }
        let (replid, offset) = match self.requested {
            PsyncFrom::Fresh => ("?".to_string(), "-1".to_string()),
            PsyncFrom::Continue {
                replid,
                next_offset,
            } => (replid.to_string(), next_offset.to_string()),
        };
        self.write(&[b"PSYNC", replid.as_bytes(), offset.as_bytes()])
            .await
    }

    async fn expect_ok(
        &mut self,
        replies: &mut FrameDecoder,
        command: &'static str,
        argv: &[&[u8]],
    ) -> Result<(), SessionError> {
        match self.request(replies, command, argv).await? {
            Frame::SimpleString(s) if s.as_ref() == b"OK" => Ok(()),
            Frame::Error(message) => Err(self.refused(command, &message)),
            other => Err(self.refused(command, format!("{other:?}").as_bytes())),
        }
    }

    fn refused(&self, command: &'static str, message: &[u8]) -> SessionError {
        SessionError::Refused {
            addr: self.addr.clone(),
            command,
            reply: String::from_utf8_lossy(message).into_owned(),
        }
    }

    /// Sends one handshake command and reads its reply.
    async fn request(
        &mut self,
        replies: &mut FrameDecoder,
        command: &'static str,
        argv: &[&[u8]],
    ) -> Result<Frame, SessionError> {
        self.write(argv).await?;
        let deadline = Instant::now() + self.config.handshake_timeout;
        loop {
            replies.buffer_mut().reserve(crate::link::READ_CHUNK);
            let next = replies.next_frame().map_err(|source| SessionError::Reply {
                addr: self.addr.clone(),
                source,
            })?;
            if let Some((frame, _)) = next {
                return Ok(frame);
            }
            let socket = self.socket.as_mut().expect("handshake on the whole socket");
            let read = tokio::time::timeout_at(deadline, socket.read_buf(replies.buffer_mut()))
                .await
                .map_err(|_| SessionError::Timeout {
                    addr: self.addr.clone(),
                    what: command,
                    waited: self.config.handshake_timeout,
                })?
                .map_err(|source| self.io_error(source))?;
            if read == 0 {
                return Err(SessionError::Closed {
                    addr: self.addr.clone(),
                    what: command,
                });
            }
        }
    }

    async fn write(&mut self, argv: &[&[u8]]) -> Result<(), SessionError> {
        let mut out = Vec::new();
        encode_command(argv, &mut out);
        // TLS may hold the last record back until flushed.
        let written = match (&mut self.socket, &mut self.out) {
            (Some(socket), _) => match socket.write_all(&out).await {
                Ok(()) => socket.flush().await,
                Err(e) => Err(e),
            },
            (None, Some(half)) => match half.write_all(&out).await {
                Ok(()) => half.flush().await,
                Err(e) => Err(e),
            },
            (None, None) => unreachable!("a session always has its socket or its write half"),
        };
        written.map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: io::Error) -> SessionError {
        SessionError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// The port this session announced with `REPLCONF listening-port`.
    pub fn listening_port(&self) -> Option<u16> {
        self.config.listening_port
    }

    /// The master's address, `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The offset of the last byte processed, once known.
    pub fn offset(&self) -> Option<ReplOffset> {
        self.offset
    }

    /// Records what the caller has applied; ACKs report it from now on.
    pub fn set_applied(&mut self, offset: ReplOffset) {
        self.applied = offset;
    }

    pub fn applied(&self) -> ReplOffset {
        self.applied
    }

    /// Sends `REPLCONF ACK <applied offset>` now.
    pub async fn send_ack(&mut self) -> Result<(), SessionError> {
        let offset = self.applied.to_string();
        self.write(&[b"REPLCONF", b"ACK", offset.as_bytes()]).await
    }

    /// The next event, reading from the master as needed and sending ACKs on time.
    /// `Ok(None)` never happens while the link is up: the master closing it is an error.
    pub async fn next_event(&mut self) -> Result<SessionEvent, SessionError> {
        loop {
            if let Some(event) = self.try_next_event().await? {
                return Ok(event);
            }
            self.fill().await?;
        }
    }

    /// The next event if the bytes already received hold one; never waits for the network
    /// (it may send an ACK a `GETACK` asks for).
    pub async fn try_next_event(&mut self) -> Result<Option<SessionEvent>, SessionError> {
        loop {
            let next = self
                .stream
                .next_event()
                .map_err(|source| SessionError::Protocol {
                    addr: self.addr.clone(),
                    source,
                })?;
            let Some((event, len)) = next else {
                return Ok(None);
            };
            let begins = self.consumed;
            self.consumed += len as u64;
            while self
                .arrivals
                .get(1)
                .is_some_and(|&(next, _)| next <= begins)
            {
                self.arrivals.pop_front();
            }
            let arrived_ms = self.arrivals.front().map_or(0, |&(_, ms)| ms);
            if let Some(event) = self.on_event(event, len as u64, arrived_ms).await? {
                return Ok(Some(event));
            }
        }
    }

    /// Turns a stream event into a session event (`None` for keep-alives), keeping offsets
    /// and answering what needs an answer.
    async fn on_event(
        &mut self,
        event: ReplEvent,
        len: u64,
        arrived_ms: u64,
    ) -> Result<Option<SessionEvent>, SessionError> {
        Ok(Some(match event {
            ReplEvent::KeepAlive => return Ok(None),
            ReplEvent::FullResync { replid, offset } => {
                self.offset = Some(offset);
                self.applied = offset;
                SessionEvent::FullResync { replid, offset }
            }
            ReplEvent::Continue { replid } => {
                let PsyncFrom::Continue {
                    replid: asked,
                    next_offset,
                } = self.requested
                else {
                    return Err(self.refused("PSYNC", b"+CONTINUE to PSYNC ? -1"));
                };
                let offset = ReplOffset::new(next_offset.get().saturating_sub(1));
                self.offset = Some(offset);
                self.applied = offset;
                // Redis before 4.0 says `+CONTINUE` alone: the history did not change.
                let replid = replid.unwrap_or(asked);
                self.send_ack().await?;
                SessionEvent::Continue { replid, offset }
            }
            ReplEvent::MasterError { message } => return Err(self.refused("PSYNC", &message)),
            ReplEvent::SnapshotBegin(framing) => SessionEvent::SnapshotBegin(framing),
            ReplEvent::SnapshotChunk(bytes) => SessionEvent::SnapshotChunk(bytes),
            ReplEvent::SnapshotEnd { len } => {
                // Redis 7 starts the stream after a diskless snapshot only once the replica
                // has acknowledged it.
                self.send_ack().await?;
                self.ack.reset();
                SessionEvent::SnapshotEnd { len }
            }
            ReplEvent::Command(command) => {
                let offset = self.offset.unwrap_or_default().advance(len);
                self.offset = Some(offset);
                if is_getack(&command) {
                    self.send_ack().await?;
                }
                SessionEvent::Command {
                    command,
                    offset,
                    arrived_ms,
                }
            }
        }))
    }

    /// Takes more bytes from the spool, sending an ACK whenever one is due while waiting.
    async fn fill(&mut self) -> Result<(), SessionError> {
        let streaming = self.stream.state() == ReplState::Connected;
        let what = if streaming {
            "streaming"
        } else {
            "waiting for the snapshot"
        };
        let spool = self.spool.clone().expect("spooling after the handshake");
        loop {
            tokio::select! {
                next = spool.next_stamped() => {
                    return match next {
                        Ok(received) => {
                            self.arrivals.extend(received.arrivals);
                            // The spool gives up its only handle: mostly not copied.
                            self.stream.feed_bytes(received.bytes);
                            Ok(())
                        }
                        Err(SpoolEnd::Closed) => Err(SessionError::Closed { addr: self.addr.clone(), what }),
                        Err(SpoolEnd::Timeout(waited)) => Err(SessionError::Timeout { addr: self.addr.clone(), what, waited }),
                        Err(SpoolEnd::Io(source)) => Err(self.io_error(source)),
                    };
                }
                _ = self.ack.tick(), if streaming => self.send_ack().await?,
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

fn is_getack(command: &Command) -> bool {
    command.is("replconf")
        && command
            .args()
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"))
}
