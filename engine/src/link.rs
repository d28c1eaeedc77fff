//! A RESP connection to one node: connect, `AUTH`, then pipelined commands and their replies.
//! The bytes are encoded and decoded by [`crate::resp`]; this is only the socket around it.

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::endpoint::Endpoint;
use crate::resp::{encode_command, Command, DecodeError, Frame, FrameDecoder, Limits};
use crate::socket::{ConnectError, NodeStream, ReadMark};

/// Room made in the receive buffer before each read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// The fewest bytes a reply takes (`:0\r\n`; RESP2 has no shorter reply to a command).
const MIN_REPLY_BYTES: usize = 4;

/// How long a read waits for the replies due to reach the socket's mark before it takes
/// what has come: a safety net, since the replies due never take fewer bytes than the mark.
const REPLY_PATIENCE: Duration = Duration::from_millis(100);

/// Buffers written by one `writev` at most (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

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
    /// The socket's read mark, raised to the bytes of the replies due so that they are read
    /// in one wakeup rather than in the pieces the node writes. Plain TCP only: TLS may hold
    /// part of them, so its socket may never see that many bytes.
    mark: Option<ReadMark>,
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
        let mark = match &socket {
            NodeStream::Plain(_) => Some(ReadMark::of(&socket)),
            NodeStream::Tls(_) => None,
        };
        let mut link = Link {
            addr,
            mark,
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
            replies.push(self.read_reply(expected - replies.len()).await?);
        }
        Ok(replies)
    }

    /// Sends what is queued, then `parts` (`count` commands encoded one after the other,
    /// written as they are, without copying them into one buffer), and reads one reply per
    /// command. Returns only the replies that are not `+OK`, each with its place among all
    /// the commands sent.
    pub async fn exchange_parts(
        &mut self,
        parts: &[&[u8]],
        count: usize,
    ) -> Result<Vec<(usize, Frame)>, LinkError> {
        let expected = std::mem::take(&mut self.queued) + count;
        let queued = self.out.split().freeze();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len().min(MAX_SLICES));
        let mut next = 0;
        let mut first = true;
        loop {
            slices.clear();
            if std::mem::take(&mut first) && !queued.is_empty() {
                slices.push(IoSlice::new(&queued));
            }
            while slices.len() < MAX_SLICES && next < parts.len() {
                if !parts[next].is_empty() {
                    slices.push(IoSlice::new(parts[next]));
                }
                next += 1;
            }
            if slices.is_empty() {
                break;
            }
            let mut window = &mut slices[..];
            while !window.is_empty() {
                let written = self
                    .socket
                    .write_vectored(window)
                    .await
                    .map_err(|e| LinkError::io(&self.addr, e))?;
                if written == 0 {
                    return Err(LinkError::io(&self.addr, io::ErrorKind::WriteZero.into()));
                }
                IoSlice::advance_slices(&mut window, written);
            }
        }
        self.socket
            .flush()
            .await
            .map_err(|e| LinkError::io(&self.addr, e))?;
        let mut unusual = Vec::new();
        for index in 0..expected {
            if self.replies.skip_ok() {
                continue;
            }
            let reply = self.read_reply(expected - index).await?;
            if !matches!(&reply, Frame::SimpleString(s) if s.as_ref() == b"OK") {
                unusual.push((index, reply));
            }
        }
        Ok(unusual)
    }

    /// One command, one reply.
    pub async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, LinkError> {
        self.queue(argv);
        let mut replies = self.exchange().await?;
        Ok(replies.pop().expect("one reply per command"))
    }

    /// Reads the next reply; `due` replies (this one included) are still to come.
    async fn read_reply(&mut self, due: usize) -> Result<Frame, LinkError> {
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
            // What the decoder holds belongs to the replies due.
            let want = (due * MIN_REPLY_BYTES).saturating_sub(self.replies.buffered());
            let buffer = self.replies.buffer_mut();
            buffer.reserve(READ_CHUNK);
            let read = match &mut self.mark {
                Some(mark) => mark
                    .read_buf(&mut self.socket, buffer, want, REPLY_PATIENCE)
                    .await
                    .map(|(read, _)| read),
                None => self.socket.read_buf(buffer).await,
            }
            .map_err(|e| LinkError::io(&self.addr, e))?;
            if read == 0 {
                return Err(LinkError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use bytes::Bytes;

    use super::*;
    use crate::resp::{CommandDecoder, Limits};

    /// Thousands of parts, some empty and some big, after a queued command: every command
    /// arrives whole and in order although the peer reads slowly (so writes are partial), and
    /// only the replies that are not +OK come back, at their places.
    #[tokio::test]
    async fn parts_are_written_in_order_and_unusual_replies_are_placed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut parts = Vec::new();
        let mut sent = Vec::new();
        for i in 0..3000usize {
            // 16 MB in all: more than the socket buffers hold, so writes come back partial.
            let value = if i % 750 == 7 {
                vec![b'v'; 4 << 20]
            } else {
                i.to_string().into_bytes()
            };
            let mut encoded = BytesMut::new();
            encode_command(
                &[&b"SET"[..], format!("k{i}").as_bytes(), &value],
                &mut encoded,
            );
            sent.push(encoded.clone().freeze());
            parts.push(encoded.freeze());
            if i % 500 == 0 {
                parts.push(Bytes::new());
            }
        }
        let expected = sent.clone();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut decoder = CommandDecoder::new(Limits::default());
            let mut received = Vec::new();
            let mut buf = [0u8; 1000];
            while received.len() < 1 + expected.len() {
                let n = socket.read(&mut buf).unwrap();
                assert!(n > 0, "closed early");
                decoder.feed(&buf[..n]);
                while let Some((command, _)) = decoder.next_command().unwrap() {
                    received.push(command);
                }
            }
            assert!(received[0].is("PING"));
            let mut replies = Vec::new();
            for (i, (command, wire)) in received[1..].iter().zip(&expected).enumerate() {
                let mut encoded = BytesMut::new();
                command.encode(&mut encoded);
                assert_eq!(encoded, wire, "command {i}");
                replies.extend_from_slice(match i {
                    5 => b"-ERR five\r\n".as_slice(),
                    2999 => b":1\r\n",
                    _ => b"+OK\r\n",
                });
            }
            socket.write_all(b"+PONG\r\n").unwrap();
            socket.write_all(&replies).unwrap();
        });
        let endpoint = Endpoint::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let mut link = Link::connect("127.0.0.1", port, &endpoint, Duration::from_secs(5))
            .await
            .unwrap();
        link.queue(&["PING"]);
        let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        let unusual = link.exchange_parts(&parts, sent.len()).await.unwrap();
        server.join().unwrap();
        assert_eq!(
            unusual,
            [
                (0, Frame::SimpleString(Bytes::from_static(b"PONG"))),
                (6, Frame::Error(Bytes::from_static(b"ERR five"))),
                (3000, Frame::Integer(1)),
            ]
        );
    }
}
