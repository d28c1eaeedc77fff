//! Where every byte the engine exchanges with a node enters and leaves: a TCP connection,
//! wrapped in TLS when the node's endpoint is `rediss://`. [`NodeStream`] is either behind
//! one `AsyncRead`/`AsyncWrite`, so the RESP and replication code never knows which.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::tls::{self, TlsConfig};

/// A connection to a node, plain or TLS.
pub enum NodeStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("timed out after {waited:?} connecting to {addr}")]
    Timeout { addr: String, waited: Duration },
    #[error("tls handshake with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
}

/// Connects to `host:port` (TCP, no delay), then does the TLS handshake when `tls` is given;
/// `limit` covers both.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&TlsConfig>,
    limit: Duration,
) -> Result<NodeStream, ConnectError> {
    let addr = format!("{host}:{port}");
    let deadline = tokio::time::Instant::now() + limit;
    let socket = timeout(limit, TcpStream::connect((host, port)))
        .await
        .map_err(|_| ConnectError::Timeout {
            addr: addr.clone(),
            waited: limit,
        })?
        .map_err(|source| ConnectError::Io {
            addr: addr.clone(),
            source,
        })?;
    let _ = socket.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(NodeStream::Plain(socket));
    };
    // A plain port takes the ClientHello for an unfinished command and waits for more.
    let stream = tokio::time::timeout_at(deadline, tls.handshake(host, socket))
        .await
        .map_err(|_| ConnectError::Tls {
            addr: addr.clone(),
            reason: format!("no handshake reply within {limit:?}; does this port serve tls?"),
        })?
        .map_err(|source| match tls::describe(&source) {
            Some(reason) => ConnectError::Tls {
                addr: addr.clone(),
                reason,
            },
            None => ConnectError::Tls {
                addr: addr.clone(),
                reason: source.to_string(),
            },
        })?;
    Ok(NodeStream::Tls(Box::new(stream)))
}

impl NodeStream {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            NodeStream::Plain(socket) => socket,
            NodeStream::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(socket) => Pin::new(socket).poll_read(cx, buf),
            NodeStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(socket) => Pin::new(socket).poll_write(cx, buf),
            NodeStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(socket) => Pin::new(socket).poll_write_vectored(cx, bufs),
            NodeStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NodeStream::Plain(socket) => socket.is_write_vectored(),
            NodeStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(socket) => Pin::new(socket).poll_flush(cx),
            NodeStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(socket) => Pin::new(socket).poll_shutdown(cx),
            NodeStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
