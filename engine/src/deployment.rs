//! Finding out what is behind an endpoint: a cluster or a standalone server, its masters and
//! slots, and which server build it runs.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::link::{Link, LinkError};
use crate::resp::Frame;
use crate::route::{NodeAddr, SlotsReplyError, Topology};

/// Which fork of the server a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Redis,
    Valkey,
}

/// A node's `INFO server` facts that decide how ferry talks to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub family: Family,
    /// `major.minor.patch`.
    pub version: (u32, u32, u32),
}

impl ServerInfo {
    /// Parses `INFO` text: `valkey_version` or `redis_version`, and `server_name`.
    pub fn from_info(info: &HashMap<String, String>) -> Option<Self> {
        let valkey = info.get("server_name").is_some_and(|n| n == "valkey")
            || info.contains_key("valkey_version");
        let version = info
            .get("valkey_version")
            .or_else(|| info.get("redis_version"))?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
        let version = (
            parts.next()??,
            parts.next().flatten().unwrap_or(0),
            parts.next().flatten().unwrap_or(0),
        );
        Some(ServerInfo {
            family: if valkey {
                Family::Valkey
            } else {
                Family::Redis
            },
            version,
        })
    }

    /// The newest RDB format version this server reads (and so the newest `RESTORE`
    /// payload it accepts), as each release's `RDB_VERSION` says. Valkey 9 also reads its own
    /// `VALKEY080` format, which is not comparable with these numbers.
    pub fn rdb_version(&self) -> u16 {
        match (self.family, self.version) {
            (Family::Redis, (0..=4, _, _)) => 8,
            (Family::Redis, (5 | 6, _, _)) => 9,
            (Family::Redis, (7, 0 | 1, _)) => 10,
            (Family::Redis, (7, 2..=3, _)) => 11,
            (Family::Redis, _) => 12,
            (Family::Valkey, _) => 11,
        }
    }
}

impl ServerInfo {
    /// Whether this server reads Valkey's own RDB format (`VALKEY080`, Valkey 9 and later).
    pub fn reads_valkey_format(&self) -> bool {
        self.family == Family::Valkey && self.version.0 >= 9
    }

    /// Whether this server holds function libraries (`FUNCTION LOAD`): Redis 7.0 and later,
    /// every Valkey (its first release is 7.2).
    pub fn holds_functions(&self) -> bool {
        self.family == Family::Valkey || self.version.0 >= 7
    }
}

impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.family {
            Family::Redis => "redis",
            Family::Valkey => "valkey",
        };
        let (major, minor, patch) = self.version;
        write!(f, "{name} {major}.{minor}.{patch}")
    }
}

/// Why a deployment could not be discovered.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{addr} answered {command} with an error: {reply}")]
    Command {
        addr: String,
        command: &'static str,
        reply: String,
    },
    #[error("{addr}: {source}")]
    Slots {
        addr: String,
        source: SlotsReplyError,
    },
    #[error("{addr} did not say which server it is (INFO server)")]
    UnknownServer { addr: String },
}

/// What is behind an endpoint.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub endpoint: Endpoint,
    pub topology: Topology,
    pub server: ServerInfo,
}

impl Deployment {
    /// Asks the seed node: `INFO` (server and cluster sections), then `CLUSTER SLOTS` when
    /// cluster mode is enabled.
    pub async fn discover(endpoint: &Endpoint, timeout: Duration) -> Result<Self, DiscoverError> {
        let mut link = Link::connect(&endpoint.host, endpoint.port, endpoint, timeout).await?;
        let addr = link.addr().to_string();
        let info = text_reply(&mut link, &["INFO", "server"], "INFO server").await?;
        let mut fields = parse_info(&info);
        let cluster = text_reply(&mut link, &["INFO", "cluster"], "INFO cluster").await?;
        fields.extend(parse_info(&cluster));
        let server = ServerInfo::from_info(&fields)
            .ok_or_else(|| DiscoverError::UnknownServer { addr: addr.clone() })?;
        let topology = if fields.get("cluster_enabled").map(String::as_str) == Some("1") {
            let reply = link.call(&["CLUSTER", "SLOTS"]).await?;
            if let Frame::Error(e) = &reply {
                return Err(DiscoverError::Command {
                    addr,
                    command: "CLUSTER SLOTS",
                    reply: String::from_utf8_lossy(e).into_owned(),
                });
            }
            Topology::from_cluster_slots(&reply, &endpoint.host)
                .map_err(|source| DiscoverError::Slots { addr, source })?
        } else {
            Topology::standalone(NodeAddr::new(endpoint.host.clone(), endpoint.port))
        };
        Ok(Deployment {
            endpoint: endpoint.clone(),
            topology,
            server,
        })
    }
}

impl Deployment {
    /// Discovers the deployment again, from its seed or, when the seed does not answer (it may
    /// be the master that just died), from any node it had.
    pub async fn rediscover(&self, timeout: Duration) -> Result<Self, DiscoverError> {
        let mut last = match Deployment::discover(&self.endpoint, timeout).await {
            Ok(fresh) => return Ok(fresh),
            Err(e) => e,
        };
        let mut nodes: Vec<NodeAddr> = Vec::new();
        for shard in &self.topology.shards {
            nodes.push(shard.master.clone());
            nodes.extend(shard.replicas.iter().cloned());
        }
        for node in nodes {
            let mut seed = self.endpoint.clone();
            seed.host = node.host.clone();
            seed.port = node.port;
            match Deployment::discover(&seed, timeout).await {
                Ok(mut fresh) => {
                    fresh.endpoint = self.endpoint.clone();
                    return Ok(fresh);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

async fn text_reply(
    link: &mut Link,
    argv: &[&str],
    command: &'static str,
) -> Result<String, DiscoverError> {
    match link.call(argv).await? {
        Frame::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
        Frame::Error(e) => Err(DiscoverError::Command {
            addr: link.addr().to_string(),
            command,
            reply: String::from_utf8_lossy(&e).into_owned(),
        }),
        other => Err(DiscoverError::Command {
            addr: link.addr().to_string(),
            command,
            reply: format!("{other:?}"),
        }),
    }
}

/// `field:value` lines of `INFO` text.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn server_builds_and_their_rdb_versions() {
        let cases = [
            (info(&[("redis_version", "5.0.10")]), Family::Redis, 9),
            (info(&[("redis_version", "7.0.15")]), Family::Redis, 10),
            (info(&[("redis_version", "7.2.4")]), Family::Redis, 11),
            (info(&[("redis_version", "7.4.1")]), Family::Redis, 12),
            (
                info(&[
                    ("redis_version", "7.2.4"),
                    ("server_name", "valkey"),
                    ("valkey_version", "9.1.2"),
                ]),
                Family::Valkey,
                11,
            ),
        ];
        for (fields, family, rdb) in cases {
            let server = ServerInfo::from_info(&fields).unwrap();
            assert_eq!(
                (server.family, server.rdb_version()),
                (family, rdb),
                "{server}"
            );
        }
        let valkey = ServerInfo::from_info(&cases_valkey()).unwrap();
        assert_eq!(valkey.version, (9, 1, 2));
        assert_eq!(ServerInfo::from_info(&info(&[])), None);
    }

    fn cases_valkey() -> HashMap<String, String> {
        info(&[("redis_version", "7.2.4"), ("valkey_version", "9.1.2")])
    }
}
