//! A fault-injecting TCP proxy for the links between the engine and a node: latency,
//! bandwidth caps, partitions (bytes stop flowing, connections stay open) and resets, per
//! direction where it matters. It runs on its own small tokio runtime, so the blocking chaos
//! runner can drive it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error::ChaosError;

/// What the proxy does to the bytes passing through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Conditions {
    /// Added before each chunk is forwarded, both directions.
    #[serde(default)]
    pub latency_ms: u64,
    /// Bytes per second per direction and connection (0: unlimited).
    #[serde(default)]
    pub bytes_per_sec: u64,
    /// Nothing flows (a partition); connections stay open, bytes wait.
    #[serde(default)]
    pub blackhole: bool,
}

/// One change to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "proxy", rename_all = "snake_case")]
pub enum ProxyFault {
    /// Replace the conditions.
    Set { conditions: Conditions },
    /// Back to a clean link.
    Heal,
    /// Close every connection now (the peers see a reset or EOF).
    Reset,
}

struct Shared {
    conditions: Mutex<Conditions>,
}

/// A proxy listening on 127.0.0.1, forwarding to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Bumped to close every open connection.
    resets: watch::Sender<u64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Result<Self, ChaosError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| ChaosError::Engine(format!("proxy runtime: {e}")))?;
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| ChaosError::Engine(format!("proxy bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ChaosError::Engine(format!("proxy address: {e}")))?;
        let shared = Arc::new(Shared {
            conditions: Mutex::new(Conditions::default()),
        });
        let (resets, reset_rx) = watch::channel(0u64);
        let accept_shared = shared.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                let mut reset = reset_rx.clone();
                // Only resets after this connection was accepted close it.
                reset.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, shared.clone()) => {}
                        _ = pump(sr, cw, shared) => {}
                        _ = reset.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            shared,
            resets,
            runtime: Some(runtime),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn apply(&self, fault: ProxyFault) {
        match fault {
            ProxyFault::Set { conditions } => {
                *self.shared.conditions.lock().expect("proxy lock") = conditions
            }
            ProxyFault::Heal => {
                *self.shared.conditions.lock().expect("proxy lock") = Conditions::default()
            }
            ProxyFault::Reset => {
                self.resets.send_modify(|n| *n += 1);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Copies one direction, holding each chunk as the conditions say.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let now = *shared.conditions.lock().expect("proxy lock");
            if !now.blackhole {
                if now.latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(now.latency_ms)).await;
                }
                if now.bytes_per_sec > 0 {
                    let secs = n as f64 / now.bytes_per_sec as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    #[test]
    fn bytes_pass_slow_down_stop_and_reset() {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in echo.incoming() {
                let mut conn = conn.unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).unwrap();
        let mut client = std::net::TcpStream::connect(proxy.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let round_trip = |client: &mut std::net::TcpStream| {
            let started = Instant::now();
            client.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            client.read_exact(&mut got).map(|_| started.elapsed())
        };
        assert!(round_trip(&mut client).unwrap() < Duration::from_millis(200));
        proxy.apply(ProxyFault::Set {
            conditions: Conditions {
                latency_ms: 100,
                ..Conditions::default()
            },
        });
        assert!(round_trip(&mut client).unwrap() >= Duration::from_millis(200));
        proxy.apply(ProxyFault::Set {
            conditions: Conditions {
                blackhole: true,
                ..Conditions::default()
            },
        });
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            round_trip(&mut client).is_err(),
            "a partition lets nothing through"
        );
        proxy.apply(ProxyFault::Heal);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut late = [0u8; 4];
        client.read_exact(&mut late).unwrap();
        assert_eq!(&late, b"ping", "held bytes arrive once healed");
        proxy.apply(ProxyFault::Reset);
        let mut buf = [0u8; 4];
        let closed = matches!(client.read(&mut buf), Ok(0) | Err(_));
        assert!(closed, "a reset closes the connection");
        let mut again = std::net::TcpStream::connect(proxy.addr()).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            round_trip(&mut again).is_ok(),
            "new connections work after a reset"
        );
    }
}
