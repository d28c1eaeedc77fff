//! Ziplists (`ziplist.c`): small lists, hashes and sorted sets before Redis 7, and the nodes
//! of `RDB_TYPE_LIST_QUICKLIST`.
//!
//! ```text
//! <zlbytes u32> <zltail u32> <zllen u16> <entry> ... <entry> <0xff>
//! entry = <prevlen> <encoding> <entry-data>
//! ```
//! `prevlen` is one byte below 254, else 0xfe and 4 bytes. Strings have a 1, 2 or 5 byte
//! encoding with their length; integers one byte (`11xxxxxx`), with 4-bit immediates 0 to 12
//! in `1111xxxx`.

use super::error::Malformed;
use super::sink::Item;

/// `ZIPLIST_HEADER_SIZE`.
const HEADER_SIZE: usize = 10;
/// `ZIP_END`.
const END: u8 = 0xff;
/// `ZIP_BIG_PREVLEN`.
const BIG_PREVLEN: u8 = 254;

/// Reads a ziplist's entries in order, checking each as `ziplistValidateIntegrity` does in
/// deep mode (bounds, `prevlen` chain, `zltail`, count).
#[derive(Debug, Clone)]
pub(super) struct ZiplistReader<'a> {
    zl: &'a [u8],
    pos: usize,
    seen: usize,
    declared: Option<u16>,
    tail: usize,
    prev_len: usize,
    last_entry: Option<usize>,
}

impl<'a> ZiplistReader<'a> {
    pub fn new(zl: &'a [u8]) -> Result<Self, Malformed> {
        if zl.len() < HEADER_SIZE + 1 {
            return Err(Malformed {
                at: 0,
                expected: "at least 11 bytes (header and end byte)",
            });
        }
        let bytes = u32::from_le_bytes([zl[0], zl[1], zl[2], zl[3]]);
        if usize::try_from(bytes).ok() != Some(zl.len()) {
            return Err(Malformed {
                at: 0,
                expected: "a zlbytes header equal to the string's length",
            });
        }
        let tail = u32::from_le_bytes([zl[4], zl[5], zl[6], zl[7]]);
        let tail = usize::try_from(tail).unwrap_or(usize::MAX);
        if tail >= zl.len() {
            return Err(Malformed {
                at: 4,
                expected: "a zltail offset within the ziplist",
            });
        }
        if zl[zl.len() - 1] != END {
            return Err(Malformed {
                at: zl.len() - 1,
                expected: "the 0xff end byte",
            });
        }
        let count = u16::from_le_bytes([zl[8], zl[9]]);
        Ok(ZiplistReader {
            zl,
            pos: HEADER_SIZE,
            seen: 0,
            declared: (count != u16::MAX).then_some(count),
            tail,
            prev_len: 0,
            last_entry: None,
        })
    }

    /// The next entry, or `None` at the end byte (after checking count and tail).
    pub fn next(&mut self) -> Result<Option<Item<'a>>, Malformed> {
        let zl = self.zl;
        let at = self.pos;
        let end = zl.len() - 1;
        let Some(&first) = zl.get(at) else {
            return Err(Malformed {
                at,
                expected: "an entry or the end byte",
            });
        };
        if first == END {
            if at != end {
                return Err(Malformed {
                    at,
                    expected: "the end byte only at the end",
                });
            }
            if let Some(last) = self.last_entry {
                if last != self.tail {
                    return Err(Malformed {
                        at: 4,
                        expected: "a zltail offset pointing at the last entry",
                    });
                }
            }
            if let Some(declared) = self.declared {
                if usize::from(declared) != self.seen {
                    return Err(Malformed {
                        at: 8,
                        expected: "as many entries as zllen declares",
                    });
                }
            }
            return Ok(None);
        }
        let byte = |i: usize| -> Result<u8, Malformed> {
            if at + i < end {
                Ok(zl[at + i])
            } else {
                Err(Malformed {
                    at,
                    expected: "an entry header within the ziplist",
                })
            }
        };
        let (prevlen_size, prevlen) = if first < BIG_PREVLEN {
            (1, usize::from(first))
        } else {
            let len = u32::from_le_bytes([byte(1)?, byte(2)?, byte(3)?, byte(4)?]);
            (5, usize::try_from(len).unwrap_or(usize::MAX))
        };
        if prevlen != self.prev_len {
            return Err(Malformed {
                at,
                expected: "a prevlen equal to the previous entry's length",
            });
        }
        let encoding = byte(prevlen_size)?;
        let e = |i: usize| byte(prevlen_size + i);
        // (encoding bytes, data bytes, the entry if it is an integer)
        let (encoding_size, data, int) = match encoding >> 6 {
            // ZIP_STR_06B
            0 => (1, usize::from(encoding & 0x3f), None),
            // ZIP_STR_14B
            1 => (
                2,
                (usize::from(encoding & 0x3f) << 8) | usize::from(e(1)?),
                None,
            ),
            // ZIP_STR_32B
            2 => {
                let len = u32::from_be_bytes([e(1)?, e(2)?, e(3)?, e(4)?]);
                (5, usize::try_from(len).unwrap_or(usize::MAX), None)
            }
            _ => match encoding {
                // ZIP_INT_16B, ZIP_INT_32B, ZIP_INT_64B, ZIP_INT_24B, ZIP_INT_8B
                0xc0 => (1, 2, Some(0)),
                0xd0 => (1, 4, Some(0)),
                0xe0 => (1, 8, Some(0)),
                0xf0 => (1, 3, Some(0)),
                0xfe => (1, 1, Some(0)),
                // ZIP_INT_IMM_MIN..ZIP_INT_IMM_MAX: 0 to 12 in the low 4 bits, plus one.
                0xf1..=0xfd => (1, 0, Some(i64::from(encoding & 0x0f) - 1)),
                _ => {
                    return Err(Malformed {
                        at: at + prevlen_size,
                        expected: "a ziplist entry encoding",
                    })
                }
            },
        };
        let data_at = at + prevlen_size + encoding_size;
        let Some(next) = data_at.checked_add(data).filter(|&n| n <= end) else {
            return Err(Malformed {
                at,
                expected: "an entry within the ziplist",
            });
        };
        let payload = &zl[data_at..next];
        let item = match int {
            None => Item::Str(payload),
            Some(immediate) if payload.is_empty() => Item::Int(immediate),
            Some(_) => {
                let mut le = [0u8; 8];
                le[..payload.len()].copy_from_slice(payload);
                let shift = 64 - 8 * payload.len() as u32;
                Item::Int((i64::from_le_bytes(le) << shift) >> shift)
            }
        };
        self.prev_len = next - at;
        self.last_entry = Some(at);
        self.pos = next;
        self.seen += 1;
        Ok(Some(item))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ziplist of `items`, integers in their smallest encoding.
    pub(crate) fn ziplist(items: &[Item<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut prev_len = 0usize;
        let mut tail = HEADER_SIZE;
        for item in items {
            let mut entry = Vec::new();
            if prev_len < 254 {
                entry.push(prev_len as u8);
            } else {
                entry.push(BIG_PREVLEN);
                entry.extend_from_slice(&(prev_len as u32).to_le_bytes());
            }
            match *item {
                Item::Int(n) if (0..=12).contains(&n) => entry.push(0xf1 + n as u8),
                Item::Int(n) if i8::try_from(n).is_ok() => {
                    entry.push(0xfe);
                    entry.push(n as i8 as u8);
                }
                Item::Int(n) if i16::try_from(n).is_ok() => {
                    entry.push(0xc0);
                    entry.extend_from_slice(&(n as i16).to_le_bytes());
                }
                Item::Int(n) if (-(1 << 23)..(1 << 23)).contains(&n) => {
                    entry.push(0xf0);
                    entry.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
                }
                Item::Int(n) if i32::try_from(n).is_ok() => {
                    entry.push(0xd0);
                    entry.extend_from_slice(&(n as i32).to_le_bytes());
                }
                Item::Int(n) => {
                    entry.push(0xe0);
                    entry.extend_from_slice(&n.to_le_bytes());
                }
                Item::Str(s) if s.len() < 64 => {
                    entry.push(s.len() as u8);
                    entry.extend_from_slice(s);
                }
                Item::Str(s) if s.len() < 16384 => {
                    entry.push(0x40 | (s.len() >> 8) as u8);
                    entry.push(s.len() as u8);
                    entry.extend_from_slice(s);
                }
                Item::Str(s) => {
                    entry.push(0x80);
                    entry.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    entry.extend_from_slice(s);
                }
            }
            tail = HEADER_SIZE + body.len();
            prev_len = entry.len();
            body.extend_from_slice(&entry);
        }
        let total = HEADER_SIZE + body.len() + 1;
        let mut zl = Vec::with_capacity(total);
        zl.extend_from_slice(&(total as u32).to_le_bytes());
        zl.extend_from_slice(&(tail as u32).to_le_bytes());
        zl.extend_from_slice(&(items.len() as u16).to_le_bytes());
        zl.extend_from_slice(&body);
        zl.push(END);
        zl
    }

    fn read_all(zl: &[u8]) -> Result<Vec<Item<'_>>, Malformed> {
        let mut reader = ZiplistReader::new(zl)?;
        let mut items = Vec::new();
        while let Some(item) = reader.next()? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn every_encoding_round_trips() {
        let long = vec![b'l'; 20000];
        let medium = vec![b'm'; 300];
        let items = [
            Item::Int(0),
            Item::Int(12),
            Item::Int(13),
            Item::Int(-128),
            Item::Int(300),
            Item::Int(-32768),
            Item::Int(8_388_607),
            Item::Int(-8_388_608),
            Item::Int(i32::MAX.into()),
            Item::Int(i64::MIN),
            Item::Str(b""),
            Item::Str(b"abc"),
            Item::Str(&medium),
            Item::Str(&long),
            Item::Str(b"after a long one"),
        ];
        let zl = ziplist(&items);
        assert_eq!(read_all(&zl).unwrap(), items);
        assert_eq!(read_all(&ziplist(&[])).unwrap(), vec![]);
    }

    #[test]
    fn malformed_ziplists_are_refused_with_a_position() {
        let zl = ziplist(&[Item::Str(b"abc"), Item::Int(7), Item::Str(b"z")]);
        let mut bad = zl.clone();
        bad[4] = 11;
        assert_eq!(
            read_all(&bad).unwrap_err().expected,
            "a zltail offset pointing at the last entry"
        );
        let mut bad = zl.clone();
        bad[8] = 2;
        assert_eq!(
            read_all(&bad).unwrap_err().expected,
            "as many entries as zllen declares"
        );
        let mut bad = zl.clone();
        bad[15] = 4;
        assert_eq!(
            read_all(&bad).unwrap_err().expected,
            "a prevlen equal to the previous entry's length"
        );
        let mut bad = zl.clone();
        bad[11] = 40;
        assert!(read_all(&bad).is_err());
        let mut bad = zl.clone();
        bad[16] = 0xc5;
        assert_eq!(
            read_all(&bad).unwrap_err().expected,
            "a ziplist entry encoding"
        );
        let mut bad = zl.clone();
        bad[0] = 0;
        assert!(read_all(&bad).is_err());
    }
}
