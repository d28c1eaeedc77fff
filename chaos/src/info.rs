//! The `INFO` fields faults look at: counters in `stats`, replica links in `replication`, key
//! counts in `keyspace`.

use std::collections::HashMap;

use ferry_fixtures::{conn, NodeAddr};

use crate::error::ChaosError;

/// One `slave<N>:ip=...,port=...,state=...,offset=...,lag=...` line of a master's
/// `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaLink {
    pub addr: NodeAddr,
    /// `wait_bgsave`, `send_bulk`, `online` (as `replstateToString` names them).
    pub state: String,
}

impl ReplicaLink {
    pub fn online(&self) -> bool {
        self.state == "online"
    }
}

/// The replicas a master lists in its `INFO replication`, sorted by address.
pub(crate) fn replica_links(replication: &HashMap<String, String>) -> Vec<ReplicaLink> {
    let mut links: Vec<ReplicaLink> = replication
        .iter()
        .filter(|(field, _)| {
            field
                .strip_prefix("slave")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(_, value)| parse_replica_link(value))
        .collect();
    links.sort_by(|a, b| a.addr.cmp(&b.addr));
    links
}

fn parse_replica_link(value: &str) -> Option<ReplicaLink> {
    let fields: HashMap<&str, &str> = value.split(',').filter_map(|f| f.split_once('=')).collect();
    Some(ReplicaLink {
        addr: NodeAddr::new(*fields.get("ip")?, fields.get("port")?.parse().ok()?),
        state: fields.get("state")?.to_string(),
    })
}

/// The replicas `master` lists in `INFO replication`.
pub(crate) fn replicas_of(master: &NodeAddr) -> Result<Vec<ReplicaLink>, ChaosError> {
    Ok(replica_links(&conn::info(master, "replication")?))
}

/// A numeric field of `INFO <section>` on `addr`, such as `sync_full` in `stats`.
pub(crate) fn counter(addr: &NodeAddr, section: &str, field: &str) -> Result<u64, ChaosError> {
    let info = conn::info(addr, section)?;
    let value = info.get(field).ok_or_else(|| ChaosError::Reply {
        addr: addr.clone(),
        command: format!("INFO {section}"),
        detail: format!("no {field} field"),
    })?;
    value.parse().map_err(|_| ChaosError::Reply {
        addr: addr.clone(),
        command: format!("INFO {section}"),
        detail: format!("{field} is not a number: {value}"),
    })
}

/// Keys in every database, summed over the `db<N>:keys=...,expires=...` lines of
/// `INFO keyspace`.
pub(crate) fn total_keys(keyspace: &HashMap<String, String>) -> u64 {
    keyspace
        .iter()
        .filter(|(field, _)| field.starts_with("db"))
        .filter_map(|(_, value)| {
            value
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lines_become_links_sorted_by_address() {
        let info = conn::parse_info(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=127.0.0.1,port=7005,state=online,offset=1234,lag=0\r\n\
             slave1:ip=127.0.0.1,port=7004,state=wait_bgsave,offset=0,lag=0\r\n\
             slave_read_repl_offset:1234\r\nmaster_repl_offset:1234\r\n",
        );
        let links = replica_links(&info);
        assert_eq!(
            links,
            vec![
                ReplicaLink {
                    addr: NodeAddr::localhost(7004),
                    state: "wait_bgsave".into()
                },
                ReplicaLink {
                    addr: NodeAddr::localhost(7005),
                    state: "online".into()
                },
            ]
        );
        assert!(!links[0].online());
        assert!(links[1].online());
    }

    #[test]
    fn keyspace_lines_are_summed() {
        let info = conn::parse_info(
            "# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(total_keys(&info), 15);
        assert_eq!(total_keys(&HashMap::new()), 0);
    }
}
