//! What a running sync exposes over HTTP: Prometheus metrics on `/metrics` and a JSON status
//! on `/status`, served by a minimal HTTP/1.1 responder (one request per connection).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::sync::{Phase, ShardProgress};

/// A per-shard counter: name, type, help text and how to read it.
type Counter = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardProgress) -> u64,
);

/// The shards a metrics server reports on.
#[derive(Clone)]
pub struct Exporter {
    shards: Arc<Vec<Arc<ShardProgress>>>,
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Connecting => "connecting",
        Phase::Transfer => "transfer",
        Phase::Done => "done",
        Phase::Streaming => "streaming",
        Phase::Failed => "failed",
    }
}

impl Exporter {
    pub fn new(shards: Vec<Arc<ShardProgress>>) -> Self {
        Exporter {
            shards: Arc::new(shards),
        }
    }

    /// The Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let metrics: [Counter; 14] = [
            (
                "ferry_buffered_memory_bytes",
                "gauge",
                "Bytes received from the source shard and waiting in memory.",
                |s| s.buffered().0,
            ),
            (
                "ferry_buffered_disk_bytes",
                "gauge",
                "Bytes received from the source shard and spilled to disk.",
                |s| s.buffered().1,
            ),
            (
                "ferry_snapshot_received_bytes_total",
                "counter",
                "Snapshot bytes received from the source shard.",
                ShardProgress::received,
            ),
            (
                "ferry_applied_keys_total",
                "counter",
                "Keys acknowledged by the target.",
                ShardProgress::applied_keys,
            ),
            (
                "ferry_applied_bytes_total",
                "counter",
                "Command bytes acknowledged by the target.",
                ShardProgress::applied_bytes,
            ),
            (
                "ferry_stream_commands_total",
                "counter",
                "Replication-stream writes applied to the target.",
                ShardProgress::stream_commands,
            ),
            (
                "ferry_applied_offset",
                "gauge",
                "Replication offset every target master has applied.",
                ShardProgress::applied_offset,
            ),
            (
                "ferry_source_offset",
                "gauge",
                "The source master's replication offset, polled every second.",
                ShardProgress::source_offset,
            ),
            (
                "ferry_lag_bytes",
                "gauge",
                "Replication bytes the target is behind the source.",
                ShardProgress::lag_bytes,
            ),
            (
                "ferry_lag_milliseconds",
                "gauge",
                "Age of the last heartbeat that reached the target.",
                ShardProgress::lag_ms,
            ),
            (
                "ferry_caught_up",
                "gauge",
                "1 when the shard streams and the target has applied all the source had.",
                |s| u64::from(s.caught_up()),
            ),
            (
                "ferry_snapshot_keys_read",
                "gauge",
                "Keys of the snapshot being loaded read so far.",
                |s| s.snapshot_keys().0,
            ),
            (
                "ferry_snapshot_keys_expected",
                "gauge",
                "Keys the snapshot being loaded announced (0: it did not say).",
                |s| s.snapshot_keys().1,
            ),
            (
                "ferry_full_resyncs_total",
                "counter",
                "Full resynchronizations (snapshots) of the shard.",
                ShardProgress::full_resyncs,
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for shard in self.shards.iter() {
                let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", shard.source, value(shard));
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferry_shard_phase 1 for the phase each source shard is in.\n# TYPE ferry_shard_phase gauge"
        );
        for shard in self.shards.iter() {
            for phase in [
                Phase::Connecting,
                Phase::Transfer,
                Phase::Streaming,
                Phase::Done,
                Phase::Failed,
            ] {
                let _ = writeln!(
                    out,
                    "ferry_shard_phase{{shard=\"{}\",phase=\"{}\"}} {}",
                    shard.source,
                    phase_name(phase),
                    u8::from(shard.phase() == phase)
                );
            }
        }
        out
    }

    /// `{"shards": [{"shard", "phase", "received_bytes", "applied_keys", "applied_bytes",
    /// "stream_commands", "applied_offset", "source_offset", "lag_bytes", "lag_ms",
    /// "caught_up", "full_resyncs", "resumes", "buffered_memory_bytes", "buffered_disk_bytes",
    /// "snapshot_keys_read", "snapshot_keys_expected"}],
    /// "caught_up"}`.
    pub fn status(&self) -> String {
        let shards: Vec<String> = self
            .shards
            .iter()
            .map(|s| {
                format!(
                    "{{\"shard\":\"{}\",\"phase\":\"{}\",\"received_bytes\":{},\"applied_keys\":{},\"applied_bytes\":{},\"stream_commands\":{},\"applied_offset\":{},\"source_offset\":{},\"lag_bytes\":{},\"lag_ms\":{},\"caught_up\":{},\"full_resyncs\":{},\"resumes\":{},\"buffered_memory_bytes\":{},\"buffered_disk_bytes\":{},\"snapshot_keys_read\":{},\"snapshot_keys_expected\":{}}}",
                    s.source,
                    phase_name(s.phase()),
                    s.received(),
                    s.applied_keys(),
                    s.applied_bytes(),
                    s.stream_commands(),
                    s.applied_offset(),
                    s.source_offset(),
                    s.lag_bytes(),
                    s.lag_ms(),
                    s.caught_up(),
                    s.full_resyncs(),
                    s.resumes(),
                    s.buffered().0,
                    s.buffered().1,
                    s.snapshot_keys().0,
                    s.snapshot_keys().1
                )
            })
            .collect();
        let caught_up = !self.shards.is_empty() && self.shards.iter().all(|s| s.caught_up());
        format!(
            "{{\"shards\":[{}],\"caught_up\":{caught_up}}}\n",
            shards.join(",")
        )
    }

    /// Binds `addr` and returns the bound address and the server loop to spawn.
    pub async fn bind(
        self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let serve = async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let exporter = self.clone();
                tokio::spawn(async move {
                    let _ = exporter.respond(stream).await;
                });
            }
        };
        Ok((local, serve))
    }

    async fn respond(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&request);
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let (status, kind, body) = match path {
            "/metrics" => ("200 OK", "text/plain; version=0.0.4", self.prometheus()),
            "/status" => ("200 OK", "application/json", self.status()),
            _ => (
                "404 Not Found",
                "text/plain",
                "try /metrics or /status\n".to_string(),
            ),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::NodeAddr;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn metrics_and_status_are_served() {
        let shard = Arc::new(ShardProgress::new(NodeAddr::new("10.1.2.3", 7000)));
        shard.record_received(1234);
        let exporter = Exporter::new(vec![shard]);
        let (addr, serve) = exporter.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let server = tokio::spawn(serve);
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
        assert!(
            metrics.contains("ferry_snapshot_received_bytes_total{shard=\"10.1.2.3:7000\"} 1234")
        );
        assert!(
            metrics.contains("ferry_shard_phase{shard=\"10.1.2.3:7000\",phase=\"connecting\"} 1")
        );
        let status = get(addr, "/status").await;
        let body = status.split("\r\n\r\n").nth(1).unwrap();
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(status["shards"][0]["shard"], "10.1.2.3:7000");
        assert_eq!(status["shards"][0]["phase"], "connecting");
        assert_eq!(status["shards"][0]["received_bytes"], 1234);
        assert_eq!(status["shards"][0]["lag_bytes"], 0);
        assert_eq!(status["shards"][0]["caught_up"], false);
        assert_eq!(status["caught_up"], false);
        assert!(metrics.contains("ferry_caught_up{shard=\"10.1.2.3:7000\"} 0"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
