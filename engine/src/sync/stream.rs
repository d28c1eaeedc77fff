//! From replication-stream commands to target writes (sans-IO).
//!
//! [`StreamRouter::route`] takes the source's commands in order and says what each means for
//! the target: nothing (`PING`, `REPLCONF`, keys the selection leaves out, other dbs), writes
//! keyed for routing (a `MULTI`/`EXEC` block comes out at `EXEC` as one unit per target
//! master), "clear this shard's keys" (`FLUSHALL`, `FLUSHDB`), or a command every target master
//! runs (`FUNCTION` and `SCRIPT` management). Keys are found by the source's own key specs
//! ([`CommandTable`]), so commands this code has never heard of route correctly, and where
//! no key spec says (`ZUNIONSTORE`, `SORT ... STORE`, `GEORADIUS ... STORE` and scripts on
//! servers before 7.0) by the servers' own key-finding procedures.
//!
//! Each write says whether applying it twice changes the result ([`Write::relative`]): that is
//! what the exactly-once apply needs to know.

use bytes::Bytes;

use super::expiry::{self, Arrival, Probe, SourceForms};
use crate::apply::printable;
use crate::precheck::RESERVED_PREFIX;
use crate::resp::Command;
use crate::route::{CommandTable, KeyFilter, Keys, Slot, Topology};

/// Commands whose second application leaves the data as the first did, also when replayed
/// after later commands of the same batch: each sets something to a value named in its
/// arguments. Everything else is treated as relative.
const ABSOLUTE: &[&str] = &[
    "set",
    "mset",
    "del",
    "unlink",
    "hset",
    "hmset",
    "hdel",
    "sadd",
    "srem",
    "zrem",
    "pexpireat",
    "expireat",
    "persist",
    "restore",
    "restore-asking",
    "xdel",
    "xsetid",
];

/// Script calls that reach a replication stream only when the source replicates scripts
/// verbatim instead of their effects.
const VERBATIM_SCRIPTS: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// Commands that may be split into one command per key (or key/value pair) when their keys
/// belong to different target masters or only some are selected.
const SPLITTABLE: &[(&str, usize)] = &[("del", 1), ("unlink", 1), ("touch", 1), ("mset", 2)];

/// One write for the target: the commands that go, in order, to the master owning `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// A key of the write: it names the target master.
    pub key: Bytes,
    pub commands: Vec<Command>,
    /// Applying it twice would change the result (`INCR`, `RPUSH`, a transaction, ...).
    pub relative: bool,
    /// Keys in slots other than `key`'s (a transaction over several slots of one master).
    pub other_slots: Vec<Bytes>,
    /// A script replicated verbatim (`EVAL`, `EVALSHA`, `FCALL` in the stream: a source with
    /// `lua-replicate-commands no`): it cannot run inside ferry's own script.
    pub script: bool,
    /// Expiries to read from the source master before the write is applied (their
    /// placeholders are among `commands`).
    pub probes: Vec<Probe>,
}

/// What one source command means for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Nothing to apply.
    Nothing,
    /// Writes, each for one target master.
    Writes(Vec<Write>),
    /// Delete every selected key of this source shard's slots (`FLUSHALL`/`FLUSHDB`).
    Clear,
    /// A command every target master runs (function and script management).
    Everywhere(Command),
}

/// A command the sync cannot follow exactly: it stops with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply `{command}`: {reason}")]
pub struct RouteError {
    pub command: String,
    pub reason: String,
}

/// Follows one source shard's replication stream.
#[derive(Debug, Clone)]
pub struct StreamRouter {
    table: CommandTable,
    target: Topology,
    keys: KeyFilter,
    /// The source db that is copied.
    db: u32,
    /// The db the stream has selected.
    selected: u32,
    /// Commands of an open `MULTI`, already routed.
    transaction: Option<Vec<Write>>,
    /// Forward `PUBLISH` (and `SPUBLISH`) messages.
    pub publish: bool,
    /// The target is older than Redis 6.2: `SET ... PXAT|EXAT|GET` must be rewritten.
    old_set: bool,
    /// The target knows `RESTORE ... ABSTTL` (Redis 5.0+).
    restore_absttl: bool,
    /// Which replicated forms of the source are rewritten (relative expiries before 7.0).
    forms: SourceForms,
    /// When the command being routed reached ferry.
    arrival: Arrival,
}

impl StreamRouter {
    /// `table` is the source's `COMMAND` reply; `target` the target's slots; `db` the copied
    /// source db and `selected` the db the stream has selected where it starts.
    pub fn new(table: CommandTable, target: Topology, keys: KeyFilter, db: u32) -> Self {
        StreamRouter {
            table,
            target,
            keys,
            db,
            selected: 0,
            transaction: None,
            publish: false,
            old_set: false,
            restore_absttl: true,
            forms: SourceForms::default(),
            arrival: Arrival {
                ms: 0,
                replayed: false,
            },
        }
    }

    /// Commands newer than the target are rewritten into forms it knows.
    pub fn set_target_server(&mut self, server: &crate::deployment::ServerInfo) {
        let redis = server.family == crate::deployment::Family::Redis;
        self.old_set = redis && server.version < (6, 2, 0);
        self.restore_absttl = !redis || server.version >= (5, 0, 0);
    }

    /// Relative expiries of a source before Redis 7.0 become absolute ([`expiry`]).
    pub fn set_source_server(&mut self, server: &crate::deployment::ServerInfo) {
        self.forms = SourceForms::of(server);
    }

    /// The source replicates relative expiries: the stream needs arrival times, and a
    /// source master to read expiries from.
    pub fn source_forms(&self) -> SourceForms {
        self.forms
    }

    /// The db the stream has selected (a checkpoint records it: after `+CONTINUE` the master
    /// does not send `SELECT` again).
    pub fn selected_db(&self) -> u32 {
        self.selected
    }

    pub fn set_selected_db(&mut self, db: u32) {
        self.selected = db;
    }

    /// The stream starts again (a new link to the source, a resync): a `MULTI` left open by
    /// the old link is dropped, since the new one sends the transaction again whole.
    pub fn restart(&mut self) {
        if self.transaction.take().is_some() {
            tracing::info!("a source transaction was open when the stream broke; it is read again");
        }
    }

    /// Whether a `MULTI` is open (a batch must not end inside it).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// The target's slots changed.
    pub fn set_target(&mut self, target: Topology) {
        self.target = target;
    }

    /// What `command` means for the target, as if it arrived now.
    pub fn route(&mut self, command: Command) -> Result<Routed, RouteError> {
        let now = Arrival {
            ms: crate::replica::unix_ms(),
            replayed: false,
        };
        self.route_at(command, now)
    }

    /// What `command`, which reached ferry at `arrival`, means for the target.
    pub fn route_at(&mut self, command: Command, arrival: Arrival) -> Result<Routed, RouteError> {
        self.arrival = arrival;
        let name = String::from_utf8_lossy(command.name()).to_ascii_lowercase();
        match name.as_str() {
            "ping" | "replconf" => return Ok(Routed::Nothing),
            "select" => {
                let db = command
                    .args()
                    .first()
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| error(&command, "SELECT without a db number"))?;
                self.selected = db;
                return Ok(Routed::Nothing);
            }
            "multi" => {
                if self.transaction.is_some() {
                    return Err(error(&command, "MULTI inside MULTI"));
                }
                self.transaction = Some(Vec::new());
                return Ok(Routed::Nothing);
            }
            "exec" => {
                let writes = self
                    .transaction
                    .take()
                    .ok_or_else(|| error(&command, "EXEC without MULTI"))?;
                return Ok(self.close_transaction(writes));
            }
            _ => {}
        }
        let routed = self.route_one(&name, command)?;
        match (&mut self.transaction, routed) {
            (Some(open), Routed::Writes(writes)) => {
                open.extend(writes);
                Ok(Routed::Nothing)
            }
            (Some(_), Routed::Nothing) => Ok(Routed::Nothing),
            (Some(_), _) => Err(RouteError {
                command: name.to_ascii_uppercase(),
                reason:
                    "FLUSHALL, FLUSHDB, FUNCTION and SCRIPT cannot be followed inside a transaction"
                        .into(),
            }),
            (None, routed) => Ok(routed),
        }
    }

    fn route_one(&mut self, name: &str, command: Command) -> Result<Routed, RouteError> {
        match name {
            "flushall" => return Ok(Routed::Clear),
            "flushdb" if self.selected == self.db => return Ok(Routed::Clear),
            "flushdb" => return Ok(Routed::Nothing),
            "function" | "script" => return Ok(Routed::Everywhere(everywhere(command))),
            "publish" | "spublish" if !self.publish => return Ok(Routed::Nothing),
            "swapdb" => {
                let dbs: Vec<u32> = command
                    .args()
                    .iter()
                    .filter_map(|a| std::str::from_utf8(a).ok()?.parse().ok())
                    .collect();
                if !dbs.contains(&self.db) {
                    return Ok(Routed::Nothing);
                }
                return Err(error(
                    &command,
                    "SWAPDB exchanges the copied db with another one; sync again from a snapshot",
                ));
            }
            _ => {}
        }
        if self.selected != self.db {
            if name == "move" && move_db(&command) == Some(self.db) {
                return Err(error(
                    &command,
                    "MOVE brings a key into the copied db from another one; sync again from a snapshot",
                ));
            }
            return Ok(Routed::Nothing);
        }
        if name == "move" {
            // The key leaves the copied db: for the target it is deleted.
            let key = command.args().first().cloned().unwrap_or_default();
            return self.writes(Command::new("DEL").arg(key.clone()), "del", vec![key]);
        }
        let keys = match self.table.keys(command.argv()) {
            Keys::Found(keys) => keys,
            Keys::Unknown => {
                return Err(error(
                    &command,
                    "the source's COMMAND table does not say which arguments are keys",
                ))
            }
            Keys::UnknownCommand => {
                return Err(error(
                    &command,
                    "the source's COMMAND table does not list it",
                ))
            }
        };
        if keys.is_empty() && VERBATIM_SCRIPTS.contains(&name) {
            return self.keyless_script(command);
        }
        if keys.is_empty() {
            if name.ends_with("publish") {
                // Any target master takes it; the cluster bus spreads it.
                let channel = command.args().first().cloned().unwrap_or_default();
                return self.writes(command, name, vec![channel]);
            }
            return Err(error(
                &command,
                "a write without keys that ferry cannot route",
            ));
        }
        self.writes(command, name, keys)
    }

    /// The command as writes: one, or one per key when it must be split.
    fn writes(&self, command: Command, name: &str, keys: Vec<Bytes>) -> Result<Routed, RouteError> {
        let selected: Vec<bool> = keys
            .iter()
            .map(|k| !k.starts_with(RESERVED_PREFIX.as_bytes()) && self.keys.selects(k))
            .collect();
        if selected.iter().all(|s| !s) {
            return Ok(Routed::Nothing);
        }
        let one_master = keys.iter().all(|k| self.same_master(k, &keys[0]));
        if selected.iter().all(|s| *s) && one_master {
            let script = VERBATIM_SCRIPTS.contains(&name);
            let converted =
                expiry::absolute(name, command, self.forms, self.arrival, self.restore_absttl);
            let mut commands = Vec::with_capacity(converted.commands.len());
            let mut probes = Vec::new();
            let mut relative = false;
            for (i, command) in converted.commands.into_iter().enumerate() {
                match &converted.probe {
                    Some(probe) if probe.at == i => {
                        probes.push(Probe {
                            at: commands.len(),
                            ..probe.clone()
                        });
                        commands.push(command);
                        continue;
                    }
                    _ => {}
                }
                let name = String::from_utf8_lossy(command.name()).to_ascii_lowercase();
                relative |= !ABSOLUTE.contains(&name.as_str()) || zadd_incr(&name, &command);
                if self.old_set && name == "set" {
                    commands.extend(old_set(command));
                } else {
                    commands.push(command);
                }
            }
            return Ok(Routed::Writes(vec![Write {
                key: keys[0].clone(),
                relative,
                other_slots: other_slots(&keys),
                commands,
                script,
                probes,
            }]));
        }
        let script = VERBATIM_SCRIPTS.contains(&name);
        match split(name, &command, &keys, &selected) {
            Some(writes) => Ok(Routed::Writes(writes)),
            None if !one_master && script => Err(script_error(
                &command,
                "its keys belong to different target masters, and a script runs whole on one",
            )),
            None if !one_master => Err(error(
                &command,
                "its keys belong to different target masters and it cannot be split",
            )),
            None if script => Err(script_error(
                &command,
                "only some of its keys are selected, and a script runs whole",
            )),
            None => Err(error(
                &command,
                "only some of its keys are selected and it cannot be split",
            )),
        }
    }

    /// A verbatim script that declares no keys: ferry cannot tell where its writes go, unless
    /// the target has one master and every key is selected.
    fn keyless_script(&self, command: Command) -> Result<Routed, RouteError> {
        if self.target.shards.len() != 1 {
            return Err(script_error(
                &command,
                "it declares no keys, so ferry cannot tell which target master owns what it writes",
            ));
        }
        if !self.keys.is_empty() {
            return Err(script_error(
                &command,
                "it declares no keys, so ferry cannot tell whether it writes selected keys",
            ));
        }
        Ok(Routed::Writes(vec![Write {
            // Any key routes to the one master.
            key: Bytes::new(),
            commands: vec![command],
            relative: true,
            other_slots: Vec::new(),
            script: true,
            probes: Vec::new(),
        }]))
    }

    fn same_master(&self, a: &[u8], b: &[u8]) -> bool {
        let (a, b) = (Slot::of_key(a), Slot::of_key(b));
        a == b || self.target.owner_index(a) == self.target.owner_index(b)
    }

    /// A transaction becomes one relative write per target master it touches.
    fn close_transaction(&self, writes: Vec<Write>) -> Routed {
        let mut units: Vec<Write> = Vec::new();
        for write in writes {
            match units
                .iter_mut()
                .find(|u| self.same_master(&u.key, &write.key))
            {
                Some(unit) => {
                    unit.script |= write.script;
                    if Slot::of_key(&unit.key) != Slot::of_key(&write.key) {
                        unit.other_slots.push(write.key.clone());
                    }
                    unit.other_slots.extend(write.other_slots);
                    let shift = unit.commands.len();
                    unit.probes.extend(write.probes.into_iter().map(|p| Probe {
                        at: p.at + shift,
                        ..p
                    }));
                    unit.commands.extend(write.commands);
                }
                None => units.push(Write {
                    relative: true,
                    ..write
                }),
            }
        }
        if units.len() > 1 {
            tracing::warn!(
                masters = units.len(),
                "a source transaction spans several target masters; it is applied atomically on each"
            );
        }
        if units.is_empty() {
            Routed::Nothing
        } else {
            Routed::Writes(units)
        }
    }
}

fn error(command: &Command, reason: &str) -> RouteError {
    RouteError {
        command: printable(command.name()).to_ascii_uppercase(),
        reason: reason.to_string(),
    }
}

/// Why a verbatim script cannot be followed, naming it by its sha.
fn script_error(command: &Command, reason: &str) -> RouteError {
    RouteError {
        command: format!(
            "{} {}",
            printable(command.name()).to_ascii_uppercase(),
            super::verbatim::sha_of(command)
        ),
        reason: format!("{reason}; {SCRIPT_EFFECTS_HINT}"),
    }
}

/// How to make a source replicate a script's writes instead of the script, on each version
/// that can replicate scripts verbatim.
pub const SCRIPT_EFFECTS_HINT: &str = "make the source replicate the script's effects (Redis 4.0: call redis.replicate_commands() first in the script; 5.0: lua-replicate-commands yes in redis.conf, which CONFIG SET does not change; 6.x: CONFIG SET lua-replicate-commands yes)";

/// `MOVE key db`: the destination db.
fn move_db(command: &Command) -> Option<u32> {
    std::str::from_utf8(command.args().get(1)?)
        .ok()?
        .parse()
        .ok()
}

/// `ZADD ... INCR` adds to a score: relative.
fn zadd_incr(name: &str, command: &Command) -> bool {
    name == "zadd"
        && command
            .args()
            .iter()
            .any(|a| a.eq_ignore_ascii_case(b"incr"))
}

/// `SET key value ... PXAT ms|EXAT s|GET` for servers before 6.2: the `SET` without them,
/// then `PEXPIREAT`.
fn old_set(command: Command) -> Vec<Command> {
    let argv = command.argv();
    if argv.len() < 3 {
        return vec![command];
    }
    let mut kept = argv[..3].to_vec();
    let mut expire_at_ms = None;
    let mut i = 3;
    while i < argv.len() {
        let arg = &argv[i];
        let at = |scale: u64| {
            let text = std::str::from_utf8(argv.get(i + 1)?).ok()?;
            Some(text.parse::<u64>().ok()? * scale)
        };
        if arg.eq_ignore_ascii_case(b"pxat") {
            expire_at_ms = at(1);
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"exat") {
            expire_at_ms = at(1000);
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"get") {
            i += 1;
        } else {
            kept.push(arg.clone());
            i += 1;
        }
    }
    let key = argv[1].clone();
    let mut out = vec![Command::from_argv(kept).expect("not empty")];
    if let Some(ms) = expire_at_ms {
        out.push(Command::new("PEXPIREAT").arg(key).arg(ms.to_string()));
    }
    out
}

/// `FUNCTION LOAD` replaces what a replay or an earlier sync loaded.
fn everywhere(command: Command) -> Command {
    let argv = command.argv();
    let load = argv.len() > 2
        && argv[0].eq_ignore_ascii_case(b"function")
        && argv[1].eq_ignore_ascii_case(b"load")
        && !argv.iter().any(|a| a.eq_ignore_ascii_case(b"replace"));
    if !load {
        return command;
    }
    let mut new = vec![
        argv[0].clone(),
        argv[1].clone(),
        Bytes::from_static(b"REPLACE"),
    ];
    new.extend(argv[2..].iter().cloned());
    Command::from_argv(new).expect("not empty")
}

fn other_slots(keys: &[Bytes]) -> Vec<Bytes> {
    let first = Slot::of_key(&keys[0]);
    keys[1..]
        .iter()
        .filter(|k| Slot::of_key(k) != first)
        .cloned()
        .collect()
}

/// `DEL a b c` as `DEL a`, `DEL b`, `DEL c` (selected keys only); `None` when the command
/// cannot be split.
fn split(name: &str, command: &Command, keys: &[Bytes], selected: &[bool]) -> Option<Vec<Write>> {
    let &(_, width) = SPLITTABLE.iter().find(|(n, _)| *n == name)?;
    let args = command.args();
    if args.len() != keys.len() * width {
        return None;
    }
    let writes = args
        .chunks(width)
        .zip(selected)
        .filter(|(_, s)| **s)
        .map(|(chunk, _)| {
            let mut argv = vec![command.name().to_vec().into()];
            argv.extend(chunk.iter().cloned());
            Write {
                key: chunk[0].clone(),
                commands: vec![Command::from_argv(argv).expect("not empty")],
                relative: false,
                other_slots: Vec::new(),
                script: false,
                probes: Vec::new(),
            }
        })
        .collect();
    Some(writes)
}
