//! An independent copy for the tests: `DUMP` + `PTTL` on the source, `RESTORE ... REPLACE`
//! on the target node owning the slot; keys the source lacks are deleted from the target.
//! It shares nothing with the engine or the verifier, so a clean copy is a known-good copy.

use std::collections::HashMap;

use ferry_engine::route::Slot;
use ferry_fixtures::{Deployment, NodeAddr, Topology};
use redis::Value;

/// Connections to every master of a deployment, by slot.
pub struct Nodes {
    topology: Topology,
    conns: HashMap<NodeAddr, redis::Connection>,
}

impl Nodes {
    pub fn new(deployment: &dyn Deployment) -> Self {
        let topology = deployment.topology().expect("topology");
        let conns = topology
            .masters()
            .into_iter()
            .map(|addr| {
                let conn = ferry_fixtures::conn::connect(&addr).expect("connect");
                (addr, conn)
            })
            .collect();
        Nodes { topology, conns }
    }

    pub fn masters(&self) -> Vec<NodeAddr> {
        self.topology.masters()
    }

    pub fn conn(&mut self, addr: &NodeAddr) -> &mut redis::Connection {
        self.conns.get_mut(addr).expect("a master")
    }

    /// The connection to the master owning `key`'s slot.
    pub fn for_key(&mut self, key: &[u8]) -> &mut redis::Connection {
        let addr = self
            .topology
            .shard_for_slot(Slot::of_key(key))
            .expect("an owner")
            .master
            .clone();
        self.conn(&addr)
    }

    /// Runs one command on the master owning `key`.
    pub fn run<T: redis::FromRedisValue>(&mut self, key: &[u8], cmd: &redis::Cmd) -> T {
        cmd.query(self.for_key(key)).expect("command")
    }

    /// Every key matching `pattern`.
    pub fn keys(&mut self, pattern: &str) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for addr in self.masters() {
            let conn = self.conn(&addr);
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(conn)
                    .expect("SCAN");
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys
    }
}

/// Copies every key matching `pattern` from `source` to `target`, and deletes target keys
/// matching it that the source lacks.
pub fn copy(source: &dyn Deployment, target: &dyn Deployment, pattern: &str) {
    let mut src = Nodes::new(source);
    let mut tgt = Nodes::new(target);
    copy_with(&mut src, &mut tgt, pattern);
}

/// [`copy`] with connections kept by the caller.
pub fn copy_with(src: &mut Nodes, tgt: &mut Nodes, pattern: &str) {
    let keys = src.keys(pattern);
    for chunk in keys.chunks(500) {
        // DUMP and PTTL per key, pipelined per source master.
        let mut dumped: Vec<(Vec<u8>, Option<Vec<u8>>, i64)> = Vec::new();
        for addr in src.masters() {
            let mine: Vec<&Vec<u8>> = chunk
                .iter()
                .filter(|k| {
                    src.topology
                        .shard_for_slot(Slot::of_key(k))
                        .map(|s| &s.master)
                        == Some(&addr)
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for key in &mine {
                pipe.cmd("DUMP").arg(key.as_slice());
                pipe.cmd("PTTL").arg(key.as_slice());
            }
            let replies: Vec<Value> = pipe.query(src.conn(&addr)).expect("DUMP");
            for (key, pair) in mine.iter().zip(replies.chunks(2)) {
                let payload = match &pair[0] {
                    Value::BulkString(b) => Some(b.clone()),
                    _ => None,
                };
                let ttl = match pair[1] {
                    Value::Int(n) => n,
                    _ => -2,
                };
                dumped.push(((*key).clone(), payload, ttl));
            }
        }
        // RESTORE (or DEL) pipelined per target master.
        for addr in tgt.masters() {
            let mut pipe = redis::pipe();
            for (key, payload, ttl) in &dumped {
                if tgt
                    .topology
                    .shard_for_slot(Slot::of_key(key))
                    .map(|s| &s.master)
                    != Some(&addr)
                {
                    continue;
                }
                match payload {
                    None => pipe.cmd("DEL").arg(key).ignore(),
                    Some(_) if *ttl == -2 => continue,
                    Some(payload) => pipe
                        .cmd("RESTORE")
                        .arg(key)
                        .arg((*ttl).max(0))
                        .arg(payload)
                        .arg("REPLACE")
                        .ignore(),
                };
            }
            if !pipe.is_empty() {
                let _: () = pipe.query(tgt.conn(&addr)).expect("RESTORE");
            }
        }
    }
    // Keys only on the target.
    let on_target = tgt.keys(pattern);
    for addr in src.masters() {
        let mine: Vec<&Vec<u8>> = on_target
            .iter()
            .filter(|k| {
                src.topology
                    .shard_for_slot(Slot::of_key(k))
                    .map(|s| &s.master)
                    == Some(&addr)
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for key in &mine {
            pipe.cmd("EXISTS").arg(key.as_slice());
        }
        let exists: Vec<i64> = pipe.query(src.conn(&addr)).expect("EXISTS");
        for (key, exists) in mine.into_iter().zip(exists) {
            if exists == 0 {
                let _: () = tgt.run(key, redis::cmd("DEL").arg(key));
            }
        }
    }
}

/// A standalone target receives a cluster's keys in db 0, and the other way round.
#[test]
fn a_copy_across_shapes_and_versions_is_clean() {
    use ferry_fixtures::{Dataset, LocalServer, ServerBinary};
    let valkey = ServerBinary::cached("valkey-9.1.2");
    let redis5 = ServerBinary::cached("redis-5.0.10");
    let (Ok(valkey), Ok(redis5)) = (valkey, redis5) else {
        panic!("ci/setup.sh installs redis-5.0.10 and valkey-9.1.2; run it first");
    };
    // Redis 5 standalone (no PEXPIRETIME: TTLs from TIME + PTTL) into a Redis 7 cluster.
    let old = LocalServer::builder().binary(redis5).start().unwrap();
    let pair = crate::shared::clusters();
    Dataset::new(51)
        .prefix("shape5")
        .scale(1_500)
        .load(&old)
        .unwrap();
    copy(&old, &pair.target, "*shape5:*");
    let report = crate::shared::run(&crate::shared::config(&old, &pair.target, "*shape5:*"));
    assert!(report.is_consistent(), "{}", crate::shared::show(&report));
    assert!(report.counts.keys_compared >= 1_500, "{:?}", report.counts);
    assert!(report.source.masters[0].version.starts_with("5.0"));

    // A Redis 7 cluster into a Valkey 9 standalone server.
    let new = LocalServer::builder().binary(valkey).start().unwrap();
    Dataset::new(52)
        .prefix("shape9")
        .scale(1_500)
        .load(&pair.source)
        .unwrap();
    copy(&pair.source, &new, "*shape9:*");
    let report = crate::shared::run(&crate::shared::config(&pair.source, &new, "*shape9:*"));
    assert!(report.is_consistent(), "{}", crate::shared::show(&report));
    assert!(!report.target.cluster && report.source.cluster);
    assert!(report.counts.keys_compared >= 1_500, "{:?}", report.counts);
}
