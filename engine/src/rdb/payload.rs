//! `DUMP` payloads: what `DUMP` returns and `RESTORE` takes (`createDumpPayload` and
//! `verifyDumpPayload` in `cluster.c`).
//!
//! ```text
//! <type byte> <value, as in an RDB file> <RDB version, 2 bytes LE> <CRC64 of all before, 8 bytes LE>
//! ```
//! The parser hands out a value's bytes as the file holds them ([`ValueEnd::raw`]), so a
//! payload is those bytes with the type byte before and the footer after: no re-encoding.
//! A server refuses a payload whose RDB version is newer than its own.
//!
//! [`ValueEnd::raw`]: super::ValueEnd::raw

use super::crc64::crc64;
use super::format::{Magic, RdbType};

/// The footer's length: RDB version and CRC64.
pub const FOOTER_LEN: usize = 10;

/// Appends the payload of a value of `rdb_type` whose bytes are `value`, for a server of RDB
/// version `version` or newer, to `out` (a `Vec<u8>`, a `BytesMut`): type byte, value,
/// version, and the CRC64 of those, computed over the bytes where they landed.
pub fn append<B>(out: &mut B, rdb_type: RdbType, value: &[u8], version: u16)
where
    B: bytes::BufMut + std::ops::Deref<Target = [u8]>,
{
    let start = out.len();
    out.put_u8(rdb_type.byte());
    out.put_slice(value);
    out.put_slice(&version.to_le_bytes());
    let crc = crc64(0, &out[start..]);
    out.put_slice(&crc.to_le_bytes());
}

/// The whole payload, in one buffer.
pub fn build(rdb_type: RdbType, value: &[u8], version: u16) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + value.len() + FOOTER_LEN);
    append(&mut payload, rdb_type, value, version);
    payload
}

/// A payload as `DUMP` returned it, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    pub rdb_type: RdbType,
    /// The value's bytes, as an RDB file would hold them after the key.
    pub value: &'a [u8],
    /// The RDB version of the server that wrote it.
    pub version: u16,
}

/// Why bytes are not a payload this parser can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is {0} bytes long, expected at least 11 (type byte and footer)")]
    TooShort(usize),
    #[error("payload checksum mismatch: the payload says {stored:#018x}, its bytes give {computed:#018x}")]
    BadChecksum { stored: u64, computed: u64 },
    #[error("payload rdb version {0} is not supported, expected 1 to 12 or 80")]
    UnsupportedVersion(u16),
    #[error("unknown type {byte} at offset 0 of a payload of rdb version {version}")]
    UnknownType { byte: u8, version: u16 },
}

impl<'a> Payload<'a> {
    /// `verifyDumpPayload`: checks the footer's CRC64 (a zero CRC is accepted unchecked, as
    /// Redis does) and version, and reads the type byte with the type table of that version.
    pub fn read(payload: &'a [u8]) -> Result<Payload<'a>, PayloadError> {
        if payload.len() < 1 + FOOTER_LEN {
            return Err(PayloadError::TooShort(payload.len()));
        }
        let (body, crc) = payload.split_at(payload.len() - 8);
        let mut stored = [0u8; 8];
        stored.copy_from_slice(crc);
        let stored = u64::from_le_bytes(stored);
        let computed = crc64(0, body);
        if stored != 0 && stored != computed {
            return Err(PayloadError::BadChecksum { stored, computed });
        }
        let (body, version) = body.split_at(body.len() - 2);
        let version = u16::from_le_bytes([version[0], version[1]]);
        let supported = (1..=super::format::REDIS_MAX_VERSION).contains(&version)
            || super::format::VALKEY_VERSIONS.contains(&version);
        if !supported {
            return Err(PayloadError::UnsupportedVersion(version));
        }
        let byte = body[0];
        let rdb_type = RdbType::from_byte(byte, Magic::of_version(version))
            .ok_or(PayloadError::UnknownType { byte, version })?;
        Ok(Payload {
            rdb_type,
            value: &body[1..],
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `DUMP` of a string "bar" on Redis 7.0: `\x00\x03bar\n\x00` and the CRC.
    #[test]
    fn builds_what_dump_returns() {
        let payload = build(RdbType::String, b"\x03bar", 10);
        assert_eq!(&payload[..7], b"\x00\x03bar\x0a\x00");
        let crc = crc64(0, &payload[..7]);
        assert_eq!(&payload[7..], &crc.to_le_bytes());
        let read = Payload::read(&payload).unwrap();
        assert_eq!(read.rdb_type, RdbType::String);
        assert_eq!(read.value, b"\x03bar");
        assert_eq!(read.version, 10);
    }

    #[test]
    fn refuses_bad_payloads() {
        let mut payload = build(RdbType::Set, b"\x01\x01a", 9);
        assert!(Payload::read(&payload).is_ok());
        payload[2] ^= 1;
        assert!(matches!(
            Payload::read(&payload),
            Err(PayloadError::BadChecksum { .. })
        ));
        assert_eq!(
            Payload::read(b"\x00\x0a\x00"),
            Err(PayloadError::TooShort(3))
        );
        let payload = build(RdbType::String, b"\x01a", 13);
        assert_eq!(
            Payload::read(&payload),
            Err(PayloadError::UnsupportedVersion(13))
        );
        // Type 22 means different things by version: Redis 7.4's hash metadata, Valkey's hash.
        let redis = build(RdbType::HashMetadataPreGa, b"", 12);
        assert_eq!(
            Payload::read(&redis).unwrap().rdb_type,
            RdbType::HashMetadataPreGa
        );
        let valkey = build(RdbType::Hash2, b"", 80);
        assert_eq!(Payload::read(&valkey).unwrap().rdb_type, RdbType::Hash2);
        let mut unknown = build(RdbType::String, b"", 11);
        unknown[0] = 8;
        let crc = crc64(0, &unknown[..unknown.len() - 8]);
        let at = unknown.len() - 8;
        unknown[at..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Payload::read(&unknown),
            Err(PayloadError::UnknownType {
                byte: 8,
                version: 11
            })
        );
        // A zero CRC is not checked.
        let mut unchecked = build(RdbType::String, b"\x01a", 11);
        let at = unchecked.len() - 8;
        unchecked[at..].fill(0);
        assert!(Payload::read(&unchecked).is_ok());
    }
}
