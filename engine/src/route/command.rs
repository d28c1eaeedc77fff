//! Which arguments of a command are keys, read from the server's own `COMMAND` reply: the
//! key specs of Redis 7+ and Valkey (begin search by index or keyword, find keys by range or
//! by a key count), and the legacy first/last/step triple of older servers. New commands
//! route without code changes, as long as the server describes them. Commands whose keys the
//! description does not fix (`movablekeys` before 7.0; an incomplete or unknown key spec, or
//! one whose flags vary, later) are found by the server's own procedure (`getkeys.rs`).

use std::collections::HashMap;

use bytes::Bytes;

use super::getkeys;
use crate::resp::Frame;

/// Where the search for a key spec's keys begins (`begin_search`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index.
    Index(i64),
    /// After `keyword`, searched from `start_from` (negative: backwards from the end).
    Keyword { keyword: Vec<u8>, start_from: i64 },
    /// The keys cannot be found from the spec (e.g. `SORT ... STORE`).
    Unknown,
}

/// How the keys are found once the search began (`find_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `last_key` (relative; negative counts from the end), every `key_step`.
    Range {
        last_key: i64,
        key_step: i64,
        limit: i64,
    },
    /// The argument at `key_num_idx` says how many keys follow from `first_key`.
    KeyNum {
        key_num_idx: i64,
        first_key: i64,
        key_step: i64,
    },
    Unknown,
}

/// One key spec of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
    /// `incomplete`: the keys it finds are not all the command's keys (`MIGRATE ... KEYS`).
    pub incomplete: bool,
    /// `variable_flags`: how the keys are used depends on the arguments; the server then finds
    /// them with its procedure (`GEORADIUS` on Valkey).
    pub variable_flags: bool,
}

/// What the server says about one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    pub name: String,
    pub arity: i64,
    pub flags: Vec<String>,
    /// The legacy `(first key, last key, step)`, for servers without key specs.
    pub legacy: (i64, i64, i64),
    pub key_specs: Vec<KeySpec>,
    /// Subcommands by lowercase name (`create` of `xgroup`).
    pub subcommands: HashMap<String, CommandInfo>,
    /// The server's own procedure for this command's keys, where ferry knows it.
    pub(crate) getkeys: Option<getkeys::Procedure>,
}

/// The keys of one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// The key arguments, in order.
    Found(Vec<Bytes>),
    /// What the server says does not fix the keys and ferry does not know the server's
    /// procedure for this command (a module's command, say): refuse.
    Unknown,
    /// The server does not know the command.
    UnknownCommand,
}

/// A `COMMAND` reply that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected COMMAND reply: {0}")]
pub struct CommandReplyError(String);

/// Every command a server knows, by lowercase name.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    commands: HashMap<String, CommandInfo>,
    /// The server describes commands by key specs (Redis 7.0+, Valkey).
    key_specs: bool,
}

impl CommandTable {
    /// Parses the reply to `COMMAND` (or `COMMAND INFO ...`), in RESP2.
    pub fn from_reply(reply: &Frame) -> Result<Self, CommandReplyError> {
        let Frame::Array(Some(entries)) = reply else {
            return Err(CommandReplyError(format!("{reply:?}")));
        };
        let mut commands = HashMap::new();
        for entry in entries {
            if matches!(entry, Frame::Array(None) | Frame::Bulk(None)) {
                continue;
            }
            let info = parse_command(entry)?;
            commands.insert(info.name.clone(), info);
        }
        let key_specs = commands.values().any(|c| !c.key_specs.is_empty());
        Ok(CommandTable {
            commands,
            key_specs,
        })
    }

    /// Every command, in no particular order (subcommands are in each one's `subcommands`).
    pub fn commands(&self) -> impl Iterator<Item = &CommandInfo> {
        self.commands.values()
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// What the server says about `argv`'s command (its subcommand when it has them).
    pub fn info(&self, argv: &[Bytes]) -> Option<&CommandInfo> {
        let name = String::from_utf8_lossy(argv.first()?).to_ascii_lowercase();
        let info = self.commands.get(&name)?;
        if info.subcommands.is_empty() {
            return Some(info);
        }
        let sub = String::from_utf8_lossy(argv.get(1)?).to_ascii_lowercase();
        info.subcommands.get(&sub).or(Some(info))
    }

    /// Whether `argv` writes (the `write` flag).
    pub fn is_write(&self, argv: &[Bytes]) -> Option<bool> {
        Some(self.info(argv)?.flags.iter().any(|f| f == "write"))
    }

    /// The key arguments of `argv`, as the server would find them: by the key specs where
    /// they are complete, otherwise by the server's procedure (as the server does).
    pub fn keys(&self, argv: &[Bytes]) -> Keys {
        let Some(info) = self.info(argv) else {
            return Keys::UnknownCommand;
        };
        let procedure = || {
            info.getkeys.map_or(Keys::Unknown, |procedure| {
                Keys::Found(procedure.keys(argv, self.key_specs))
            })
        };
        if info.key_specs.is_empty() {
            if info.flags.iter().any(|f| f == "movablekeys") {
                return procedure();
            }
            return legacy_keys(info, argv);
        }
        if info.getkeys.is_some() && info.key_specs.iter().any(|s| s.variable_flags) {
            return procedure();
        }
        let mut keys = Vec::new();
        for spec in &info.key_specs {
            match spec_keys(spec, argv) {
                // The server gives up on an incomplete spec that found its start.
                Some(found) if spec.incomplete && !found.is_empty() => return procedure(),
                Some(found) => keys.extend(found.into_iter().cloned()),
                None => return procedure(),
            }
        }
        Keys::Found(keys)
    }
}

/// `getKeysUsingKeySpecs` for one spec: `None` for a spec that cannot be followed.
fn spec_keys<'a>(spec: &KeySpec, argv: &'a [Bytes]) -> Option<Vec<&'a Bytes>> {
    let argc = argv.len() as i64;
    let first = match &spec.begin {
        BeginSearch::Unknown => return None,
        BeginSearch::Index(index) => *index,
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => {
            let range: Vec<i64> = if *start_from >= 0 {
                (*start_from..argc).collect()
            } else {
                (1..=argc + start_from).rev().collect()
            };
            match range
                .into_iter()
                .find(|&i| argv[i as usize].eq_ignore_ascii_case(keyword))
            {
                Some(i) => i + 1,
                // No keyword, no keys from this spec.
                None => return Some(Vec::new()),
            }
        }
    };
    if first >= argc || first < 1 {
        return Some(Vec::new());
    }
    let (last, step) = match &spec.find {
        FindKeys::Unknown => return None,
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last = if *last_key >= 0 {
                first + last_key
            } else if *limit <= 1 {
                argc + last_key
            } else {
                first + ((argc - first) / limit + last_key)
            };
            (last, *key_step)
        }
        FindKeys::KeyNum {
            key_num_idx,
            first_key,
            key_step,
        } => {
            let count: i64 = std::str::from_utf8(argv.get((first + key_num_idx) as usize)?)
                .ok()?
                .parse()
                .ok()?;
            let start = first + first_key;
            if count <= 0 {
                return Some(Vec::new());
            }
            return Some(step_keys(
                argv,
                start,
                start + (count - 1) * key_step,
                *key_step,
            ));
        }
    };
    Some(step_keys(argv, first, last, step))
}

fn step_keys(argv: &[Bytes], first: i64, last: i64, step: i64) -> Vec<&Bytes> {
    let step = step.max(1) as usize;
    let last = last.min(argv.len() as i64 - 1);
    if first > last {
        return Vec::new();
    }
    (first as usize..=last as usize)
        .step_by(step)
        .map(|i| &argv[i])
        .collect()
}

/// Keys from `(first, last, step)` (servers before 7.0, commands that are not
/// `movablekeys`).
fn legacy_keys(info: &CommandInfo, argv: &[Bytes]) -> Keys {
    let (first, last, step) = info.legacy;
    if first == 0 {
        return Keys::Found(Vec::new());
    }
    let last = if last < 0 {
        argv.len() as i64 + last
    } else {
        last
    };
    Keys::Found(
        step_keys(argv, first, last, step)
            .into_iter()
            .cloned()
            .collect(),
    )
}

fn text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Bulk(Some(b)) | Frame::SimpleString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}

fn int(frame: &Frame) -> Option<i64> {
    match frame {
        Frame::Integer(n) => Some(*n),
        _ => None,
    }
}

fn array(frame: &Frame) -> Option<&[Frame]> {
    match frame {
        Frame::Array(Some(items)) => Some(items),
        _ => None,
    }
}

/// A flat `[name, value, name, value...]` array as a lookup.
fn pairs(frame: &Frame) -> HashMap<String, &Frame> {
    array(frame)
        .unwrap_or_default()
        .chunks(2)
        .filter_map(|pair| Some((text(pair.first()?)?, pair.get(1)?)))
        .collect()
}

fn parse_command(entry: &Frame) -> Result<CommandInfo, CommandReplyError> {
    let bad = || CommandReplyError(format!("{entry:?}"));
    let fields = array(entry).ok_or_else(bad)?;
    let name = fields
        .first()
        .and_then(text)
        .ok_or_else(bad)?
        .to_ascii_lowercase();
    let arity = fields.get(1).and_then(int).ok_or_else(bad)?;
    let flags = fields
        .get(2)
        .and_then(array)
        .map(|f| f.iter().filter_map(text).collect())
        .unwrap_or_default();
    let legacy = (
        fields.get(3).and_then(int).unwrap_or(0),
        fields.get(4).and_then(int).unwrap_or(0),
        fields.get(5).and_then(int).unwrap_or(0),
    );
    let key_specs = fields
        .get(8)
        .and_then(array)
        .unwrap_or_default()
        .iter()
        .map(parse_key_spec)
        .collect();
    let mut subcommands = HashMap::new();
    for sub in fields.get(9).and_then(array).unwrap_or_default() {
        let info = parse_command(sub)?;
        let short = info
            .name
            .split('|')
            .nth(1)
            .unwrap_or(&info.name)
            .to_string();
        subcommands.insert(short, info);
    }
    Ok(CommandInfo {
        getkeys: getkeys::procedure(&name),
        name,
        arity,
        flags,
        legacy,
        key_specs,
        subcommands,
    })
}

fn parse_key_spec(frame: &Frame) -> KeySpec {
    let spec = pairs(frame);
    let begin = spec.get("begin_search").map(|b| pairs(b));
    let find = spec.get("find_keys").map(|f| pairs(f));
    let kind = |m: &Option<HashMap<String, &Frame>>| {
        m.as_ref().and_then(|m| m.get("type").and_then(|t| text(t)))
    };
    let detail = |m: &Option<HashMap<String, &Frame>>| -> HashMap<String, Frame> {
        m.as_ref()
            .and_then(|m| m.get("spec"))
            .map(|s| pairs(s).into_iter().map(|(k, v)| (k, v.clone())).collect())
            .unwrap_or_default()
    };
    let (b, f) = (detail(&begin), detail(&find));
    let num = |m: &HashMap<String, Frame>, k: &str| m.get(k).and_then(int);
    let begin = match kind(&begin).as_deref() {
        Some("index") => num(&b, "index").map_or(BeginSearch::Unknown, BeginSearch::Index),
        Some("keyword") => match (b.get("keyword").and_then(text), num(&b, "startfrom")) {
            (Some(keyword), Some(start_from)) => BeginSearch::Keyword {
                keyword: keyword.into_bytes(),
                start_from,
            },
            _ => BeginSearch::Unknown,
        },
        _ => BeginSearch::Unknown,
    };
    let find = match kind(&find).as_deref() {
        Some("range") => match (num(&f, "lastkey"), num(&f, "keystep"), num(&f, "limit")) {
            (Some(last_key), Some(key_step), Some(limit)) => FindKeys::Range {
                last_key,
                key_step,
                limit,
            },
            _ => FindKeys::Unknown,
        },
        Some("keynum") => match (
            num(&f, "keynumidx"),
            num(&f, "firstkey"),
            num(&f, "keystep"),
        ) {
            (Some(key_num_idx), Some(first_key), Some(key_step)) => FindKeys::KeyNum {
                key_num_idx,
                first_key,
                key_step,
            },
            _ => FindKeys::Unknown,
        },
        _ => FindKeys::Unknown,
    };
    let flags: Vec<String> = spec
        .get("flags")
        .and_then(|f| array(f))
        .unwrap_or_default()
        .iter()
        .filter_map(text)
        .collect();
    let flag = |name: &str| flags.iter().any(|f| f.eq_ignore_ascii_case(name));
    KeySpec {
        begin,
        find,
        incomplete: flag("incomplete"),
        variable_flags: flag("variable_flags"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(name: &str, flags: &[&str], first: i64, last: i64, step: i64) -> Frame {
        Frame::Array(Some(vec![
            Frame::bulk(name.as_bytes().to_vec()),
            Frame::Integer(-2),
            Frame::Array(Some(
                flags
                    .iter()
                    .map(|f| Frame::SimpleString(Bytes::copy_from_slice(f.as_bytes())))
                    .collect(),
            )),
            Frame::Integer(first),
            Frame::Integer(last),
            Frame::Integer(step),
        ]))
    }

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn servers_without_key_specs_use_first_last_step() {
        let reply = Frame::Array(Some(vec![
            legacy("mset", &["write"], 1, -1, 2),
            legacy("eval", &["noscript", "movablekeys"], 0, 0, 0),
            legacy("ping", &["fast"], 0, 0, 0),
            legacy("module.cmd", &["write", "movablekeys"], 0, 0, 0),
        ]));
        let table = CommandTable::from_reply(&reply).unwrap();
        assert_eq!(
            table.keys(&argv(&["MSET", "a", "1", "b", "2"])),
            Keys::Found(argv(&["a", "b"]))
        );
        assert_eq!(
            table.keys(&argv(&["EVAL", "s", "1", "k"])),
            Keys::Found(argv(&["k"]))
        );
        assert_eq!(
            table.keys(&argv(&["MODULE.CMD", "k"])),
            Keys::Unknown,
            "a movablekeys command without a known procedure"
        );
        assert_eq!(table.keys(&argv(&["PING"])), Keys::Found(Vec::new()));
        assert_eq!(table.is_write(&argv(&["mset", "a", "1"])), Some(true));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(CommandTable::from_reply(&Frame::Integer(3)).is_err());
        assert!(CommandTable::from_reply(&Frame::Array(Some(vec![Frame::Integer(3)]))).is_err());
    }
}
