//! Bytes in: the parser's buffer, and the primitives of `rdb.c` that read from it (lengths,
//! strings, times, doubles).
//!
//! A [`Reader`] reads one unit (an opcode and its operands, a key, an element) from the bytes
//! buffered so far. When they end inside the unit it answers [`Short::NeedMore`] and the parser
//! reads the unit again from its start once more bytes came; units are small or bounded by
//! the limits, so nothing is read twice for long.

use std::ops::Range;

use super::crc64::crc64;
use super::error::RdbError;
use super::lzf;
use super::sink::Item;

/// Why a unit could not be read.
#[derive(Debug)]
pub(super) enum Short {
    /// The bytes so far end inside it.
    NeedMore,
    /// They can never be valid. Boxed, so that a reader's result stays small on the path
    /// where nothing goes wrong.
    Invalid(Box<RdbError>),
}

impl From<RdbError> for Short {
    fn from(error: RdbError) -> Self {
        Short::Invalid(Box::new(error))
    }
}

/// `RDB_6BITLEN`, `RDB_14BITLEN`, `RDB_32BITLEN`, `RDB_64BITLEN` and `RDB_ENCVAL`: what the
/// first byte of a length says.
enum Length {
    Len(u64),
    /// `11|OBKIND`: a specially encoded string follows (`RDB_ENC_*`).
    Encoded(u8),
}

/// `RDB_ENC_INT8`, `RDB_ENC_INT16`, `RDB_ENC_INT32`, `RDB_ENC_LZF`.
const ENC_INT8: u8 = 0;
const ENC_INT16: u8 = 1;
const ENC_INT32: u8 = 2;
const ENC_LZF: u8 = 3;

/// An RDB string as saved (`rdbGenericLoadStringObject` before it builds an object).
#[derive(Debug, Clone, Copy)]
pub(super) enum RdbString<'a> {
    Raw(&'a [u8]),
    Int(i64),
    Lzf {
        compressed: &'a [u8],
        len: usize,
        /// Where the string starts, for errors.
        offset: u64,
    },
}

/// A string once loaded: in the input, or decompressed into the scratch buffer, or an integer.
#[derive(Debug, Clone)]
pub(super) enum Loaded<'a> {
    Slice(&'a [u8]),
    Scratch(Range<usize>),
    Int(i64),
}

impl<'a> Loaded<'a> {
    /// The item, given the scratch buffer the string was loaded into.
    pub fn item<'s>(&self, scratch: &'s [u8]) -> Item<'s>
    where
        'a: 's,
    {
        match self {
            Loaded::Slice(bytes) => Item::Str(bytes),
            Loaded::Scratch(range) => Item::Str(&scratch[range.clone()]),
            Loaded::Int(n) => Item::Int(*n),
        }
    }

    /// The bytes Redis would hold: integers as decimal text, formatted into the scratch buffer.
    pub fn into_bytes(self, scratch: &mut Vec<u8>) -> LoadedBytes<'a> {
        match self {
            Loaded::Slice(bytes) => LoadedBytes::Slice(bytes),
            Loaded::Scratch(range) => LoadedBytes::Scratch(range),
            Loaded::Int(n) => {
                let start = scratch.len();
                scratch.extend_from_slice(n.to_string().as_bytes());
                LoadedBytes::Scratch(start..scratch.len())
            }
        }
    }

    /// Length in bytes of the string Redis would hold.
    pub fn len(&self) -> usize {
        match self {
            Loaded::Slice(bytes) => bytes.len(),
            Loaded::Scratch(range) => range.len(),
            Loaded::Int(n) => Item::Int(*n).len(),
        }
    }
}

/// A loaded string as bytes.
#[derive(Debug, Clone)]
pub(super) enum LoadedBytes<'a> {
    Slice(&'a [u8]),
    Scratch(Range<usize>),
}

impl<'a> LoadedBytes<'a> {
    pub fn get<'s>(&self, scratch: &'s [u8]) -> &'s [u8]
    where
        'a: 's,
    {
        match self {
            LoadedBytes::Slice(bytes) => bytes,
            LoadedBytes::Scratch(range) => &scratch[range.clone()],
        }
    }
}

impl<'a> RdbString<'a> {
    /// Decompresses an LZF string into `scratch`; the rest stay where they are.
    pub fn load(self, scratch: &mut Vec<u8>) -> Result<Loaded<'a>, RdbError> {
        match self {
            RdbString::Raw(bytes) => Ok(Loaded::Slice(bytes)),
            RdbString::Int(n) => Ok(Loaded::Int(n)),
            RdbString::Lzf {
                compressed,
                len,
                offset,
            } => {
                let start = scratch.len();
                lzf::decompress(compressed, len, scratch).map_err(|e| {
                    scratch.truncate(start);
                    RdbError::BadEncoding {
                        offset,
                        encoding: "lzf string",
                        at: e.at,
                        expected: e.expected,
                    }
                })?;
                Ok(Loaded::Scratch(start..scratch.len()))
            }
        }
    }

    /// [`RdbString::load`], then integers as decimal text.
    pub fn load_bytes(self, scratch: &mut Vec<u8>) -> Result<LoadedBytes<'a>, RdbError> {
        Ok(self.load(scratch)?.into_bytes(scratch))
    }
}

/// Reads units from the front of the buffered bytes.
#[derive(Debug, Clone)]
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset in the file of `bytes[0]`.
    base: u64,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], base: u64) -> Self {
        Reader {
            bytes,
            pos: 0,
            base,
        }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Offset in the file of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.remaining() {
            return Err(Short::NeedMore);
        }
        let bytes = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// `rdbLoadLenByRef`: a length, or the kind of a specially encoded string.
    fn length(&mut self) -> Result<Length, Short> {
        let offset = self.offset();
        let first = self.u8()?;
        match first >> 6 {
            0 => Ok(Length::Len(u64::from(first & 0x3f))),
            1 => {
                let second = self.u8()?;
                Ok(Length::Len(
                    (u64::from(first & 0x3f) << 8) | u64::from(second),
                ))
            }
            3 => Ok(Length::Encoded(first & 0x3f)),
            _ => match first {
                0x80 => Ok(Length::Len(u32::from_be_bytes(self.array()?).into())),
                0x81 => Ok(Length::Len(u64::from_be_bytes(self.array()?))),
                _ => Err(RdbError::Corrupt {
                    offset,
                    expected: "a length (0x80 or 0x81 for 32 and 64 bits)",
                }
                .into()),
            },
        }
    }

    /// `rdbLoadLen`: a length.
    pub fn len(&mut self) -> Result<u64, Short> {
        let offset = self.offset();
        match self.length()? {
            Length::Len(len) => Ok(len),
            Length::Encoded(_) => Err(RdbError::Corrupt {
                offset,
                expected: "a length, not an encoded string",
            }
            .into()),
        }
    }

    /// `rdbGenericLoadStringObject`: a string, of at most `max` bytes once loaded.
    pub fn string(&mut self, max: usize) -> Result<RdbString<'a>, Short> {
        let offset = self.offset();
        match self.length()? {
            Length::Len(len) => {
                let len = bounded(len, max, offset, "string")?;
                Ok(RdbString::Raw(self.take(len)?))
            }
            Length::Encoded(ENC_INT8) => {
                Ok(RdbString::Int(i8::from_le_bytes(self.array()?).into()))
            }
            Length::Encoded(ENC_INT16) => {
                Ok(RdbString::Int(i16::from_le_bytes(self.array()?).into()))
            }
            Length::Encoded(ENC_INT32) => {
                Ok(RdbString::Int(i32::from_le_bytes(self.array()?).into()))
            }
            Length::Encoded(ENC_LZF) => {
                let clen_offset = self.offset();
                let clen = self.len()?;
                let clen = bounded(clen, max, clen_offset, "compressed string")?;
                let len_offset = self.offset();
                let len = self.len()?;
                let len = bounded(len, max, len_offset, "decompressed string")?;
                if len == 0 {
                    return Err(RdbError::Corrupt {
                        offset: len_offset,
                        expected: "a non-zero decompressed length",
                    }
                    .into());
                }
                Ok(RdbString::Lzf {
                    compressed: self.take(clen)?,
                    len,
                    offset,
                })
            }
            Length::Encoded(_) => Err(RdbError::Corrupt {
                offset,
                expected: "a string encoding (int8, int16, int32 or lzf)",
            }
            .into()),
        }
    }

    /// The length header of a raw string (its bytes follow), or `None` for a specially
    /// encoded one (read it with [`Reader::string`] from the same position instead).
    pub fn string_len(&mut self, max: usize) -> Result<Option<usize>, Short> {
        let offset = self.offset();
        match self.length()? {
            Length::Len(len) => Ok(Some(bounded(len, max, offset, "string")?)),
            Length::Encoded(_) => Ok(None),
        }
    }

    /// `rdbLoadMillisecondTime`: 8 bytes, little endian (host order before RDB 9, which
    /// every writer ran on little-endian machines).
    pub fn millis(&mut self) -> Result<i64, Short> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// `rdbLoadTime`: 4 bytes of seconds, little endian.
    pub fn seconds(&mut self) -> Result<i32, Short> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// `rdbLoadBinaryDoubleValue`.
    pub fn binary_double(&mut self) -> Result<f64, Short> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// `rdbLoadBinaryFloatValue`.
    pub fn binary_float(&mut self) -> Result<f32, Short> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    /// `rdbLoadDoubleValue`: a score saved as text behind a one-byte length; 253, 254 and 255
    /// mean NaN, +inf and -inf.
    pub fn string_double(&mut self) -> Result<f64, Short> {
        let offset = self.offset();
        match self.u8()? {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            len => {
                let text = self.take(usize::from(len))?;
                parse_double(text).ok_or_else(|| {
                    RdbError::Corrupt {
                        offset,
                        expected: "a score as decimal text",
                    }
                    .into()
                })
            }
        }
    }
}

/// Checks a length read at `offset` against `max` and `usize`.
pub(super) fn bounded(
    len: u64,
    max: usize,
    offset: u64,
    what: &'static str,
) -> Result<usize, RdbError> {
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(RdbError::TooLong {
            offset,
            what,
            len,
            max: max as u64,
        }),
    }
}

/// `strtod` on the text of a score (`%.17g` output, `inf`, `-inf`, `nan`).
pub(super) fn parse_double(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    match text {
        "inf" | "+inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// The parser's buffer: every byte fed and not yet consumed, and the CRC64 of those consumed.
///
/// Bytes before the parse position are dropped between feeds unless `retain` asks to keep
/// them (the raw bytes of the value being read).
#[derive(Debug, Default)]
pub(super) struct Input {
    buf: Vec<u8>,
    /// Offset in the file of `buf[0]`.
    base: u64,
    /// Parse position in `buf`.
    pos: usize,
    /// Keep bytes from this file offset on.
    retain: Option<u64>,
    crc: u64,
    /// The CRC covers the file up to this offset.
    crc_end: u64,
}

impl Input {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A reader from the parse position.
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(&self.buf[self.pos..], self.offset())
    }

    /// Consumes `n` bytes.
    pub fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Offset in the file of the parse position.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Offset in the file just past the last byte fed.
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Forgets the bytes fed after the parse position (they are not part of the file).
    pub fn drop_unconsumed(&mut self) {
        self.buf.truncate(self.pos);
    }

    /// Bytes fed and not consumed.
    pub fn unconsumed(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The buffered bytes from file offset `from` to the parse position; `from` must be
    /// retained.
    pub fn since(&self, from: u64) -> &[u8] {
        let start = usize::try_from(from.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    /// Moves the parse position back to file offset `to`, which must be retained.
    pub fn rewind(&mut self, to: u64) {
        let index = usize::try_from(to.saturating_sub(self.base)).unwrap_or(0);
        self.pos = index.min(self.pos);
    }

    pub fn retain_from(&mut self, from: Option<u64>) {
        self.retain = from;
    }

    /// Adds the consumed bytes not yet counted to the CRC, up to file offset `to` at most.
    pub fn checksum_to(&mut self, to: u64) -> u64 {
        let to = to.min(self.offset());
        if to > self.crc_end {
            let start = (self.crc_end - self.base) as usize;
            let end = (to - self.base) as usize;
            self.crc = crc64(self.crc, &self.buf[start..end]);
            self.crc_end = to;
        }
        self.crc
    }

    /// Drops the bytes nothing needs any more. `crc_until` bounds the bytes the CRC may
    /// cover (the checksum itself is not part of it).
    pub fn compact(&mut self, crc_until: u64) {
        self.checksum_to(crc_until);
        let keep_from = self
            .retain
            .unwrap_or(u64::MAX)
            .min(self.offset())
            .min(self.crc_end);
        let drop = (keep_from - self.base) as usize;
        if drop > 0 {
            self.buf.drain(..drop);
            self.base += drop as u64;
            self.pos -= drop;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader<'_> {
        Reader::new(bytes, 100)
    }

    #[test]
    fn lengths_in_all_four_forms() {
        assert_eq!(reader(&[0x3f]).len().unwrap(), 63);
        assert_eq!(reader(&[0x41, 0x02]).len().unwrap(), 0x102);
        assert_eq!(reader(&[0x80, 0, 1, 0, 0]).len().unwrap(), 65536);
        assert_eq!(
            reader(&[0x81, 0x40, 0, 0, 0, 0, 0, 0, 0]).len().unwrap(),
            1 << 62
        );
        assert!(matches!(reader(&[0x41]).len(), Err(Short::NeedMore)));
        assert!(matches!(reader(&[0x81, 0]).len(), Err(Short::NeedMore)));
        for bytes in [&[0x82][..], &[0xc0]] {
            match reader(bytes).len() {
                Err(Short::Invalid(e)) if matches!(*e, RdbError::Corrupt { offset: 100, .. }) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn strings_raw_int_and_lzf() {
        assert!(matches!(
            reader(&[3, b'a', b'b', b'c']).string(10).unwrap(),
            RdbString::Raw(b"abc")
        ));
        assert!(matches!(
            reader(&[0xc0, 0xff]).string(10).unwrap(),
            RdbString::Int(-1)
        ));
        assert!(matches!(
            reader(&[0xc1, 0x00, 0x80]).string(10).unwrap(),
            RdbString::Int(-32768)
        ));
        assert!(matches!(
            reader(&[0xc2, 0xff, 0xff, 0xff, 0x7f]).string(10).unwrap(),
            RdbString::Int(2147483647)
        ));
        let compressed = crate::rdb::lzf::tests::compress(b"aaaaaaaaaaaaaaaaaaaaaaaaa");
        let mut bytes = vec![0xc3, compressed.len() as u8, 25];
        bytes.extend_from_slice(&compressed);
        let mut scratch = b"x".to_vec();
        let loaded = reader(&bytes)
            .string(100)
            .unwrap()
            .load(&mut scratch)
            .unwrap();
        assert_eq!(loaded.item(&scratch), Item::Str(&[b'a'; 25]));
        // Over the limit: refused before anything is read or allocated.
        match reader(&[0x81, 0x40, 0, 0, 0, 0, 0, 0, 0]).string(512) {
            Err(Short::Invalid(e)) => match *e {
                RdbError::TooLong {
                    offset: 100,
                    len,
                    max: 512,
                    ..
                } => assert_eq!(len, 1 << 62),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reader(&[0xc3, 5, 0x81, 0x40, 0, 0, 0, 0, 0, 0, 0]).string(512),
            Err(Short::Invalid(e)) if matches!(*e, RdbError::TooLong { offset: 102, .. })
        ));
        assert!(matches!(
            reader(&[0xc4]).string(512),
            Err(Short::Invalid(e)) if matches!(*e, RdbError::Corrupt { .. })
        ));
        assert!(matches!(
            reader(&[5, b'a']).string(512),
            Err(Short::NeedMore)
        ));
    }

    #[test]
    fn scores_as_text_or_binary() {
        assert_eq!(reader(b"\x031.5").string_double().unwrap(), 1.5);
        assert_eq!(reader(&[254]).string_double().unwrap(), f64::INFINITY);
        assert_eq!(reader(&[255]).string_double().unwrap(), f64::NEG_INFINITY);
        assert!(reader(&[253]).string_double().unwrap().is_nan());
        assert!(reader(b"\x02zz").string_double().is_err());
        assert_eq!(reader(&2.5f64.to_le_bytes()).binary_double().unwrap(), 2.5);
        assert_eq!(parse_double(b"1e+20"), Some(1e20));
        assert_eq!(parse_double(b"-inf"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn input_keeps_what_is_retained_and_checksums_what_is_consumed() {
        let mut input = Input::default();
        input.extend(b"0123456789");
        input.advance(4);
        input.retain_from(Some(2));
        input.compact(u64::MAX);
        assert_eq!(input.offset(), 4);
        assert_eq!(input.since(2), b"23");
        input.retain_from(None);
        input.advance(3);
        input.compact(u64::MAX);
        assert_eq!(input.unconsumed(), 3);
        assert_eq!(input.reader().take(3).unwrap(), b"789");
        assert_eq!(input.checksum_to(u64::MAX), crc64(0, b"0123456"));
        input.advance(3);
        assert_eq!(input.checksum_to(8), crc64(0, b"01234567"));
        assert_eq!(input.end(), 10);
    }
}
