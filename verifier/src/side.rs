//! One side of the comparison (the source or the target): where its nodes are, which slots
//! each shard owns, what its servers can do, and connections to them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_engine::deployment::parse_info;
use ferry_engine::route::{Slot, SlotRange, SLOT_COUNT};
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use serde::{Serialize, Serializer};

use crate::config::ReadFrom;
use crate::error::{Result, VerifyError};
use crate::pipe::Pipeline;
use crate::throttle::Throttle;

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one reply may take (a window of a big value on a busy server).
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A node's address as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    /// Parses `host:port` as `CLUSTER NODES` prints it (any `@bus` or `,hostname` suffix is
    /// dropped); an empty host becomes `default_host`.
    fn parse(text: &str, default_host: &str) -> Option<Self> {
        let text = text.split(['@', ',']).next()?;
        let (host, port) = text.rsplit_once(':')?;
        let host = if host.is_empty() { default_host } else { host };
        Some(NodeAddr {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Serialize for NodeAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A parsed `redis://[user:pass@]host:port` or `rediss://` URL. Neither `Display` nor
/// `Debug` shows the password.
#[derive(Clone)]
pub struct Endpoint {
    info: redis::ConnectionInfo,
    addr: NodeAddr,
    /// `rediss://`: every node of the side is reached over TLS with these settings.
    tls: Option<Tls>,
}

/// TLS as the `redis` crate takes it: the CA and client certificate as PEM bytes (`None`:
/// the platform's roots, no client certificate), and whether verification is skipped.
#[derive(Clone)]
struct Tls {
    insecure: bool,
    certificates: Option<redis::TlsCertificates>,
}

impl Endpoint {
    /// Parses the URL of the `side` ("source" or "target").
    pub fn parse(side: &'static str, url: &str) -> Result<Self> {
        let bad = |reason: &str| VerifyError::Url {
            side,
            url: redact(url),
            reason: reason.to_string(),
        };
        if !url.starts_with("redis://") && !url.starts_with("rediss://") {
            return Err(bad(
                "expected redis://[user:password@]host:port or rediss://",
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| bad(&e.to_string()))?;
        let (addr, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (
                NodeAddr {
                    host: host.clone(),
                    port: *port,
                },
                None,
            ),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => (
                NodeAddr {
                    host: host.clone(),
                    port: *port,
                },
                Some(Tls {
                    insecure: *insecure,
                    certificates: None,
                }),
            ),
            _ => return Err(bad("expected a TCP address")),
        };
        if addr.host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint { info, addr, tls })
    }

    /// The same `rediss://` endpoint with the user's TLS settings: a CA file instead of the
    /// platform's roots, a client certificate and key, or no verification at all. The files
    /// are read now, so a missing or invalid one fails here in one line.
    pub fn with_tls(mut self, options: &ferry_engine::tls::TlsOptions) -> Result<Self> {
        let Some(tls) = &mut self.tls else {
            return Err(VerifyError::Config(
                "tls options need a rediss:// url".to_string(),
            ));
        };
        if let Some(name) = &options.server_name {
            return Err(VerifyError::Config(format!(
                "tls server name {name:?}: the verifier checks each node's certificate against \
                 the node's own host and cannot use another name"
            )));
        }
        // The engine's parser of these files gives the same one-line errors as `ferry sync`.
        ferry_engine::tls::TlsConfig::new(options.clone())
            .map_err(|e| VerifyError::Config(e.to_string()))?;
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| VerifyError::Config(format!("cannot read {}: {e}", path.display())))
        };
        tls.insecure |= options.insecure;
        let client_tls = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            _ => None,
        };
        let root_cert = options.ca_file.as_deref().map(read).transpose()?;
        if client_tls.is_some() || root_cert.is_some() {
            tls.certificates = Some(redis::TlsCertificates {
                client_tls,
                root_cert,
            });
        }
        Ok(self)
    }

    /// The same endpoint with this password (taken from the environment or a file, so it
    /// never appears in a command line).
    pub fn with_password(mut self, password: &str) -> Self {
        let settings = self.info.redis_settings().clone().set_password(password);
        self.info = self.info.set_redis_settings(settings);
        self
    }

    /// The node the URL names.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    fn info_for(&self, addr: &NodeAddr, db: u32) -> redis::ConnectionInfo {
        let settings = self.info.redis_settings().clone().set_db(i64::from(db));
        let node = match &self.tls {
            None => ConnectionAddr::Tcp(addr.host.clone(), addr.port),
            Some(tls) => ConnectionAddr::TcpTls {
                host: addr.host.clone(),
                port: addr.port,
                insecure: tls.insecure,
                tls_params: None,
            },
        };
        self.info
            .clone()
            .set_addr(node)
            .set_redis_settings(settings)
    }

    /// A client for `addr` with `db` selected, with this side's TLS settings.
    fn client_for(&self, addr: &NodeAddr, db: u32) -> redis::RedisResult<redis::Client> {
        let info = self.info_for(addr, db);
        match self.tls.as_ref().and_then(|tls| tls.certificates.clone()) {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match self.info.redis_settings().username() {
            Some(user) => write!(f, "{scheme}://{user}@{}", self.addr),
            None => write!(f, "{scheme}://{}", self.addr),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// `url` with the password between `:` and `@` replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None if userinfo.is_empty() => url.to_string(),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_string(),
    }
}

/// What one master told about itself.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFacts {
    pub addr: NodeAddr,
    /// `redis_version` (Valkey reports its Redis compatibility version there).
    pub version: String,
    /// `valkey_version`, when it is a Valkey server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valkey_version: Option<String>,
    /// `evicted_keys` from `INFO stats`: keys removed to stay under `maxmemory`.
    pub evicted_keys: u64,
    /// `expired_keys` from `INFO stats`.
    pub expired_keys: u64,
    pub maxmemory_policy: String,
    /// `INFO keyspace`: keys per db.
    pub keys: BTreeMap<u32, u64>,
    /// The node's clock minus ours when we asked `TIME`, in milliseconds.
    pub clock_offset_ms: f64,
    /// Half the round trip of that `TIME`: how wrong the offset may be.
    pub clock_uncertainty_ms: f64,
}

impl NodeFacts {
    /// Whether the eviction policy may remove a key with (`volatile`) or without a TTL.
    pub fn may_evict(&self, has_ttl: bool) -> bool {
        let policy = self.maxmemory_policy.as_str();
        policy.starts_with("allkeys") || (has_ttl && policy.starts_with("volatile"))
    }
}

/// One master, the slots it owns and its replicas.
#[derive(Debug, Clone)]
pub struct Shard {
    pub master: NodeAddr,
    pub slots: Vec<SlotRange>,
    /// The node keys of this shard are read from.
    pub read: NodeAddr,
    pub facts: NodeFacts,
}

/// Commands the servers of a side all know (and that its user may run on every node read).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// `PEXPIRETIME` (7.0): exact absolute expiry times.
    pub pexpiretime: bool,
    /// `SMISMEMBER`, `ZMSCORE` and exclusive `XRANGE` bounds (6.2).
    pub multi_member: bool,
    /// `OBJECT ENCODING`: tells small encodings, whose values are read in one reply.
    pub object_encoding: bool,
    /// `DUMP`: equal payloads of small encodings are equal values, without reading them.
    pub dump: bool,
}

/// A connected side: its shards and how to reach each slot.
#[derive(Debug)]
pub struct Side {
    pub name: &'static str,
    pub endpoint: Endpoint,
    pub cluster: bool,
    pub shards: Vec<Shard>,
    /// Slot → index in `shards` (`u16::MAX`: no owner); empty for a standalone server.
    owner: Vec<u16>,
    pub read_from: ReadFrom,
    pub caps: Caps,
    throttle: Arc<Throttle>,
}

impl Side {
    /// Connects to the node the endpoint names, finds out whether it is a cluster (`INFO
    /// cluster`), its shards (`CLUSTER NODES`) and what each master reports.
    pub(crate) fn discover(
        name: &'static str,
        endpoint: Endpoint,
        read_from: ReadFrom,
        throttle: Arc<Throttle>,
    ) -> Result<Side> {
        let seed_addr = endpoint.addr().clone();
        let mut side = Side {
            name,
            endpoint,
            cluster: false,
            shards: Vec::new(),
            owner: Vec::new(),
            read_from,
            caps: Caps {
                pexpiretime: true,
                multi_member: true,
                object_encoding: true,
                dump: true,
            },
            throttle,
        };
        let mut seed = side.connect(&seed_addr, 0, false)?;
        let info = parse_info(&seed.query::<String>(&redis::cmd("INFO"))?);
        side.cluster = info.get("cluster_enabled").map(String::as_str) == Some("1");
        let mut shards: Vec<(NodeAddr, Vec<SlotRange>, Vec<NodeAddr>)> = if side.cluster {
            let text: String = seed.query(redis::cmd("CLUSTER").arg("NODES"))?;
            parse_cluster_nodes(&text, &seed_addr.host)
        } else {
            vec![(
                seed_addr.clone(),
                vec![SlotRange::new(slot(0), slot(SLOT_COUNT - 1))],
                replicas_from_info(&info),
            )]
        };
        drop(seed);
        if shards.is_empty() {
            return Err(VerifyError::Reply {
                side: name,
                addr: seed_addr,
                command: "CLUSTER NODES",
                detail: "no master owns any slot".into(),
            });
        }
        shards.sort_by_key(|(_, slots, _)| slots.first().map(|r| r.first));
        for (master, slots, replicas) in shards {
            let facts = side.facts(&master)?;
            let read = match (read_from, replicas.first()) {
                (ReadFrom::Replica, Some(replica)) => replica.clone(),
                _ => master.clone(),
            };
            side.shards.push(Shard {
                master,
                slots,
                read,
                facts,
            });
        }
        let at_least = |facts: &NodeFacts, want: (u32, u32)| version(&facts.version) >= want;
        let (mut object_encoding, mut dump) = (true, true);
        for shard in &side.shards {
            let (encoding_allowed, dump_allowed) = side.allowed_reads(shard)?;
            object_encoding &= encoding_allowed;
            dump &= dump_allowed;
        }
        side.caps = Caps {
            pexpiretime: side.shards.iter().all(|s| at_least(&s.facts, (7, 0))),
            multi_member: side.shards.iter().all(|s| at_least(&s.facts, (6, 2))),
            object_encoding,
            dump,
        };
        if side.cluster {
            side.owner = vec![u16::MAX; usize::from(SLOT_COUNT)];
            for (i, shard) in side.shards.iter().enumerate() {
                for range in &shard.slots {
                    for s in range.first.get()..=range.last.get() {
                        side.owner[usize::from(s)] = i as u16;
                    }
                }
            }
        }
        Ok(side)
    }

    /// Whether the node `shard` is read from answers `OBJECT ENCODING` and `DUMP` (an ACL may
    /// deny them), asked about a key of one of its slots that is most likely absent.
    fn allowed_reads(&self, shard: &Shard) -> Result<(bool, bool)> {
        let readonly = self.cluster && shard.read != shard.master;
        let mut link = self.connect(&shard.read, 0, readonly)?;
        let key = probe_key(&shard.slots);
        let mut pipe = Pipeline::new();
        pipe.cmd("OBJECT").arg("ENCODING").arg(&key);
        pipe.cmd("DUMP").arg(&key);
        let replies = link.pipeline(&pipe)?;
        let allowed = |n: usize| {
            replies
                .get(n)
                .is_some_and(|r| !matches!(r, Value::ServerError(_)))
        };
        Ok((allowed(0), allowed(1)))
    }

    /// Whether both sides run the same server version, so that equal values of the same
    /// encoding give the same `DUMP` payload.
    pub(crate) fn same_version(&self, other: &Side) -> bool {
        let versions = |side: &Side| -> Vec<(String, Option<String>)> {
            side.shards
                .iter()
                .map(|s| (s.facts.version.clone(), s.facts.valkey_version.clone()))
                .collect()
        };
        let mut all = versions(self);
        all.extend(versions(other));
        all.windows(2).all(|w| w[0] == w[1])
    }

    /// Reads every master's `INFO` and `TIME` again (eviction counters, clocks).
    pub(crate) fn refresh(&mut self) -> Result<()> {
        for i in 0..self.shards.len() {
            let addr = self.shards[i].master.clone();
            self.shards[i].facts = self.facts(&addr)?;
        }
        Ok(())
    }

    /// `INFO` and `TIME` of one master.
    fn facts(&self, addr: &NodeAddr) -> Result<NodeFacts> {
        let mut link = self.connect(addr, 0, false)?;
        let info = parse_info(&link.query::<String>(&redis::cmd("INFO"))?);
        let number = |field: &str| info.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
        let keys = info
            .iter()
            .filter_map(|(field, value)| {
                let db: u32 = field.strip_prefix("db")?.parse().ok()?;
                let keys = value.split(',').find_map(|kv| kv.strip_prefix("keys="))?;
                Some((db, keys.parse().ok()?))
            })
            .collect();
        let (clock_offset_ms, clock_uncertainty_ms) = clock_offset(&mut link)?;
        Ok(NodeFacts {
            addr: addr.clone(),
            version: info.get("redis_version").cloned().unwrap_or_default(),
            valkey_version: info.get("valkey_version").cloned(),
            evicted_keys: number("evicted_keys"),
            expired_keys: number("expired_keys"),
            maxmemory_policy: info
                .get("maxmemory_policy")
                .cloned()
                .unwrap_or_else(|| "noeviction".into()),
            keys,
            clock_offset_ms,
            clock_uncertainty_ms,
        })
    }

    /// Opens a connection to `addr` with `db` selected; `READONLY` when it is a cluster
    /// replica that is read.
    pub(crate) fn connect(&self, addr: &NodeAddr, db: u32, readonly: bool) -> Result<Link> {
        let connect_err = |error: redis::RedisError| {
            // A TLS failure is told in the same words as `ferry sync` uses.
            // (The redis crate keeps an I/O error behind an `Arc`.)
            type Shared = Arc<dyn std::error::Error + Send + Sync>;
            let tls = std::error::Error::source(&error)
                .and_then(|source| source.downcast_ref::<Shared>())
                .and_then(|shared| shared.downcast_ref::<std::io::Error>())
                .and_then(ferry_engine::tls::describe);
            match tls {
                Some(reason) => VerifyError::Tls {
                    side: self.name,
                    addr: addr.clone(),
                    reason,
                },
                None => VerifyError::Connect {
                    side: self.name,
                    addr: addr.clone(),
                    error,
                },
            }
        };
        let client = self.endpoint.client_for(addr, db).map_err(connect_err)?;
        let conn = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(connect_err)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(connect_err)?;
        conn.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(connect_err)?;
        let mut link = Link {
            conn,
            addr: addr.clone(),
            side: self.name,
            throttle: self.throttle.clone(),
        };
        if readonly {
            let _: () = link.query(&redis::cmd("READONLY"))?;
        }
        Ok(link)
    }

    /// The shard owning `slot` (a standalone server's only shard).
    pub fn shard_for(&self, slot: Slot) -> Result<&Shard> {
        Ok(&self.shards[self.shard_index(slot)?])
    }

    /// The index in `shards` of the shard owning `slot`.
    fn shard_index(&self, slot: Slot) -> Result<usize> {
        if !self.cluster {
            return Ok(0);
        }
        match self.owner[usize::from(slot.get())] {
            u16::MAX => Err(VerifyError::SlotUncovered {
                side: self.name,
                slot: slot.get(),
            }),
            i => Ok(usize::from(i)),
        }
    }

    /// Whether the shard at `index` owns `slot`.
    pub(crate) fn owns(&self, index: usize, slot: Slot) -> bool {
        !self.cluster || self.owner[usize::from(slot.get())] == index as u16
    }

    /// Keys per db summed over the masters.
    pub fn keys_per_db(&self) -> BTreeMap<u32, u64> {
        let mut total = BTreeMap::new();
        for shard in &self.shards {
            for (db, keys) in &shard.facts.keys {
                *total.entry(*db).or_insert(0) += keys;
            }
        }
        total
    }

    /// The mean clock offset of the masters, and the largest uncertainty.
    pub fn clock(&self) -> (f64, f64) {
        let n = self.shards.len() as f64;
        let offset = self
            .shards
            .iter()
            .map(|s| s.facts.clock_offset_ms)
            .sum::<f64>()
            / n;
        let uncertainty = self
            .shards
            .iter()
            .map(|s| s.facts.clock_uncertainty_ms)
            .fold(0.0, f64::max);
        (offset, uncertainty)
    }

    /// What a report says about this side.
    pub fn summary(&self) -> SideSummary {
        SideSummary {
            url: self.endpoint.to_string(),
            cluster: self.cluster,
            read_from: self.read_from,
            masters: self.shards.iter().map(|s| s.facts.clone()).collect(),
        }
    }
}

#[cfg(test)]
impl Side {
    /// A standalone side whose one master reported `facts`, for tests of pure logic.
    pub(crate) fn fixed(facts: NodeFacts) -> Side {
        let addr = facts.addr.clone();
        Side {
            name: "target",
            endpoint: Endpoint::parse("target", &format!("redis://{addr}")).expect("a url"),
            cluster: false,
            shards: vec![Shard {
                master: addr.clone(),
                slots: vec![SlotRange::new(slot(0), slot(SLOT_COUNT - 1))],
                read: addr,
                facts,
            }],
            owner: Vec::new(),
            read_from: ReadFrom::Master,
            caps: Caps {
                pexpiretime: true,
                multi_member: true,
                object_encoding: true,
                dump: true,
            },
            throttle: Arc::new(Throttle::new(crate::config::RateLimits::default())),
        }
    }
}

/// A side as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct SideSummary {
    /// The URL without its password.
    pub url: String,
    pub cluster: bool,
    pub read_from: ReadFrom,
    pub masters: Vec<NodeFacts>,
}

impl SideSummary {
    /// The server versions of the masters, each once: `redis 7.0.15, valkey 9.1.2`.
    pub(crate) fn versions(&self) -> String {
        let versions: std::collections::BTreeSet<String> = self
            .masters
            .iter()
            .map(|m| match &m.valkey_version {
                Some(v) => format!("valkey {v}"),
                None => format!("redis {}", m.version),
            })
            .collect();
        versions.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// Open connections of one worker to the nodes of one side, per db.
pub(crate) struct Links<'a> {
    pub(crate) side: &'a Side,
    open: HashMap<(NodeAddr, u32), Link>,
}

impl<'a> Links<'a> {
    pub(crate) fn new(side: &'a Side) -> Self {
        Links {
            side,
            open: HashMap::new(),
        }
    }

    /// The connection to the node that `slot` is read from.
    pub(crate) fn for_slot(&mut self, slot: Slot, db: u32) -> Result<&mut Link> {
        let addr = self.side.shard_for(slot)?.read.clone();
        self.to(&addr, db)
    }

    pub(crate) fn to(&mut self, addr: &NodeAddr, db: u32) -> Result<&mut Link> {
        let key = (addr.clone(), db);
        if !self.open.contains_key(&key) {
            let readonly = self.side.cluster && self.side.shards.iter().all(|s| &s.master != addr);
            let link = self.side.connect(addr, db, readonly)?;
            self.open.insert(key.clone(), link);
        }
        Ok(self.open.get_mut(&key).expect("just inserted"))
    }

    /// Groups the keys `wanted` (indices into `slots`) by the node their slot is read from,
    /// and writes to each node the pipeline `build` makes of its keys, without reading the
    /// replies: every node of this side (and of the other, when its pipelines are sent before
    /// either side is received) works at once.
    pub(crate) fn send(
        &mut self,
        db: u32,
        slots: &[Slot],
        wanted: impl IntoIterator<Item = usize>,
        mut build: impl FnMut(&mut Pipeline, &[usize]),
    ) -> Result<Flight> {
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.side.shards.len()];
        for i in wanted {
            by_shard[self.side.shard_index(slots[i])?].push(i);
        }
        let mut nodes = Vec::new();
        for (shard, keys) in by_shard.into_iter().enumerate() {
            if keys.is_empty() {
                continue;
            }
            let addr = self.side.shards[shard].read.clone();
            let mut pipe = Pipeline::new();
            build(&mut pipe, &keys);
            let due = self.to(&addr, db)?.send(&pipe)?;
            nodes.push((addr, keys, due));
        }
        Ok(Flight { db, nodes })
    }

    /// Reads the replies of what [`Links::send`] wrote.
    pub(crate) fn receive(&mut self, flight: Flight) -> Result<Vec<Landed>> {
        let mut landed = Vec::with_capacity(flight.nodes.len());
        for (addr, keys, due) in flight.nodes {
            let replies = self.to(&addr, flight.db)?.receive(due)?;
            landed.push(Landed {
                addr,
                keys,
                replies,
            });
        }
        Ok(landed)
    }

    /// The error for a reply of the wrong shape from the node `addr` of this side.
    pub(crate) fn unexpected(
        &self,
        addr: &NodeAddr,
        command: &'static str,
        reply: &Value,
    ) -> VerifyError {
        unexpected(self.side.name, addr, command, reply)
    }

    /// The error for a reply of the wrong shape, not kept, from the node `addr`.
    pub(crate) fn malformed(&self, addr: &NodeAddr, command: &'static str) -> VerifyError {
        malformed(self.side.name, addr, command)
    }
}

/// Pipelines written to the nodes of one side, whose replies are still due.
pub(crate) struct Flight {
    db: u32,
    /// Per node: its address, the keys (indices) it was sent, and how many replies are due.
    nodes: Vec<(NodeAddr, Vec<usize>, usize)>,
}

/// The replies of one node to a pipeline [`Links::send`] wrote.
pub(crate) struct Landed {
    pub(crate) addr: NodeAddr,
    /// The keys (indices) of the pipeline, in the order their commands were built.
    pub(crate) keys: Vec<usize>,
    pub(crate) replies: Vec<Value>,
}

/// A connection to one node that counts what it spends against the global caps and names
/// the node in its errors.
pub(crate) struct Link {
    conn: redis::Connection,
    pub(crate) addr: NodeAddr,
    side: &'static str,
    throttle: Arc<Throttle>,
}

impl Link {
    /// Runs one command.
    pub(crate) fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T> {
        self.throttle.spend(1, 0);
        let value: Value = cmd.query(&mut self.conn).map_err(|e| self.error(e))?;
        if self.throttle.counts_bytes() {
            self.throttle.spend(0, reply_bytes(&value));
        }
        redis::from_redis_value(value).map_err(|e| self.error(e.into()))
    }

    /// Runs a pipeline; an error reply to one command is returned in its place
    /// (`Value::ServerError`), not as an error of the whole pipeline.
    pub(crate) fn pipeline(&mut self, pipe: &Pipeline) -> Result<Vec<Value>> {
        let sent = self.send(pipe)?;
        self.receive(sent)
    }

    /// Writes a pipeline without waiting for its replies, so that other nodes can work on
    /// theirs meanwhile; [`Link::receive`] reads them. Returns how many replies are due.
    pub(crate) fn send(&mut self, pipe: &Pipeline) -> Result<usize> {
        let ops = pipe.len();
        if ops == 0 {
            return Ok(0);
        }
        self.throttle.spend(ops as u64, 0);
        self.conn
            .send_packed_command(pipe.packed())
            .map_err(|e| self.error(e))?;
        Ok(ops)
    }

    /// Reads `count` replies of what [`Link::send`] wrote, error replies in their place.
    pub(crate) fn receive(&mut self, count: usize) -> Result<Vec<Value>> {
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            replies.push(self.conn.recv_response().map_err(|e| self.error(e))?);
        }
        if self.throttle.counts_bytes() {
            self.throttle
                .spend(0, replies.iter().map(reply_bytes).sum::<u64>());
        }
        Ok(replies)
    }

    pub(crate) fn error(&self, error: redis::RedisError) -> VerifyError {
        VerifyError::Redis {
            side: self.side,
            addr: self.addr.clone(),
            error,
        }
    }

    pub(crate) fn unexpected(&self, command: &'static str, reply: &Value) -> VerifyError {
        unexpected(self.side, &self.addr, command, reply)
    }

    /// The error for a reply of the wrong shape that was not kept.
    pub(crate) fn malformed(&self, command: &'static str) -> VerifyError {
        malformed(self.side, &self.addr, command)
    }
}

/// The error for a reply of the wrong shape that was not kept.
fn malformed(side: &'static str, addr: &NodeAddr, command: &'static str) -> VerifyError {
    VerifyError::Reply {
        side,
        addr: addr.clone(),
        command,
        detail: "a reply of the wrong shape".into(),
    }
}

/// The error for a reply of the wrong shape, showing its beginning.
fn unexpected(
    side: &'static str,
    addr: &NodeAddr,
    command: &'static str,
    reply: &Value,
) -> VerifyError {
    let mut detail = format!("{reply:?}");
    detail.truncate(200);
    VerifyError::Reply {
        side,
        addr: addr.clone(),
        command,
        detail,
    }
}

/// About how many bytes a reply took on the wire.
fn reply_bytes(value: &Value) -> u64 {
    match value {
        Value::BulkString(b) => b.len() as u64 + 8,
        Value::Array(items) | Value::Set(items) => 8 + items.iter().map(reply_bytes).sum::<u64>(),
        Value::Map(pairs) => {
            8 + pairs
                .iter()
                .map(|(k, v)| reply_bytes(k) + reply_bytes(v))
                .sum::<u64>()
        }
        Value::SimpleString(s) => s.len() as u64 + 3,
        _ => 8,
    }
}

/// `TIME` against our clock: (offset, uncertainty) in milliseconds, the best of three.
fn clock_offset(link: &mut Link) -> Result<(f64, f64)> {
    let mut best = (0.0, f64::INFINITY);
    for _ in 0..3 {
        let before = unix_ms();
        let (secs, micros): (u64, u64) = link.query(&redis::cmd("TIME"))?;
        let after = unix_ms();
        let server = secs as f64 * 1_000.0 + micros as f64 / 1_000.0;
        let half_rtt = (after - before) / 2.0;
        if half_rtt < best.1 {
            best = (server - (before + after) / 2.0, half_rtt);
        }
    }
    Ok(best)
}

/// Our clock as Unix milliseconds.
pub(crate) fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1_000.0)
        .unwrap_or(0.0)
}

/// A key of one of `slots` (a hash tag picks the slot), under ferry's own prefix.
fn probe_key(slots: &[SlotRange]) -> Vec<u8> {
    (0u32..)
        .map(|n| format!("__ferry__:probe:{{{n}}}").into_bytes())
        .find(|key| {
            let slot = Slot::of_key(key);
            slots.is_empty() || slots.iter().any(|r| r.contains(slot))
        })
        .expect("some tag hashes to every slot")
}

/// `major.minor` of a version string.
fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn slot(n: u16) -> Slot {
    Slot::new(n).expect("slot below 16384")
}

/// A standalone master's replicas from `INFO replication` (`slave0:ip=...,port=...`).
fn replicas_from_info(info: &HashMap<String, String>) -> Vec<NodeAddr> {
    let mut replicas: Vec<(String, NodeAddr)> = info
        .iter()
        .filter(|(field, _)| {
            field.starts_with("slave") && field[5..].chars().all(|c| c.is_ascii_digit())
        })
        .filter_map(|(field, value)| {
            let get = |name: &str| {
                value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            if get("state") != Some("online") {
                return None;
            }
            Some((
                field.clone(),
                NodeAddr {
                    host: get("ip")?.to_string(),
                    port: get("port")?.parse().ok()?,
                },
            ))
        })
        .collect();
    replicas.sort();
    replicas.into_iter().map(|(_, addr)| addr).collect()
}

/// Masters with their slots and replicas from `CLUSTER NODES`, skipping failed nodes.
fn parse_cluster_nodes(
    text: &str,
    default_host: &str,
) -> Vec<(NodeAddr, Vec<SlotRange>, Vec<NodeAddr>)> {
    let mut masters: Vec<(String, NodeAddr, Vec<SlotRange>, Vec<NodeAddr>)> = Vec::new();
    let mut replicas: Vec<(String, NodeAddr)> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let flags = fields[2];
        if flags
            .split(',')
            .any(|f| f == "fail" || f == "handshake" || f == "noaddr")
        {
            continue;
        }
        let Some(addr) = NodeAddr::parse(fields[1], default_host) else {
            continue;
        };
        if flags.split(',').any(|f| f == "master") {
            let slots = fields[8..]
                .iter()
                .filter(|f| !f.starts_with('['))
                .filter_map(|f| {
                    let (a, b) = f.split_once('-').unwrap_or((f, f));
                    let a = Slot::new(a.parse().ok()?).ok()?;
                    let b = Slot::new(b.parse().ok()?).ok()?;
                    (a <= b).then(|| SlotRange::new(a, b))
                })
                .collect();
            masters.push((fields[0].to_string(), addr, slots, Vec::new()));
        } else if flags.split(',').any(|f| f == "slave") {
            replicas.push((fields[3].to_string(), addr));
        }
    }
    for (master_id, addr) in replicas {
        if let Some(m) = masters.iter_mut().find(|m| m.0 == master_id) {
            m.3.push(addr);
        }
    }
    masters
        .into_iter()
        .filter(|m| !m.2.is_empty())
        .map(|(_, addr, slots, mut replicas)| {
            replicas.sort();
            (addr, slots, replicas)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let endpoint = Endpoint::parse("source", "redis://alice:s3cret@127.0.0.1:7000").unwrap();
        assert_eq!(endpoint.addr().port, 7000);
        assert_eq!(endpoint.to_string(), "redis://alice@127.0.0.1:7000");
        assert!(!format!("{endpoint:?}").contains("s3cret"));
        let err = Endpoint::parse("target", "http://bob:pw@host:1").unwrap_err();
        assert!(!err.to_string().contains("pw@"), "{err}");
        assert!(err.to_string().starts_with("invalid target url"), "{err}");
        assert!(Endpoint::parse("target", "redis://:6379").is_err());
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
    }

    #[test]
    fn rediss_urls_take_tls_options_and_plain_ones_refuse_them() {
        use ferry_engine::tls::TlsOptions;
        let endpoint = Endpoint::parse("source", "rediss://alice:s3cret@127.0.0.1:7000").unwrap();
        assert_eq!(endpoint.to_string(), "rediss://alice@127.0.0.1:7000");
        let insecure = TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        };
        let endpoint = endpoint.with_tls(&insecure).unwrap();
        assert!(endpoint.tls.as_ref().is_some_and(|t| t.insecure));
        let plain = Endpoint::parse("source", "redis://127.0.0.1:7000").unwrap();
        let err = plain.with_tls(&insecure).unwrap_err().to_string();
        assert!(err.contains("rediss://"), "{err}");
        let missing = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let err = Endpoint::parse("source", "rediss://h:1")
            .unwrap()
            .with_tls(&missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read tls ca file /nonexistent/ca.pem"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn cluster_nodes_give_masters_with_slots_and_replicas() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-8191
b2 :7002@17002 master - 0 0 2 connected 8192-16383 [42->-x]
c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7004@17004 master,fail - 0 0 4 disconnected
";
        let shards = parse_cluster_nodes(text, "10.0.0.9");
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].2[0].port, 7003);
        assert_eq!(shards[1].0.host, "10.0.0.9");
        assert_eq!(shards[1].1[0].first.get(), 8192);
    }

    #[test]
    fn probe_keys_hash_to_the_slots_asked() {
        for range in [(0, 0), (5_461, 10_922), (16_383, 16_383)] {
            let range = SlotRange::new(slot(range.0), slot(range.1));
            let key = probe_key(&[range]);
            assert!(key.starts_with(b"__ferry__:"));
            assert!(range.contains(Slot::of_key(&key)), "{}", key.escape_ascii());
        }
    }

    #[test]
    fn standalone_replicas_come_from_info() {
        let info = parse_info(
            "role:master\r\nslave0:ip=127.0.0.1,port=7010,state=online,offset=1,lag=0\r\n\
             slave1:ip=127.0.0.1,port=7011,state=wait_bgsave,offset=0,lag=0\r\n",
        );
        let replicas = replicas_from_info(&info);
        assert_eq!(replicas.len(), 1);
        assert_eq!(replicas[0].port, 7010);
    }
}
