//! `ferry rdb inspect FILE [--json]`: what an RDB file holds, key by key, without loading it
//! into a server. Useful before a migration to find big keys, expired keys and odd encodings.
//!
//! The file streams through the engine's RDB parser in 64 KiB reads and the parser is told to
//! skip every value ([`Want::Nothing`]), so memory stays bounded whatever the file's size.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ferry_engine::rdb::{
    Checksum, Config, EmptyKeys, Function, Header, Key, ModuleAux, ModuleId, ObjectType, Parser,
    RdbError, RdbType, Sink, Status, ValueEnd, Want,
};
use serde::Serialize;

#[derive(Args)]
pub struct RdbArgs {
    #[command(subcommand)]
    command: RdbCommand,
}

#[derive(Subcommand)]
enum RdbCommand {
    /// Read an RDB file (a `dump.rdb`) and report its keys: counts by type and encoding, the
    /// biggest keys, keys already expired, the file's version and aux fields. A file that is
    /// not valid RDB or ends early is one error line naming the byte offset (exit 2).
    Inspect(InspectArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// The RDB file.
    file: PathBuf,
    /// Print JSON lines: one object per key, in file order (`db`, `key`, `key_escaped`,
    /// `type`, `encoding`, `expire_at_ms` (null when none), `len`, `rdb_bytes`), then one
    /// `{"summary": {...}}` object. `key` is the name itself when it is valid UTF-8; other
    /// names are escaped (printable ASCII as is, `\\`, `\"`, `\'`, `\t`, `\r`, `\n`
    /// backslashed, every other byte as `\xNN`) and have `key_escaped: true`. `len` is what
    /// STRLEN, LLEN, SCARD, ZCARD, HLEN or XLEN would answer; `rdb_bytes` is how many bytes
    /// the value takes in the file.
    #[arg(long)]
    json: bool,
    /// Without --json, also list every key before the summary.
    #[arg(long)]
    keys: bool,
    /// How many of the biggest keys (by `rdb_bytes`) the summary lists.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

/// How much of the file is read at a time.
const READ_SIZE: usize = 64 * 1024;

pub fn run(args: RdbArgs) -> Result<ExitCode> {
    match args.command {
        RdbCommand::Inspect(args) => inspect(&args).map(|()| ExitCode::SUCCESS),
    }
}

fn inspect(args: &InspectArgs) -> Result<()> {
    let path = &args.file;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let lines = match (args.json, args.keys) {
        (true, _) => Lines::Json,
        (false, true) => Lines::Table,
        (false, false) => Lines::None,
    };
    let mut out = BufWriter::with_capacity(READ_SIZE, io::stdout().lock());
    if lines == Lines::Table {
        writeln!(out, "{KEY_COLUMNS}").context("writing the report")?;
    }
    let mut inspector = Inspector {
        out,
        lines,
        summary: Summary::new(now_ms, args.top),
    };
    // Empty collections are reported, not refused: Redis loads such files and drops them.
    let mut parser = Parser::new(Config {
        empty_keys: EmptyKeys::Report,
        ..Config::default()
    });
    let mut buf = vec![0u8; READ_SIZE];
    let mut read = 0u64;
    let mut trailing = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading {} at offset {read}", path.display()))
            }
        };
        read += n as u64;
        match parser.feed(&buf[..n], &mut inspector) {
            // The inspector never asks for a pause.
            Ok(Status::NeedMore | Status::Paused) => {}
            Ok(Status::Done { unused }) => trailing += unused as u64,
            Err(InspectError::Rdb(error)) => {
                return Err(error).with_context(|| format!("reading {}", path.display()))
            }
            Err(InspectError::Output(error)) => return Err(error).context("writing the report"),
        }
    }
    parser
        .finish()
        .with_context(|| format!("reading {}", path.display()))?;
    let Inspector {
        mut out,
        mut summary,
        ..
    } = inspector;
    summary.file_bytes = read;
    summary.trailing_bytes = trailing;
    if args.json {
        serde_json::to_writer(
            &mut out,
            &SummaryLine {
                summary: summary.json(),
            },
        )?;
        writeln!(out)?;
    } else {
        if lines == Lines::Table {
            writeln!(out)?;
        }
        summary.print(&mut out, path)?;
    }
    out.flush().context("writing the report")?;
    Ok(())
}

/// Why inspecting stopped: the file, or stdout (a closed pipe).
#[derive(Debug)]
enum InspectError {
    Rdb(RdbError),
    Output(io::Error),
}

impl From<RdbError> for InspectError {
    fn from(error: RdbError) -> Self {
        InspectError::Rdb(error)
    }
}

/// What is printed for each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lines {
    None,
    /// `--json`: a JSON object per line.
    Json,
    /// `--keys`: a table row.
    Table,
}

/// The sink: counts every key into the summary and, when asked, prints it.
struct Inspector<'a> {
    out: BufWriter<io::StdoutLock<'a>>,
    lines: Lines,
    summary: Summary,
}

impl Sink for Inspector<'_> {
    type Error = InspectError;

    fn header(&mut self, header: Header) -> Result<(), InspectError> {
        self.summary.header = Some(header);
        Ok(())
    }

    fn aux(&mut self, name: &[u8], value: &[u8]) -> Result<(), InspectError> {
        self.summary.aux.push((text(name), text(value)));
        Ok(())
    }

    fn module_aux(&mut self, _aux: &ModuleAux<'_>) -> Result<(), InspectError> {
        self.summary.module_aux += 1;
        Ok(())
    }

    fn function(&mut self, _function: &Function<'_>) -> Result<(), InspectError> {
        self.summary.functions += 1;
        Ok(())
    }

    fn key(&mut self, _key: &Key<'_>) -> Result<Want, InspectError> {
        Ok(Want::Nothing)
    }

    fn value(&mut self, key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), InspectError> {
        if self.lines != Lines::None {
            let out = &mut self.out;
            let line = KeyLine {
                db: key.db,
                key: json_name(key.key),
                key_escaped: std::str::from_utf8(key.key).is_err(),
                object_type: type_name(key),
                encoding: key.rdb_type.encoding(),
                expire_at_ms: key.expire_at_ms,
                len: value.len,
                rdb_bytes: value.rdb_len,
            };
            let written = if self.lines == Lines::Json {
                serde_json::to_writer(&mut *out, &line)
                    .map_err(io::Error::from)
                    .and_then(|()| writeln!(out))
            } else {
                line.print(out)
            };
            written.map_err(InspectError::Output)?;
        }
        self.summary.add(key, value);
        Ok(())
    }

    fn end(&mut self, checksum: Checksum) -> Result<(), InspectError> {
        self.summary.checksum = Some(checksum);
        Ok(())
    }
}

/// One key as `--json` prints it.
#[derive(Serialize)]
struct KeyLine<'a> {
    db: u32,
    key: Cow<'a, str>,
    key_escaped: bool,
    #[serde(rename = "type")]
    object_type: Cow<'static, str>,
    encoding: &'static str,
    expire_at_ms: Option<i64>,
    len: u64,
    rdb_bytes: u64,
}

impl KeyLine<'_> {
    /// One table row, the columns of [`KEY_COLUMNS`].
    fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let expire = self
            .expire_at_ms
            .map_or_else(|| "-".to_string(), |ms| ms.to_string());
        let key = if self.key_escaped {
            self.key.to_string()
        } else {
            text(self.key.as_bytes())
        };
        writeln!(
            out,
            "{:>3}  {:<8} {:<11} {:>10} {:>10}  {:<14} {key}",
            self.db,
            self.object_type,
            self.encoding,
            self.len,
            human_bytes(self.rdb_bytes),
            expire,
        )
    }
}

/// Header of the key table.
const KEY_COLUMNS: &str = " db  type     encoding           len   rdb size  expire_at_ms   key";

/// A key's name in JSON: itself when valid UTF-8, escaped otherwise.
fn json_name(name: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(name) {
        Ok(name) => Cow::Borrowed(name),
        Err(_) => Cow::Owned(name.escape_ascii().to_string()),
    }
}

/// Bytes as one line of text: valid UTF-8 as it is with control characters escaped,
/// anything else with every non-printable byte escaped.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        Ok(s) => s
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// What `TYPE` answers for the key: module values answer with their module type's name.
fn type_name(key: &Key<'_>) -> Cow<'static, str> {
    match key.module {
        Some(module) => Cow::Owned(module.name()),
        None => Cow::Borrowed(key.object_type().name()),
    }
}

/// Keys and bytes of one kind of value.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Tally {
    keys: u64,
    rdb_bytes: u64,
}

impl Tally {
    fn add(&mut self, rdb_bytes: u64) {
        self.keys += 1;
        self.rdb_bytes += rdb_bytes;
    }
}

/// One of the biggest keys.
#[derive(Debug, Clone)]
struct BigKey {
    db: u32,
    name: Vec<u8>,
    object_type: Cow<'static, str>,
    encoding: &'static str,
    expire_at_ms: Option<i64>,
    len: u64,
    rdb_bytes: u64,
}

impl BigKey {
    fn line(&self) -> KeyLine<'_> {
        KeyLine {
            db: self.db,
            key: json_name(&self.name),
            key_escaped: std::str::from_utf8(&self.name).is_err(),
            object_type: self.object_type.clone(),
            encoding: self.encoding,
            expire_at_ms: self.expire_at_ms,
            len: self.len,
            rdb_bytes: self.rdb_bytes,
        }
    }
}

/// Everything counted over the file.
struct Summary {
    /// Keys whose expire time is at or before this (Unix ms) count as expired.
    now_ms: i64,
    top: usize,
    header: Option<Header>,
    aux: Vec<(String, String)>,
    checksum: Option<Checksum>,
    file_bytes: u64,
    /// Bytes after the checksum, which Redis ignores.
    trailing_bytes: u64,
    keys: u64,
    rdb_bytes: u64,
    with_expiry: u64,
    expired: u64,
    /// Empty lists, sets, sorted sets and hashes: Redis drops them when it loads the file.
    empty: u64,
    functions: u64,
    module_aux: u64,
    databases: BTreeMap<u32, u64>,
    /// By serialization (and module type, for module values).
    by_rdb_type: HashMap<(RdbType, Option<u64>), Tally>,
    /// The biggest keys by `rdb_bytes`, biggest first; on a tie the earlier key stays.
    biggest: Vec<BigKey>,
    /// The key that had `db`'s count last: saves a map lookup per key.
    last_db: Option<(u32, u64)>,
}

impl Summary {
    fn new(now_ms: i64, top: usize) -> Self {
        Summary {
            now_ms,
            top,
            header: None,
            aux: Vec::new(),
            checksum: None,
            file_bytes: 0,
            trailing_bytes: 0,
            keys: 0,
            rdb_bytes: 0,
            with_expiry: 0,
            expired: 0,
            empty: 0,
            functions: 0,
            module_aux: 0,
            databases: BTreeMap::new(),
            by_rdb_type: HashMap::new(),
            biggest: Vec::new(),
            last_db: None,
        }
    }

    fn add(&mut self, key: &Key<'_>, value: &ValueEnd<'_>) {
        self.keys += 1;
        self.rdb_bytes += value.rdb_len;
        if let Some(at) = key.expire_at_ms {
            self.with_expiry += 1;
            if at <= self.now_ms {
                self.expired += 1;
            }
        }
        let collection = !matches!(
            key.object_type(),
            ObjectType::String | ObjectType::Stream | ObjectType::Module
        );
        if collection && value.len == 0 {
            self.empty += 1;
        }
        match &mut self.last_db {
            Some((db, count)) if *db == key.db => *count += 1,
            last => {
                if let Some((db, count)) = last.take() {
                    *self.databases.entry(db).or_default() += count;
                }
                *last = Some((key.db, 1));
            }
        }
        self.by_rdb_type
            .entry((key.rdb_type, key.module.map(|m| m.0)))
            .or_default()
            .add(value.rdb_len);
        if self.top == 0
            || (self.biggest.len() == self.top
                && self
                    .biggest
                    .last()
                    .is_some_and(|b| b.rdb_bytes >= value.rdb_len))
        {
            return;
        }
        let at = self
            .biggest
            .partition_point(|b| b.rdb_bytes >= value.rdb_len);
        self.biggest.insert(
            at,
            BigKey {
                db: key.db,
                name: key.key.to_vec(),
                object_type: type_name(key),
                encoding: key.rdb_type.encoding(),
                expire_at_ms: key.expire_at_ms,
                len: value.len,
                rdb_bytes: value.rdb_len,
            },
        );
        self.biggest.truncate(self.top);
    }

    /// Keys per database, the running count included.
    fn databases(&self) -> BTreeMap<u32, u64> {
        let mut databases = self.databases.clone();
        if let Some((db, count)) = self.last_db {
            *databases.entry(db).or_default() += count;
        }
        databases
    }

    /// Tallies by `TYPE` name.
    fn by_type(&self) -> BTreeMap<Cow<'static, str>, Tally> {
        let mut by_type: BTreeMap<Cow<'static, str>, Tally> = BTreeMap::new();
        for ((rdb_type, module), tally) in &self.by_rdb_type {
            let name = match module {
                Some(id) => Cow::Owned(ModuleId(*id).name()),
                None => Cow::Borrowed(rdb_type.object_type().name()),
            };
            let entry = by_type.entry(name).or_default();
            entry.keys += tally.keys;
            entry.rdb_bytes += tally.rdb_bytes;
        }
        by_type
    }

    /// Tallies by `TYPE` and encoding, most keys first.
    fn by_encoding(&self) -> Vec<(&'static str, &'static str, Tally)> {
        let mut merged: BTreeMap<(&'static str, &'static str), Tally> = BTreeMap::new();
        for ((rdb_type, _), tally) in &self.by_rdb_type {
            let entry = merged
                .entry((rdb_type.object_type().name(), rdb_type.encoding()))
                .or_default();
            entry.keys += tally.keys;
            entry.rdb_bytes += tally.rdb_bytes;
        }
        let mut rows: Vec<_> = merged.into_iter().map(|((t, e), n)| (t, e, n)).collect();
        rows.sort_by(|a, b| b.2.keys.cmp(&a.2.keys).then((a.0, a.1).cmp(&(b.0, b.1))));
        rows
    }

    /// The checksum after `RDB_OPCODE_EOF`: `verified`, `disabled` (saved with
    /// `rdbchecksum no`) or `absent` (RDB versions before 5).
    fn checksum(&self) -> &'static str {
        match self.checksum {
            Some(Checksum::Verified(_)) => "verified",
            Some(Checksum::Disabled) => "disabled",
            Some(Checksum::Absent) => "absent",
            None => "not reached",
        }
    }

    fn json(&self) -> SummaryJson<'_> {
        SummaryJson {
            header: self.header.map(|h| h.to_string()),
            rdb_version: self.header.map(|h| h.version),
            aux: AuxFields(&self.aux),
            checksum: self.checksum(),
            file_bytes: self.file_bytes,
            trailing_bytes: self.trailing_bytes,
            keys: self.keys,
            rdb_bytes: self.rdb_bytes,
            keys_with_expiry: self.with_expiry,
            expired_keys: self.expired,
            expired_as_of_ms: self.now_ms,
            empty_keys: self.empty,
            functions: self.functions,
            module_aux: self.module_aux,
            databases: self.databases(),
            by_type: self.by_type(),
            by_encoding: self
                .by_encoding()
                .into_iter()
                .map(|(object_type, encoding, tally)| EncodingJson {
                    object_type,
                    encoding,
                    keys: tally.keys,
                    rdb_bytes: tally.rdb_bytes,
                })
                .collect(),
            biggest_keys: self.biggest.iter().map(BigKey::line).collect(),
        }
    }

    fn print(&self, out: &mut impl Write, path: &Path) -> Result<()> {
        let header = self.header.map_or_else(String::new, |h| h.to_string());
        writeln!(
            out,
            "file       {} ({}, {header}, checksum {})",
            path.display(),
            human_bytes(self.file_bytes),
            self.checksum()
        )?;
        if !self.aux.is_empty() {
            let aux: Vec<String> = self.aux.iter().map(|(n, v)| format!("{n}={v}")).collect();
            writeln!(out, "aux        {}", aux.join(" "))?;
        }
        let databases: Vec<String> = self
            .databases()
            .iter()
            .map(|(db, n)| format!("db{db}={n}"))
            .collect();
        writeln!(
            out,
            "keys       {} ({}), values {} in the file",
            self.keys,
            if databases.is_empty() {
                "no database".to_string()
            } else {
                databases.join(" ")
            },
            human_bytes(self.rdb_bytes)
        )?;
        writeln!(
            out,
            "expiry     {} keys with an expire time, {} of them already expired",
            self.with_expiry, self.expired
        )?;
        if self.empty > 0 {
            writeln!(
                out,
                "empty      {} empty collections (Redis drops them when it loads the file; RESTORE refuses them)",
                self.empty
            )?;
        }
        if self.functions > 0 || self.module_aux > 0 {
            writeln!(
                out,
                "other      {} function libraries, {} module aux fields",
                self.functions, self.module_aux
            )?;
        }
        if self.trailing_bytes > 0 {
            writeln!(
                out,
                "trailing   {} bytes after the checksum (ignored)",
                self.trailing_bytes
            )?;
        }
        writeln!(out)?;
        writeln!(out, "type     encoding          keys   rdb size")?;
        for (object_type, encoding, tally) in self.by_encoding() {
            writeln!(
                out,
                "{object_type:<8} {encoding:<11} {:>10} {:>10}",
                tally.keys,
                human_bytes(tally.rdb_bytes)
            )?;
        }
        if !self.biggest.is_empty() {
            writeln!(out)?;
            writeln!(out, "biggest keys")?;
            writeln!(out, "{KEY_COLUMNS}")?;
            for big in &self.biggest {
                big.line().print(out)?;
            }
        }
        Ok(())
    }
}

/// The last line of `--json`.
#[derive(Serialize)]
struct SummaryLine<'a> {
    summary: SummaryJson<'a>,
}

/// The summary as `--json` prints it; the fields are [`Summary`]'s.
#[derive(Serialize)]
struct SummaryJson<'a> {
    /// The magic string, `REDIS0011` or `VALKEY080`.
    header: Option<String>,
    rdb_version: Option<u16>,
    /// `RDB_OPCODE_AUX` fields in file order (`redis-ver`, `ctime`, `used-mem`...).
    aux: AuxFields<'a>,
    checksum: &'static str,
    file_bytes: u64,
    trailing_bytes: u64,
    keys: u64,
    rdb_bytes: u64,
    keys_with_expiry: u64,
    expired_keys: u64,
    expired_as_of_ms: i64,
    empty_keys: u64,
    functions: u64,
    module_aux: u64,
    databases: BTreeMap<u32, u64>,
    by_type: BTreeMap<Cow<'static, str>, Tally>,
    by_encoding: Vec<EncodingJson>,
    biggest_keys: Vec<KeyLine<'a>>,
}

/// Aux fields as a JSON object, in file order.
struct AuxFields<'a>(&'a [(String, String)]);

impl Serialize for AuxFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}

/// Keys and bytes of one type in one encoding.
#[derive(Serialize)]
struct EncodingJson {
    #[serde(rename = "type")]
    object_type: &'static str,
    encoding: &'static str,
    keys: u64,
    rdb_bytes: u64,
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
