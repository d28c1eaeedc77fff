//! Where bytes leave: writes routed to the target master that owns their slot, pipelined,
//! every reply checked, redirections and transient refusals retried without reordering.
//!
//! The unit of work is a [`WriteGroup`]: the commands that rebuild one key, or one part of a
//! big key, idempotent as a whole (it begins with `DEL`, is a `RESTORE ... REPLACE`, or is a
//! part that writes the same elements at the same place however often it runs).
//! [`Applier::apply`] sends a batch of groups, one pipeline per master, all masters at once; a
//! group that meets `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING` or `OOM` is sent
//! again, whole, after the topology is refreshed or after a backoff. Every later group of the
//! same slot in that pipeline is sent again with it, so a key's writes are never applied out of
//! order. Any other error reply stops the apply with the key, the command and the reason.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use crate::deployment::{Deployment, DiscoverError};
use crate::link::{Link, LinkError};
use crate::resp::{decode_command, Command, Frame, Limits};
use crate::route::{NodeAddr, Slot};

/// The commands that rebuild one key, or one part of a key too big to hold whole; applying
/// the whole group again leaves the key as one application does (given the parts before it).
///
/// The commands are held encoded, as they go on the wire: a snapshot's `RESTORE`s are written
/// once, by the sink, and the applier hands these bytes to the socket as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteGroup {
    key: KeyPlace,
    /// The commands, as RESP arrays of bulk strings, one after the other.
    encoded: Bytes,
    count: usize,
    pub part: Part,
    /// The key's slot, computed while the key is at hand (routing reads it often, from
    /// another thread).
    slot: Slot,
}

/// Where a group's key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPlace {
    /// Bytes of its own.
    Own(Bytes),
    /// Within the group's encoded commands: from this index, this long.
    Within { start: usize, len: usize },
}

/// Which part of its key's writes a [`WriteGroup`] holds. The parts of one key must be applied
/// in order: a later part is only idempotent once the parts before it are in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Everything the key needs.
    Whole,
    /// The first part (it clears the key) of several.
    First,
    /// A part between the first and the last.
    Middle,
    /// The last part (expiry included).
    Last,
}

impl WriteGroup {
    /// A group that rebuilds its key whole.
    pub fn new(key: impl Into<Bytes>, commands: Vec<Command>) -> Self {
        Self::part(key, commands, Part::Whole)
    }

    pub fn part(key: impl Into<Bytes>, commands: Vec<Command>, part: Part) -> Self {
        let mut encoded = BytesMut::with_capacity(commands.iter().map(Command::encoded_len).sum());
        for command in &commands {
            command.encode(&mut encoded);
        }
        Self::encoded(key, encoded.freeze(), commands.len(), part)
    }

    /// A group of `count` commands already encoded, one after the other, in `encoded`.
    pub fn encoded(key: impl Into<Bytes>, encoded: Bytes, count: usize, part: Part) -> Self {
        let key = key.into();
        WriteGroup {
            slot: Slot::of_key(&key),
            key: KeyPlace::Own(key),
            encoded,
            count,
            part,
        }
    }

    /// A group of `count` commands already encoded in `encoded`, whose key is the bytes of
    /// `encoded` in `key` (no copy of it is kept).
    pub fn encoded_with_key_at(
        encoded: Bytes,
        key: std::ops::Range<usize>,
        count: usize,
        part: Part,
    ) -> Self {
        WriteGroup {
            slot: Slot::of_key(&encoded[key.clone()]),
            key: KeyPlace::Within {
                start: key.start,
                len: key.len(),
            },
            encoded,
            count,
            part,
        }
    }

    /// The key the group writes.
    pub fn key(&self) -> &[u8] {
        match &self.key {
            KeyPlace::Own(key) => key,
            KeyPlace::Within { start, len } => &self.encoded[*start..*start + *len],
        }
    }

    /// The commands, as they are sent.
    pub fn encoded_bytes(&self) -> &Bytes {
        &self.encoded
    }

    /// How many commands the group holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The commands, decoded again (for redirections and messages, not the common path).
    pub fn commands(&self) -> Vec<Command> {
        let mut rest = self.encoded.clone();
        let mut commands = Vec::with_capacity(self.count);
        while let Ok(Some((command, used))) = decode_command(&rest, &Limits::default()) {
            commands.push(command);
            rest = rest.slice(used..);
        }
        debug_assert_eq!(
            commands.len(),
            self.count,
            "a group's commands decode whole"
        );
        commands
    }

    /// The group begins its key's writes: nothing of the key must be applied before it.
    pub fn starts_key(&self) -> bool {
        matches!(self.part, Part::Whole | Part::First)
    }

    /// The key is complete once this group is applied.
    pub fn ends_key(&self) -> bool {
        matches!(self.part, Part::Whole | Part::Last)
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }
}

/// Tunables of an [`Applier`].
#[derive(Debug, Clone)]
pub struct ApplyConfig {
    pub connect_timeout: Duration,
    /// Redirections (`MOVED`/`ASK`) one group may meet before the apply gives up.
    pub max_redirects: u32,
    /// Consecutive failed rounds on lost connections before the apply gives up, once
    /// `failover_wait` has passed too.
    pub max_link_failures: u32,
    /// How long a target master that does not answer is retried: long enough for its cluster
    /// to detect the failure and promote a replica (`cluster-node-timeout` and the election).
    pub failover_wait: Duration,
    /// First and longest pause before resending refused writes (`OOM`, `LOADING`, ...).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            connect_timeout: Duration::from_secs(5),
            max_redirects: 16,
            max_link_failures: 10,
            failover_wait: Duration::from_secs(60),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Why writes could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("target rejected {command} for key {key}: {reply}")]
    Rejected {
        key: String,
        command: String,
        reply: String,
    },
    /// A script the source replicated verbatim cannot be applied exactly once.
    #[error("cannot apply script {sha}: {reason}")]
    Script { sha: String, reason: String },
    #[error("key {key} was redirected {count} times; the target's slots keep moving")]
    Redirects { key: String, count: u32 },
    #[error("no target master serves slot {slot} (key {key})")]
    Uncovered { key: String, slot: Slot },
    #[error("target unreachable after {attempts} attempts: {source}")]
    Link { attempts: u32, source: LinkError },
    #[error("refreshing the target topology: {0}")]
    Discover(#[from] DiscoverError),
    /// A target master's checkpoint is behind what it acknowledged (a failover lost its last
    /// writes): the stream must be read again from the checkpoint.
    #[error("target master {node} lost acknowledged writes (checkpoint {found}, expected {expected}); resuming from its checkpoint")]
    CheckpointBehind {
        node: String,
        found: String,
        expected: String,
    },
}

/// Counters of what an [`Applier`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub groups: u64,
    pub commands: u64,
    pub bytes: u64,
    pub redirects: u64,
    /// Groups sent again after a refusal (`OOM`, `LOADING`, `TRYAGAIN`, lost connection).
    pub retries: u64,
    pub topology_refreshes: u64,
}

impl ApplyStats {
    /// Adds another applier's counters to these.
    pub fn add(&mut self, other: &ApplyStats) {
        self.groups += other.groups;
        self.commands += other.commands;
        self.bytes += other.bytes;
        self.redirects += other.redirects;
        self.retries += other.retries;
        self.topology_refreshes += other.topology_refreshes;
    }
}

/// Where a group goes in the next round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// The master the topology says owns the slot.
    Owner,
    /// The node an `ASK` named, with `ASKING` before each command.
    Ask(NodeAddr),
}

struct Pending {
    group: WriteGroup,
    route: Route,
    redirects: u32,
}

/// Connects to a target node, selecting `db` (standalone targets only).
pub(crate) async fn connect(
    addr: &NodeAddr,
    endpoint: &crate::endpoint::Endpoint,
    db: Option<u32>,
    timeout: Duration,
) -> Result<Link, LinkError> {
    let mut link = Link::connect(&addr.host, addr.port, endpoint, timeout).await?;
    if let Some(db) = db.filter(|&db| db != 0) {
        if let Frame::Error(e) = link.call(&["SELECT", &db.to_string()]).await? {
            return Err(LinkError::Select {
                addr: link.addr().to_string(),
                db,
                reply: String::from_utf8_lossy(&e).into_owned(),
            });
        }
    }
    Ok(link)
}

/// What one reply says about the group it belongs to.
enum Verdict {
    Ok,
    Moved,
    Ask(NodeAddr),
    /// Refused for now: try again after a pause. `refresh` when the topology may have changed.
    Later {
        refresh: bool,
        reason: String,
    },
    /// Refused for good: the error reply and the command that got it.
    Fatal {
        reply: String,
        command: String,
    },
}

/// Applies write groups to one target deployment.
pub struct Applier {
    target: Deployment,
    links: HashMap<NodeAddr, Link>,
    config: ApplyConfig,
    stats: ApplyStats,
}

impl Applier {
    pub fn new(target: Deployment, config: ApplyConfig) -> Self {
        Applier {
            target,
            links: HashMap::new(),
            config,
            stats: ApplyStats::default(),
        }
    }

    pub fn stats(&self) -> &ApplyStats {
        &self.stats
    }

    pub fn target(&self) -> &Deployment {
        &self.target
    }

    /// Applies every group, in order per slot; returns once all are acknowledged.
    pub async fn apply(&mut self, groups: Vec<WriteGroup>) -> Result<(), ApplyError> {
        self.stats.groups += groups.len() as u64;
        let mut pending: Vec<Pending> = groups
            .into_iter()
            .map(|group| Pending {
                group,
                route: Route::Owner,
                redirects: 0,
            })
            .collect();
        let mut backoff = self.config.min_backoff;
        let mut link_failures = 0;
        while !pending.is_empty() {
            let round = self.round(pending).await?;
            pending = round.retry;
            let link_lost = round.link_error.is_some();
            if let Some(source) = round.link_error {
                link_failures += 1;
                if link_failures > self.config.max_link_failures {
                    return Err(ApplyError::Link {
                        attempts: link_failures,
                        source,
                    });
                }
                tracing::warn!(error = %source, attempt = link_failures, "target link lost, resending");
            } else {
                link_failures = 0;
            }
            if round.refresh {
                self.refresh().await?;
            }
            if let Some(reason) = round.wait {
                tracing::warn!(%reason, pause = ?backoff, groups = pending.len(), "target refused writes, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            } else if link_lost {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            } else {
                backoff = self.config.min_backoff;
            }
        }
        Ok(())
    }

    /// Rediscovers the target's slots from its seed endpoint.
    async fn refresh(&mut self) -> Result<(), ApplyError> {
        let fresh =
            Deployment::discover(&self.target.endpoint, self.config.connect_timeout).await?;
        self.stats.topology_refreshes += 1;
        self.links
            .retain(|addr, _| fresh.topology.shards.iter().any(|s| &s.master == addr));
        self.target = fresh;
        Ok(())
    }

    /// Sends every pending group once; says what to send again.
    async fn round(&mut self, pending: Vec<Pending>) -> Result<Round, ApplyError> {
        // Group by destination, keeping the original order within each: each group's node
        // first, then every node's list made at its final size.
        let mut nodes_of = Vec::with_capacity(pending.len());
        let mut addrs: Vec<NodeAddr> = Vec::new();
        for p in &pending {
            let index = {
                let addr = match &p.route {
                    Route::Ask(addr) => addr,
                    Route::Owner => {
                        let slot = p.group.slot();
                        match self.target.topology.owner(slot) {
                            Some(shard) => &shard.master,
                            None => {
                                return Err(ApplyError::Uncovered {
                                    key: printable(p.group.key()),
                                    slot,
                                })
                            }
                        }
                    }
                };
                match addrs.iter().position(|a| a == addr) {
                    Some(index) => index,
                    None => {
                        addrs.push(addr.clone());
                        addrs.len() - 1
                    }
                }
            };
            nodes_of.push(index);
        }
        let mut sizes = vec![0usize; addrs.len()];
        for &index in &nodes_of {
            sizes[index] += 1;
        }
        let mut by_node: Vec<(NodeAddr, Vec<Pending>)> = addrs
            .into_iter()
            .zip(sizes)
            .map(|(addr, size)| (addr, Vec::with_capacity(size)))
            .collect();
        for (p, index) in pending.into_iter().zip(nodes_of) {
            by_node[index].1.push(p);
        }

        let mut tasks = JoinSet::new();
        let nodes = by_node.len();
        for (index, (addr, list)) in by_node.into_iter().enumerate() {
            let link = self.links.remove(&addr);
            let endpoint = self.target.endpoint.clone();
            let db = self
                .target
                .endpoint
                .db
                .filter(|_| !self.target.topology.cluster);
            let timeout = self.config.connect_timeout;
            // The groups' bytes go to the socket as they are; a group sent after an ASK is
            // encoded again, with ASKING before each command.
            let mut asked = Vec::new();
            let mut count = 0;
            let mut written = 0u64;
            for p in &list {
                if matches!(p.route, Route::Ask(_)) {
                    let mut bytes = BytesMut::new();
                    for command in p.group.commands() {
                        Command::new("ASKING").encode(&mut bytes);
                        command.encode(&mut bytes);
                        count += 2;
                    }
                    asked.push(bytes.freeze());
                } else {
                    count += p.group.count;
                }
                self.stats.bytes += p.group.encoded.len() as u64;
                written += p.group.count as u64;
            }
            self.stats.commands += written;
            tasks.spawn(async move {
                let sent = async {
                    let mut link = match link {
                        Some(link) => link,
                        None => connect(&addr, &endpoint, db, timeout).await?,
                    };
                    let mut asked = asked.iter();
                    let parts: Vec<&[u8]> = list
                        .iter()
                        .map(|p| match p.route {
                            Route::Ask(_) => asked.next().map_or(&[][..], |b| &b[..]),
                            Route::Owner => &p.group.encoded[..],
                        })
                        .collect();
                    let unusual = link.exchange_parts(&parts, count).await?;
                    Ok::<_, LinkError>((link, unusual))
                }
                .await;
                (index, addr, list, sent)
            });
        }
        // Per node, in the order above.
        let mut results: Vec<Option<Sent>> = (0..nodes).map(|_| None).collect();
        let mut link_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (index, addr, list, sent) = joined.expect("apply task panicked");
            match sent {
                Ok((link, unusual)) => {
                    self.links.insert(addr, link);
                    results[index] = Some((list, Some(unusual)));
                }
                Err(e) => {
                    link_error = Some(e);
                    results[index] = Some((list, None));
                }
            }
        }

        let mut round = Round {
            retry: Vec::new(),
            refresh: false,
            wait: None,
            link_error,
        };
        let mut retry_order = Vec::new();
        for (list, replies) in results.into_iter().flatten() {
            let Some(replies) = replies else {
                // The connection failed: everything it carried goes again, after a refresh.
                round.refresh = true;
                self.stats.retries += list.len() as u64;
                retry_order.extend(list);
                continue;
            };
            let mut replies = replies.into_iter().peekable();
            let mut sent = 0;
            let mut tainted: Vec<Slot> = Vec::new();
            for mut p in list {
                let asking = matches!(p.route, Route::Ask(_));
                let mut verdict = Verdict::Ok;
                for index in 0..p.group.count {
                    if asking {
                        // ASKING's own reply.
                        sent += 1;
                    }
                    let at = sent;
                    sent += 1;
                    while replies.next_if(|(i, _)| *i < at).is_some() {}
                    let Some((_, reply)) = replies.next_if(|(i, _)| *i == at) else {
                        continue;
                    };
                    if let (Verdict::Ok, Frame::Error(message)) = (&verdict, &reply) {
                        let command = p.group.commands().into_iter().nth(index);
                        let name = command.as_ref().map_or(&b"?"[..], Command::name);
                        verdict = classify(message, name, p.group.key());
                    }
                }
                let slot = p.group.slot();
                if matches!(verdict, Verdict::Ok) && !tainted.contains(&slot) {
                    continue;
                }
                tainted.push(slot);
                match verdict {
                    Verdict::Ok => p.route = Route::Owner,
                    Verdict::Moved => {
                        round.refresh = true;
                        p.route = Route::Owner;
                        p.redirects += 1;
                        self.stats.redirects += 1;
                    }
                    Verdict::Ask(addr) => {
                        p.route = Route::Ask(addr);
                        p.redirects += 1;
                        self.stats.redirects += 1;
                    }
                    Verdict::Later { refresh, reason } => {
                        round.refresh |= refresh;
                        round.wait = Some(reason);
                        p.route = Route::Owner;
                        self.stats.retries += 1;
                    }
                    Verdict::Fatal { reply, command } => {
                        return Err(ApplyError::Rejected {
                            key: printable(p.group.key()),
                            command,
                            reply,
                        })
                    }
                }
                if p.redirects > self.config.max_redirects {
                    return Err(ApplyError::Redirects {
                        key: printable(p.group.key()),
                        count: p.redirects,
                    });
                }
                retry_order.push(p);
            }
        }
        round.retry = retry_order;
        Ok(round)
    }
}

/// A node's groups after a round, and the replies that were not +OK by their place among the
/// commands sent (`None` when the connection failed).
type Sent = (Vec<Pending>, Option<Vec<(usize, Frame)>>);

struct Round {
    retry: Vec<Pending>,
    refresh: bool,
    /// Why the next round must wait, if it must.
    wait: Option<String>,
    link_error: Option<LinkError>,
}

/// What an error reply means for the group that got it.
fn classify(message: &Bytes, command: &[u8], key: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(message);
    let fatal = |reply: String| Verdict::Fatal {
        reply,
        command: String::from_utf8_lossy(command).to_ascii_uppercase(),
    };
    let code = text.split(' ').next().unwrap_or_default();
    match code {
        "MOVED" => Verdict::Moved,
        "ASK" => match text.split(' ').nth(2).and_then(parse_addr) {
            Some(addr) => Verdict::Ask(addr),
            None => fatal(text.into_owned()),
        },
        "TRYAGAIN" | "LOADING" | "BUSY" | "MASTERDOWN" => Verdict::Later {
            refresh: false,
            reason: text.into_owned(),
        },
        "CLUSTERDOWN" => Verdict::Later {
            refresh: true,
            reason: text.into_owned(),
        },
        "OOM" => Verdict::Later {
            refresh: false,
            reason: format!(
                "{text} (key {}, {}); raise maxmemory on the target",
                printable(key),
                String::from_utf8_lossy(command).to_ascii_uppercase()
            ),
        },
        _ => fatal(text.into_owned()),
    }
}

/// `host:port` as a redirection names it.
fn parse_addr(text: &str) -> Option<NodeAddr> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(NodeAddr::new(host, port.parse().ok()?))
}

/// A key for messages: as is when it is printable UTF-8, escaped otherwise.
pub fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => key.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(reply: &str) -> Verdict {
        classify(&Bytes::from(reply.to_string()), b"SET", b"k")
    }

    #[test]
    fn error_replies_are_classified() {
        assert!(matches!(
            verdict("MOVED 3999 127.0.0.1:6381"),
            Verdict::Moved
        ));
        match verdict("ASK 3999 127.0.0.1:6381") {
            Verdict::Ask(addr) => assert_eq!(addr, NodeAddr::new("127.0.0.1", 6381)),
            _ => panic!("ASK not recognised"),
        }
        assert!(matches!(
            verdict("TRYAGAIN Multiple keys request during rehashing of slot"),
            Verdict::Later { refresh: false, .. }
        ));
        assert!(matches!(
            verdict("CLUSTERDOWN The cluster is down"),
            Verdict::Later { refresh: true, .. }
        ));
        match verdict("OOM command not allowed when used memory > 'maxmemory'.") {
            Verdict::Later { reason, .. } => assert!(reason.contains("key k, SET"), "{reason}"),
            _ => panic!("OOM not retried"),
        }
        match verdict("WRONGTYPE Operation against a key holding the wrong kind of value") {
            Verdict::Fatal { command, .. } => assert_eq!(command, "SET"),
            _ => panic!("WRONGTYPE retried"),
        }
    }

    #[test]
    fn keys_print_escaped_when_binary() {
        assert_eq!(printable(b"user:1"), "user:1");
        assert_eq!(printable(b"a\x00\xff\n"), "a\\x00\\xff\\n");
    }
}
