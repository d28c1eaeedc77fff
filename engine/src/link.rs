//! A RESP connection to one node: connect, `AUTH`, then pipelined commands and their replies.
//! The bytes are encoded and decoded by [`crate::resp`]; this is only the socket around it.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::endpoint::Endpoint;
use crate::resp::{encode_command, Command, DecodeError, Frame, FrameDecoder, Limits};
use crate::socket::{ConnectError, NodeStream};

/// Room made in the receive buffer before each read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Why talking to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
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
    /// TLS failed after the handshake: with TLS 1.3 a server that refuses the client's
    /// certificate says so on the first read.
    #[error("tls with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
}

impl LinkError {
    /// An I/O error on an open link, told apart when it is a TLS failure.
    fn io(addr: &str, source: io::Error) -> Self {
        match crate::tls::describe(&source) {
            Some(reason) => LinkError::Tls {
                addr: addr.to_string(),
                reason,
            },
            None => LinkError::Io {
                addr: addr.to_string(),
                source,
            },
        }
    }

    /// Whether the failure is about TLS (a handshake, a certificate).
    pub fn is_tls(&self) -> bool {
        matches!(
            self,
            LinkError::Tls { .. } | LinkError::Connect(ConnectError::Tls { .. })
        )
    }
}

/// One connection to one node.
pub struct Link {
    addr: String,
    socket: NodeStream,
    out: BytesMut,
    replies: FrameDecoder,
    queued: usize,
}

impl Link {
    /// Connects to `host:port`, a node of `endpoint`'s deployment: with its TLS settings, and
    /// authenticated with its credentials when it has some.
    pub async fn connect(
        host: &str,
        port: u16,
        endpoint: &Endpoint,
        connect_timeout: Duration,
    ) -> Result<Self, LinkError> {
        let addr = format!("{host}:{port}");
        let socket =
            crate::socket::connect(host, port, endpoint.tls.as_ref(), connect_timeout).await?;
        let credentials = endpoint.credentials.as_ref();
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

    /// Queues `count` commands already encoded as RESP.
    pub fn queue_encoded(&mut self, encoded: BytesMut, count: usize) {
        if self.out.is_empty() {
            self.out = encoded;
        } else {
            self.out.extend_from_slice(&encoded);
        }
        self.queued += count;
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
            .map_err(|e| LinkError::io(&self.addr, e))?;
        // TLS may hold the last record back until flushed.
        self.socket
            .flush()
            .await
            .map_err(|e| LinkError::io(&self.addr, e))
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
                .map_err(|e| LinkError::io(&self.addr, e))?;
            if read == 0 {
                return Err(LinkError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }
}
