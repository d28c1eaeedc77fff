//! Stream nodes (`t_stream.c`): the listpacks a stream's radix tree points to.
//!
//! Each node starts with a master entry whose fields the node's entries may share, then holds
//! entries whose IDs are deltas from the node's master ID (the radix tree key):
//! ```text
//! master: count | deleted | num-fields | field_1 | ... | field_N | 0
//! entry:  flags | ms-diff | seq-diff | num-fields | field_1 | value_1 | ... | lp-count
//! entry with STREAM_ITEM_FLAG_SAMEFIELDS:
//!         flags | ms-diff | seq-diff | value_1 | ... | value_N | lp-count
//! ```
//! Deleted entries keep their place, flagged `STREAM_ITEM_FLAG_DELETED`.

use super::error::Malformed;
use super::format::StreamId;
use super::listpack::ListpackReader;
use super::sink::{Item, StreamEntry, StreamFields};

/// `STREAM_ITEM_FLAG_DELETED`.
const FLAG_DELETED: i64 = 1 << 0;
/// `STREAM_ITEM_FLAG_SAMEFIELDS`.
const FLAG_SAMEFIELDS: i64 = 1 << 1;

/// A checked stream node: every entry is well formed and the counts add up
/// (`streamValidateListpackIntegrity` in deep mode).
#[derive(Debug, Clone)]
pub(super) struct StreamNode<'a> {
    master_id: StreamId,
    /// Positioned at the master entry's first field.
    master_fields: ListpackReader<'a>,
    master_field_count: usize,
    /// Positioned at the first entry.
    entries: ListpackReader<'a>,
}

fn int(reader: &mut ListpackReader<'_>, expected: &'static str) -> Result<i64, Malformed> {
    let at = reader.pos();
    match reader.next()? {
        Some(item) => item.as_i64().ok_or(Malformed { at, expected }),
        None => Err(Malformed { at, expected }),
    }
}

fn count(reader: &mut ListpackReader<'_>, expected: &'static str) -> Result<usize, Malformed> {
    let at = reader.pos();
    let n = int(reader, expected)?;
    usize::try_from(n).map_err(|_| Malformed { at, expected })
}

fn skip(reader: &mut ListpackReader<'_>, n: usize) -> Result<(), Malformed> {
    for _ in 0..n {
        let at = reader.pos();
        if reader.next()?.is_none() {
            return Err(Malformed {
                at,
                expected: "the fields and values of a stream entry",
            });
        }
    }
    Ok(())
}

impl<'a> StreamNode<'a> {
    /// Checks the node whose radix tree key is `master_id`.
    pub fn new(master_id: StreamId, lp: &'a [u8]) -> Result<Self, Malformed> {
        let mut reader = ListpackReader::new(lp)?;
        let valid = count(&mut reader, "the master entry's count of valid entries")?;
        let deleted = count(&mut reader, "the master entry's count of deleted entries")?;
        let master_field_count = count(&mut reader, "the master entry's number of fields")?;
        let master_fields = reader.clone();
        skip(&mut reader, master_field_count)?;
        let at = reader.pos();
        if int(&mut reader, "the master entry's terminating 0")? != 0 {
            return Err(Malformed {
                at,
                expected: "the master entry's terminating 0",
            });
        }
        let entries = reader.clone();
        let (mut valid_seen, mut deleted_seen) = (0usize, 0usize);
        loop {
            let at = reader.pos();
            let Some(flags) = reader.next()? else { break };
            let flags = flags.as_i64().ok_or(Malformed {
                at,
                expected: "an entry's flags",
            })?;
            int(&mut reader, "an entry's ms-diff")?;
            int(&mut reader, "an entry's seq-diff")?;
            let lp_count = if flags & FLAG_SAMEFIELDS == 0 {
                let fields = count(&mut reader, "an entry's number of fields")?;
                let items = fields.checked_mul(2).ok_or(Malformed {
                    at,
                    expected: "an entry's number of fields",
                })?;
                skip(&mut reader, items)?;
                items + 4
            } else {
                skip(&mut reader, master_field_count)?;
                master_field_count + 3
            };
            let at = reader.pos();
            if count(&mut reader, "an entry's lp-count")? != lp_count {
                return Err(Malformed {
                    at,
                    expected: "an lp-count equal to the entry's number of elements",
                });
            }
            if flags & FLAG_DELETED == 0 {
                valid_seen += 1;
            } else {
                deleted_seen += 1;
            }
        }
        if valid_seen != valid || deleted_seen != deleted {
            return Err(Malformed {
                at: 6,
                expected: "master entry counts equal to the node's valid and deleted entries",
            });
        }
        Ok(StreamNode {
            master_id,
            master_fields,
            master_field_count,
            entries,
        })
    }

    /// The node's entries that are not deleted, in order.
    pub fn entries(&self) -> impl Iterator<Item = StreamEntry<'a>> + '_ {
        let mut reader = self.entries.clone();
        // The node was checked whole in `new`, so every read below succeeds.
        let int = move |reader: &mut ListpackReader<'a>| -> Option<i64> {
            reader.next().ok().flatten().as_ref().and_then(Item::as_i64)
        };
        std::iter::from_fn(move || loop {
            let flags = int(&mut reader)?;
            let ms_diff = int(&mut reader)?;
            let seq_diff = int(&mut reader)?;
            let id = StreamId {
                ms: self.master_id.ms.wrapping_add(ms_diff as u64),
                seq: self.master_id.seq.wrapping_add(seq_diff as u64),
            };
            let (master, fields_at, remaining) = if flags & FLAG_SAMEFIELDS == 0 {
                let fields = usize::try_from(int(&mut reader)?).ok()?;
                let at = reader.clone();
                skip(&mut reader, fields * 2).ok()?;
                (None, at, fields)
            } else {
                let at = reader.clone();
                skip(&mut reader, self.master_field_count).ok()?;
                (
                    Some(self.master_fields.clone()),
                    at,
                    self.master_field_count,
                )
            };
            int(&mut reader)?;
            if flags & FLAG_DELETED == 0 {
                return Some(StreamEntry {
                    id,
                    fields: StreamFields {
                        master,
                        entry: fields_at,
                        remaining,
                    },
                });
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rdb::listpack::tests::listpack;

    /// An entry to write: ms-diff, seq-diff, deleted, fields.
    pub(crate) type TestEntry<'a> = (i64, i64, bool, Vec<(&'a [u8], &'a [u8])>);

    /// A stream node with master fields `master` and `entries`: entries whose field names
    /// equal the master's use SAMEFIELDS.
    pub(crate) fn node(master: &[&[u8]], entries: &[TestEntry<'_>]) -> Vec<u8> {
        let valid = entries.iter().filter(|e| !e.2).count() as i64;
        let deleted = entries.len() as i64 - valid;
        let mut items = vec![
            Item::Int(valid),
            Item::Int(deleted),
            Item::Int(master.len() as i64),
        ];
        items.extend(master.iter().map(|f| Item::Str(f)));
        items.push(Item::Int(0));
        for (ms, seq, del, fields) in entries {
            let same =
                fields.len() == master.len() && fields.iter().zip(master).all(|((f, _), m)| f == m);
            let mut flags = if *del { FLAG_DELETED } else { 0 };
            if same {
                flags |= FLAG_SAMEFIELDS;
            }
            items.push(Item::Int(flags));
            items.push(Item::Int(*ms));
            items.push(Item::Int(*seq));
            if same {
                items.extend(fields.iter().map(|(_, v)| Item::Str(v)));
                items.push(Item::Int(fields.len() as i64 + 3));
            } else {
                items.push(Item::Int(fields.len() as i64));
                for (f, v) in fields {
                    items.push(Item::Str(f));
                    items.push(Item::Str(v));
                }
                items.push(Item::Int(fields.len() as i64 * 2 + 4));
            }
        }
        listpack(&items)
    }

    #[test]
    fn entries_with_shared_and_own_fields() {
        let lp = node(
            &[b"a", b"b"],
            &[
                (0, 0, false, vec![(b"a", b"1"), (b"b", b"2")]),
                (5, 1, true, vec![(b"x", b"gone")]),
                (7, 0, false, vec![(b"c", b"3")]),
            ],
        );
        let node = StreamNode::new(StreamId { ms: 100, seq: 2 }, &lp).unwrap();
        let entries: Vec<_> = node
            .entries()
            .map(|e| (e.id, e.fields.collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            entries,
            vec![
                (
                    StreamId { ms: 100, seq: 2 },
                    vec![
                        (Item::Str(b"a"), Item::Str(b"1")),
                        (Item::Str(b"b"), Item::Str(b"2"))
                    ]
                ),
                (
                    StreamId { ms: 107, seq: 2 },
                    vec![(Item::Str(b"c"), Item::Str(b"3"))]
                ),
            ]
        );
    }

    #[test]
    fn miscounted_nodes_are_refused() {
        // The master entry claims two valid entries; there is one.
        let mut items = vec![Item::Int(2), Item::Int(0), Item::Int(0), Item::Int(0)];
        items.extend([
            Item::Int(0),
            Item::Int(0),
            Item::Int(0),
            Item::Int(0),
            Item::Int(4),
        ]);
        let lp = listpack(&items);
        assert!(StreamNode::new(StreamId::default(), &lp).is_err());
        // A wrong lp-count.
        items[0] = Item::Int(1);
        items[8] = Item::Int(5);
        let lp = listpack(&items);
        assert_eq!(
            StreamNode::new(StreamId::default(), &lp)
                .unwrap_err()
                .expected,
            "an lp-count equal to the entry's number of elements"
        );
        // An empty listpack.
        assert!(StreamNode::new(StreamId::default(), &listpack(&[])).is_err());
    }
}
