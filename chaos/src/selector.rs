//! Which node a fault hits: named by address, or by its place in the live topology so that a
//! scenario written before the deployment exists still finds its target.

use std::fmt;

use ferry_engine::route::Slot;
use ferry_fixtures::{Deployment, Node, NodeAddr, Topology};
use serde::{Deserialize, Serialize};

use crate::error::ChaosError;
use crate::info;

/// A node of a deployment, looked up when a fault is applied.
///
/// In TOML: `node = { addr = "127.0.0.1:7000" }`, `node = { master = 0 }`,
/// `node = { master_of_slot = 12182 }`, `node = { replica_of = { master = 1 } }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeSelector {
    /// The node at this address, written `host:port`.
    Addr(#[serde(with = "addr_text")] NodeAddr),
    /// The master of the `n`-th shard, shards ordered by their first slot (for a standalone
    /// server, 0 is its master).
    Master(usize),
    /// The master serving this hash slot.
    MasterOfSlot(u16),
    /// The first replica (lowest address) of the master the inner selector names.
    ReplicaOf(Box<NodeSelector>),
}

impl NodeSelector {
    /// `ReplicaOf(Master(n))`.
    pub fn replica_of_master(n: usize) -> Self {
        NodeSelector::ReplicaOf(Box::new(NodeSelector::Master(n)))
    }

    /// The address this selector names in `deployment` as it is now.
    pub fn resolve(&self, deployment: &dyn Deployment) -> Result<NodeAddr, ChaosError> {
        let no_such_node = || ChaosError::NoSuchNode {
            selector: self.clone(),
        };
        let addr = match self {
            NodeSelector::Addr(addr) => addr.clone(),
            NodeSelector::Master(n) => {
                let topology = deployment.topology()?;
                let shard = topology.shards.get(*n).ok_or_else(no_such_node)?;
                shard.master.clone()
            }
            NodeSelector::MasterOfSlot(slot) => {
                let slot = Slot::new(*slot)?;
                let topology = deployment.topology()?;
                let shard = topology.shard_for_slot(slot).ok_or_else(no_such_node)?;
                shard.master.clone()
            }
            NodeSelector::ReplicaOf(master) => {
                let master = master.resolve(deployment)?;
                let replica = if deployment.is_cluster() {
                    first_replica_in(&deployment.topology()?, &master)
                } else {
                    // A standalone topology knows no replicas: ask the master.
                    info::replicas_of(&master)?
                        .into_iter()
                        .map(|link| link.addr)
                        .next()
                };
                replica.ok_or_else(no_such_node)?
            }
        };
        match deployment.node(&addr) {
            Some(_) => Ok(addr),
            None => Err(ChaosError::NotInDeployment { addr }),
        }
    }

    /// The node this selector names in `deployment` as it is now.
    pub fn node<'d>(&self, deployment: &'d dyn Deployment) -> Result<&'d dyn Node, ChaosError> {
        let addr = self.resolve(deployment)?;
        deployment
            .node(&addr)
            .ok_or(ChaosError::NotInDeployment { addr })
    }
}

fn first_replica_in(topology: &Topology, master: &NodeAddr) -> Option<NodeAddr> {
    let shard = topology.shards.iter().find(|s| &s.master == master)?;
    shard.replicas.iter().min().cloned()
}

impl From<NodeAddr> for NodeSelector {
    fn from(addr: NodeAddr) -> Self {
        NodeSelector::Addr(addr)
    }
}

impl fmt::Display for NodeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeSelector::Addr(addr) => write!(f, "{addr}"),
            NodeSelector::Master(n) => write!(f, "master {n}"),
            NodeSelector::MasterOfSlot(slot) => write!(f, "master of slot {slot}"),
            NodeSelector::ReplicaOf(master) => write!(f, "replica of {master}"),
        }
    }
}

/// A [`NodeAddr`] as the `host:port` text people write in scenario files.
mod addr_text {
    use ferry_fixtures::NodeAddr;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &NodeAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NodeAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        NodeAddr::parse(&text)
            .ok_or_else(|| de::Error::custom(format!("node address {text:?} is not host:port")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30005@40005 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
17c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";

    #[test]
    fn first_replica_is_the_lowest_address() {
        let topology = Topology::from_cluster_nodes(NODES);
        assert_eq!(
            first_replica_in(&topology, &NodeAddr::localhost(30001)),
            Some(NodeAddr::localhost(30004))
        );
        assert_eq!(
            first_replica_in(&topology, &NodeAddr::localhost(30002)),
            None
        );
        assert_eq!(
            first_replica_in(&topology, &NodeAddr::localhost(30004)),
            None
        );
    }

    #[test]
    fn selectors_read_as_what_they_name() {
        let nested = NodeSelector::ReplicaOf(Box::new(NodeSelector::MasterOfSlot(42)));
        assert_eq!(nested.to_string(), "replica of master of slot 42");
        assert_eq!(
            NodeSelector::replica_of_master(1).to_string(),
            "replica of master 1"
        );
        assert_eq!(
            NodeSelector::from(NodeAddr::localhost(7000)).to_string(),
            "127.0.0.1:7000"
        );
    }

    #[test]
    fn addresses_are_written_as_host_port() {
        let selector = NodeSelector::Addr(NodeAddr::localhost(7000));
        let json = serde_json::to_string(&selector).unwrap();
        assert_eq!(json, r#"{"addr":"127.0.0.1:7000"}"#);
        assert_eq!(
            serde_json::from_str::<NodeSelector>(&json).unwrap(),
            selector
        );
        let err = serde_json::from_str::<NodeSelector>(r#"{"addr":"7000"}"#).unwrap_err();
        assert!(
            err.to_string().contains("\"7000\" is not host:port"),
            "{err}"
        );
    }

    #[test]
    fn nested_selectors_round_trip() {
        let selector = NodeSelector::ReplicaOf(Box::new(NodeSelector::Master(2)));
        let json = serde_json::to_string(&selector).unwrap();
        assert_eq!(json, r#"{"replica_of":{"master":2}}"#);
        assert_eq!(
            serde_json::from_str::<NodeSelector>(&json).unwrap(),
            selector
        );
    }
}
