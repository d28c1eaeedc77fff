//! What can be wrong with an RDB file or a `DUMP` payload.

use super::format::ObjectType;

/// Bytes that are not a valid RDB file and cannot become one whatever follows them, or an
/// input that ended before the file did.
///
/// Offsets count bytes from the first byte of the file (the `R` of `REDIS`); for a `DUMP`
/// payload, from the type byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdbError {
    #[error("not an rdb file: header {} at offset 0, expected REDIS0001 to REDIS0012 or VALKEY080", .found.escape_ascii())]
    BadMagic { found: Vec<u8> },
    #[error("unsupported rdb version in header {} at offset 0, expected REDIS0001 to REDIS0012 or VALKEY080", .found.escape_ascii())]
    UnsupportedVersion { found: Vec<u8> },
    #[error("unknown type or opcode {byte} at offset {offset}, expected {expected}")]
    UnknownType {
        offset: u64,
        byte: u8,
        expected: &'static str,
    },
    #[error("{what} at offset {offset} is not supported")]
    Unsupported { offset: u64, what: &'static str },
    #[error("invalid data at offset {offset}, expected {expected}")]
    Corrupt { offset: u64, expected: &'static str },
    #[error("{what} at offset {offset} is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        offset: u64,
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("invalid {encoding} in the string at offset {offset}: at byte {at} of it, expected {expected}")]
    BadEncoding {
        offset: u64,
        encoding: &'static str,
        at: usize,
        expected: &'static str,
    },
    #[error("rdb checksum mismatch at offset {offset}: the file says {stored:#018x}, its bytes give {computed:#018x}")]
    BadChecksum {
        offset: u64,
        stored: u64,
        computed: u64,
    },
    #[error("empty {object_type} value for the key at offset {offset}")]
    EmptyKey {
        offset: u64,
        object_type: ObjectType,
    },
    #[error("input ends at offset {offset}, expected {expected}")]
    Truncated { offset: u64, expected: &'static str },
    #[error("the parser stopped at offset {offset} after an earlier error")]
    Stopped { offset: u64 },
}

impl RdbError {
    /// Where the offending bytes start (for [`RdbError::Truncated`], where the input ended).
    pub fn offset(&self) -> u64 {
        match *self {
            RdbError::BadMagic { .. } | RdbError::UnsupportedVersion { .. } => 0,
            RdbError::UnknownType { offset, .. }
            | RdbError::Unsupported { offset, .. }
            | RdbError::Corrupt { offset, .. }
            | RdbError::TooLong { offset, .. }
            | RdbError::BadEncoding { offset, .. }
            | RdbError::BadChecksum { offset, .. }
            | RdbError::EmptyKey { offset, .. }
            | RdbError::Truncated { offset, .. }
            | RdbError::Stopped { offset } => offset,
        }
    }
}

/// Where and how an encoded blob (ziplist, listpack, intset, zipmap, stream listpack) is
/// malformed; the parser adds the offset of the string that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed {
    /// Byte position in the blob.
    pub at: usize,
    pub expected: &'static str,
}

impl Malformed {
    pub fn in_string(self, offset: u64, encoding: &'static str) -> RdbError {
        RdbError::BadEncoding {
            offset,
            encoding,
            at: self.at,
            expected: self.expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_offset_and_what_was_expected() {
        let error = RdbError::BadEncoding {
            offset: 120,
            encoding: "ziplist",
            at: 11,
            expected: "the 0xff end byte",
        };
        assert_eq!(
            error.to_string(),
            "invalid ziplist in the string at offset 120: at byte 11 of it, expected the 0xff end byte"
        );
        assert_eq!(error.offset(), 120);
        let error = RdbError::BadMagic {
            found: b"GIF89a\0\x01\n".to_vec(),
        };
        assert_eq!(
            error.to_string(),
            "not an rdb file: header GIF89a\\x00\\x01\\n at offset 0, expected REDIS0001 to REDIS0012 or VALKEY080"
        );
        let error = RdbError::Truncated {
            offset: 9,
            expected: "a type or opcode",
        };
        assert_eq!(
            error.to_string(),
            "input ends at offset 9, expected a type or opcode"
        );
    }
}
