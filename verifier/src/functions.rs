//! Function libraries: every master's `FUNCTION LIST WITHCODE` on both sides, compared by
//! name and code.
//!
//! Functions are not keys: every master holds its own copy. The source's libraries are the
//! union over its masters (a cluster's masters should all hold the same ones; when they do
//! not, the report says so and every library any of them holds is expected), and every
//! target master must hold exactly those, with the code of one of the source masters that
//! hold it. A library is `missing` on the target masters that lack it, `extra` on those that
//! hold one the source lacks, `different` where its code differs. A server without functions
//! (Redis before 7.0) holds none and is not asked; a master that refuses `FUNCTION LIST`
//! (an ACL) is left out of the comparison, and the report says so.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;
use serde::Serialize;

use crate::error::Result;
use crate::pipe::Pipeline;
use crate::side::{NodeAddr, NodeFacts, Side};

/// What the comparison of function libraries found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Functions {
    /// Libraries on the source (names across every master).
    pub source_libraries: u64,
    /// Libraries on the target (names across every master).
    pub target_libraries: u64,
    /// Missing, extra and different libraries, by name.
    pub differences: Vec<LibraryDifference>,
    /// Set when the source's masters hold different libraries (names or code): each master
    /// and the libraries it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_masters_differ: Option<String>,
    /// Masters whose libraries could not be read, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_compared: Vec<String>,
}

/// How a library differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LibraryDiffKind {
    /// On the source, not on these target masters.
    Missing,
    /// On these target masters, not on the source.
    Extra,
    /// On both, with other code.
    Different,
}

impl LibraryDiffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LibraryDiffKind::Missing => "missing",
            LibraryDiffKind::Extra => "extra",
            LibraryDiffKind::Different => "different",
        }
    }
}

/// One library that differs, and the target masters where it does so alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibraryDifference {
    pub library: String,
    pub kind: LibraryDiffKind,
    pub targets: Vec<NodeAddr>,
    /// The source's code (missing, different).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_code: Option<String>,
    /// The target masters' code (extra, different).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_code: Option<String>,
}

impl LibraryDifference {
    /// One line: the library, how it differs, where.
    pub fn summary(&self) -> String {
        let targets: Vec<String> = self.targets.iter().map(NodeAddr::to_string).collect();
        let what = match self.kind {
            LibraryDiffKind::Missing => "on the source, not on target",
            LibraryDiffKind::Extra => "not on the source, on target",
            LibraryDiffKind::Different => "other code on target",
        };
        format!(
            "library {}: {what} {}",
            self.library,
            plural(targets.len(), "master", "masters", &targets.join(", "))
        )
    }
}

impl Functions {
    /// One line for summaries: how many libraries each side holds and how many differ.
    pub fn summary(&self) -> String {
        if self.source_libraries == 0 && self.target_libraries == 0 {
            return "no function library on either side".into();
        }
        format!(
            "{} function libraries on the source, {} on the target, {} differing",
            self.source_libraries,
            self.target_libraries,
            self.differences.len()
        )
    }

    /// What the comparison could not judge or found odd on the source, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(masters) = &self.source_masters_differ {
            warnings.push(format!(
                "source masters hold different function libraries, each target master is \
                 compared with all of them: {masters}"
            ));
        }
        for why in &self.not_compared {
            warnings.push(format!("function libraries not compared on {why}"));
        }
        warnings
    }
}

fn plural(n: usize, one: &str, many: &str, list: &str) -> String {
    format!("{} {list}", if n == 1 { one } else { many })
}

/// Library name → code, on one master.
type Libraries = BTreeMap<String, String>;

/// Reads both sides' libraries and compares them.
pub(crate) fn compare(source: &Side, target: &Side) -> Result<Functions> {
    let mut not_compared = Vec::new();
    let source_sets = read(source, &mut not_compared)?;
    let target_sets = read(target, &mut not_compared)?;
    let mut functions = judge(&source_sets, &target_sets);
    functions.not_compared = not_compared;
    Ok(functions)
}

/// The libraries of every master of `side` that could be read.
fn read(side: &Side, not_compared: &mut Vec<String>) -> Result<Vec<(NodeAddr, Libraries)>> {
    let mut sets = Vec::new();
    for shard in &side.shards {
        if !holds_functions(&shard.facts) {
            sets.push((shard.master.clone(), Libraries::new()));
            continue;
        }
        let mut link = side.connect(&shard.master, 0, false)?;
        let mut pipe = Pipeline::new();
        pipe.cmd("FUNCTION").arg("LIST").arg("WITHCODE");
        let reply = link.pipeline(&pipe)?.pop().unwrap_or(Value::Nil);
        if let Value::ServerError(e) = &reply {
            not_compared.push(format!(
                "{} {}: FUNCTION LIST: {e}",
                side.name, shard.master
            ));
            continue;
        }
        let libraries = parse(&reply).ok_or_else(|| link.unexpected("FUNCTION LIST", &reply))?;
        sets.push((shard.master.clone(), libraries));
    }
    Ok(sets)
}

/// Redis 7.0 and later and every Valkey hold functions.
fn holds_functions(facts: &NodeFacts) -> bool {
    facts.valkey_version.is_some()
        || facts
            .version
            .split('.')
            .next()
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| major >= 7)
}

/// `FUNCTION LIST WITHCODE`: per library its fields, as an array of names and values (RESP2)
/// or a map (RESP3).
fn parse(reply: &Value) -> Option<Libraries> {
    let Value::Array(libraries) = reply else {
        return None;
    };
    let mut found = Libraries::new();
    for library in libraries {
        let pairs: Vec<(&Value, &Value)> = match library {
            Value::Array(fields) => fields
                .chunks(2)
                .filter_map(|pair| match pair {
                    [k, v] => Some((k, v)),
                    _ => None,
                })
                .collect(),
            Value::Map(fields) => fields.iter().map(|(k, v)| (k, v)).collect(),
            _ => return None,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| text(k).as_deref() == Some(name))
                .and_then(|(_, v)| text(v))
        };
        found.insert(field("library_name")?, field("library_code")?);
    }
    Some(found)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Compares every target master with the union of the source masters' libraries.
fn judge(source: &[(NodeAddr, Libraries)], target: &[(NodeAddr, Libraries)]) -> Functions {
    // Name → every code the source masters hold for it (the first master's first).
    let mut expected: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, libraries) in source {
        for (name, code) in libraries {
            let codes = expected.entry(name).or_default();
            if !codes.contains(&code.as_str()) {
                codes.push(code);
            }
        }
    }
    let distinct: BTreeSet<&Libraries> = source.iter().map(|(_, l)| l).collect();
    let source_masters_differ = (distinct.len() > 1).then(|| {
        source
            .iter()
            .map(|(addr, libraries)| {
                let names: Vec<&str> = libraries.keys().map(String::as_str).collect();
                format!("{addr} [{}]", names.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    });
    // (library, kind, target code) → target masters.
    type Group = (String, LibraryDiffKind, Option<String>);
    let mut groups: BTreeMap<Group, Vec<NodeAddr>> = BTreeMap::new();
    let mut target_names = BTreeSet::new();
    for (addr, libraries) in target {
        for (name, codes) in &expected {
            let kind = match libraries.get(*name) {
                None => LibraryDiffKind::Missing,
                Some(code) if !codes.contains(&code.as_str()) => LibraryDiffKind::Different,
                Some(_) => continue,
            };
            let code = libraries.get(*name).cloned();
            groups
                .entry((name.to_string(), kind, code))
                .or_default()
                .push(addr.clone());
        }
        for (name, code) in libraries {
            target_names.insert(name.as_str());
            if !expected.contains_key(name.as_str()) {
                groups
                    .entry((name.clone(), LibraryDiffKind::Extra, Some(code.clone())))
                    .or_default()
                    .push(addr.clone());
            }
        }
    }
    let differences = groups
        .into_iter()
        .map(
            |((library, kind, target_code), targets)| LibraryDifference {
                source_code: expected
                    .get(library.as_str())
                    .and_then(|codes| codes.first())
                    .map(|code| code.to_string()),
                library,
                kind,
                targets,
                target_code,
            },
        )
        .collect();
    Functions {
        source_libraries: expected.len() as u64,
        target_libraries: target_names.len() as u64,
        differences,
        source_masters_differ,
        not_compared: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> NodeAddr {
        NodeAddr {
            host: "h".into(),
            port,
        }
    }

    fn libs(pairs: &[(&str, &str)]) -> Libraries {
        pairs
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn every_target_master_is_judged_against_the_union_of_the_source() {
        let source = [
            (addr(1), libs(&[("a", "A"), ("b", "B")])),
            (addr(2), libs(&[("a", "A")])),
        ];
        let target = [
            (addr(3), libs(&[("a", "A"), ("b", "B")])),
            (addr(4), libs(&[("a", "other"), ("z", "Z")])),
        ];
        let found = judge(&source, &target);
        assert_eq!((found.source_libraries, found.target_libraries), (2, 3));
        assert_eq!(
            found.source_masters_differ.as_deref(),
            Some("h:1 [a, b]; h:2 [a]")
        );
        let kinds: Vec<(&str, LibraryDiffKind, Vec<u16>)> = found
            .differences
            .iter()
            .map(|d| {
                (
                    d.library.as_str(),
                    d.kind,
                    d.targets.iter().map(|t| t.port).collect(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", LibraryDiffKind::Different, vec![4]),
                ("b", LibraryDiffKind::Missing, vec![4]),
                ("z", LibraryDiffKind::Extra, vec![4]),
            ]
        );
        assert_eq!(found.differences[0].source_code.as_deref(), Some("A"));
        assert_eq!(found.differences[0].target_code.as_deref(), Some("other"));
    }

    #[test]
    fn equal_sides_have_no_difference() {
        let both = [(addr(1), libs(&[("a", "A")]))];
        let found = judge(&both, &both);
        assert!(found.differences.is_empty());
        assert_eq!(found.source_masters_differ, None);
        let none = judge(&[], &[(addr(1), Libraries::new())]);
        assert!(none.differences.is_empty());
    }

    #[test]
    fn replies_parse_in_both_protocols() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![Value::Array(vec![
            b("library_name"),
            b("lib"),
            b("engine"),
            b("LUA"),
            b("functions"),
            Value::Array(vec![]),
            b("library_code"),
            b("#!lua name=lib"),
        ])]);
        let resp3 = Value::Array(vec![Value::Map(vec![
            (b("library_name"), b("lib")),
            (b("library_code"), b("#!lua name=lib")),
        ])]);
        for reply in [resp2, resp3] {
            assert_eq!(parse(&reply), Some(libs(&[("lib", "#!lua name=lib")])));
        }
        assert_eq!(parse(&Value::Nil), None);
    }
}
