//! Replication IDs and offsets, the pair that names a position in a master's history.

use std::fmt;
use std::str::FromStr;

/// A replication ID: 40 hexadecimal characters naming one history of a master's data set
/// (`master_replid` in `INFO replication`). A replica promoted to master starts a new one and
/// keeps the old one as `master_replid2`, so its former siblings can continue from it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplId([u8; ReplId::LEN]);

/// Bytes that are not a replication ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReplId {
    #[error("replid is {0} bytes long, expected 40 hex characters")]
    Length(usize),
    #[error("replid has {} at position {position}, expected a hex character", .byte.escape_ascii())]
    NotHex { position: usize, byte: u8 },
}

impl ReplId {
    /// `CONFIG_RUN_ID_SIZE`.
    pub const LEN: usize = 40;

    /// Reads a replication ID as a master prints it.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidReplId> {
        let id: [u8; Self::LEN] = bytes
            .try_into()
            .map_err(|_| InvalidReplId::Length(bytes.len()))?;
        match id.iter().position(|b| !b.is_ascii_hexdigit()) {
            Some(position) => Err(InvalidReplId::NotHex {
                position,
                byte: id[position],
            }),
            None => Ok(ReplId(id)),
        }
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits get in.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for ReplId {
    type Err = InvalidReplId;

    fn from_str(s: &str) -> Result<Self, InvalidReplId> {
        ReplId::parse(s.as_bytes())
    }
}

impl fmt::Display for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplId({})", self.as_str())
    }
}

/// A replication offset: how many bytes of its replication stream a master has produced
/// (`master_repl_offset`), or a replica has processed. Every byte a master propagates after
/// the snapshot counts, `PING`s and `REPLCONF GETACK`s included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplOffset(u64);

impl ReplOffset {
    pub const fn new(offset: u64) -> Self {
        ReplOffset(offset)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The offset `bytes` further on in the stream.
    #[must_use]
    pub const fn advance(self, bytes: u64) -> Self {
        ReplOffset(self.0.saturating_add(bytes))
    }
}

impl fmt::Display for ReplOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replids_are_40_hex_characters() {
        let id: ReplId = "8de1787ba490483314a4d30f1c628bc5025eb761".parse().unwrap();
        assert_eq!(id.to_string(), "8de1787ba490483314a4d30f1c628bc5025eb761");
        assert_eq!(
            format!("{id:?}"),
            "ReplId(8de1787ba490483314a4d30f1c628bc5025eb761)"
        );
        assert_eq!(ReplId::parse(b"?"), Err(InvalidReplId::Length(1)));
        assert_eq!(
            ReplId::parse(b"8de1787ba490483314a4d30f1c628bc5025eb76g"),
            Err(InvalidReplId::NotHex {
                position: 39,
                byte: b'g'
            })
        );
        assert_eq!(
            InvalidReplId::NotHex {
                position: 0,
                byte: b'\n'
            }
            .to_string(),
            "replid has \\n at position 0, expected a hex character"
        );
    }

    #[test]
    fn offsets_advance_by_bytes() {
        let offset = ReplOffset::new(396);
        assert_eq!(offset.advance(14).get(), 410);
        assert_eq!(ReplOffset::new(u64::MAX).advance(1).get(), u64::MAX);
        assert_eq!(offset.to_string(), "396");
    }
}
