//! Listpacks (`listpack.c`): how Redis 7 saves small hashes, sets, sorted sets, list nodes and
//! stream nodes.
//!
//! ```text
//! <total-bytes u32> <num-elements u16> <element> ... <element> <0xff>
//! element = <encoding-type><element-data><element-tot-len>
//! ```
//! `num-elements` is 65535 when the count did not fit. `element-tot-len` ("backlen") is the
//! length of encoding and data, written so it can be read backwards: 7 bits a byte, the first
//! byte with its high bit clear.

use super::error::Malformed;
use super::sink::Item;

/// `LP_HDR_SIZE`: 32-bit total bytes and 16-bit number of elements.
const HEADER_SIZE: usize = 6;
/// `LP_EOF`.
const EOF: u8 = 0xff;
/// `LP_HDR_NUMELE_UNKNOWN`.
const NUMELE_UNKNOWN: u16 = u16::MAX;

/// Reads a listpack's elements in order, checking each as `lpValidateNext` does.
#[derive(Debug, Clone)]
pub(crate) struct ListpackReader<'a> {
    lp: &'a [u8],
    pos: usize,
    seen: usize,
    declared: Option<u16>,
}

impl<'a> ListpackReader<'a> {
    /// Checks the header and the end byte (`lpValidateIntegrity`'s shallow part).
    pub fn new(lp: &'a [u8]) -> Result<Self, Malformed> {
        if lp.len() < HEADER_SIZE + 1 {
            return Err(Malformed {
                at: 0,
                expected: "at least 7 bytes (header and end byte)",
            });
        }
        let total = u32::from_le_bytes([lp[0], lp[1], lp[2], lp[3]]);
        if usize::try_from(total).ok() != Some(lp.len()) {
            return Err(Malformed {
                at: 0,
                expected: "a total-bytes header equal to the string's length",
            });
        }
        if lp[lp.len() - 1] != EOF {
            return Err(Malformed {
                at: lp.len() - 1,
                expected: "the 0xff end byte",
            });
        }
        let count = u16::from_le_bytes([lp[4], lp[5]]);
        Ok(ListpackReader {
            lp,
            pos: HEADER_SIZE,
            seen: 0,
            declared: (count != NUMELE_UNKNOWN).then_some(count),
        })
    }

    /// Where the next element starts.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next element, or `None` at the end byte (after checking the count).
    pub fn next(&mut self) -> Result<Option<Item<'a>>, Malformed> {
        let lp = self.lp;
        let at = self.pos;
        // The last byte is the end byte, so `at` is always in bounds.
        let Some(&first) = lp.get(at) else {
            return Err(Malformed {
                at,
                expected: "an element or the end byte",
            });
        };
        let end = lp.len() - 1;
        if first == EOF {
            if at != end {
                return Err(Malformed {
                    at,
                    expected: "the end byte only at the end",
                });
            }
            if let Some(declared) = self.declared {
                if usize::from(declared) != self.seen {
                    return Err(Malformed {
                        at: 4,
                        expected: "as many elements as the header declares",
                    });
                }
            }
            return Ok(None);
        }
        let byte = |i: usize| -> Result<u8, Malformed> {
            if at + i < end {
                Ok(lp[at + i])
            } else {
                Err(Malformed {
                    at,
                    expected: "an element encoding within the listpack",
                })
            }
        };
        // (encoding bytes, data bytes, the element if it is an integer)
        let (header, data, int) = if first & 0x80 == 0 {
            // LP_ENCODING_7BIT_UINT
            (1, 0, Some(i64::from(first & 0x7f)))
        } else if first & 0xc0 == 0x80 {
            // LP_ENCODING_6BIT_STR
            (1, usize::from(first & 0x3f), None)
        } else if first & 0xe0 == 0xc0 {
            // LP_ENCODING_13BIT_INT
            let uval = (u64::from(first & 0x1f) << 8) | u64::from(byte(1)?);
            (2, 0, Some(signed(uval, 13)))
        } else if first & 0xf0 == 0xe0 {
            // LP_ENCODING_12BIT_STR
            (
                2,
                (usize::from(first & 0x0f) << 8) | usize::from(byte(1)?),
                None,
            )
        } else {
            match first {
                // LP_ENCODING_32BIT_STR
                0xf0 => {
                    let len = u32::from_le_bytes([byte(1)?, byte(2)?, byte(3)?, byte(4)?]);
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    (5, len, None)
                }
                // LP_ENCODING_16BIT_INT, 24, 32, 64
                0xf1..=0xf4 => {
                    let width = match first {
                        0xf1 => 2,
                        0xf2 => 3,
                        0xf3 => 4,
                        _ => 8,
                    };
                    let mut uval = 0u64;
                    for i in 0..width {
                        uval |= u64::from(byte(1 + i)?) << (8 * i);
                    }
                    (1 + width, 0, Some(signed(uval, 8 * width as u32)))
                }
                _ => {
                    return Err(Malformed {
                        at,
                        expected: "a listpack element encoding",
                    })
                }
            }
        };
        let entry_len = header + data;
        let backlen = backlen_size(entry_len);
        let Some(next) = at
            .checked_add(entry_len)
            .and_then(|n| n.checked_add(backlen))
            .filter(|&n| n <= end)
        else {
            return Err(Malformed {
                at,
                expected: "an element within the listpack",
            });
        };
        if decode_backlen(&lp[at + entry_len..next]) != Some(entry_len as u64) {
            return Err(Malformed {
                at: at + entry_len,
                expected: "a back length equal to the element's length",
            });
        }
        self.pos = next;
        self.seen += 1;
        Ok(Some(match int {
            Some(n) => Item::Int(n),
            None => Item::Str(&lp[at + header..at + entry_len]),
        }))
    }
}

/// Two's complement of the low `bits` bits of `uval`.
fn signed(uval: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((uval << shift) as i64) >> shift
}

/// `lpEncodeBacklen`'s size for an element of `len` bytes.
fn backlen_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2_097_150 => 3,
        2_097_151..=268_435_454 => 4,
        _ => 5,
    }
}

/// `lpDecodeBacklen` over exactly the bytes of one back length.
fn decode_backlen(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (shift, &b) in bytes.iter().rev().enumerate() {
        value |= u64::from(b & 127) << (7 * shift);
        let last = shift + 1 == bytes.len();
        if (b & 128 == 0) != last {
            return None;
        }
    }
    Some(value)
}

/// Writes listpacks, for tests of everything that reads them.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn encode_backlen(len: usize) -> Vec<u8> {
        let n = backlen_size(len);
        let mut out = vec![0u8; n];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 7 * (n - 1 - i);
            *slot = ((len >> shift) & 127) as u8;
            if i > 0 {
                *slot |= 128;
            }
        }
        out
    }

    /// A listpack of `items`, integers in their smallest encoding.
    pub(crate) fn listpack(items: &[Item<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for item in items {
            let mut entry = Vec::new();
            match *item {
                Item::Int(n) if (0..=127).contains(&n) => entry.push(n as u8),
                Item::Int(n) if (-4096..4096).contains(&n) => {
                    let u = (n as u64) & 0x1fff;
                    entry.push(0xc0 | (u >> 8) as u8);
                    entry.push(u as u8);
                }
                Item::Int(n) if i16::try_from(n).is_ok() => {
                    entry.push(0xf1);
                    entry.extend_from_slice(&(n as i16).to_le_bytes());
                }
                Item::Int(n) if (-(1 << 23)..(1 << 23)).contains(&n) => {
                    entry.push(0xf2);
                    entry.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
                }
                Item::Int(n) if i32::try_from(n).is_ok() => {
                    entry.push(0xf3);
                    entry.extend_from_slice(&(n as i32).to_le_bytes());
                }
                Item::Int(n) => {
                    entry.push(0xf4);
                    entry.extend_from_slice(&n.to_le_bytes());
                }
                Item::Str(s) if s.len() < 64 => {
                    entry.push(0x80 | s.len() as u8);
                    entry.extend_from_slice(s);
                }
                Item::Str(s) if s.len() < 4096 => {
                    entry.push(0xe0 | (s.len() >> 8) as u8);
                    entry.push(s.len() as u8);
                    entry.extend_from_slice(s);
                }
                Item::Str(s) => {
                    entry.push(0xf0);
                    entry.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    entry.extend_from_slice(s);
                }
            }
            let backlen = encode_backlen(entry.len());
            body.extend_from_slice(&entry);
            body.extend_from_slice(&backlen);
        }
        let total = HEADER_SIZE + body.len() + 1;
        let mut lp = Vec::with_capacity(total);
        lp.extend_from_slice(&(total as u32).to_le_bytes());
        let count = u16::try_from(items.len()).unwrap_or(NUMELE_UNKNOWN);
        lp.extend_from_slice(&count.to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(EOF);
        lp
    }

    fn read_all(lp: &[u8]) -> Result<Vec<Item<'_>>, Malformed> {
        let mut reader = ListpackReader::new(lp)?;
        let mut items = Vec::new();
        while let Some(item) = reader.next()? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn every_encoding_round_trips() {
        let long = vec![b'x'; 5000];
        let medium = vec![b'y'; 300];
        let items = [
            Item::Int(0),
            Item::Int(127),
            Item::Int(128),
            Item::Int(-1),
            Item::Int(-4096),
            Item::Int(4095),
            Item::Int(-32768),
            Item::Int(8_000_000),
            Item::Int(-8_388_608),
            Item::Int(i32::MIN.into()),
            Item::Int(i64::MAX),
            Item::Int(i64::MIN),
            Item::Str(b""),
            Item::Str(b"hello"),
            Item::Str(&medium),
            Item::Str(&long),
        ];
        let lp = listpack(&items);
        assert_eq!(read_all(&lp).unwrap(), items);
        assert_eq!(u16::from_le_bytes([lp[4], lp[5]]), 16);
        assert_eq!(read_all(&listpack(&[])).unwrap(), vec![]);
    }

    #[test]
    fn backlens_read_backwards() {
        for len in [1, 127, 128, 16382, 16383, 2_097_150, 2_097_151, 300_000_000] {
            assert_eq!(decode_backlen(&encode_backlen(len)), Some(len as u64));
        }
        assert_eq!(decode_backlen(&[0x81]), None);
        assert_eq!(decode_backlen(&[0x01, 0x01]), None);
    }

    #[test]
    fn malformed_listpacks_are_refused_with_a_position() {
        let lp = listpack(&[Item::Str(b"abc"), Item::Int(5)]);
        // Wrong total bytes.
        let mut bad = lp.clone();
        bad[0] += 1;
        assert_eq!(read_all(&bad).unwrap_err().at, 0);
        // Missing end byte.
        let mut bad = lp.clone();
        *bad.last_mut().unwrap() = 0;
        assert!(read_all(&bad).is_err());
        // Wrong count.
        let mut bad = lp.clone();
        bad[4] = 3;
        assert_eq!(
            read_all(&bad).unwrap_err().expected,
            "as many elements as the header declares"
        );
        // A string running past the end.
        let mut bad = lp.clone();
        bad[6] = 0x80 | 60;
        assert!(read_all(&bad).is_err());
        // A bad back length.
        let mut bad = lp.clone();
        bad[10] = 9;
        assert_eq!(bad[10 - 4], 0x83);
        assert_eq!(
            read_all(&bad).unwrap_err().expected,
            "a back length equal to the element's length"
        );
        // An invalid encoding byte.
        let mut bad = lp.clone();
        bad[6] = 0xf5;
        assert_eq!(
            read_all(&bad).unwrap_err().expected,
            "a listpack element encoding"
        );
        // Too short.
        assert!(ListpackReader::new(&[7, 0, 0, 0, 0, 0]).is_err());
    }
}
