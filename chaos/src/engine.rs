//! The engine under test: `ferry sync` as a child process (so SIGKILL is real), watched
//! through its `/status` JSON.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::ChaosError;

/// What `/status` said about the shards.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Phase per shard: `connecting`, `transfer`, `streaming`, `done`, `failed`.
    pub phases: Vec<String>,
    pub caught_up: bool,
    pub full_resyncs: u64,
    pub resumes: u64,
    pub lag_ms: u64,
}

impl Status {
    pub fn any(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }

    pub fn all(&self, phase: &str) -> bool {
        !self.phases.is_empty() && self.phases.iter().all(|p| p == phase)
    }
}

/// One `ferry sync` process.
pub struct Engine {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Engine {
    /// Starts `ferry sync --source S --target T --metrics-addr ... ARGS`, its stderr in `log`.
    pub fn start(
        ferry: &Path,
        source: &str,
        target: &str,
        args: &[String],
        log: &Path,
    ) -> Result<Self, ChaosError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| ChaosError::Engine(format!("finding a free port: {e}")))?
            .port();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| ChaosError::Engine(format!("{}: {e}", log.display())))?;
        let child = Command::new(ferry)
            .args(["sync", "--source", source, "--target", target])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "ferry_engine=info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| ChaosError::Engine(format!("starting {}: {e}", ferry.display())))?;
        Ok(Engine {
            child,
            port,
            log: log.to_path_buf(),
        })
    }

    /// The exit code once it has exited.
    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines the engine logged.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `/status`, or `None` while it does not answer.
    pub fn status(&self) -> Option<Status> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let body = text.split("\r\n\r\n").nth(1)?;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        let shards = json["shards"].as_array()?;
        let sum = |field: &str| shards.iter().filter_map(|s| s[field].as_u64()).sum();
        Some(Status {
            phases: shards
                .iter()
                .filter_map(|s| s["phase"].as_str().map(str::to_string))
                .collect(),
            caught_up: json["caught_up"].as_bool().unwrap_or(false),
            full_resyncs: sum("full_resyncs"),
            resumes: sum("resumes"),
            lag_ms: shards
                .iter()
                .filter_map(|s| s["lag_ms"].as_u64())
                .max()
                .unwrap_or(0),
        })
    }

    /// Waits until `done` holds for the status; an error when the engine exits or `limit`
    /// passes. `watch` sees every status read.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut watch: impl FnMut(&Status),
        mut done: impl FnMut(&Status) -> bool,
    ) -> Result<Status, ChaosError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.exited() {
                return Err(ChaosError::Engine(format!(
                    "ferry sync exited with {code} while waiting for {what}:\n{}",
                    self.tail(5)
                )));
            }
            if let Some(status) = self.status() {
                watch(&status);
                if done(&status) {
                    return Ok(status);
                }
            }
            if Instant::now() >= deadline {
                return Err(ChaosError::Engine(format!(
                    "not {what} after {limit:?}:\n{}",
                    self.tail(5)
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}
