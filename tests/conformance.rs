//! The conformance suite, driven by each server's own `COMMAND` table: every write command
//! the server has is run against the source (in every key state the surface generator gives:
//! missing, present with each type, with a TTL, of the wrong type), plainly, inside
//! `MULTI`/`EXEC`, inside `EVAL` and inside a function where the server has them, and on
//! several slots where it names several keys, while `ferry sync` streams it to a target of
//! the same version. ferry is SIGKILLed twice in the middle of the stream and started again;
//! once it is caught up the copy must be exact: `ferry verify` exits 0 and an independent
//! read of every key (type, value, TTL, stream groups, hash field TTLs) and of the function
//! libraries matches the source. A write command of the server with no case fails the suite.
//!
//! Known defects of ferry are listed in `KNOWN_GAPS`: their cases run in a second sync of
//! their own, are printed as "known gap" lines, and fail the suite once they start passing.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_fixtures::data::surface::{
    write_commands, Arg, Case, Expect, Layout, Surface, NOT_SYNCED,
};
use ferry_fixtures::{Deployment, Family, LocalServer, ServerBinary, Version};

/// How a case's command reaches the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wrapper {
    Plain,
    Multi,
    Eval,
    Function,
}

impl Wrapper {
    fn name(self) -> &'static str {
        match self {
            Wrapper::Plain => "plain",
            Wrapper::Multi => "in MULTI",
            Wrapper::Eval => "in EVAL",
            Wrapper::Function => "in FCALL",
        }
    }
}

/// A defect of ferry that makes cases fail today: the cases it hits, the wrapper (`None`:
/// every one), the servers, and the defect.
struct Gap {
    /// (command or the start of its name, a part of the case's line, a part of the
    /// variant's name); an empty part matches everything.
    cases: &'static [(&'static str, &'static str, &'static str)],
    wrapper: Option<Wrapper>,
    /// (family, first version, last version) the gap applies to.
    servers: Servers,
    reason: &'static str,
    /// The cases diverge by chance (a random pick): passing now proves nothing.
    random: bool,
}

type Servers = &'static [(Family, Version, Version)];

const LAST: Version = Version::new(99, 0, 0);
/// Redis 7.0 and later, every Valkey (functions, the stream group fields of 7.0).
const REDIS_7_ON: Servers = &[
    (Family::Redis, Version::new(7, 0, 0), LAST),
    (Family::Valkey, Version::new(0, 0, 0), LAST),
];

/// Redis before 7.0 (no key specs in `COMMAND`).
const REDIS_BEFORE_7: Servers = &[(Family::Redis, Version::new(0, 0, 0), Version::new(6, 99, 0))];
/// Redis before 6.2 (`PFDEBUG` has no key positions in `COMMAND`).
const REDIS_BEFORE_6_2: Servers = &[(Family::Redis, Version::new(0, 0, 0), Version::new(6, 1, 99))];
/// Redis 4.0 (scripts replicated verbatim by default).
const REDIS_4: Servers = &[(Family::Redis, Version::new(4, 0, 0), Version::new(4, 99, 0))];
/// Redis 7.0 and 7.2.
const REDIS_7_0_TO_7_2: Servers = &[(Family::Redis, Version::new(7, 0, 0), Version::new(7, 2, 99))];

/// A run takes the first gap it matches: gaps that stop the sync come first, so that their
/// runs are not counted against a gap that only changes values.
const KNOWN_GAPS: &[Gap] = &[
    Gap {
        cases: &[("pfdebug", "", "")],
        wrapper: None,
        servers: REDIS_BEFORE_6_2,
        reason: "ferry sync stops: \"cannot apply `PFDEBUG`: a write without keys that ferry \
                 cannot route\" (COMMAND gives it no key positions before 6.2)",
        random: false,
    },
    Gap {
        cases: &[("function|", "FUNCTION", "")],
        wrapper: Some(Wrapper::Multi),
        servers: REDIS_7_ON,
        reason: "ferry sync stops on FUNCTION inside MULTI/EXEC (\"FLUSHALL, FLUSHDB, FUNCTION \
                 and SCRIPT cannot be followed inside a transaction\")",
        random: false,
    },
    Gap {
        cases: &[("xadd", "MAXLEN 1", "")],
        wrapper: None,
        servers: REDIS_7_0_TO_7_2,
        reason: "ferry verify compares a group's `lag` where the target's `entries-read` is nil \
                 (XREADGROUP reaches replicas as XCLAIM without it), and the two estimates differ",
        random: false,
    },
    Gap {
        cases: &[("spop", "", "")],
        wrapper: Some(Wrapper::Eval),
        servers: REDIS_4,
        reason: "SPOP inside a script the source replicates verbatim picks its members at random \
                 again on the target (as on any replica of a 4.0 master)",
        random: true,
    },
    Gap {
        cases: &[
            ("expire", "EXPIRE $a 100", ""),
            ("pexpire", "", ""),
            ("setex", "", ""),
            ("psetex", "", ""),
            ("set", " EX ", ""),
            ("set", " PX ", ""),
        ],
        wrapper: Some(Wrapper::Eval),
        servers: REDIS_4,
        reason: "a relative expiry set inside a script the source replicates verbatim is \
                 counted by the target when the script runs there: one replayed after ferry \
                 was down is late by the downtime (as on any replica of a 4.0 master)",
        random: false,
    },
    Gap {
        cases: &[("rename", "", "with a TTL")],
        wrapper: None,
        servers: REDIS_BEFORE_7,
        reason: "a relative expiry replayed after ferry was down is read back from the source \
                 by its key; renamed since, the key is not found and the expiry counts from \
                 its arrival: late by the downtime",
        random: false,
    },
];

impl Gap {
    fn matches(&self, run: &Run, case: &Case, family: Family, version: Version) -> bool {
        let variant = case.variant.to_string();
        self.cases.iter().any(|(command, line, part)| {
            case.command.starts_with(command) && case.line.contains(line) && variant.contains(part)
        }) && self.wrapper.is_none_or(|w| w == run.wrapper)
            && self
                .servers
                .iter()
                .any(|(f, first, last)| *f == family && (*first..=*last).contains(&version))
    }
}

/// One case as it runs: the case, how it is wrapped, how its keys are laid out, its tag.
#[derive(Debug, Clone)]
struct Run {
    case: usize,
    wrapper: Wrapper,
    layout: Layout,
    tag: String,
}

fn describe(run: &Run, case: &Case) -> String {
    format!(
        "{} `{}` [{}] {}{}",
        case.command,
        case.line,
        case.variant,
        run.wrapper.name(),
        if run.layout == Layout::SeveralSlots {
            ", keys on several slots"
        } else {
            ""
        }
    )
}

const HELPER_LIBRARY: &str = "#!lua name=ferry_conformance\n\
redis.register_function('ferry_conformance', function(keys, args) \
redis.pcall(unpack(args)) redis.call('INCR', keys[#keys]) return 1 end)";

const EVAL_SCRIPT: &str = "redis.pcall(unpack(ARGV)) redis.call('INCR', KEYS[#KEYS]) return 1";

fn url(server: &LocalServer) -> String {
    server.nodes()[0].addr().url()
}

/// A running `ferry sync` and the file its log goes to (a pipe nobody reads could fill up
/// and stall it).
struct Ferry {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Ferry {
    fn log(&self) -> Vec<u8> {
        std::fs::read(self.log.path()).unwrap_or_default()
    }

    /// Why it stopped, when it stopped by itself.
    fn exited(&mut self, what: &str) -> Option<String> {
        let status = self.child.try_wait().unwrap()?;
        Some(stopped(what, status, &self.log()))
    }
}

fn spawn_sync(source: &str, target: &str, extra: &[&str]) -> Ferry {
    // `FERRY_CONFORMANCE_LOGS=DIR` keeps every ferry log there, to read after a failure.
    let log = match std::env::var_os("FERRY_CONFORMANCE_LOGS") {
        Some(dir) => tempfile::Builder::new()
            .prefix("ferry-sync-")
            .suffix(".log")
            .disable_cleanup(true)
            .tempfile_in(dir)
            .unwrap(),
        None => tempfile::NamedTempFile::new().unwrap(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["sync", "--source", source, "--target", target])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("starting ferry");
    Ferry { child, log }
}

/// SIGKILLs ferry; says why when it had already stopped by itself.
fn kill(mut ferry: Ferry, what: &str) -> Result<(), String> {
    if let Some(e) = ferry.exited(what) {
        return Err(e);
    }
    ferry.child.kill().unwrap(); // SIGKILL
    ferry.child.wait().unwrap();
    Ok(())
}

/// ferry's own words on why it stopped: its `error:` line, else its last line.
fn stopped(what: &str, status: std::process::ExitStatus, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or_else(|| text.lines().last())
        .unwrap_or("")
        .to_string();
    format!("{what}: ferry stopped by itself ({status}): {line}")
}

/// Runs `ferry sync --until-caught-up` to its end (at most two minutes).
fn catch_up(source: &str, target: &str) -> Result<(), String> {
    let mut ferry = spawn_sync(source, target, &["--until-caught-up", "1"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = ferry.child.try_wait().unwrap() {
            return if status.success() {
                Ok(())
            } else {
                Err(stopped("catching up", status, &ferry.log()))
            };
        }
        if Instant::now() >= deadline {
            ferry.child.kill().unwrap(); // SIGKILL
            ferry.child.wait().unwrap();
            return Err("catching up: ferry was not caught up after 120 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the target holds a checkpoint of a streaming shard (not `loading`).
fn await_streaming(target: &LocalServer, ferry: &mut Ferry) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = target.nodes()[0].connect().unwrap();
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("__ferry__:*checkpoint*")
            .query(&mut conn)
            .unwrap();
        for key in keys {
            let fields: BTreeMap<String, String> =
                redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
            if !fields.is_empty() && fields.values().all(|v| !v.starts_with("loading")) {
                return Ok(());
            }
        }
        if let Some(e) = ferry.exited("before streaming") {
            return Err(e);
        }
        assert!(
            Instant::now() < deadline,
            "ferry did not start streaming in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The arguments with their run-time parts resolved on the source.
fn resolve(conn: &mut redis::Connection, args: &[Arg], run: &Run) -> Vec<Vec<u8>> {
    args.iter()
        .map(|arg| match arg {
            Arg::Text(t) => t.clone().into_bytes(),
            Arg::Key(k) => run_key(run, *k).into_bytes(),
            Arg::Dump(k) => redis::cmd("DUMP")
                .arg(run_key(run, *k))
                .query::<Option<Vec<u8>>>(conn)
                .unwrap()
                .unwrap_or_default(),
            Arg::FunctionDump => redis::cmd("FUNCTION")
                .arg("DUMP")
                .query::<Vec<u8>>(conn)
                .unwrap(),
            Arg::FutureSeconds => (now_ms() / 1000 + 1000).to_string().into_bytes(),
            Arg::FutureMillis => (now_ms() + 1_000_000).to_string().into_bytes(),
        })
        .collect()
}

fn run_key(run: &Run, name: char) -> String {
    run.layout.key(&run.tag, name)
}

fn command(args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(a.as_slice());
    }
    cmd
}

/// Runs one case on the source; an answer the case does not expect is a broken case.
fn execute(conn: &mut redis::Connection, surface: &Surface, run: &Run) -> Result<(), String> {
    let case = &surface.cases[run.case];
    let (setup, args) = case.instantiate(&run.tag, run.layout);
    for line in &setup {
        let line = resolve(conn, line, run);
        command(&line)
            .query::<redis::Value>(conn)
            .map_err(|e| format!("setup {:?}: {e}", String::from_utf8_lossy(&line.concat())))?;
    }
    let args = resolve(conn, &args, run);
    let keys: Vec<String> = case.keys.iter().map(|k| run_key(run, *k)).collect();
    let marker = run_key(run, 'z');
    match run.wrapper {
        Wrapper::Plain => {
            let reply = command(&args).query::<redis::Value>(conn);
            match (case.expect, &reply) {
                (Expect::Ok, Err(e)) => return Err(format!("answered {e}")),
                (Expect::Error, Ok(v)) => return Err(format!("answered {v:?}, not an error")),
                _ => {}
            }
        }
        Wrapper::Multi => {
            redis::cmd("MULTI")
                .query::<()>(conn)
                .map_err(|e| e.to_string())?;
            let _ = command(&args).query::<redis::Value>(conn);
            let _ = redis::cmd("INCR").arg(&marker).query::<redis::Value>(conn);
            // An error inside the transaction is part of the case; one that aborts it at
            // queueing time means the case is malformed.
            if let Err(e) = redis::cmd("EXEC").query::<redis::Value>(conn) {
                if e.to_string().contains("EXECABORT") {
                    return Err(format!("EXEC: {e}"));
                }
            }
        }
        Wrapper::Eval | Wrapper::Function => {
            let mut cmd = if run.wrapper == Wrapper::Eval {
                let mut c = redis::cmd("EVAL");
                c.arg(EVAL_SCRIPT);
                c
            } else {
                let mut c = redis::cmd("FCALL");
                c.arg("ferry_conformance");
                c
            };
            cmd.arg(keys.len() + 1).arg(&keys).arg(&marker);
            for a in &args {
                cmd.arg(a.as_slice());
            }
            // A script refused as a whole (4.0: a write after a random command) writes
            // nothing; that is the source's answer, and the copy must match it all the same.
            let _ = cmd.query::<redis::Value>(conn);
        }
    }
    Ok(())
}

/// Every run: each case plainly, in `MULTI`, in `EVAL` and in `FCALL` where it may run in a
/// script, and with its keys on several slots where it names several.
fn plan(surface: &Surface, functions: bool) -> Vec<Run> {
    let mut runs = Vec::new();
    for (i, case) in surface.cases.iter().enumerate() {
        let mut wrappers = vec![Wrapper::Plain, Wrapper::Multi];
        if case.scriptable {
            wrappers.push(Wrapper::Eval);
            if functions {
                wrappers.push(Wrapper::Function);
            }
        }
        for wrapper in wrappers {
            let mut layouts = vec![Layout::OneSlot];
            if case.multi_key() && wrapper != Wrapper::Function {
                layouts.push(Layout::SeveralSlots);
            }
            for layout in layouts {
                runs.push(Run {
                    case: i,
                    wrapper,
                    layout,
                    tag: format!("t{}", runs.len()),
                });
            }
        }
    }
    runs
}

/// The tag of a key written by a run (`{t12}a`, `t12:a`).
fn tag_of(key: &str) -> Option<&str> {
    let key = key.strip_prefix('{').unwrap_or(key);
    let end = key.find(['}', ':'])?;
    Some(&key[..end])
}

/// The run tag of a key (`t12`), when the key is one a run wrote.
fn run_tag(key: &str) -> Option<&str> {
    let tag = tag_of(key)?;
    let digits = tag.strip_prefix('t')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(tag)
}

/// Everything one key is, read back with plain commands: type, value, TTL (to the second),
/// and for streams their groups and consumers.
fn readout(conn: &mut redis::Connection, key: &str, field_ttls: bool) -> String {
    let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
    let q = |conn: &mut redis::Connection, cmd: &mut redis::Cmd| -> String {
        format!("{:?}", cmd.query::<redis::Value>(conn).unwrap())
    };
    let value = match kind.as_str() {
        "string" => q(conn, redis::cmd("GET").arg(key)),
        "list" => q(conn, redis::cmd("LRANGE").arg(key).arg(0).arg(-1)),
        "set" => {
            let mut members: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(key).query(conn).unwrap();
            members.sort();
            format!("{members:?}")
        }
        "zset" => q(
            conn,
            redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        ),
        "hash" => {
            let fields: BTreeMap<Vec<u8>, Vec<u8>> =
                redis::cmd("HGETALL").arg(key).query(conn).unwrap();
            let mut text = format!("{fields:?}");
            if field_ttls && !fields.is_empty() {
                let mut cmd = redis::cmd("HPEXPIRETIME");
                cmd.arg(key).arg("FIELDS").arg(fields.len());
                for f in fields.keys() {
                    cmd.arg(f.as_slice());
                }
                let ttls: Vec<i64> = cmd.query(conn).unwrap();
                let seconds: Vec<i64> = ttls
                    .iter()
                    .map(|t| if *t < 0 { *t } else { (t + 500) / 1000 })
                    .collect();
                text.push_str(&format!(" field expiries {seconds:?}"));
            }
            text
        }
        "stream" => {
            let entries = q(conn, redis::cmd("XRANGE").arg(key).arg("-").arg("+"));
            let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(key)
                .query(conn)
                .unwrap();
            let mut text = entries;
            for group in &groups {
                // `entries-read` and `lag` are left out: after `XREADGROUP` the replication
                // stream does not carry them (a Redis replica shows nil as well).
                let field = |name: &str| {
                    group
                        .chunks(2)
                        .find(|p| {
                            redis::from_redis_value_ref::<String>(&p[0]).ok().as_deref()
                                == Some(name)
                        })
                        .map(|p| format!("{:?}", p[1]))
                        .unwrap_or_default()
                };
                let name = redis::from_redis_value_ref::<String>(&group[1]).unwrap();
                // Consumers by name and pending count (idle times differ between the sides).
                let consumers: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(key)
                    .arg(&name)
                    .query(conn)
                    .unwrap();
                let consumers: Vec<String> = consumers
                    .iter()
                    .map(|c| format!("{:?}={:?}", c[1], c[3]))
                    .collect();
                // Pending entries: ID, consumer and delivery count (not the idle time).
                let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(key)
                    .arg(&name)
                    .arg("-")
                    .arg("+")
                    .arg(100)
                    .query(conn)
                    .unwrap();
                let pending: Vec<(String, String, u64)> = pending
                    .into_iter()
                    .map(|(id, c, _, n)| (id, c, n))
                    .collect();
                text.push_str(&format!(
                    " group {name}: last-delivered-id {} consumers {consumers:?} pending \
                     {pending:?}",
                    field("last-delivered-id")
                ));
            }
            text
        }
        _ => String::new(),
    };
    let pttl: i64 = redis::cmd("PTTL").arg(key).query(conn).unwrap();
    let now = now_ms() as i64;
    // An expiry ferry holds on a target until the source's stream reaches it stands for its
    // own one, 2^40 ms earlier.
    let expiry = match (pttl >= 0).then_some(now + pttl) {
        None => "no TTL".to_string(),
        Some(at) => {
            let at = ferry_engine::sync::held_expiry(at, now).unwrap_or(at);
            format!("expires at {}s", (at + 500) / 1000)
        }
    };
    format!("{kind} {value} {expiry}")
}

fn all_keys(conn: &mut redis::Connection) -> BTreeSet<String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    keys.into_iter()
        .filter(|k| !k.starts_with("__ferry__:"))
        .collect()
}

/// Libraries and their code (7.0+).
fn libraries(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let reply: Vec<Vec<redis::Value>> = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("WITHCODE")
        .query(conn)
        .unwrap();
    reply
        .iter()
        .map(|lib| {
            let field = |name: &str| {
                lib.chunks(2)
                    .find(|p| {
                        redis::from_redis_value_ref::<String>(&p[0]).ok().as_deref() == Some(name)
                    })
                    .map(|p| format!("{:?}", p[1]))
                    .unwrap_or_default()
            };
            (field("library_name"), field("library_code"))
        })
        .collect()
}

/// The differences between source and target by the suite's own reading, as (tag or "",
/// line).
fn own_differences(
    source: &LocalServer,
    target: &LocalServer,
    functions: bool,
    field_ttls: bool,
) -> Vec<(String, String)> {
    let mut s = source.nodes()[0].connect().unwrap();
    let mut t = target.nodes()[0].connect().unwrap();
    let mut out = Vec::new();
    let keys: BTreeSet<String> = all_keys(&mut s).union(&all_keys(&mut t)).cloned().collect();
    for key in keys {
        let (a, b) = (
            readout(&mut s, &key, field_ttls),
            readout(&mut t, &key, field_ttls),
        );
        // TTLs are read a moment apart: a second of slack.
        if a != b && !same_but_ttl_second(&a, &b) {
            let tag = tag_of(&key).unwrap_or("").to_string();
            out.push((tag, format!("{key}: source {a} / target {b}")));
        }
    }
    if functions {
        let (a, b) = (libraries(&mut s), libraries(&mut t));
        if a != b {
            out.push((
                "functions".to_string(),
                format!(
                    "function libraries: source {:?} / target {:?}",
                    a.keys(),
                    b.keys()
                ),
            ));
        }
    }
    out
}

fn same_but_ttl_second(a: &str, b: &str) -> bool {
    let split = |s: &str| -> Option<(String, i64)> {
        let (head, tail) = s.rsplit_once("expires at ")?;
        Some((head.to_string(), tail.trim_end_matches('s').parse().ok()?))
    };
    match (split(a), split(b)) {
        (Some((ha, ta)), Some((hb, tb))) => ha == hb && (ta - tb).abs() <= 1,
        _ => false,
    }
}

struct Outcome {
    /// Tags of the runs whose keys differ, with the lines that say how.
    diverged: BTreeMap<String, Vec<String>>,
    /// Lines about the whole copy (verify, functions, ferry's own failure).
    general: Vec<String>,
}

/// Starts a source and a target of `binary`, syncs `runs` through two SIGKILLs of ferry,
/// and judges the copy.
fn sync_runs(
    binary: &ServerBinary,
    surface: &Surface,
    runs: &[Run],
    functions: bool,
    field_ttls: bool,
) -> Outcome {
    let started = Instant::now();
    let source = LocalServer::builder()
        .binary(binary.clone())
        .start()
        .unwrap();
    let target = LocalServer::builder()
        .binary(binary.clone())
        .start()
        .unwrap();
    let (s, t) = (url(&source), url(&target));
    let mut conn = source.nodes()[0].connect().unwrap();
    let mut general = Vec::new();
    let mut broken = Vec::new();
    let mut child = Some(spawn_sync(&s, &t, &[]));
    if let Err(e) = await_streaming(&target, child.as_mut().unwrap()) {
        general.push(e);
    }
    // Three phases: ferry streaming, ferry SIGKILLed and down, ferry restarted and resuming.
    // Runs are dealt to them by a hash of their place, so that the variants and wrappers of
    // one command meet every phase (the same phase for the same run on every invocation).
    let phase = |i: usize| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 3;
    for n in 0..3 {
        for run in runs
            .iter()
            .enumerate()
            .filter(|(i, _)| phase(*i) == n)
            .map(|(_, r)| r)
        {
            if run.wrapper == Wrapper::Function {
                // Loaded again each time: a `FUNCTION FLUSH` case may have removed it.
                redis::cmd("FUNCTION")
                    .arg("LOAD")
                    .arg("REPLACE")
                    .arg(HELPER_LIBRARY)
                    .query::<String>(&mut conn)
                    .unwrap();
            }
            if let Err(e) = execute(&mut conn, surface, run) {
                broken.push(format!("{}: {e}", describe(run, &surface.cases[run.case])));
            }
        }
        if n == 0 {
            // In the middle of the stream; the next phase is written while ferry is down.
            if let Err(e) = kill(child.take().unwrap(), "after the first phase") {
                general.push(e);
            }
        } else if n == 1 {
            // Down for longer than verify's TTL tolerance, so that a TTL applied relative to
            // when ferry applies it shows.
            std::thread::sleep(Duration::from_millis(2_500));
            let mut restarted = spawn_sync(&s, &t, &[]);
            if let Err(e) = await_streaming(&target, &mut restarted) {
                general.push(e);
            }
            child = Some(restarted);
        }
    }
    assert!(
        broken.is_empty(),
        "cases the source did not answer as expected:\n{}",
        broken.join("\n")
    );
    if let Some(child) = child {
        if let Err(e) = kill(child, "after the last phase") {
            general.push(e);
        }
    }
    if let Err(e) = catch_up(&s, &t) {
        general.push(e);
    }
    let mut diverged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Once ferry has stopped on an error the copy is known to be short: the suite's own
    // reading names the runs, and verify would only wait for a catch-up that cannot come.
    let verify = general.is_empty().then(|| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["verify", "--source", &s, "--target", &t, "--db", "0"])
            .args(["--rounds", "2", "--recheck-interval-ms", "100"])
            .args(["--catch-up-limit-ms", "2000"])
            .output()
            .unwrap()
    });
    if let Some(verify) = verify.filter(|v| !v.status.success()) {
        // The keys verify names are attributed to their runs; the rest of its report is
        // about the whole copy.
        let stdout = String::from_utf8_lossy(&verify.stdout);
        let mut named = false;
        for line in stdout.lines() {
            if let Some(tag) = line.split_whitespace().find_map(run_tag) {
                diverged
                    .entry(tag.to_string())
                    .or_default()
                    .push(format!("ferry verify: {}", line.trim()));
                named = true;
            }
        }
        if !named {
            general.push(format!(
                "ferry verify exited {}: {}{}",
                verify.status,
                stdout.trim(),
                String::from_utf8_lossy(&verify.stderr).trim()
            ));
        }
    }
    for (tag, line) in own_differences(&source, &target, functions, field_ttls) {
        if run_tag(&format!("{{{tag}}}")).is_some() {
            diverged.entry(tag).or_default().push(line);
        } else {
            general.push(line);
        }
    }
    println!(
        "{} {}: {} runs synced and judged in {:.1}s",
        binary.family,
        binary.version,
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    Outcome { diverged, general }
}

/// The whole suite for one server build.
fn conformance(binary: ServerBinary) {
    let label = format!("{} {}", binary.family, binary.version);
    let started = Instant::now();
    let probe = LocalServer::builder()
        .binary(binary.clone())
        .start()
        .unwrap();
    let table: redis::Value = probe.nodes()[0].query(&redis::cmd("COMMAND")).unwrap();
    drop(probe);
    let writes = write_commands(&table);
    let surface = Surface::new(binary.family, binary.version, &writes);
    assert!(
        surface.uncovered.is_empty(),
        "{label}: write commands without conformance cases (add cases in fixtures/src/data/surface.rs, \
         or a reason in NOT_SYNCED): {:?}",
        surface.uncovered
    );
    for name in &surface.not_synced {
        let reason = NOT_SYNCED
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| *r)
            .unwrap_or("");
        println!("{label}: not synced here: {name}: {reason}");
    }
    let names = |w: &str| writes.iter().any(|c| c.name == w);
    let functions = names("function|load");
    let field_ttls = names("hexpire");
    let runs = plan(&surface, functions);
    let gap_index = |run: &Run| {
        KNOWN_GAPS
            .iter()
            .position(|g| g.matches(run, &surface.cases[run.case], binary.family, binary.version))
    };
    let (gapped, main): (Vec<Run>, Vec<Run>) =
        runs.iter().cloned().partition(|r| gap_index(r).is_some());
    println!(
        "{label}: {} write commands, {} cases, {} runs ({} known gaps)",
        writes.len(),
        surface.cases.len(),
        runs.len(),
        gapped.len()
    );

    let mut failures = Vec::new();
    let outcome = sync_runs(&binary, &surface, &main, functions, field_ttls);
    failures.extend(outcome.general.iter().map(|l| format!("{label}: {l}")));
    let by_tag: BTreeMap<&str, &Run> = main.iter().map(|r| (r.tag.as_str(), r)).collect();
    for (tag, lines) in &outcome.diverged {
        let what = by_tag
            .get(tag.as_str())
            .map(|r| describe(r, &surface.cases[r.case]))
            .unwrap_or_else(|| format!("tag {tag}"));
        failures.push(format!("{label}: {what} diverges: {}", lines.join("; ")));
    }

    // Each gap's cases in a sync of their own, so that a gap that stops the sync does not
    // hide that another one passes.
    for (index, gap) in KNOWN_GAPS.iter().enumerate() {
        let runs: Vec<Run> = gapped
            .iter()
            .filter(|r| gap_index(r) == Some(index))
            .cloned()
            .collect();
        if runs.is_empty() {
            continue;
        }
        let outcome = sync_runs(&binary, &surface, &runs, functions, field_ttls);
        let stopped = !outcome.general.is_empty();
        let mut passing = Vec::new();
        for run in &runs {
            let what = describe(run, &surface.cases[run.case]);
            match outcome.diverged.get(&run.tag) {
                Some(lines) => println!(
                    "{label}: known gap: {what}: {} ({})",
                    gap.reason,
                    lines.join("; ")
                ),
                None if stopped => println!(
                    "{label}: known gap: {what}: {} ({})",
                    gap.reason,
                    outcome.general.join("; ")
                ),
                None => passing.push(what),
            }
        }
        // A gap whose every case passes is fixed; some passing cases of a gap that still
        // diverges elsewhere are expected (a defect rarely hits every variant).
        println!(
            "{label}: known gap summary: {} of {} runs diverge: {}",
            runs.len() - passing.len(),
            runs.len(),
            gap.reason
        );
        if passing.len() == runs.len() && !gap.random {
            failures.push(format!(
                "{label}: every case of the known gap `{}` passes now: remove it from KNOWN_GAPS \
                 ({})",
                gap.reason,
                passing.join(", ")
            ));
        }
    }
    println!(
        "{label}: {} runs in {:.1}s",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A cached build, or a loud skip.
fn cached(name: &str) -> Option<ServerBinary> {
    match ServerBinary::cached(name) {
        Ok(binary) => Some(binary),
        Err(e) => {
            println!("SKIPPED: conformance on {name}: {e}");
            None
        }
    }
}

#[test]
fn conformance_redis_4_0() {
    if let Some(binary) = cached("redis-4.0.14") {
        conformance(binary);
    }
}

#[test]
fn conformance_redis_5_0() {
    if let Some(binary) = cached("redis-5.0.10") {
        conformance(binary);
    }
}

#[test]
fn conformance_redis_6_0() {
    if let Some(binary) = cached("redis-6.0.9") {
        conformance(binary);
    }
}

#[test]
fn conformance_redis_6_2() {
    if let Some(binary) = cached("redis-6.2.16") {
        conformance(binary);
    }
}

#[test]
fn conformance_redis_7_0() {
    conformance(ServerBinary::find().unwrap());
}

#[test]
fn conformance_redis_7_2() {
    if let Some(binary) = cached("redis-7.2.6") {
        conformance(binary);
    }
}

#[test]
fn conformance_redis_7_4() {
    if let Some(binary) = cached("redis-7.4.1") {
        conformance(binary);
    }
}

#[test]
fn conformance_valkey_9() {
    if let Some(binary) = cached("valkey-9.1.2") {
        conformance(binary);
    }
}
