//! The shape of a deployment as `CLUSTER SLOTS` reports it, and which master owns each slot.

use std::fmt;

use super::{Slot, SlotRange, SLOT_COUNT};
use crate::resp::Frame;

/// A node's address as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        NodeAddr {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A master, the slots it serves and its replicas (those `CLUSTER SLOTS` lists: Redis leaves
/// out failed replicas and, from 7.0, ones that have not reported an offset yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: NodeAddr,
    pub replicas: Vec<NodeAddr>,
    pub slots: Vec<SlotRange>,
}

/// A deployment's masters and the owner of every slot. A standalone server is one shard
/// owning every slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub cluster: bool,
    pub shards: Vec<Shard>,
    /// Index into `shards` per slot; `None` where no master serves the slot.
    owner: Vec<Option<u16>>,
}

/// A `CLUSTER SLOTS` reply that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected CLUSTER SLOTS reply: {0}")]
pub struct SlotsReplyError(String);

impl Topology {
    /// One standalone server.
    pub fn standalone(master: NodeAddr) -> Self {
        let all = SlotRange::new(Slot::new(0).expect("0 is a slot"), last_slot());
        Topology {
            cluster: false,
            shards: vec![Shard {
                master,
                replicas: Vec::new(),
                slots: vec![all],
            }],
            owner: vec![Some(0); usize::from(SLOT_COUNT)],
        }
    }

    /// Parses a `CLUSTER SLOTS` reply. Nodes announced with an empty host ("unknown
    /// endpoint") are reached at `seed_host`, as the clients Redis documents do.
    pub fn from_cluster_slots(reply: &Frame, seed_host: &str) -> Result<Self, SlotsReplyError> {
        let Frame::Array(Some(ranges)) = reply else {
            return Err(SlotsReplyError(format!("{reply:?}")));
        };
        let mut shards: Vec<Shard> = Vec::new();
        let mut owner = vec![None; usize::from(SLOT_COUNT)];
        for range in ranges {
            let Frame::Array(Some(fields)) = range else {
                return Err(SlotsReplyError(format!("range {range:?}")));
            };
            let (Some(first), Some(last)) = (fields.first(), fields.get(1)) else {
                return Err(SlotsReplyError(format!("range {range:?}")));
            };
            let slot = |f: &Frame| match f {
                Frame::Integer(n) => u16::try_from(*n)
                    .ok()
                    .and_then(|n| Slot::new(n).ok())
                    .ok_or_else(|| SlotsReplyError(format!("slot {n}"))),
                other => Err(SlotsReplyError(format!("slot {other:?}"))),
            };
            let (first, last) = (slot(first)?, slot(last)?);
            if first > last {
                return Err(SlotsReplyError(format!("reversed range {first}-{last}")));
            }
            let mut nodes = fields[2..]
                .iter()
                .map(|node| node_addr(node, seed_host))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter();
            let master = nodes
                .next()
                .ok_or_else(|| SlotsReplyError(format!("range {first}-{last} without a master")))?;
            let index = match shards.iter().position(|s| s.master == master) {
                Some(i) => i,
                None => {
                    shards.push(Shard {
                        master,
                        replicas: nodes.collect(),
                        slots: Vec::new(),
                    });
                    shards.len() - 1
                }
            };
            shards[index].slots.push(SlotRange::new(first, last));
            let index =
                u16::try_from(index).map_err(|_| SlotsReplyError("too many masters".into()))?;
            for n in first.get()..=last.get() {
                owner[usize::from(n)] = Some(index);
            }
        }
        for shard in &mut shards {
            shard.slots.sort();
            shard.replicas.sort();
        }
        Ok(Topology {
            cluster: true,
            shards,
            owner,
        })
    }

    /// The shard whose master serves `slot`.
    pub fn owner(&self, slot: Slot) -> Option<&Shard> {
        self.owner[usize::from(slot.get())].map(|i| &self.shards[usize::from(i)])
    }

    /// Index into `shards` of the master serving `slot`.
    pub fn owner_index(&self, slot: Slot) -> Option<usize> {
        self.owner[usize::from(slot.get())].map(usize::from)
    }

    /// Slots no master serves.
    pub fn uncovered(&self) -> usize {
        self.owner.iter().filter(|o| o.is_none()).count()
    }
}

fn last_slot() -> Slot {
    Slot::new(SLOT_COUNT - 1).expect("16383 is a slot")
}

/// `[host, port, id, ...]` of one node in a `CLUSTER SLOTS` range.
fn node_addr(node: &Frame, seed_host: &str) -> Result<NodeAddr, SlotsReplyError> {
    let Frame::Array(Some(fields)) = node else {
        return Err(SlotsReplyError(format!("node {node:?}")));
    };
    match (fields.first(), fields.get(1)) {
        (Some(Frame::Bulk(Some(host))), Some(Frame::Integer(port))) => {
            let host = String::from_utf8_lossy(host);
            let host = if host.is_empty() || host == "?" {
                seed_host.to_string()
            } else {
                host.into_owned()
            };
            let port = u16::try_from(*port).map_err(|_| SlotsReplyError(format!("port {port}")))?;
            Ok(NodeAddr::new(host, port))
        }
        _ => Err(SlotsReplyError(format!("node {node:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Frame {
        Frame::Array(Some(vec![
            Frame::bulk(host.as_bytes().to_vec()),
            Frame::Integer(port),
            Frame::bulk(b"0123".to_vec()),
        ]))
    }

    fn range(first: i64, last: i64, nodes: Vec<Frame>) -> Frame {
        let mut fields = vec![Frame::Integer(first), Frame::Integer(last)];
        fields.extend(nodes);
        Frame::Array(Some(fields))
    }

    #[test]
    fn cluster_slots_become_shards_and_owners() {
        let reply = Frame::Array(Some(vec![
            range(
                0,
                5460,
                vec![node("10.0.0.1", 7000), node("10.0.0.4", 7003)],
            ),
            range(5461, 10922, vec![node("", 7001)]),
            range(
                10923,
                16000,
                vec![node("10.0.0.1", 7000), node("10.0.0.4", 7003)],
            ),
        ]));
        let t = Topology::from_cluster_slots(&reply, "seed.example").unwrap();
        assert!(t.cluster);
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.shards[0].slots.len(), 2);
        assert_eq!(t.shards[0].replicas, [NodeAddr::new("10.0.0.4", 7003)]);
        assert_eq!(t.shards[1].master, NodeAddr::new("seed.example", 7001));
        assert_eq!(t.uncovered(), 16383 - 16000);
        let foo = Slot::of_key(b"foo"); // 12182
        assert_eq!(t.owner(foo).unwrap().master.port, 7000);
        assert_eq!(t.owner(Slot::new(16383).unwrap()), None);
    }

    #[test]
    fn malformed_replies_are_errors() {
        for reply in [
            Frame::Integer(1),
            Frame::Array(Some(vec![range(5, 1, vec![node("h", 1)])])),
            Frame::Array(Some(vec![range(0, 99999, vec![node("h", 1)])])),
            Frame::Array(Some(vec![range(0, 1, vec![])])),
            Frame::Array(Some(vec![range(0, 1, vec![Frame::Integer(3)])])),
        ] {
            assert!(
                Topology::from_cluster_slots(&reply, "h").is_err(),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn a_standalone_server_owns_every_slot() {
        let t = Topology::standalone(NodeAddr::new("127.0.0.1", 6379));
        assert_eq!(t.uncovered(), 0);
        assert_eq!(t.owner_index(Slot::of_key(b"anything")), Some(0));
    }
}
