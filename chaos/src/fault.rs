//! Fault primitives: one typed value per thing the chaos runner can do to a node, each applied
//! to a live [`Deployment`] and returning what it observed.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use ferry_engine::route::Slot;
use ferry_fixtures::{conn, Deployment, FailoverMode, Node, NodeAddr, Role};
use serde::{Deserialize, Serialize};

use crate::error::ChaosError;
use crate::info;
use crate::outcome::{Effect, FaultOutcome};
use crate::selector::NodeSelector;

/// The smallest `repl-backlog-size` Redis keeps (`CONFIG_REPL_BACKLOG_MIN_SIZE`, 16 KB).
pub const MIN_BACKLOG_SIZE: u64 = 16 * 1024;

/// Size of each `SET` of the write burst that pushes replicas' offsets out of the backlog.
const BURST_CHUNK: usize = 64 * 1024;

/// `SET`s in one burst: 20 × 64 KB = 1.25 MB, far beyond a 16 KB backlog.
const BURST_CHUNKS: usize = 20;

/// Rounds of kill + burst [`Fault::ForceFullResync`] tries before giving up.
const RESYNC_ATTEMPTS: u32 = 3;

/// How long a reconnecting replica may take to ask for a resync (it reconnects from
/// `replicationCron`, once a second).
const RESYNC_START_LIMIT: Duration = Duration::from_secs(30);

/// How long the full resync itself may take until every replica is `online` again.
const RESYNC_DONE_LIMIT: Duration = Duration::from_secs(120);

/// Prefix of the key the write burst uses; it is deleted in the same pipeline.
const BURST_KEY_PREFIX: &str = "__ferry__:chaos:burst:";

/// Something the chaos runner does to one node of a deployment.
///
/// In TOML (internally tagged by `fault`):
/// ```toml
/// fault = "failover"
/// node = { replica_of = { master = 0 } }
/// mode = "takeover"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// SIGKILL: the server dies without a chance to save or to tell anyone.
    Kill { node: NodeSelector },
    /// SIGSTOP: the server keeps its connections open but answers nothing until resumed.
    /// Done when the kernel reports the process stopped.
    Pause { node: NodeSelector },
    /// SIGCONT after a [`Fault::Pause`].
    Resume { node: NodeSelector },
    /// Starts the node again on the same port with the same data dir and `nodes.conf` (after
    /// a clean stop if it is still running); done when it answers PING.
    Restart { node: NodeSelector },
    /// SIGTERM: a clean shutdown (SIGKILL if it does not exit in time).
    Stop { node: NodeSelector },
    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]` sent to a replica; done when it is a master.
    Failover {
        node: NodeSelector,
        #[serde(default)]
        mode: FailoverMode,
    },
    /// SIGKILL to a master, then wait until the cluster promotes one of its replicas and is
    /// `ok` again.
    KillMasterAwaitPromotion { node: NodeSelector },
    /// `CLIENT KILL TYPE master|replica`: on a replica `master` cuts its link to its master;
    /// on a master `replica` cuts the links of all its replicas. Both reconnect and ask for a
    /// partial resync.
    ClientKill {
        node: NodeSelector,
        #[serde(rename = "type")]
        kind: ClientType,
    },
    /// Makes every replica of a master do a full resync: `repl-backlog-size` set to 16 KB,
    /// then in one pipeline `CLIENT KILL TYPE replica` and a 1.25 MB write burst into a key of
    /// a slot the master serves (deleted at the end), so the offsets the replicas come back
    /// with are no longer in the backlog. Done when `sync_full` grew and every replica is
    /// `online` again.
    ForceFullResync {
        node: NodeSelector,
        /// Put the previous `repl-backlog-size` back afterwards (default: yes).
        #[serde(default = "yes")]
        restore_backlog: bool,
    },
    /// `FLUSHALL [ASYNC]`: deletes all the keys of all the existing databases.
    FlushAll {
        node: NodeSelector,
        #[serde(rename = "async", default)]
        asynchronous: bool,
    },
    /// `FLUSHDB [ASYNC]` on database `db` (only 0 exists in a cluster).
    FlushDb {
        node: NodeSelector,
        #[serde(default)]
        db: u32,
        #[serde(rename = "async", default)]
        asynchronous: bool,
    },
    /// `CONFIG SET maxmemory-policy <policy>` then `CONFIG SET maxmemory <bytes>`.
    SetMaxmemory {
        node: NodeSelector,
        bytes: u64,
        policy: MaxmemoryPolicy,
    },
    /// Moves `slot` from the master serving it to the master `node` names, as `redis-cli
    /// --cluster reshard` does: `SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE` of its keys,
    /// then `SETSLOT NODE` on every master.
    MigrateSlot { node: NodeSelector, slot: u16 },
}

fn yes() -> bool {
    true
}

/// The client types `CLIENT KILL TYPE` takes that carry replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientType {
    /// A replica's link to its master.
    Master,
    /// A master's links to its replicas.
    Replica,
}

impl fmt::Display for ClientType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientType::Master => "master",
            ClientType::Replica => "replica",
        })
    }
}

/// How Redis selects what to remove when `maxmemory` is reached, in `maxmemory-policy`'s own
/// spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    /// Evict using approximated LRU, only keys with an expire set.
    VolatileLru,
    /// Evict any key using approximated LRU.
    AllkeysLru,
    /// Evict using approximated LFU, only keys with an expire set.
    VolatileLfu,
    /// Evict any key using approximated LFU.
    AllkeysLfu,
    /// Remove a random key having an expire set.
    VolatileRandom,
    /// Remove a random key, any key.
    AllkeysRandom,
    /// Remove the key with the nearest expire time (minor TTL).
    VolatileTtl,
    /// Don't evict anything, just return an error on write operations.
    Noeviction,
}

impl MaxmemoryPolicy {
    pub const ALL: [MaxmemoryPolicy; 8] = [
        MaxmemoryPolicy::VolatileLru,
        MaxmemoryPolicy::AllkeysLru,
        MaxmemoryPolicy::VolatileLfu,
        MaxmemoryPolicy::AllkeysLfu,
        MaxmemoryPolicy::VolatileRandom,
        MaxmemoryPolicy::AllkeysRandom,
        MaxmemoryPolicy::VolatileTtl,
        MaxmemoryPolicy::Noeviction,
    ];

    /// The name `CONFIG SET maxmemory-policy` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            MaxmemoryPolicy::VolatileLru => "volatile-lru",
            MaxmemoryPolicy::AllkeysLru => "allkeys-lru",
            MaxmemoryPolicy::VolatileLfu => "volatile-lfu",
            MaxmemoryPolicy::AllkeysLfu => "allkeys-lfu",
            MaxmemoryPolicy::VolatileRandom => "volatile-random",
            MaxmemoryPolicy::AllkeysRandom => "allkeys-random",
            MaxmemoryPolicy::VolatileTtl => "volatile-ttl",
            MaxmemoryPolicy::Noeviction => "noeviction",
        }
    }
}

impl fmt::Display for MaxmemoryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `maxmemory-policy` name Redis does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown maxmemory-policy {0:?}")]
pub struct UnknownPolicy(pub String);

impl FromStr for MaxmemoryPolicy {
    type Err = UnknownPolicy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        MaxmemoryPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownPolicy(name.to_string()))
    }
}

impl Fault {
    /// The node this fault is aimed at.
    pub fn node(&self) -> &NodeSelector {
        match self {
            Fault::Kill { node }
            | Fault::Pause { node }
            | Fault::Resume { node }
            | Fault::Restart { node }
            | Fault::Stop { node }
            | Fault::Failover { node, .. }
            | Fault::KillMasterAwaitPromotion { node }
            | Fault::ClientKill { node, .. }
            | Fault::ForceFullResync { node, .. }
            | Fault::FlushAll { node, .. }
            | Fault::FlushDb { node, .. }
            | Fault::SetMaxmemory { node, .. }
            | Fault::MigrateSlot { node, .. } => node,
        }
    }

    /// Resolves the target node in `deployment` as it is now, does the fault, and waits for
    /// what the fault promises (a promotion, a full resync) before returning.
    pub fn apply(&self, deployment: &dyn Deployment) -> Result<FaultOutcome, ChaosError> {
        let started = SystemTime::now();
        let node = self.node().node(deployment)?;
        let addr = node.addr();
        tracing::info!(fault = %self, node = %addr, "applying fault");
        let effect = match self {
            Fault::Kill { .. } => {
                let pid = node.pid();
                node.kill()?;
                Effect::Killed { pid }
            }
            Fault::Pause { .. } => {
                node.pause()?;
                Effect::Paused { pid: node.pid() }
            }
            Fault::Resume { .. } => {
                node.resume()?;
                Effect::Resumed { pid: node.pid() }
            }
            Fault::Restart { .. } => {
                node.restart()?;
                Effect::Restarted { pid: node.pid() }
            }
            Fault::Stop { .. } => {
                let pid = node.pid();
                node.stop()?;
                Effect::Stopped { pid }
            }
            Fault::Failover { mode, .. } => {
                self.require_cluster(deployment)?;
                self.require_role(node, Role::Replica)?;
                let old_master = master_of(&addr)?;
                deployment.failover(node, *mode)?;
                Effect::FailedOver {
                    old_master,
                    new_master: addr.clone(),
                }
            }
            Fault::KillMasterAwaitPromotion { .. } => {
                self.require_cluster(deployment)?;
                self.require_role(node, Role::Master)?;
                let promoted = deployment.kill_master_and_await_promotion(&addr)?;
                Effect::Promoted {
                    killed_master: addr.clone(),
                    promoted,
                }
            }
            Fault::ClientKill { kind, .. } => {
                let count: u64 = conn::query(
                    &addr,
                    redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg(kind.to_string()),
                )?;
                if count == 0 {
                    return Err(ChaosError::NothingKilled {
                        fault: self.to_string(),
                        kind: kind.to_string(),
                        addr,
                    });
                }
                Effect::ClientsKilled { kind: *kind, count }
            }
            Fault::ForceFullResync {
                restore_backlog, ..
            } => {
                self.require_role(node, Role::Master)?;
                self.force_full_resync(deployment, &addr, *restore_backlog)?
            }
            Fault::FlushAll { asynchronous, .. } => {
                let keys_before = info::total_keys(&conn::info(&addr, "keyspace")?);
                let mut cmd = redis::cmd("FLUSHALL");
                if *asynchronous {
                    cmd.arg("ASYNC");
                }
                let _: () = conn::query(&addr, &cmd)?;
                Effect::Flushed {
                    db: None,
                    keys_before,
                }
            }
            Fault::FlushDb {
                db, asynchronous, ..
            } => {
                let mut flush = redis::cmd("FLUSHDB");
                if *asynchronous {
                    flush.arg("ASYNC");
                }
                let mut pipe = redis::pipe();
                pipe.cmd("SELECT")
                    .arg(db)
                    .ignore()
                    .cmd("DBSIZE")
                    .add_command(flush)
                    .ignore();
                let mut connection = conn::connect(&addr)?;
                let (keys_before,): (u64,) = pipe
                    .query(&mut connection)
                    .map_err(|e| ChaosError::redis(&addr, e))?;
                Effect::Flushed {
                    db: Some(*db),
                    keys_before,
                }
            }
            Fault::MigrateSlot { slot, .. } => migrate_slot(deployment, &addr, *slot)?,
            Fault::SetMaxmemory { bytes, policy, .. } => {
                let previous_bytes: u64 = config_get(&addr, "maxmemory")?;
                let previous_policy: MaxmemoryPolicy = config_get(&addr, "maxmemory-policy")?;
                config_set(&addr, "maxmemory-policy", policy.as_str())?;
                config_set(&addr, "maxmemory", bytes)?;
                Effect::MaxmemorySet {
                    previous_bytes,
                    previous_policy,
                }
            }
        };
        let outcome = FaultOutcome {
            fault: self.clone(),
            node: addr,
            started,
            finished: SystemTime::now(),
            effect,
        };
        tracing::info!(%outcome, "fault applied");
        Ok(outcome)
    }

    fn require_cluster(&self, deployment: &dyn Deployment) -> Result<(), ChaosError> {
        if deployment.is_cluster() {
            Ok(())
        } else {
            Err(ChaosError::NeedsCluster {
                fault: self.to_string(),
            })
        }
    }

    fn require_role(&self, node: &dyn Node, expected: Role) -> Result<(), ChaosError> {
        let actual = node.role()?;
        if actual == expected {
            Ok(())
        } else {
            Err(ChaosError::WrongRole {
                fault: self.to_string(),
                addr: node.addr(),
                expected,
                actual,
            })
        }
    }

    /// See [`Fault::ForceFullResync`]. The old backlog size is put back even when the resync
    /// could not be forced, if `restore_backlog`.
    fn force_full_resync(
        &self,
        deployment: &dyn Deployment,
        master: &NodeAddr,
        restore_backlog: bool,
    ) -> Result<Effect, ChaosError> {
        let replicas: Vec<NodeAddr> = info::replicas_of(master)?
            .into_iter()
            .map(|link| link.addr)
            .collect();
        if replicas.is_empty() {
            return Err(ChaosError::NoReplica {
                fault: self.to_string(),
                addr: master.clone(),
            });
        }
        let key = burst_key(deployment, master)?;
        let backlog_before: u64 = config_get(master, "repl-backlog-size")?;
        let sync_full_before = info::counter(master, "stats", "sync_full")?;
        config_set(master, "repl-backlog-size", MIN_BACKLOG_SIZE)?;
        let resynced = self.kill_replicas_and_burst(master, &key, &replicas);
        let backlog_restored = if restore_backlog {
            config_set(master, "repl-backlog-size", backlog_before)?;
            Some(backlog_before)
        } else {
            None
        };
        let attempts = resynced?;
        Ok(Effect::FullResync {
            replicas,
            sync_full_before,
            sync_full_after: info::counter(master, "stats", "sync_full")?,
            attempts,
            burst_bytes: (BURST_CHUNK * BURST_CHUNKS) as u64,
            backlog_restored,
        })
    }

    /// Kill + burst rounds until a reconnecting replica gets a full resync; then waits until
    /// every replica is `online`. Returns the number of rounds.
    fn kill_replicas_and_burst(
        &self,
        master: &NodeAddr,
        key: &str,
        replicas: &[NodeAddr],
    ) -> Result<u32, ChaosError> {
        let chunk = vec![b'x'; BURST_CHUNK];
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica");
        for _ in 0..BURST_CHUNKS {
            pipe.cmd("SET").arg(key).arg(&chunk[..]).ignore();
        }
        pipe.cmd("DEL").arg(key).ignore();
        let mut connection = conn::connect(master)?;
        for attempt in 1..=RESYNC_ATTEMPTS {
            let full_before = info::counter(master, "stats", "sync_full")?;
            let partial_before = info::counter(master, "stats", "sync_partial_ok")?;
            let (killed,): (u64,) = pipe
                .query(&mut connection)
                .map_err(|e| ChaosError::redis(master, e))?;
            tracing::debug!(%master, attempt, killed, "replica links killed, burst written");
            let full = conn::poll(
                &format!("a replica of {master} to resync"),
                RESYNC_START_LIMIT,
                || {
                    let full = info::counter(master, "stats", "sync_full").ok()?;
                    let partial = info::counter(master, "stats", "sync_partial_ok").ok()?;
                    if full > full_before {
                        Some(true)
                    } else if partial > partial_before {
                        Some(false)
                    } else {
                        None
                    }
                },
            )?;
            await_replicas_online(master, replicas)?;
            if full {
                return Ok(attempt);
            }
            tracing::warn!(%master, attempt, "replica resynced partially, bursting again");
        }
        Err(ChaosError::NoFullResync {
            fault: self.to_string(),
            addr: master.clone(),
            attempts: RESYNC_ATTEMPTS,
        })
    }
}

/// Waits until `master` lists every one of `replicas` as `online`.
fn await_replicas_online(master: &NodeAddr, replicas: &[NodeAddr]) -> Result<(), ChaosError> {
    conn::poll(
        &format!("the replicas of {master} to be online"),
        RESYNC_DONE_LIMIT,
        || {
            let links = info::replicas_of(master).ok()?;
            replicas
                .iter()
                .all(|replica| {
                    links
                        .iter()
                        .any(|link| &link.addr == replica && link.online())
                })
                .then_some(())
        },
    )?;
    Ok(())
}

/// A key whose slot `master` serves, so the burst is written there and not redirected.
fn burst_key(deployment: &dyn Deployment, master: &NodeAddr) -> Result<String, ChaosError> {
    if !deployment.is_cluster() {
        return Ok(format!("{BURST_KEY_PREFIX}0"));
    }
    let topology = deployment.topology()?;
    let slots = topology
        .shards
        .iter()
        .find(|shard| &shard.master == master)
        .map(|shard| shard.slots.as_slice())
        .unwrap_or_default();
    let no_slots = || ChaosError::NoSlots {
        addr: master.clone(),
    };
    if slots.is_empty() {
        return Err(no_slots());
    }
    key_in_slots(BURST_KEY_PREFIX, |slot| {
        slots.iter().any(|range| range.contains(slot))
    })
    .ok_or_else(no_slots)
}

/// `<prefix>{<n>}` for the first `n` whose slot `owned` accepts. Every slot is reached by
/// some `n` below 2^20.
fn key_in_slots(prefix: &str, owned: impl Fn(Slot) -> bool) -> Option<String> {
    (0..1u32 << 20)
        .map(|n| format!("{prefix}{{{n}}}"))
        .find(|key| owned(Slot::of_key(key.as_bytes())))
}

/// The master a replica follows, from its `INFO replication`.
fn master_of(replica: &NodeAddr) -> Result<NodeAddr, ChaosError> {
    let repl = conn::info(replica, "replication")?;
    let host = repl.get("master_host");
    let port = repl.get("master_port").and_then(|p| p.parse().ok());
    match (host, port) {
        (Some(host), Some(port)) => Ok(NodeAddr::new(host.clone(), port)),
        _ => Err(ChaosError::Reply {
            addr: replica.clone(),
            command: "INFO replication".into(),
            detail: "no master_host/master_port on a replica".into(),
        }),
    }
}

/// `CONFIG GET <parameter>`, parsed.
fn config_get<T: FromStr>(addr: &NodeAddr, parameter: &str) -> Result<T, ChaosError> {
    let reply: Vec<String> = conn::query(addr, redis::cmd("CONFIG").arg("GET").arg(parameter))?;
    let value = match reply.as_slice() {
        [name, value] if name == parameter => value,
        _ => {
            return Err(ChaosError::Reply {
                addr: addr.clone(),
                command: format!("CONFIG GET {parameter}"),
                detail: format!("{reply:?}"),
            })
        }
    };
    value.parse().map_err(|_| ChaosError::Reply {
        addr: addr.clone(),
        command: format!("CONFIG GET {parameter}"),
        detail: format!("cannot parse {value:?}"),
    })
}

/// `CONFIG SET <parameter> <value>`.
fn config_set(
    addr: &NodeAddr,
    parameter: &str,
    value: impl redis::ToRedisArgs,
) -> Result<(), ChaosError> {
    let _: () = conn::query(
        addr,
        redis::cmd("CONFIG").arg("SET").arg(parameter).arg(value),
    )?;
    Ok(())
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let asynchronous = |yes: &bool| if *yes { " async" } else { "" };
        match self {
            Fault::Kill { node } => write!(f, "kill {node}"),
            Fault::Pause { node } => write!(f, "pause {node}"),
            Fault::Resume { node } => write!(f, "resume {node}"),
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::Stop { node } => write!(f, "stop {node}"),
            Fault::Failover { node, mode } => {
                let mode = match mode {
                    FailoverMode::Default => "",
                    FailoverMode::Force => " force",
                    FailoverMode::Takeover => " takeover",
                };
                write!(f, "cluster failover{mode} on {node}")
            }
            Fault::KillMasterAwaitPromotion { node } => {
                write!(f, "kill {node} and await a replica's promotion")
            }
            Fault::ClientKill { node, kind } => write!(f, "client kill type {kind} on {node}"),
            Fault::ForceFullResync {
                node,
                restore_backlog,
            } => {
                write!(f, "force a full resync of the replicas of {node}")?;
                if !restore_backlog {
                    write!(f, ", leaving repl-backlog-size {MIN_BACKLOG_SIZE}")?;
                }
                Ok(())
            }
            Fault::FlushAll {
                node,
                asynchronous: a,
            } => {
                write!(f, "flushall{} on {node}", asynchronous(a))
            }
            Fault::FlushDb {
                node,
                db,
                asynchronous: a,
            } => write!(f, "flushdb{} of db {db} on {node}", asynchronous(a)),
            Fault::SetMaxmemory {
                node,
                bytes,
                policy,
            } => write!(f, "maxmemory {bytes} {policy} on {node}"),
            Fault::MigrateSlot { node, slot } => write!(f, "migrate slot {slot} to {node}"),
        }
    }
}

/// Moves `slot` to the master at `to`; returns what moved.
fn migrate_slot(
    deployment: &dyn Deployment,
    to: &NodeAddr,
    slot: u16,
) -> Result<Effect, ChaosError> {
    let fault = format!("migrate slot {slot}");
    if !deployment.is_cluster() {
        return Err(ChaosError::NeedsCluster { fault });
    }
    let topology = deployment.topology()?;
    let from = topology
        .shard_for_slot(Slot::new(slot)?)
        .map(|s| s.master.clone())
        .ok_or_else(|| ChaosError::Reply {
            addr: to.clone(),
            command: "CLUSTER NODES".into(),
            detail: format!("no master serves slot {slot}"),
        })?;
    let id = |addr: &NodeAddr| -> Result<String, ChaosError> {
        conn::query(addr, redis::cmd("CLUSTER").arg("MYID")).map_err(ChaosError::from)
    };
    let (from_id, to_id) = (id(&from)?, id(to)?);
    let setslot = |addr: &NodeAddr, state: &str, node: &str| -> Result<(), ChaosError> {
        let _: () = conn::query(
            addr,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(node),
        )?;
        Ok(())
    };
    setslot(to, "IMPORTING", &from_id)?;
    setslot(&from, "MIGRATING", &to_id)?;
    let mut moved = 0u64;
    loop {
        let keys: Vec<Vec<u8>> = conn::query(
            &from,
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100),
        )?;
        if keys.is_empty() {
            break;
        }
        moved += keys.len() as u64;
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg(&to.host)
            .arg(to.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("REPLACE")
            .arg("KEYS")
            .arg(keys);
        let _: () = conn::query(&from, &migrate)?;
    }
    for master in topology.masters() {
        setslot(&master, "NODE", &to_id)?;
    }
    Ok(Effect::SlotMigrated {
        slot,
        from,
        to: to.clone(),
        keys: moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_fault() -> Vec<Fault> {
        let addr = NodeSelector::Addr(NodeAddr::localhost(7000));
        let replica = NodeSelector::replica_of_master(1);
        vec![
            Fault::Kill { node: addr.clone() },
            Fault::Pause {
                node: NodeSelector::MasterOfSlot(42),
            },
            Fault::Resume { node: addr.clone() },
            Fault::Restart {
                node: NodeSelector::Master(2),
            },
            Fault::Stop {
                node: replica.clone(),
            },
            Fault::Failover {
                node: replica.clone(),
                mode: FailoverMode::Default,
            },
            Fault::Failover {
                node: replica.clone(),
                mode: FailoverMode::Force,
            },
            Fault::Failover {
                node: replica.clone(),
                mode: FailoverMode::Takeover,
            },
            Fault::KillMasterAwaitPromotion {
                node: NodeSelector::Master(0),
            },
            Fault::ClientKill {
                node: replica.clone(),
                kind: ClientType::Master,
            },
            Fault::ClientKill {
                node: NodeSelector::Master(0),
                kind: ClientType::Replica,
            },
            Fault::ForceFullResync {
                node: NodeSelector::Master(1),
                restore_backlog: true,
            },
            Fault::ForceFullResync {
                node: NodeSelector::Master(1),
                restore_backlog: false,
            },
            Fault::FlushAll {
                node: addr.clone(),
                asynchronous: false,
            },
            Fault::FlushAll {
                node: addr.clone(),
                asynchronous: true,
            },
            Fault::FlushDb {
                node: addr.clone(),
                db: 3,
                asynchronous: true,
            },
            Fault::SetMaxmemory {
                node: addr,
                bytes: 10 << 20,
                policy: MaxmemoryPolicy::AllkeysLru,
            },
            Fault::MigrateSlot {
                node: NodeSelector::Master(1),
                slot: 42,
            },
        ]
    }

    #[test]
    fn every_fault_round_trips_through_json_and_toml() {
        for fault in every_fault() {
            let json = serde_json::to_string(&fault).unwrap();
            assert_eq!(
                serde_json::from_str::<Fault>(&json).unwrap(),
                fault,
                "{json}"
            );
            let toml = toml::to_string(&fault).unwrap();
            assert_eq!(toml::from_str::<Fault>(&toml).unwrap(), fault, "{toml}");
        }
    }

    #[test]
    fn scenario_files_read_naturally() {
        let fault: Fault = toml::from_str(
            "fault = \"failover\"\nnode = { replica_of = { master = 0 } }\nmode = \"takeover\"\n",
        )
        .unwrap();
        assert_eq!(
            fault,
            Fault::Failover {
                node: NodeSelector::replica_of_master(0),
                mode: FailoverMode::Takeover,
            }
        );
        let fault: Fault = toml::from_str(
            "fault = \"client_kill\"\nnode = { addr = \"127.0.0.1:7003\" }\ntype = \"master\"\n",
        )
        .unwrap();
        assert_eq!(
            fault,
            Fault::ClientKill {
                node: NodeSelector::Addr(NodeAddr::localhost(7003)),
                kind: ClientType::Master,
            }
        );
        let fault: Fault = serde_json::from_str(
            r#"{"fault":"set_maxmemory","node":{"master_of_slot":100},"bytes":1048576,"policy":"volatile-ttl"}"#,
        )
        .unwrap();
        assert_eq!(
            fault,
            Fault::SetMaxmemory {
                node: NodeSelector::MasterOfSlot(100),
                bytes: 1 << 20,
                policy: MaxmemoryPolicy::VolatileTtl,
            }
        );
    }

    #[test]
    fn omitted_options_take_their_defaults() {
        let fault: Fault =
            toml::from_str("fault = \"force_full_resync\"\nnode = { master = 1 }\n").unwrap();
        assert_eq!(
            fault,
            Fault::ForceFullResync {
                node: NodeSelector::Master(1),
                restore_backlog: true,
            }
        );
        let fault: Fault = toml::from_str("fault = \"flush_db\"\nnode = { master = 0 }\n").unwrap();
        assert_eq!(
            fault,
            Fault::FlushDb {
                node: NodeSelector::Master(0),
                db: 0,
                asynchronous: false,
            }
        );
        let fault: Fault = toml::from_str("fault = \"failover\"\nnode = { master = 0 }\n").unwrap();
        assert!(matches!(
            fault,
            Fault::Failover {
                mode: FailoverMode::Default,
                ..
            }
        ));
    }

    #[test]
    fn misspelt_faults_are_rejected() {
        let unknown_field = toml::from_str::<Fault>(
            "fault = \"flush_all\"\nnode = { master = 0 }\nasync = true\nlazy = true\n",
        );
        assert!(unknown_field.is_err(), "{unknown_field:?}");
        let unknown_fault = toml::from_str::<Fault>("fault = \"reboot\"\nnode = { master = 0 }\n");
        assert!(unknown_fault.is_err(), "{unknown_fault:?}");
        let unknown_policy = serde_json::from_str::<Fault>(
            r#"{"fault":"set_maxmemory","node":{"master":0},"bytes":1,"policy":"allkeys-mru"}"#,
        );
        assert!(unknown_policy.is_err(), "{unknown_policy:?}");
    }

    #[test]
    fn faults_display_as_one_line() {
        let lines: Vec<String> = every_fault().iter().map(Fault::to_string).collect();
        assert_eq!(
            lines,
            [
                "kill 127.0.0.1:7000",
                "pause master of slot 42",
                "resume 127.0.0.1:7000",
                "restart master 2",
                "stop replica of master 1",
                "cluster failover on replica of master 1",
                "cluster failover force on replica of master 1",
                "cluster failover takeover on replica of master 1",
                "kill master 0 and await a replica's promotion",
                "client kill type master on replica of master 1",
                "client kill type replica on master 0",
                "force a full resync of the replicas of master 1",
                "force a full resync of the replicas of master 1, leaving repl-backlog-size 16384",
                "flushall on 127.0.0.1:7000",
                "flushall async on 127.0.0.1:7000",
                "flushdb async of db 3 on 127.0.0.1:7000",
                "maxmemory 10485760 allkeys-lru on 127.0.0.1:7000",
                "migrate slot 42 to master 1",
            ]
        );
        assert!(lines.iter().all(|line| !line.contains('\n')));
    }

    #[test]
    fn policies_use_redis_spelling_everywhere() {
        for policy in MaxmemoryPolicy::ALL {
            let name = policy.as_str();
            assert_eq!(name.parse::<MaxmemoryPolicy>(), Ok(policy));
            assert_eq!(policy.to_string(), name);
            assert_eq!(
                serde_json::to_string(&policy).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert_eq!(
            "allkeys-mru".parse::<MaxmemoryPolicy>(),
            Err(UnknownPolicy("allkeys-mru".into()))
        );
    }

    #[test]
    fn every_slot_has_a_burst_key() {
        let mut reached = vec![false; 16384];
        for n in 0..1u32 << 20 {
            reached[usize::from(Slot::of_key(n.to_string().as_bytes()).get())] = true;
        }
        let missing: Vec<usize> = (0..16384).filter(|&slot| !reached[slot]).collect();
        assert!(missing.is_empty(), "slots without a key: {missing:?}");
    }

    #[test]
    fn burst_keys_land_in_the_slots_asked_for() {
        let one_slot = Slot::new(16383).unwrap();
        let key = key_in_slots(BURST_KEY_PREFIX, |slot| slot == one_slot).unwrap();
        assert!(key.starts_with(BURST_KEY_PREFIX), "{key}");
        assert_eq!(Slot::of_key(key.as_bytes()), one_slot);
        for slot in [0, 1, 5460, 5461, 12345] {
            let slot = Slot::new(slot).unwrap();
            let key = key_in_slots("k", |s| s == slot).unwrap();
            assert_eq!(Slot::of_key(key.as_bytes()), slot, "{key}");
        }
    }
}
