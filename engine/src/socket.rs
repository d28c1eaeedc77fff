//! Where every byte the engine exchanges with a node enters and leaves: a TCP connection,
//! wrapped in TLS when the node's endpoint is `rediss://`. [`NodeStream`] is either behind
//! one `AsyncRead`/`AsyncWrite`, so the RESP and replication code never knows which.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
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

/// A socket's receive low-water mark (`SO_RCVLOWAT`): how many bytes must wait before the
/// kernel reports it readable. Raising it while data streams in turns many small wakeups
/// and reads into a few big ones; a read still takes whatever is there.
///
/// A mark goes with the stream (or the read half of it) it was taken from, kept by the same
/// owner and used only with it: it names the socket by its descriptor, without holding it
/// open (a duplicate would double the descriptors a sync keeps).
pub(crate) struct ReadMark {
    fd: std::os::fd::RawFd,
    current: usize,
}

impl ReadMark {
    /// The mark of `stream`'s socket (which starts at 1, the kernel's default).
    pub(crate) fn of(stream: &NodeStream) -> ReadMark {
        use std::os::fd::AsRawFd;
        ReadMark {
            fd: stream.tcp().as_raw_fd(),
            current: 1,
        }
    }

    /// Sets the mark; a failure leaves it as it was (the mark only saves wakeups).
    fn set(&mut self, bytes: usize) {
        let bytes = bytes.clamp(1, MAX_READ_MARK);
        if bytes == self.current {
            return;
        }
        let value = bytes as libc::c_int;
        // SAFETY: the socket is open while its owner uses the mark (see the type), and the
        // pointer is to a c_int of the length given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.current = bytes;
        }
    }

    /// Reads into `buf` once `want` bytes wait in the socket (rounded down to a power of
    /// two, so that a mark falling with the bytes still due changes seldom), or, when they
    /// have not come within `patience`, as soon as any byte does. Returns the bytes read and
    /// whether the wait was met within the patience. Cancel-safe, as `read_buf` is.
    pub(crate) async fn read_buf<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buf: &mut BytesMut,
        want: usize,
        patience: Duration,
    ) -> io::Result<(usize, bool)> {
        if want > 1 {
            self.set(1 << want.ilog2());
            if let Ok(read) = timeout(patience, reader.read_buf(buf)).await {
                return Ok((read?, true));
            }
        }
        self.set(1);
        Ok((reader.read_buf(buf).await?, want <= 1))
    }
}

/// The highest mark set. A mark the receive buffer cannot hold twice over makes Linux grow
/// the buffer and (on older kernels) clamp the TCP window to the mark: 32 KiB stays below
/// that with any default buffer size, so the mark never slows the link.
const MAX_READ_MARK: usize = 32 << 10;

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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Instant;

    use super::*;

    /// A plain stream to a local peer, and the peer's end.
    async fn pair() -> (NodeStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = listener.accept().unwrap();
        (NodeStream::Plain(stream), peer)
    }

    /// Bytes that come in two pieces, 100 ms apart, are read in one go once the mark asks
    /// for all of them: the first piece alone does not wake the reader.
    #[tokio::test]
    async fn a_read_waits_for_the_bytes_the_mark_asks() {
        let (mut stream, mut peer) = pair().await;
        let mut mark = ReadMark::of(&stream);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            peer.write_all(&[1; 10]).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            peer.write_all(&[2; 90]).unwrap();
            peer
        });
        let mut buf = BytesMut::with_capacity(4096);
        let read = mark
            .read_buf(&mut stream, &mut buf, 100, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(read, (100, true), "one read of both pieces");
        drop(writer.join().unwrap());
    }

    /// When the bytes asked for do not come, the read takes what came once its patience
    /// is over, and the mark is back at 1 for the next read.
    #[tokio::test]
    async fn a_read_takes_what_came_after_its_patience() {
        let (mut stream, mut peer) = pair().await;
        let mut mark = ReadMark::of(&stream);
        peer.write_all(&[1; 10]).unwrap();
        let started = Instant::now();
        let mut buf = BytesMut::with_capacity(4096);
        let read = mark
            .read_buf(&mut stream, &mut buf, 1000, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(read, (10, false));
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(mark.current, 1);
        // The peer closing wakes a reader whatever the mark.
        mark.set(1000);
        drop(peer);
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            mark.read_buf(&mut stream, &mut buf, 1000, Duration::from_secs(60)),
        )
        .await
        .expect("the close wakes the reader")
        .unwrap();
        assert_eq!(read.0, 0);
    }
}
