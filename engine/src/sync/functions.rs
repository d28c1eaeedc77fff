//! Function libraries: a snapshot's libraries put on every target master.
//!
//! A snapshot (RDB 10+) carries the source master's function libraries as their code, the
//! text `FUNCTION LOAD` takes. Functions are not keys: every target master holds its own
//! copy, as every node of a cluster does. Each snapshot's libraries are loaded on every target
//! master with `FUNCTION LOAD REPLACE` (idempotent: the same code again changes nothing), so a
//! stream that follows (`FCALL`) finds them.
//!
//! A target library the snapshot lacks was deleted on the source (or never existed there) and
//! is deleted too, unless another source master holds it: libraries of a standalone source or
//! of an RDB file are exactly the snapshot's; for a cluster source, whose masters each carry
//! their own copy, a target master ends with the union of what the source masters hold, which
//! is what `FCALL` on any of them can reach. When another source master cannot be asked, no
//! library is deleted (a library left behind is reported by the verifier; one deleted wrongly
//! would break the application).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;

use crate::apply::{connect, ApplyError};
use crate::deployment::Deployment;
use crate::endpoint::Endpoint;
use crate::link::{Link, LinkError};
use crate::resp::Frame;
use crate::route::NodeAddr;

/// Which target libraries the snapshot's libraries replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Others {
    /// Delete every target library that is neither in the snapshot nor in this set (the
    /// libraries other source masters hold now; empty for a standalone source or a file).
    DeleteExcept(BTreeSet<Bytes>),
    /// Delete nothing: what the rest of the source holds is unknown.
    Keep,
}

/// What putting a snapshot's libraries on the target did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Libraries loaded, on each target master.
    pub loaded: u64,
    /// Target libraries deleted, counted on every master.
    pub deleted: u64,
}

/// Deletes the target libraries that neither `libraries` (their code) nor `others` hold, then
/// loads `libraries` on every master of `target`, replacing libraries of the same name. Nothing happens on a
/// target that cannot hold functions when there is nothing to load (the precheck and the
/// snapshot sink refuse one that would need them).
pub async fn install(
    target: &Deployment,
    libraries: &[Bytes],
    others: &Others,
    timeout: Duration,
) -> Result<FunctionStats, ApplyError> {
    let mut stats = FunctionStats::default();
    if !target.server.holds_functions() {
        return Ok(stats);
    }
    let names: BTreeSet<Bytes> = libraries
        .iter()
        .map(|code| Bytes::from(library_name(code)))
        .collect();
    for shard in &target.topology.shards {
        let mut link = connect(&shard.master, &target.endpoint, None, timeout)
            .await
            .map_err(link_error)?;
        // Deleted first: a function that moved from a deleted library to a loaded one would
        // otherwise already exist when its new library is loaded.
        if let Others::DeleteExcept(kept) = others {
            let present = match list(&mut link).await {
                Ok(present) => present,
                // A target user may not be allowed FUNCTION: with nothing to load, there is
                // nothing lost either.
                Err(Some(Frame::Error(e))) if libraries.is_empty() => {
                    tracing::warn!(target = %shard.master, reply = %String::from_utf8_lossy(&e), "cannot list the target's function libraries; none is deleted");
                    continue;
                }
                Err(reply) => {
                    return Err(rejected(
                        "FUNCTION LIST",
                        String::new(),
                        reply.unwrap_or(Frame::Bulk(None)),
                    ))
                }
            };
            for name in present {
                if names.contains(&name) || kept.contains(&name) {
                    continue;
                }
                let reply = link
                    .call(&[&b"FUNCTION"[..], b"DELETE", &name])
                    .await
                    .map_err(link_error)?;
                if let Frame::Error(e) = &reply {
                    // Another shard's stream deleted it meanwhile (its source master dropped
                    // it too): what this delete was for is done.
                    if String::from_utf8_lossy(e).contains("not found") {
                        continue;
                    }
                    return Err(rejected(
                        "FUNCTION DELETE",
                        String::from_utf8_lossy(&name).into_owned(),
                        reply,
                    ));
                }
                tracing::info!(target = %shard.master, library = %String::from_utf8_lossy(&name), "deleted a target library the source does not hold");
                stats.deleted += 1;
            }
        }
        for code in libraries {
            let reply = link
                .call(&[&b"FUNCTION"[..], b"LOAD", b"REPLACE", code])
                .await
                .map_err(link_error)?;
            if !matches!(reply, Frame::Bulk(Some(_)) | Frame::SimpleString(_)) {
                return Err(rejected("FUNCTION LOAD", library_name(code), reply));
            }
            stats.loaded += 1;
        }
    }
    Ok(stats)
}

/// The names of the libraries every source master except `except` holds now (`FUNCTION
/// LIST`), or `None` when one cannot be asked: then no target library may be deleted.
pub async fn held_elsewhere(
    source: &Deployment,
    except: &NodeAddr,
    timeout: Duration,
) -> Option<BTreeSet<Bytes>> {
    let mut names = BTreeSet::new();
    if !source.server.holds_functions() {
        return Some(names);
    }
    for shard in &source.topology.shards {
        if shard.master == *except {
            continue;
        }
        match names_on(&shard.master, &source.endpoint, timeout).await {
            Ok(found) => names.extend(found),
            Err(why) => {
                tracing::warn!(source = %shard.master, error = %why, "cannot list this source master's function libraries; no target library is deleted");
                return None;
            }
        }
    }
    Some(names)
}

async fn names_on(
    node: &NodeAddr,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Vec<Bytes>, String> {
    let mut link = Link::connect(&node.host, node.port, endpoint, timeout)
        .await
        .map_err(|e| e.to_string())?;
    library_names_on(&mut link).await
}

/// The library names of `FUNCTION LIST` on `link`'s node, or why they could not be read.
pub(crate) async fn library_names_on(link: &mut Link) -> Result<Vec<Bytes>, String> {
    list(link).await.map_err(|reply| match reply {
        Some(Frame::Error(e)) => String::from_utf8_lossy(&e).into_owned(),
        Some(other) => format!("unexpected reply {other:?}"),
        None => "the link broke".into(),
    })
}

/// The library names of `FUNCTION LIST`; the reply that made no sense (`None`: the link
/// broke) otherwise.
async fn list(link: &mut Link) -> Result<Vec<Bytes>, Option<Frame>> {
    let reply = link
        .call(&["FUNCTION", "LIST"])
        .await
        .map_err(|_| None::<Frame>)?;
    library_names(&reply).ok_or(Some(reply))
}

/// `FUNCTION LIST` in RESP2: one array per library of field names and values, the name under
/// `library_name`.
fn library_names(reply: &Frame) -> Option<Vec<Bytes>> {
    let Frame::Array(Some(libraries)) = reply else {
        return None;
    };
    libraries
        .iter()
        .map(|library| {
            let Frame::Array(Some(fields)) = library else {
                return None;
            };
            fields.chunks(2).find_map(|pair| match pair {
                [Frame::Bulk(Some(field)) | Frame::SimpleString(field), Frame::Bulk(Some(name))]
                    if field.as_ref() == b"library_name" =>
                {
                    Some(name.clone())
                }
                _ => None,
            })
        })
        .collect()
}

/// The library's name from its first line (`#!lua name=mylib`), for messages.
pub fn library_name(code: &[u8]) -> String {
    let first = code.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(first)
        .split_whitespace()
        .find_map(|word| word.strip_prefix("name="))
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(first).into_owned())
}

fn rejected(command: &str, library: String, reply: Frame) -> ApplyError {
    let reply = match reply {
        Frame::Error(e) => String::from_utf8_lossy(&e).into_owned(),
        other => format!("unexpected reply {other:?}"),
    };
    let key = match library.is_empty() {
        true => "(function libraries)".to_string(),
        false => format!("(function library {library})"),
    };
    ApplyError::Rejected {
        key,
        command: command.to_string(),
        reply,
    }
}

fn link_error(source: LinkError) -> ApplyError {
    ApplyError::Link {
        attempts: 1,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_shebang_line() {
        assert_eq!(
            library_name(b"#!lua name=mylib\nredis.register_function('f', function() end)"),
            "mylib"
        );
        assert_eq!(library_name(b"#!lua  engine=x name=other"), "other");
        assert_eq!(library_name(b"return 1"), "return 1");
    }

    #[test]
    fn function_list_replies_give_library_names() {
        let library = |name: &'static str| {
            Frame::Array(Some(vec![
                Frame::bulk("library_name"),
                Frame::bulk(name),
                Frame::bulk("engine"),
                Frame::bulk("LUA"),
                Frame::bulk("functions"),
                Frame::Array(Some(vec![])),
            ]))
        };
        let reply = Frame::Array(Some(vec![library("a"), library("b")]));
        assert_eq!(
            library_names(&reply),
            Some(vec![Bytes::from("a"), Bytes::from("b")])
        );
        assert_eq!(library_names(&Frame::Array(Some(vec![]))), Some(vec![]));
        assert_eq!(library_names(&Frame::Error("ERR unknown".into())), None);
    }
}
