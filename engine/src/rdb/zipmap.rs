//! Zipmaps (`zipmap.c`): small hashes of Redis 2.4 and earlier, still loaded by every Redis.
//!
//! ```text
//! <zmlen> <len>"foo"<len><free>"bar" <len>"hello"<len><free>"world" ... <0xff>
//! ```
//! `zmlen` counts the pairs when below 254. A length is one byte below 254, else 254 and 4
//! bytes; `free` unused bytes follow each value.

use super::error::Malformed;

/// `ZIPMAP_BIGLEN`.
const BIGLEN: u8 = 254;
/// `ZIPMAP_END`.
const END: u8 = 255;

/// A field and its value.
type Pair<'a> = (&'a [u8], &'a [u8]);

/// Reads a zipmap's field-value pairs in order (`zipmapValidateIntegrity`).
#[derive(Debug, Clone)]
pub(super) struct ZipmapReader<'a> {
    zm: &'a [u8],
    pos: usize,
    seen: usize,
    declared: Option<u8>,
}

impl<'a> ZipmapReader<'a> {
    pub fn new(zm: &'a [u8]) -> Result<Self, Malformed> {
        if zm.len() < 2 {
            return Err(Malformed {
                at: 0,
                expected: "at least 2 bytes (zmlen and end byte)",
            });
        }
        Ok(ZipmapReader {
            zm,
            pos: 1,
            seen: 0,
            declared: (zm[0] < BIGLEN).then_some(zm[0]),
        })
    }

    /// `zipmapDecodeLength` at `at`: the length and the bytes it took.
    fn length(&self, at: usize) -> Result<(usize, usize), Malformed> {
        match self.zm.get(at) {
            Some(&len) if len < BIGLEN => Ok((usize::from(len), 1)),
            Some(&BIGLEN) => {
                let Some(bytes) = self.zm.get(at + 1..at + 5) else {
                    return Err(Malformed {
                        at,
                        expected: "a 4-byte length within the zipmap",
                    });
                };
                let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                Ok((usize::try_from(len).unwrap_or(usize::MAX), 5))
            }
            _ => Err(Malformed {
                at,
                expected: "a zipmap length",
            }),
        }
    }

    fn bytes(&self, at: usize, len: usize) -> Result<&'a [u8], Malformed> {
        at.checked_add(len)
            .and_then(|end| self.zm.get(at..end))
            .ok_or(Malformed {
                at,
                expected: "a string within the zipmap",
            })
    }

    /// The next pair, or `None` at the end byte.
    pub fn next(&mut self) -> Result<Option<Pair<'a>>, Malformed> {
        let at = self.pos;
        if self.zm.get(at) == Some(&END) {
            if at != self.zm.len() - 1 {
                return Err(Malformed {
                    at,
                    expected: "the end byte only at the end",
                });
            }
            if let Some(declared) = self.declared {
                if usize::from(declared) != self.seen {
                    return Err(Malformed {
                        at: 0,
                        expected: "as many pairs as zmlen declares",
                    });
                }
            }
            return Ok(None);
        }
        let (field_len, size) = self.length(at)?;
        let field = self.bytes(at + size, field_len)?;
        let mut p = at + size + field_len;
        let (value_len, size) = self.length(p)?;
        p += size;
        let Some(&free) = self.zm.get(p) else {
            return Err(Malformed {
                at: p,
                expected: "the free byte of a zipmap value",
            });
        };
        let value = self.bytes(p + 1, value_len)?;
        p += 1 + value_len;
        // The free bytes must leave room for the end byte.
        let next = p + usize::from(free);
        if next >= self.zm.len() {
            return Err(Malformed {
                at: p,
                expected: "free bytes within the zipmap",
            });
        }
        self.pos = next;
        self.seen += 1;
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn zipmap(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut zm = vec![pairs.len().min(253) as u8];
        let len = |zm: &mut Vec<u8>, n: usize| {
            if n < 254 {
                zm.push(n as u8);
            } else {
                zm.push(BIGLEN);
                zm.extend_from_slice(&(n as u32).to_le_bytes());
            }
        };
        for (field, value) in pairs {
            len(&mut zm, field.len());
            zm.extend_from_slice(field);
            len(&mut zm, value.len());
            zm.push(2);
            zm.extend_from_slice(value);
            zm.extend_from_slice(b"??");
        }
        zm.push(END);
        zm
    }

    #[test]
    fn reads_pairs_and_skips_free_bytes() {
        let big = vec![b'v'; 600];
        let pairs: [(&[u8], &[u8]); 3] = [(b"foo", b"bar"), (b"", b""), (b"big", &big)];
        let zm = zipmap(&pairs);
        let mut reader = ZipmapReader::new(&zm).unwrap();
        for (field, value) in pairs {
            assert_eq!(reader.next().unwrap(), Some((field, value)));
        }
        assert_eq!(reader.next().unwrap(), None);
    }

    #[test]
    fn refuses_truncated_or_miscounted_zipmaps() {
        let zm = zipmap(&[(b"foo", b"bar")]);
        let mut bad = zm.clone();
        bad[0] = 2;
        let mut reader = ZipmapReader::new(&bad).unwrap();
        reader.next().unwrap();
        assert!(reader.next().is_err());
        let bad = &zm[..zm.len() - 3];
        assert!(ZipmapReader::new(bad).unwrap().next().is_err());
        assert!(ZipmapReader::new(&[0]).is_err());
    }
}
