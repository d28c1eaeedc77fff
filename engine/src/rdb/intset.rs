//! Intsets (`intset.c`): sets of integers, sorted, all of one width.
//!
//! ```text
//! <encoding u32: 2, 4 or 8> <length u32> <length integers of that width, little endian>
//! ```

use super::error::Malformed;

/// `sizeof(intset)`: encoding and length.
const HEADER_SIZE: usize = 8;

/// Reads an intset's members in order (`intsetValidateIntegrity`: width, length, size).
#[derive(Debug, Clone)]
pub(super) struct IntsetReader<'a> {
    contents: &'a [u8],
    width: usize,
}

impl<'a> IntsetReader<'a> {
    pub fn new(is: &'a [u8]) -> Result<Self, Malformed> {
        if is.len() < HEADER_SIZE {
            return Err(Malformed {
                at: 0,
                expected: "at least the 8-byte intset header",
            });
        }
        let width = match u32::from_le_bytes([is[0], is[1], is[2], is[3]]) {
            2 => 2,
            4 => 4,
            8 => 8,
            _ => {
                return Err(Malformed {
                    at: 0,
                    expected: "an intset encoding of 2, 4 or 8 bytes",
                })
            }
        };
        let length = u32::from_le_bytes([is[4], is[5], is[6], is[7]]);
        if u64::from(length) * width as u64 != (is.len() - HEADER_SIZE) as u64 {
            return Err(Malformed {
                at: 4,
                expected: "an intset length matching the string's size",
            });
        }
        Ok(IntsetReader {
            contents: &is[HEADER_SIZE..],
            width,
        })
    }
}

impl Iterator for IntsetReader<'_> {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        let (member, rest) = self.contents.split_at_checked(self.width)?;
        self.contents = rest;
        let mut le = [0u8; 8];
        le[..self.width].copy_from_slice(member);
        let shift = 64 - 8 * self.width as u32;
        Some((i64::from_le_bytes(le) << shift) >> shift)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn intset(width: u32, members: &[i64]) -> Vec<u8> {
        let mut is = Vec::new();
        is.extend_from_slice(&width.to_le_bytes());
        is.extend_from_slice(&(members.len() as u32).to_le_bytes());
        for m in members {
            is.extend_from_slice(&m.to_le_bytes()[..width as usize]);
        }
        is
    }

    #[test]
    fn reads_each_width() {
        for (width, members) in [
            (2, vec![-32768, -1, 0, 32767]),
            (4, vec![i64::from(i32::MIN), 70000]),
            (8, vec![i64::MIN, 0, i64::MAX]),
        ] {
            let is = intset(width, &members);
            let reader = IntsetReader::new(&is).unwrap();
            assert_eq!(reader.collect::<Vec<_>>(), members);
        }
    }

    #[test]
    fn refuses_bad_headers() {
        assert!(IntsetReader::new(&[2, 0, 0]).is_err());
        assert!(IntsetReader::new(&intset(3, &[1])).is_err());
        let mut is = intset(2, &[1, 2]);
        is.push(0);
        assert_eq!(IntsetReader::new(&is).unwrap_err().at, 4);
        let mut is = intset(8, &[1]);
        is[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(IntsetReader::new(&is).is_err());
    }
}
