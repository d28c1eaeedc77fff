//! What applying a fault did, recorded for reports and for the verifier's attributions.

use std::fmt;
use std::time::SystemTime;

use ferry_fixtures::NodeAddr;
use serde::{Deserialize, Serialize};

use crate::fault::{ClientType, Fault, MaxmemoryPolicy};

/// One applied fault: which node it hit, when, and what was observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultOutcome {
    pub fault: Fault,
    /// The node the selector named when the fault was applied.
    pub node: NodeAddr,
    pub started: SystemTime,
    pub finished: SystemTime,
    pub effect: Effect,
}

/// What a fault changed, in the terms Redis reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// The process got SIGKILL and was reaped.
    Killed { pid: Option<u32> },
    /// The process got SIGTERM (SIGKILL if it did not exit in time) and was reaped.
    Stopped { pid: Option<u32> },
    /// The process got SIGSTOP.
    Paused { pid: Option<u32> },
    /// The process got SIGCONT.
    Resumed { pid: Option<u32> },
    /// The node runs again (under `pid`) on its port and answers PING.
    Restarted { pid: Option<u32> },
    /// The replica `new_master` took over the slots of `old_master`.
    FailedOver {
        old_master: NodeAddr,
        new_master: NodeAddr,
    },
    /// `killed_master` got SIGKILL and its replica `promoted` was elected in its place.
    Promoted {
        killed_master: NodeAddr,
        promoted: NodeAddr,
    },
    /// `CLIENT KILL TYPE <kind>` closed `count` connections.
    ClientsKilled { kind: ClientType, count: u64 },
    /// The master's `sync_full` counter grew from `sync_full_before` to `sync_full_after` and
    /// `replicas` are `online` again.
    FullResync {
        replicas: Vec<NodeAddr>,
        sync_full_before: u64,
        sync_full_after: u64,
        /// Rounds of kill + burst it took (a replica that reconnects before the burst has
        /// left the backlog still gets a partial resync).
        attempts: u32,
        burst_bytes: u64,
        /// The `repl-backlog-size` put back afterwards, if it was.
        backlog_restored: Option<u64>,
    },
    /// `keys_before` keys were dropped (of database `db`, or of all of them).
    Flushed { db: Option<u32>, keys_before: u64 },
    /// `maxmemory` and `maxmemory-policy` were set; the values they replaced.
    MaxmemorySet {
        previous_bytes: u64,
        previous_policy: MaxmemoryPolicy,
    },
    /// `slot` and its `keys` keys moved from one master to another.
    SlotMigrated {
        slot: u16,
        from: NodeAddr,
        to: NodeAddr,
        keys: u64,
    },
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pid = |f: &mut fmt::Formatter<'_>, pid: &Option<u32>| match pid {
            Some(pid) => write!(f, " (pid {pid})"),
            None => Ok(()),
        };
        match self {
            Effect::Killed { pid: p } => {
                f.write_str("killed")?;
                pid(f, p)
            }
            Effect::Stopped { pid: p } => {
                f.write_str("stopped")?;
                pid(f, p)
            }
            Effect::Paused { pid: p } => {
                f.write_str("paused")?;
                pid(f, p)
            }
            Effect::Resumed { pid: p } => {
                f.write_str("resumed")?;
                pid(f, p)
            }
            Effect::Restarted { pid: p } => {
                f.write_str("restarted")?;
                pid(f, p)
            }
            Effect::FailedOver {
                old_master,
                new_master,
            } => write!(f, "{new_master} took over from {old_master}"),
            Effect::Promoted {
                killed_master,
                promoted,
            } => write!(f, "{killed_master} killed, {promoted} promoted"),
            Effect::ClientsKilled { kind, count } => {
                write!(f, "{count} {kind} connection(s) killed")
            }
            Effect::FullResync {
                replicas,
                sync_full_before,
                sync_full_after,
                attempts,
                burst_bytes,
                backlog_restored,
            } => {
                let replicas: Vec<String> = replicas.iter().map(NodeAddr::to_string).collect();
                write!(
                    f,
                    "sync_full {sync_full_before} -> {sync_full_after} after {attempts} \
                     burst(s) of {burst_bytes} bytes, replicas {} online",
                    replicas.join(" ")
                )?;
                if let Some(size) = backlog_restored {
                    write!(f, ", repl-backlog-size {size} restored")?;
                }
                Ok(())
            }
            Effect::Flushed {
                db: Some(db),
                keys_before,
            } => write!(f, "{keys_before} key(s) of db {db} flushed"),
            Effect::Flushed {
                db: None,
                keys_before,
            } => write!(f, "{keys_before} key(s) flushed"),
            Effect::MaxmemorySet {
                previous_bytes,
                previous_policy,
            } => write!(f, "replaced maxmemory {previous_bytes} {previous_policy}"),
            Effect::SlotMigrated {
                slot,
                from,
                to,
                keys,
            } => write!(
                f,
                "slot {slot} moved from {from} to {to} with {keys} key(s)"
            ),
        }
    }
}

impl fmt::Display for FaultOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.fault, self.node, self.effect)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::selector::NodeSelector;

    fn outcome(fault: Fault, effect: Effect) -> FaultOutcome {
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        FaultOutcome {
            fault,
            node: NodeAddr::localhost(7002),
            started,
            finished: started + Duration::from_millis(2500),
            effect,
        }
    }

    #[test]
    fn outcomes_read_as_one_line() {
        let resync = outcome(
            Fault::ForceFullResync {
                node: NodeSelector::Master(2),
                restore_backlog: true,
            },
            Effect::FullResync {
                replicas: vec![NodeAddr::localhost(7005), NodeAddr::localhost(7008)],
                sync_full_before: 1,
                sync_full_after: 3,
                attempts: 1,
                burst_bytes: 1_310_720,
                backlog_restored: Some(1_048_576),
            },
        );
        assert_eq!(
            resync.to_string(),
            "force a full resync of the replicas of master 2 [127.0.0.1:7002]: sync_full 1 -> 3 \
             after 1 burst(s) of 1310720 bytes, replicas 127.0.0.1:7005 127.0.0.1:7008 online, \
             repl-backlog-size 1048576 restored"
        );
        let promoted = outcome(
            Fault::KillMasterAwaitPromotion {
                node: NodeSelector::MasterOfSlot(12000),
            },
            Effect::Promoted {
                killed_master: NodeAddr::localhost(7002),
                promoted: NodeAddr::localhost(7005),
            },
        );
        assert_eq!(
            promoted.to_string(),
            "kill master of slot 12000 and await a replica's promotion [127.0.0.1:7002]: \
             127.0.0.1:7002 killed, 127.0.0.1:7005 promoted"
        );
        assert_eq!(
            Effect::Killed { pid: Some(42) }.to_string(),
            "killed (pid 42)"
        );
        assert_eq!(Effect::Stopped { pid: None }.to_string(), "stopped");
        assert_eq!(
            Effect::Flushed {
                db: Some(1),
                keys_before: 3
            }
            .to_string(),
            "3 key(s) of db 1 flushed"
        );
        assert_eq!(
            Effect::MaxmemorySet {
                previous_bytes: 0,
                previous_policy: MaxmemoryPolicy::Noeviction
            }
            .to_string(),
            "replaced maxmemory 0 noeviction"
        );
    }

    #[test]
    fn outcomes_round_trip_through_json() {
        let killed = outcome(
            Fault::ClientKill {
                node: NodeSelector::replica_of_master(0),
                kind: ClientType::Master,
            },
            Effect::ClientsKilled {
                kind: ClientType::Master,
                count: 1,
            },
        );
        let json = serde_json::to_value(&killed).unwrap();
        assert_eq!(json["effect"]["effect"], "clients_killed");
        assert_eq!(json["fault"]["fault"], "client_kill");
        assert_eq!(json["fault"]["type"], "master");
        assert_eq!(
            serde_json::from_value::<FaultOutcome>(json).unwrap(),
            killed
        );
    }
}
