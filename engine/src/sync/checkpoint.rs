//! Checkpoints: what each target master has applied of each source shard's stream, stored in
//! the target itself so that it survives ferry and fails over with the data it describes.
//!
//! One hash per target master, `__ferry__:{<tag>}:checkpoint`, the tag chosen so that the key
//! lives in the lowest slot that master owns. One field per source shard (named by the lowest
//! slot the shard owns), its value `<replid> <offset> <db>`: everything of history `replid` up
//! to and including byte `offset` has been applied on that master, and the stream had db
//! `db` selected there. While a snapshot is being loaded the value is `loading <replid>`: a
//! sync that stops then must load the snapshot again.

use std::fmt;

use bytes::Bytes;

use crate::precheck::RESERVED_PREFIX;
use crate::replica::{ReplId, ReplOffset};
use crate::route::{Shard, Slot};

/// Names a source shard in checkpoints: the lowest slot it owns (a failover keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardId(String);

impl ShardId {
    pub fn of(shard: &Shard) -> Self {
        let first = shard.slots.iter().map(|r| r.first).min();
        Self::from_first_slot(first.unwrap_or(Slot::new(0).expect("slot 0")))
    }

    /// The id of the source shard whose lowest slot is `first`.
    pub fn from_first_slot(first: Slot) -> Self {
        ShardId(format!("slots-from-{}", first.get()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One source shard's position on one target master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// A snapshot of history `replid` was being loaded and may be incomplete.
    Loading { replid: ReplId },
    /// Applied up to and including `offset`, with `db` selected in the stream.
    Applied {
        replid: ReplId,
        offset: ReplOffset,
        db: u32,
    },
}

impl Checkpoint {
    pub fn encode(&self) -> String {
        match self {
            Checkpoint::Loading { replid } => format!("loading {replid}"),
            Checkpoint::Applied { replid, offset, db } => format!("{replid} {offset} {db}"),
        }
    }

    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let parts: Vec<&str> = text.split(' ').collect();
        match parts.as_slice() {
            ["loading", replid] => Some(Checkpoint::Loading {
                replid: ReplId::parse(replid.as_bytes()).ok()?,
            }),
            [replid, offset, db] => Some(Checkpoint::Applied {
                replid: ReplId::parse(replid.as_bytes()).ok()?,
                offset: ReplOffset::new(offset.parse().ok()?),
                db: db.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The checkpoint key of the target master whose lowest slot is `slot`.
pub fn checkpoint_key(slot: Slot) -> Bytes {
    Bytes::from(format!("{RESERVED_PREFIX}{{{}}}:checkpoint", tag_for(slot)))
}

/// The checkpoint key of a target master.
pub fn checkpoint_key_of(shard: &Shard) -> Bytes {
    let first = shard.slots.iter().map(|r| r.first).min();
    checkpoint_key(first.unwrap_or(Slot::new(0).expect("slot 0")))
}

/// The sorted set of expiries held for source shard `shard` on the target master whose
/// checkpoint key is `checkpoint` (same slot; see `hold`).
pub fn held_key(checkpoint: &[u8], shard: &ShardId) -> Bytes {
    let base = checkpoint
        .strip_suffix(b":checkpoint")
        .unwrap_or(checkpoint);
    let mut key = base.to_vec();
    key.extend_from_slice(b":held:");
    key.extend_from_slice(shard.as_str().as_bytes());
    Bytes::from(key)
}

/// The hash of script bodies (field: sha) kept beside the checkpoint of the target master
/// whose lowest slot is `slot`: an `EVALSHA` read after a restart finds its body there.
pub fn scripts_key(slot: Slot) -> Bytes {
    Bytes::from(format!("{RESERVED_PREFIX}{{{}}}:scripts", tag_for(slot)))
}

/// The script store of a target master.
pub fn scripts_key_of(shard: &Shard) -> Bytes {
    let first = shard.slots.iter().map(|r| r.first).min();
    scripts_key(first.unwrap_or(Slot::new(0).expect("slot 0")))
}

/// The heartbeat key ferry writes on the source master whose lowest slot is `slot`.
pub fn heartbeat_key(slot: Slot) -> Bytes {
    Bytes::from(format!("{RESERVED_PREFIX}{{{}}}:heartbeat", tag_for(slot)))
}

/// A short hash tag whose slot is `slot`.
pub fn tag_for(slot: Slot) -> String {
    (0u32..)
        .map(|n| format!("t{n}"))
        .find(|tag| Slot::of_key(tag.as_bytes()) == slot)
        .expect("every slot has a tag")
}

/// Deletes every key of ferry's (checkpoints, heartbeats, held expiries, whose keys get their
/// own expiry back first) on every master of the deployment
/// at `endpoint`, after a cutover. Returns how many were deleted.
pub async fn cleanup(
    endpoint: &crate::endpoint::Endpoint,
    timeout: std::time::Duration,
) -> Result<u64, crate::apply::ApplyError> {
    use crate::resp::Frame;
    let deployment = crate::deployment::Deployment::discover(endpoint, timeout).await?;
    let db = endpoint.db.filter(|_| !deployment.topology.cluster);
    let pattern = format!("{RESERVED_PREFIX}*");
    let mut deleted = 0;
    for shard in &deployment.topology.shards {
        let mut link = crate::apply::connect(&shard.master, endpoint, db, timeout)
            .await
            .map_err(|source| crate::apply::ApplyError::Link {
                attempts: 1,
                source,
            })?;
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let reply = link
                .call(&[
                    &b"SCAN"[..],
                    &cursor,
                    b"MATCH",
                    pattern.as_bytes(),
                    b"COUNT",
                    b"1000",
                ])
                .await
                .map_err(|source| crate::apply::ApplyError::Link {
                    attempts: 1,
                    source,
                })?;
            let Frame::Array(Some(parts)) = reply else {
                break;
            };
            let [Frame::Bulk(Some(next)), Frame::Array(Some(keys))] = parts.as_slice() else {
                break;
            };
            let keys: Vec<&Bytes> = keys
                .iter()
                .filter_map(|k| match k {
                    Frame::Bulk(Some(k)) => Some(k),
                    _ => None,
                })
                .collect();
            // Held expiries go back to their keys before their record goes.
            for key in keys
                .iter()
                .filter(|k| memchr::memmem::find(k, b":held:").is_some())
            {
                while super::writer::release(&mut link, key, 0, true)
                    .await
                    .map_err(|source| crate::apply::ApplyError::Link {
                        attempts: 1,
                        source,
                    })?
                    > 0
                {}
            }
            for key in &keys {
                link.queue(&[&b"UNLINK"[..], key]);
                deleted += 1;
            }
            if !keys.is_empty() {
                link.exchange()
                    .await
                    .map_err(|source| crate::apply::ApplyError::Link {
                        attempts: 1,
                        source,
                    })?;
            }
            if next.as_ref() == b"0" {
                break;
            }
            cursor = next.clone();
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_in_the_slot_they_name() {
        for n in [0u16, 1, 5460, 5461, 16383] {
            let slot = Slot::new(n).unwrap();
            assert_eq!(Slot::of_key(&checkpoint_key(slot)), slot);
            assert_eq!(Slot::of_key(&heartbeat_key(slot)), slot);
            let held = held_key(&checkpoint_key(slot), &ShardId::from_first_slot(slot));
            assert_eq!(Slot::of_key(&held), slot);
            assert!(held.ends_with(format!(":held:slots-from-{n}").as_bytes()));
        }
    }

    #[test]
    fn checkpoints_round_trip() {
        let replid = ReplId::parse(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        for checkpoint in [
            Checkpoint::Loading { replid },
            Checkpoint::Applied {
                replid,
                offset: ReplOffset::new(123456),
                db: 3,
            },
        ] {
            assert_eq!(
                Checkpoint::parse(checkpoint.encode().as_bytes()),
                Some(checkpoint)
            );
        }
        assert_eq!(Checkpoint::parse(b"nonsense"), None);
        assert_eq!(Checkpoint::parse(b"loading short"), None);
    }
}
