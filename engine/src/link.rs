//! A RESP connection to one node: connect, `AUTH`, then pipelined commands and their replies.
//! The bytes are encoded and decoded by [`crate::resp`]; this is only the socket around it.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::replica::Credentials;
use crate::resp::{encode_command, Command, DecodeError, Frame, FrameDecoder, Limits};

/// Room made in the receive buffer before each read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Why talking to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("timed out after {waited:?} connecting to {addr}")]
    ConnectTimeout { addr: String, waited: Duration },
    #[error("link to {addr} failed: {source}")]
    Io { addr: String, source: io::Error },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("{addr} sent an invalid reply: {source}")]
    Reply { addr: String, source: DecodeError },
    #[error("{addr} refused AUTH: {reply}")]
    Auth { addr: String, reply: String },
    #[error("{addr} refused SELECT {db}: {reply}")]
    Select {
        addr: String,
        db: u32,
        reply: String,
    },
    #[error("tls to {addr} is not supported yet; use redis:// or a TLS-terminating proxy")]
    Tls { addr: String },
}

/// One connection to one node.
pub struct Link {
    addr: String,
    socket: TcpStream,
    out: BytesMut,
    replies: FrameDecoder,
    queued: usize,
}

impl Link {
    /// Connects to `host:port` and authenticates when credentials are given.
    pub async fn connect(
        host: &str,
        port: u16,
        credentials: Option<&Credentials>,
        connect_timeout: Duration,
    ) -> Result<Self, LinkError> {
        let addr = format!("{host}:{port}");
        let socket = timeout(connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| LinkError::ConnectTimeout {
                addr: addr.clone(),
                waited: connect_timeout,
            })?
            .map_err(|source| LinkError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = socket.set_nodelay(true);
        let mut link = Link {
            addr,
            socket,
            out: BytesMut::with_capacity(64 << 10),
            replies: FrameDecoder::new(Limits::default()),
            queued: 0,
        };
        if let Some(credentials) = credentials {
            let mut argv: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &credentials.user {
                argv.push(user.as_bytes());
            }
            argv.push(credentials.password.as_bytes());
            if let Frame::Error(reply) = link.call(&argv).await? {
                return Err(LinkError::Auth {
                    addr: link.addr,
                    reply: String::from_utf8_lossy(&reply).into_owned(),
                });
            }
        }
        Ok(link)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues a command; nothing is sent before [`Link::flush`].
    pub fn queue<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        encode_command(argv, &mut self.out);
        self.queued += 1;
    }

    /// Queues a [`Command`].
    pub fn queue_command(&mut self, command: &Command) {
        command.encode(&mut self.out);
        self.queued += 1;
    }

    /// Bytes queued and not yet flushed.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        let out = self.out.split();
        self.socket
            .write_all(&out)
            .await
            .map_err(|source| LinkError::Io {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Sends what is queued and reads one reply per queued command, in order.
    pub async fn exchange(&mut self) -> Result<Vec<Frame>, LinkError> {
        let expected = std::mem::take(&mut self.queued);
        self.flush().await?;
        let mut replies = Vec::with_capacity(expected);
        while replies.len() < expected {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    /// One command, one reply.
    pub async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, LinkError> {
        self.queue(argv);
        let mut replies = self.exchange().await?;
        Ok(replies.pop().expect("one reply per command"))
    }

    async fn read_reply(&mut self) -> Result<Frame, LinkError> {
        loop {
            let next = self
                .replies
                .next_frame()
                .map_err(|source| LinkError::Reply {
                    addr: self.addr.clone(),
                    source,
                })?;
            if let Some((frame, _)) = next {
                return Ok(frame);
            }
            // read_buf reads into spare capacity only: make room for a good read.
            self.replies.buffer_mut().reserve(READ_CHUNK);
            let read = self
                .socket
                .read_buf(self.replies.buffer_mut())
                .await
                .map_err(|source| LinkError::Io {
                    addr: self.addr.clone(),
                    source,
                })?;
            if read == 0 {
                return Err(LinkError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }
}
