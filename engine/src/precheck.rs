//! Everything that can be checked before a sync starts, each item pass, warn or fail with how
//! to fix it: connectivity and auth on every node, replication permission, server builds and
//! the RESTORE-or-rewrite decision, slot coverage, an empty target, the target's eviction
//! policy and memory headroom, backlog sizing, modules, function libraries the target must
//! hold, and that source and target differ.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use crate::deployment::{parse_info, Deployment, DiscoverError};
use crate::endpoint::Endpoint;
use crate::link::{Link, LinkError};
use crate::resp::Frame;
use crate::route::{NodeAddr, Slot};

/// Keys under this prefix belong to ferry (checkpoints, heartbeats) and do not make a target
/// "non-empty".
pub const RESERVED_PREFIX: &str = "__ferry__:";

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it; empty when it passed.
    pub fix: String,
}

/// Every item, in the order they were checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    /// Whether a sync may start: no item failed.
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.status != Status::Fail)
    }

    pub fn item(&self, name: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.name == name)
    }
}

/// What happens to keys that already exist on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// A non-empty target blocks the sync.
    #[default]
    Fail,
    /// Keys present on the target are overwritten.
    Replace,
}

/// Options that change what counts as a failure.
#[derive(Debug, Clone)]
pub struct Options {
    pub existing: Existing,
    /// Accept a target whose `maxmemory-policy` may evict keys.
    pub allow_eviction: bool,
    /// The sync follows the stream: a target holding ferry's checkpoints is resumed, not
    /// refused.
    pub resume: bool,
    /// Only the stream is copied (`--mode incr`): the target is expected to hold the data.
    pub stream_only: bool,
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            existing: Existing::Fail,
            allow_eviction: false,
            resume: false,
            stream_only: false,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Facts read from one master.
struct MasterFacts {
    addr: NodeAddr,
    info: HashMap<String, String>,
    config: HashMap<String, String>,
    modules: BTreeSet<String>,
    /// `DBSIZE` less ferry's own keys.
    user_keys: u64,
    /// ferry's checkpoint key, when the master is a target's and holds one.
    reserved_keys: u64,
    /// Function library names (`FUNCTION LIST`): empty on a server without functions, an
    /// error when the server refused the command.
    libraries: Result<BTreeSet<String>, String>,
}

/// Runs every check. Never fails: what could not be checked is a failed item.
pub async fn run(source: &Endpoint, target: &Endpoint, options: &Options) -> Report {
    let mut items = Vec::new();
    let (source_side, target_side) = tokio::join!(
        Side::read("source", source, options.timeout),
        Side::read("target", target, options.timeout)
    );
    items.push(connectivity(&source_side, &target_side));
    let (Ok(source_side), Ok(mut target_side)) = (source_side, target_side) else {
        return Report { items };
    };
    count_held_expiries(&mut target_side, &source_side, target, options.timeout).await;
    items.push(distinct(&source_side, &target_side));
    items.push(replication_permission(source, &source_side, options.timeout).await);
    items.push(versions(&source_side, &target_side));
    items.push(slot_coverage(&source_side, &target_side));
    items.push(target_empty(&target_side, options));
    items.push(eviction_policy(&target_side, options.allow_eviction));
    items.push(memory_headroom(
        &source_side,
        &target_side,
        options.allow_eviction,
    ));
    items.push(backlog(&source_side));
    items.push(modules(&source_side, &target_side));
    items.push(functions(&source_side, &target_side, options));
    Report { items }
}

/// A target master that holds a checkpoint may also hold the sets of expiries a sync of
/// this source holds there (one per source shard, see the sync's `hold`): they are ferry's
/// keys too. A master that cannot be asked keeps its count (the safe side).
async fn count_held_expiries(
    target: &mut Side,
    source: &Side,
    endpoint: &Endpoint,
    timeout: Duration,
) {
    let shards: Vec<crate::sync::ShardId> = source
        .deployment
        .topology
        .shards
        .iter()
        .map(crate::sync::ShardId::of)
        .collect();
    let db = endpoint.db.filter(|_| !target.deployment.topology.cluster);
    for (facts, shard) in target
        .masters
        .iter_mut()
        .zip(&target.deployment.topology.shards)
    {
        if facts.reserved_keys == 0 || facts.user_keys == 0 {
            continue;
        }
        let checkpoint = crate::sync::checkpoint_key_of(shard);
        let mut argv: Vec<bytes::Bytes> = vec![bytes::Bytes::from_static(b"EXISTS")];
        argv.extend(shards.iter().map(|s| crate::sync::held_key(&checkpoint, s)));
        let Ok(mut link) = crate::apply::connect(&facts.addr, endpoint, db, timeout).await else {
            continue;
        };
        let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        if let Ok(Frame::Integer(n)) = link.call(&refs).await {
            let held = (n.max(0) as u64).min(facts.user_keys);
            facts.user_keys -= held;
            facts.reserved_keys += held;
        }
    }
}

/// The checks that concern the target alone, for a source that is an RDB file:
/// connectivity, slot coverage, an empty target and the eviction policy.
pub async fn run_target(target: &Endpoint, options: &Options) -> Report {
    let side = Side::read("target", target, options.timeout).await;
    let mut items = Vec::new();
    match &side {
        Ok(t) => items.push(pass(
            "connectivity",
            format!("{} target nodes answer", t.nodes),
        )),
        Err(e) => items.push(problem(
            "connectivity",
            Status::Fail,
            format!("{}: {}", e.side, e.message),
            connectivity_fix([e]),
        )),
    }
    let Ok(target_side) = side else {
        return Report { items };
    };
    let uncovered = target_side.deployment.topology.uncovered();
    items.push(if uncovered == 0 {
        pass("slot-coverage", "every target slot is served")
    } else {
        problem(
            "slot-coverage",
            Status::Fail,
            format!("{uncovered} target slots have no master"),
            "assign every slot (CLUSTER ADDSLOTS) and wait for cluster_state:ok",
        )
    });
    items.push(target_empty(&target_side, options));
    items.push(eviction_policy(&target_side, options.allow_eviction));
    Report { items }
}

/// One side: its discovered deployment, facts from every master, and which nodes answered.
struct Side {
    deployment: Deployment,
    masters: Vec<MasterFacts>,
    nodes: usize,
}

#[derive(Debug)]
struct SideError {
    side: &'static str,
    message: String,
    /// The failure was TLS (a handshake, a certificate): the fix is in the TLS settings.
    tls: bool,
}

/// What to do about failed connections, TLS ones first.
fn connectivity_fix<'a>(errors: impl IntoIterator<Item = &'a SideError>) -> String {
    const FIX: &str =
        "check the URL, the password (user:password@) and that every node is reachable from this host";
    let tls: Vec<&str> = errors
        .into_iter()
        .filter(|e| e.tls)
        .map(|e| e.side)
        .collect();
    match tls.first() {
        None => FIX.to_string(),
        Some(side) => format!(
            "tls: give the CA that signed the {side}'s certificates (--{side}-tls-ca), a client \
             certificate and key if it requires them (--{side}-tls-cert/--{side}-tls-key), \
             --{side}-tls-server-name if its certificates name a host other than the nodes' \
             addresses; and check that the port serves tls"
        ),
    }
}

impl Side {
    async fn read(
        side: &'static str,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Side, SideError> {
        let fail = |message: String| SideError {
            side,
            message,
            tls: false,
        };
        let link_fail = |e: LinkError| SideError {
            side,
            message: e.to_string(),
            tls: e.is_tls(),
        };
        let deployment =
            Deployment::discover(endpoint, timeout)
                .await
                .map_err(|e: DiscoverError| match e {
                    DiscoverError::Link(e) => link_fail(e),
                    e => fail(e.to_string()),
                })?;
        let mut masters = Vec::new();
        let mut nodes = 0;
        for shard in &deployment.topology.shards {
            for replica in &shard.replicas {
                let mut link = connect(endpoint, replica, timeout)
                    .await
                    .map_err(link_fail)?;
                ping(&mut link).await.map_err(fail)?;
                nodes += 1;
            }
            let mut link = connect(endpoint, &shard.master, timeout)
                .await
                .map_err(link_fail)?;
            ping(&mut link).await.map_err(fail)?;
            nodes += 1;
            // A standalone side's keys are those of the URL's db, where the sync reads or
            // writes them (and keeps its checkpoint).
            if let Some(db) = endpoint.db.filter(|_| !deployment.topology.cluster) {
                if let Frame::Error(e) = link
                    .call(&["SELECT", &db.to_string()])
                    .await
                    .map_err(link_fail)?
                {
                    return Err(fail(format!(
                        "{}: SELECT {db}: {}",
                        shard.master,
                        String::from_utf8_lossy(&e)
                    )));
                }
            }
            // Only a target holds ferry's checkpoints (and the script bodies kept beside
            // them); the sync reads each master's under one name, so that name is all there
            // is to look for.
            let checkpoint = (side == "target").then(|| {
                (
                    crate::sync::checkpoint_key_of(shard),
                    crate::sync::scripts_key_of(shard),
                )
            });
            let functions = deployment.server.holds_functions();
            masters.push(
                MasterFacts::read(&mut link, shard.master.clone(), checkpoint, functions)
                    .await
                    .map_err(fail)?,
            );
        }
        Ok(Side {
            deployment,
            masters,
            nodes,
        })
    }
}

async fn connect(
    endpoint: &Endpoint,
    addr: &NodeAddr,
    timeout: Duration,
) -> Result<Link, LinkError> {
    Link::connect(&addr.host, addr.port, endpoint, timeout).await
}

async fn ping(link: &mut Link) -> Result<(), String> {
    match link.call(&["PING"]).await.map_err(|e| e.to_string())? {
        Frame::SimpleString(_) => Ok(()),
        Frame::Error(e) => Err(format!(
            "{} refused PING: {}",
            link.addr(),
            String::from_utf8_lossy(&e)
        )),
        other => Err(format!("{} answered PING with {other:?}", link.addr())),
    }
}

/// A command's reply as text; error replies as `Err`.
async fn text(link: &mut Link, argv: &[&str]) -> Result<String, String> {
    match link.call(argv).await.map_err(|e| e.to_string())? {
        Frame::Bulk(Some(b)) | Frame::SimpleString(b) => {
            Ok(String::from_utf8_lossy(&b).into_owned())
        }
        Frame::Integer(n) => Ok(n.to_string()),
        Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
        other => Ok(format!("{other:?}")),
    }
}

impl MasterFacts {
    /// The master's facts; `checkpoint`, the names of its checkpoint key and its script store
    /// where it may hold them.
    async fn read(
        link: &mut Link,
        addr: NodeAddr,
        checkpoint: Option<(bytes::Bytes, bytes::Bytes)>,
        functions: bool,
    ) -> Result<Self, String> {
        let info = parse_info(
            &text(link, &["INFO", "all"])
                .await
                .map_err(|e| format!("{addr}: INFO: {e}"))?,
        );
        let mut config = HashMap::new();
        for name in [
            "maxmemory",
            "maxmemory-policy",
            "repl-backlog-size",
            "client-output-buffer-limit",
        ] {
            // Managed services may rename or forbid CONFIG: those items then say so.
            if let Ok(Frame::Array(Some(pairs))) = link.call(&["CONFIG", "GET", name]).await {
                for pair in pairs.chunks(2) {
                    if let [Frame::Bulk(Some(k)), Frame::Bulk(Some(v))] = pair {
                        config.insert(
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
            }
        }
        let mut modules = BTreeSet::new();
        if let Ok(Frame::Array(Some(list))) = link.call(&["MODULE", "LIST"]).await {
            for module in list {
                if let Frame::Array(Some(fields)) = module {
                    if let Some(Frame::Bulk(Some(name))) = fields.get(1) {
                        modules.insert(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
        }
        let total: u64 = text(link, &["DBSIZE"])
            .await
            .map_err(|e| format!("{addr}: DBSIZE: {e}"))?
            .parse()
            .unwrap_or(0);
        let mut exists = async |key: &[u8]| match link
            .call(&[&b"EXISTS"[..], key])
            .await
            .map_err(|e| e.to_string())?
        {
            Frame::Integer(n) => Ok(n.max(0) as u64),
            other => Err(format!("{addr}: unexpected EXISTS reply {other:?}")),
        };
        let (reserved, scripts) = match checkpoint {
            Some((key, scripts)) if total > 0 => (exists(&key).await?, exists(&scripts).await?),
            _ => (0, 0),
        };
        let libraries = if functions {
            crate::sync::library_names_on(link)
                .await
                .map(|names| {
                    names
                        .iter()
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .collect()
                })
                .map_err(|e| format!("{addr}: FUNCTION LIST: {e}"))
        } else {
            Ok(BTreeSet::new())
        };
        Ok(MasterFacts {
            addr,
            info,
            config,
            modules,
            user_keys: total.saturating_sub(reserved + scripts),
            reserved_keys: reserved,
            libraries,
        })
    }

    fn number(&self, field: &str) -> u64 {
        self.info
            .get(field)
            .or_else(|| self.config.get(field))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn pass(name: &'static str, detail: impl Into<String>) -> Item {
    Item {
        name,
        status: Status::Pass,
        detail: detail.into(),
        fix: String::new(),
    }
}

fn problem(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Item {
    Item {
        name,
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn connectivity(source: &Result<Side, SideError>, target: &Result<Side, SideError>) -> Item {
    match (source, target) {
        (Ok(s), Ok(t)) => pass(
            "connectivity",
            format!("{} source and {} target nodes answer", s.nodes, t.nodes),
        ),
        _ => {
            let errors: Vec<String> = [source.as_ref().err(), target.as_ref().err()]
                .into_iter()
                .flatten()
                .map(|e| format!("{}: {}", e.side, e.message))
                .collect();
            problem(
                "connectivity",
                Status::Fail,
                errors.join("; "),
                connectivity_fix(
                    [source.as_ref().err(), target.as_ref().err()]
                        .into_iter()
                        .flatten(),
                ),
            )
        }
    }
}

fn run_ids(side: &Side) -> BTreeSet<String> {
    side.masters
        .iter()
        .filter_map(|m| m.info.get("run_id").cloned())
        .collect()
}

fn distinct(source: &Side, target: &Side) -> Item {
    let shared: Vec<String> = run_ids(source)
        .intersection(&run_ids(target))
        .cloned()
        .collect();
    if shared.is_empty() {
        pass("distinct", "source and target are different servers")
    } else {
        problem(
            "distinct",
            Status::Fail,
            format!(
                "source and target share {} server(s) (run_id {})",
                shared.len(),
                shared[0]
            ),
            "point --target at another deployment",
        )
    }
}

async fn replication_permission(endpoint: &Endpoint, source: &Side, timeout: Duration) -> Item {
    let name = "replication-permission";
    let (major, _, _) = source.deployment.server.version;
    let Some(user) = endpoint.credentials.as_ref().and_then(|c| c.user.clone()) else {
        return pass(name, "default user (no ACL user given)");
    };
    if major < 7 {
        return problem(
            name,
            Status::Warn,
            format!("cannot dry-run ACLs on {}", source.deployment.server),
            format!("make sure user {user} may run PSYNC, REPLCONF and PING"),
        );
    }
    let master = &source.deployment.topology.shards[0].master;
    let mut link = match connect(endpoint, master, timeout).await {
        Ok(link) => link,
        Err(e) => {
            return problem(
                name,
                Status::Fail,
                e.to_string(),
                "check connectivity first",
            )
        }
    };
    for argv in [["PSYNC", "?", "-1"], ["REPLCONF", "capa", "eof"]] {
        let mut command = vec!["ACL", "DRYRUN", user.as_str()];
        command.extend(argv);
        match text(&mut link, &command).await {
            Ok(reply) if reply == "OK" => {}
            Ok(reply) | Err(reply) => {
                return problem(
                    name,
                    Status::Fail,
                    format!("user {user} may not run {}: {reply}", argv[0]),
                    format!("ACL SETUSER {user} +psync +replconf +ping"),
                )
            }
        }
    }
    pass(name, format!("user {user} may run PSYNC and REPLCONF"))
}

fn versions(source: &Side, target: &Side) -> Item {
    let (s, t) = (&source.deployment.server, &target.deployment.server);
    let detail = format!(
        "source {s} (RDB {}), target {t} (RDB {})",
        s.rdb_version(),
        t.rdb_version()
    );
    if s.family == t.family && s.rdb_version() <= t.rdb_version() {
        pass(
            "versions",
            format!("{detail}: values copied as RESTORE payloads"),
        )
    } else {
        problem(
            "versions",
            Status::Warn,
            format!("{detail}: the target cannot read the source's payloads, values are rewritten as commands"),
            "nothing to do; a rewrite is exact but slower than RESTORE",
        )
    }
}

fn slot_coverage(source: &Side, target: &Side) -> Item {
    let (s, t) = (
        source.deployment.topology.uncovered(),
        target.deployment.topology.uncovered(),
    );
    if s == 0 && t == 0 {
        pass("slot-coverage", "every slot is served on both sides")
    } else {
        problem(
            "slot-coverage",
            Status::Fail,
            format!("{s} source and {t} target slots have no master"),
            "assign every slot (CLUSTER ADDSLOTS) and wait for cluster_state:ok",
        )
    }
}

fn target_empty(target: &Side, options: &Options) -> Item {
    let keys: u64 = target.masters.iter().map(|m| m.user_keys).sum();
    if keys == 0 {
        return pass("target-empty", "the target holds no keys");
    }
    let detail = format!("the target holds {keys} keys");
    if options.stream_only {
        return pass(
            "target-empty",
            format!("{detail}; --mode incr applies the stream on top of them"),
        );
    }
    let checkpoints: u64 = target.masters.iter().map(|m| m.reserved_keys).sum();
    if options.resume && checkpoints > 0 {
        return pass(
            "target-empty",
            format!("{detail} and {checkpoints} ferry keys (checkpoints, held expiries): the sync resumes from them"),
        );
    }
    match options.existing {
        Existing::Fail => problem(
            "target-empty",
            Status::Fail,
            detail,
            "empty the target (FLUSHALL on every master) or pass --existing replace",
        ),
        Existing::Replace => problem(
            "target-empty",
            Status::Warn,
            format!("{detail}; keys also on the source will be replaced"),
            "keys only on the target stay; the verifier reports them as extra",
        ),
    }
}

fn eviction_policy(target: &Side, allow: bool) -> Item {
    let evicting: Vec<String> = target
        .masters
        .iter()
        .filter_map(|m| {
            let policy = m.config.get("maxmemory-policy")?;
            (policy != "noeviction").then(|| format!("{} {policy}", m.addr))
        })
        .collect();
    if evicting.is_empty() {
        return pass(
            "eviction-policy",
            "every target master runs maxmemory-policy noeviction",
        );
    }
    let detail = format!("target masters may evict keys: {}", evicting.join(", "));
    if allow {
        problem(
            "eviction-policy",
            Status::Warn,
            detail,
            "keys evicted on the target will be missing; the verifier attributes them to eviction",
        )
    } else {
        problem(
            "eviction-policy",
            Status::Fail,
            detail,
            "CONFIG SET maxmemory-policy noeviction on every target master, or pass --allow-eviction",
        )
    }
}

/// How much of each target master's memory the source's data will need: each source
/// master's dataset spread evenly over its slots, summed per target owner of those slots.
fn memory_headroom(source: &Side, target: &Side, allow_eviction: bool) -> Item {
    let name = "memory-headroom";
    let mut need: HashMap<usize, f64> = HashMap::new();
    for (shard, facts) in source
        .deployment
        .topology
        .shards
        .iter()
        .zip(&source.masters)
    {
        let slots: usize = shard.slots.iter().map(|r| r.len()).sum();
        if slots == 0 {
            continue;
        }
        let per_slot = facts.number("used_memory_dataset") as f64 / slots as f64;
        for range in &shard.slots {
            for n in range.first.get()..=range.last.get() {
                let slot = Slot::new(n).expect("slot from a range");
                if let Some(owner) = target.deployment.topology.owner_index(slot) {
                    *need.entry(owner).or_default() += per_slot;
                }
            }
        }
    }
    let mut short = Vec::new();
    let mut unlimited = 0;
    for (index, facts) in target.masters.iter().enumerate() {
        let max = facts.number("maxmemory");
        if max == 0 {
            unlimited += 1;
            continue;
        }
        let free = max.saturating_sub(facts.number("used_memory")) as f64;
        let wanted = need.get(&index).copied().unwrap_or(0.0) * 1.1;
        if free < wanted {
            short.push(format!(
                "{} needs {:.0} MB, has {:.0} MB free",
                facts.addr,
                wanted / 1e6,
                free / 1e6
            ));
        }
    }
    if !short.is_empty() {
        // With eviction accepted, a small target loses keys by choice: say so, do not block.
        let status = if allow_eviction {
            Status::Warn
        } else {
            Status::Fail
        };
        return problem(
            name,
            status,
            short.join("; "),
            "raise maxmemory on those target masters (1.1x the source data they will hold)",
        );
    }
    pass(
        name,
        if unlimited == target.masters.len() {
            "no target master sets maxmemory".to_string()
        } else {
            "every target master has 1.1x the memory its slots need".to_string()
        },
    )
}

/// Whether a source master can buffer the writes made while its snapshot is produced and
/// loaded: the backlog must hold them for a partial resync after a short outage, and the
/// replica output buffer must not overflow during the transfer.
fn backlog(source: &Side) -> Item {
    let name = "backlog";
    let mut warnings = Vec::new();
    for facts in &source.masters {
        let data = facts.number("used_memory_dataset") as f64;
        // Snapshot and transfer at roughly 100 MB/s here, plus a second of slack.
        let seconds = data / 100e6 + 1.0;
        let rate = facts
            .info
            .get("instantaneous_input_kbps")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            * 1024.0;
        let during = rate * seconds;
        let backlog = facts.number("repl-backlog-size") as f64;
        if backlog < 2.0 * during {
            warnings.push(format!(
                "{}: repl-backlog-size {:.1} MB < 2x the {:.1} MB written during a {:.0} s snapshot",
                facts.addr,
                backlog / 1e6,
                during / 1e6,
                seconds
            ));
        }
        if let Some(limit) =
            replica_buffer_hard_limit(facts.config.get("client-output-buffer-limit"))
        {
            if limit > 0 && (limit as f64) < during {
                warnings.push(format!(
                    "{}: replica output buffer hard limit {} bytes < {:.0} bytes expected",
                    facts.addr, limit, during
                ));
            }
        }
    }
    if warnings.is_empty() {
        pass(
            name,
            "backlogs and replica buffers cover the expected snapshot time",
        )
    } else {
        problem(
            name,
            Status::Warn,
            warnings.join("; "),
            "CONFIG SET repl-backlog-size and client-output-buffer-limit replica higher on those masters",
        )
    }
}

/// The hard limit of the `replica` (or `slave`) class in `client-output-buffer-limit`.
fn replica_buffer_hard_limit(config: Option<&String>) -> Option<u64> {
    let words: Vec<&str> = config?.split_whitespace().collect();
    words
        .chunks(4)
        .find(|c| matches!(c.first(), Some(&"replica") | Some(&"slave")))
        .and_then(|c| c.get(1))
        .and_then(|v| v.parse().ok())
}

fn modules(source: &Side, target: &Side) -> Item {
    let have: BTreeSet<&String> = target.masters.iter().flat_map(|m| &m.modules).collect();
    let missing: BTreeSet<&String> = source
        .masters
        .iter()
        .flat_map(|m| &m.modules)
        .filter(|m| !have.contains(m))
        .collect();
    if missing.is_empty() {
        pass("modules", "every source module is loaded on the target")
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        problem(
            "modules",
            Status::Fail,
            format!("modules missing on the target: {}", names.join(", ")),
            "load the same modules on every target master (MODULE LOAD or loadmodule)",
        )
    }
}

/// Every source library must reach every target master: a target that cannot hold functions
/// fails while the source has any. Source masters holding different libraries are a warning
/// (every target master gets all of them).
fn functions(source: &Side, target: &Side, options: &Options) -> Item {
    const NAME: &str = "functions";
    let mut all = BTreeSet::new();
    let mut sets = BTreeSet::new();
    for master in &source.masters {
        match &master.libraries {
            Ok(names) => {
                all.extend(names.iter().cloned());
                sets.insert(names.clone());
            }
            Err(e) => {
                return problem(
                    NAME,
                    Status::Warn,
                    format!("cannot list the source's function libraries: {e}"),
                    "allow FUNCTION LIST to the source user, or check by hand that the \
                     target can hold the source's functions",
                )
            }
        }
    }
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    // A snapshot makes the target's libraries the source's: others are deleted.
    let doomed: BTreeSet<&str> = target
        .masters
        .iter()
        .filter_map(|m| m.libraries.as_ref().ok())
        .flatten()
        .map(String::as_str)
        .filter(|name| !all.contains(*name))
        .collect();
    if !doomed.is_empty() && !options.stream_only {
        let doomed: Vec<&str> = doomed.into_iter().collect();
        return problem(
            NAME,
            Status::Warn,
            format!(
                "the target holds function libraries the source does not ({}): loading the \
                 snapshot deletes them",
                doomed.join(", ")
            ),
            "load them on the source too if the application needs them (FUNCTION DUMP on \
             the target, FUNCTION RESTORE on the source)",
        );
    }
    if all.is_empty() {
        return pass(NAME, "the source holds no function libraries");
    }
    if !target.deployment.server.holds_functions() {
        return problem(
            NAME,
            Status::Fail,
            format!(
                "the source holds function libraries {} and the target ({}) cannot hold \
                 functions (Redis 7.0 or later, or Valkey): they would be lost",
                names.join(", "),
                target.deployment.server
            ),
            "use a target running Redis 7.0+ or Valkey, or delete the libraries on the \
             source (FUNCTION DELETE) if nothing calls them",
        );
    }
    if let Some(e) = target
        .masters
        .iter()
        .find_map(|m| m.libraries.as_ref().err())
    {
        return problem(
            NAME,
            Status::Fail,
            format!(
                "the source holds function libraries {} and the target refuses FUNCTION: {e}",
                names.join(", ")
            ),
            "allow the target user FUNCTION (ACL SETUSER <user> +function)",
        );
    }
    if sets.len() > 1 {
        let per_master: Vec<String> = source
            .masters
            .iter()
            .map(|m| {
                let names: Vec<&str> = m
                    .libraries
                    .as_ref()
                    .map(|n| n.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                format!("{}: [{}]", m.addr, names.join(", "))
            })
            .collect();
        return problem(
            NAME,
            Status::Warn,
            format!(
                "source masters hold different function libraries ({}); every target \
                 master gets all of them",
                per_master.join("; ")
            ),
            "load the same libraries on every source master (FUNCTION LOAD REPLACE on each)",
        );
    }
    pass(
        NAME,
        format!(
            "function libraries {} go to every target master",
            names.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_output_buffer_limit_is_read_from_the_config_line() {
        let line =
            "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60".to_string();
        assert_eq!(replica_buffer_hard_limit(Some(&line)), Some(268435456));
        assert_eq!(replica_buffer_hard_limit(None), None);
    }

    #[test]
    fn a_report_passes_unless_an_item_failed() {
        let mut report = Report {
            items: vec![pass("a", ""), problem("b", Status::Warn, "", "")],
        };
        assert!(report.passed());
        report.items.push(problem("c", Status::Fail, "", ""));
        assert!(!report.passed());
        assert_eq!(report.item("c").unwrap().status, Status::Fail);
    }
}
