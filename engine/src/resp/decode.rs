//! Decoding RESP2: replies into [`Frame`]s, requests into [`Command`]s.
//!
//! Two ways in. [`decode_frame`] and [`decode_command`] read the front of a buffer the caller
//! owns and say how many bytes the item took. [`FrameDecoder`] and [`CommandDecoder`] own their
//! buffer: feed them bytes as they arrive, take items out; they split each element off as soon
//! as it is complete, so a large reply arriving in small reads is read once, not re-read from
//! its start after every read.

use std::mem;

use bytes::{Buf, Bytes, BytesMut};

use super::parse::{self, CommandHeader, ReplyItem, MIN_BULK_LEN, MIN_FRAME_LEN};
use super::{Command, Frame};

/// Bounds on what a peer can make a decoder hold. Every length read from the wire is checked
/// against them before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string accepted, in bytes. Default 512 MiB, Redis's
    /// `proto-max-bulk-len`.
    pub max_bulk_len: u64,
    /// The most elements one array may declare. Default 2^31 - 1, the most Redis accepts in a
    /// multibulk request.
    pub max_array_len: u64,
    /// How deep arrays may nest; a command is one level, `CLUSTER SLOTS` three, `EXEC` adds
    /// one to what its commands reply. Default 32.
    pub max_depth: usize,
    /// The longest line without its CRLF: a simple string, an error, or an inline command.
    /// Default 64 KiB, Redis's `PROTO_INLINE_MAX_SIZE`.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: i32::MAX.unsigned_abs().into(),
            max_depth: 32,
            max_line_len: 64 * 1024,
        }
    }
}

/// Bytes that are not RESP2 and cannot become RESP2 whatever follows them.
///
/// Offsets count bytes from the start of the input given to [`decode_frame`] or
/// [`decode_command`], or from the first byte ever fed to a decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unexpected byte {} at offset {offset}, expected {expected}", escaped(*.found))]
    Unexpected {
        offset: u64,
        found: u8,
        expected: &'static str,
    },
    #[error("bulk length at offset {offset} is over the limit of {max} bytes (at least {len})")]
    BulkTooLong { offset: u64, len: u64, max: u64 },
    #[error(
        "array length at offset {offset} is over the limit of {max} elements (at least {len})"
    )]
    ArrayTooLong { offset: u64, len: u64, max: u64 },
    #[error("integer at offset {offset} does not fit in 64 bits")]
    IntegerOverflow { offset: u64 },
    #[error("line at offset {offset} is longer than {max} bytes, expected \\r\\n within it")]
    LineTooLong { offset: u64, max: usize },
    #[error("array at offset {offset} is nested deeper than {max} levels")]
    TooDeep { offset: u64, max: usize },
    #[error("unbalanced quotes in the inline command at offset {offset}")]
    UnbalancedQuotes { offset: u64 },
}

fn escaped(byte: u8) -> String {
    format!("'{}'", byte.escape_ascii())
}

impl DecodeError {
    /// Where the invalid bytes are.
    pub fn offset(&self) -> u64 {
        match *self {
            DecodeError::Unexpected { offset, .. }
            | DecodeError::BulkTooLong { offset, .. }
            | DecodeError::ArrayTooLong { offset, .. }
            | DecodeError::IntegerOverflow { offset }
            | DecodeError::LineTooLong { offset, .. }
            | DecodeError::TooDeep { offset, .. }
            | DecodeError::UnbalancedQuotes { offset } => offset,
        }
    }

    /// The same error with its offset counted from `by` bytes earlier.
    pub(super) fn shifted(mut self, by: u64) -> Self {
        match &mut self {
            DecodeError::Unexpected { offset, .. }
            | DecodeError::BulkTooLong { offset, .. }
            | DecodeError::ArrayTooLong { offset, .. }
            | DecodeError::IntegerOverflow { offset }
            | DecodeError::LineTooLong { offset, .. }
            | DecodeError::TooDeep { offset, .. }
            | DecodeError::UnbalancedQuotes { offset } => *offset = offset.saturating_add(by),
        }
        self
    }
}

/// Decodes the reply at the front of `input`.
///
/// `Ok(Some((frame, consumed)))`: the first `consumed` bytes of `input` are `frame`; bulk
/// strings in it are slices of `input`, not copies. `Ok(None)`: `input` is the beginning of a
/// reply, read again once more bytes are there. `Err`: `input` is not RESP2.
pub fn decode_frame(input: &Bytes, limits: &Limits) -> Result<Option<(Frame, usize)>, DecodeError> {
    FrameState::default().next(
        &mut Cursor {
            bytes: input,
            pos: 0,
        },
        limits,
        0,
    )
}

/// Decodes the command at the front of `input` as Redis reads requests: a multibulk array of
/// bulk strings, or an inline command.
///
/// Answers as [`decode_frame`] does. Blank lines and empty multibulks (`*0\r\n`) before the
/// command, which Redis skips, count in its `consumed` bytes.
pub fn decode_command(
    input: &Bytes,
    limits: &Limits,
) -> Result<Option<(Command, usize)>, DecodeError> {
    CommandState::default().next(
        &mut Cursor {
            bytes: input,
            pos: 0,
        },
        limits,
        0,
    )
}

/// A decoder that owns its buffer: feed it bytes as they arrive ([`Decoder::feed`], or read
/// straight into [`Decoder::buffer_mut`]) and take items out until it returns `Ok(None)`.
/// [`FrameDecoder`] reads replies, [`CommandDecoder`] reads commands.
///
/// After an error the decoder keeps returning it: the connection is not speaking RESP2.
#[derive(Debug, Default)]
pub struct Decoder<S> {
    limits: Limits,
    buf: BytesMut,
    state: S,
    consumed: u64,
}

/// Reads replies off a connection; [`FrameDecoder::next_frame`] takes them out.
pub type FrameDecoder = Decoder<FrameState>;

/// Reads commands off a connection, as [`FrameDecoder`] reads replies: what a master sends its
/// replicas once the snapshot is over. Each command comes with the number of bytes it took,
/// blank lines Redis would skip before it included, so the sum is the replication offset.
pub type CommandDecoder = Decoder<CommandState>;

/// What a [`Decoder`] is in the middle of: a reply or a command being read.
pub trait DecodeState: Default + sealed::Sealed {
    type Item;
    /// Reads elements off `input` until an item is complete. `base` is the offset of
    /// `input`'s first byte when this item began, for errors.
    #[doc(hidden)]
    fn next_item(
        &mut self,
        input: &mut BytesMut,
        limits: &Limits,
        base: u64,
    ) -> Result<Option<(Self::Item, usize)>, DecodeError>;
    /// Bytes taken so far for the item being read.
    #[doc(hidden)]
    fn taken(&self) -> usize;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::FrameState {}
    impl Sealed for super::CommandState {}
}

impl DecodeState for FrameState {
    type Item = Frame;
    fn next_item(
        &mut self,
        input: &mut BytesMut,
        limits: &Limits,
        base: u64,
    ) -> Result<Option<(Frame, usize)>, DecodeError> {
        self.next(input, limits, base)
    }
    fn taken(&self) -> usize {
        self.len
    }
}

impl DecodeState for CommandState {
    type Item = Command;
    fn next_item(
        &mut self,
        input: &mut BytesMut,
        limits: &Limits,
        base: u64,
    ) -> Result<Option<(Command, usize)>, DecodeError> {
        self.next(input, limits, base)
    }
    fn taken(&self) -> usize {
        self.len
    }
}

impl<S: DecodeState> Decoder<S> {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            buf: BytesMut::new(),
            state: S::default(),
            consumed: 0,
        }
    }

    /// Appends bytes received from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer of bytes not yet decoded, to read into directly (as tokio's `read_buf`
    /// does). Append to it; bytes already in it must not be changed.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes fed but not yet returned as part of an item.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.state.taken()
    }

    /// Bytes of all items returned so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The next complete item and the number of bytes it took, or `Ok(None)` until more
    /// bytes are fed.
    fn next_item(&mut self) -> Result<Option<(S::Item, usize)>, DecodeError> {
        let next = self
            .state
            .next_item(&mut self.buf, &self.limits, self.consumed)?;
        if let Some((_, len)) = &next {
            self.consumed += *len as u64;
        }
        Ok(next)
    }
}

impl FrameDecoder {
    /// The next complete reply and the number of bytes it took, or `Ok(None)` until more
    /// bytes are fed.
    pub fn next_frame(&mut self) -> Result<Option<(Frame, usize)>, DecodeError> {
        self.next_item()
    }

    /// Takes the next reply when it is `+OK`, without making a frame of it: true if it was.
    /// False when the next reply is anything else or not all there yet (read it with
    /// [`FrameDecoder::next_frame`]).
    pub fn skip_ok(&mut self) -> bool {
        const OK: &[u8] = b"+OK\r\n";
        let idle = self.state.open.is_empty() && self.state.len == 0;
        if idle && self.buf.starts_with(OK) {
            self.buf.advance(OK.len());
            self.consumed += OK.len() as u64;
            true
        } else {
            false
        }
    }
}

impl CommandDecoder {
    /// The next complete command and the number of bytes it took, or `Ok(None)` until more
    /// bytes are fed.
    pub fn next_command(&mut self) -> Result<Option<(Command, usize)>, DecodeError> {
        self.next_item()
    }
}

/// Where a decoder reads from: a buffer the caller keeps (read in place), or a decoder's own
/// buffer (elements are split off it as they complete).
pub(super) trait Input {
    /// The bytes not yet taken.
    fn unread(&self) -> &[u8];
    /// Takes the first `n` unread bytes, without copying them.
    fn take(&mut self, n: usize) -> Bytes;
    /// Drops the first `n` unread bytes.
    fn skip(&mut self, n: usize);
}

struct Cursor<'a> {
    bytes: &'a Bytes,
    pos: usize,
}

impl Input for Cursor<'_> {
    fn unread(&self) -> &[u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize) -> Bytes {
        let end = self.pos.saturating_add(n).min(self.bytes.len());
        let taken = self.bytes.slice(self.pos.min(end)..end);
        self.pos = end;
        taken
    }

    fn skip(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.bytes.len());
    }
}

impl Input for BytesMut {
    fn unread(&self) -> &[u8] {
        self
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.split_to(n.min(self.len())).freeze()
    }

    fn skip(&mut self, n: usize) {
        self.advance(n.min(self.len()));
    }
}

/// A reply being read: the arrays opened and not yet filled, and the bytes taken so far.
#[derive(Debug, Default)]
pub struct FrameState {
    /// Innermost last.
    open: Vec<OpenArray>,
    len: usize,
}

#[derive(Debug)]
struct OpenArray {
    items: Vec<Frame>,
    remaining: u64,
}

impl FrameState {
    /// Reads elements off `input` until a reply is complete. `base` is the offset of
    /// `input`'s first byte when this reply began, for errors.
    fn next(
        &mut self,
        input: &mut impl Input,
        limits: &Limits,
        base: u64,
    ) -> Result<Option<(Frame, usize)>, DecodeError> {
        loop {
            let at = base + self.len as u64;
            let Some((item, end)) =
                parse::reply_item(input.unread(), 0, limits).map_err(|e| e.shifted(at))?
            else {
                return Ok(None);
            };
            let is_array = matches!(
                item,
                ReplyItem::NullArray | ReplyItem::EmptyArray | ReplyItem::ArrayHeader(_)
            );
            if is_array && self.open.len() >= limits.max_depth {
                return Err(DecodeError::TooDeep {
                    offset: at,
                    max: limits.max_depth,
                });
            }
            let bytes = input.take(end);
            self.len += end;
            let frame = match item {
                ReplyItem::SimpleString(line) => Frame::SimpleString(bytes.slice(line)),
                ReplyItem::Error(line) => Frame::Error(bytes.slice(line)),
                ReplyItem::Integer(n) => Frame::Integer(n),
                ReplyItem::Bulk(payload) => {
                    Frame::Bulk(payload.map(|payload| bytes.slice(payload)))
                }
                ReplyItem::NullArray => Frame::Array(None),
                ReplyItem::EmptyArray => Frame::Array(Some(Vec::new())),
                ReplyItem::ArrayHeader(count) => {
                    let room = input.unread().len() / MIN_FRAME_LEN;
                    let capacity = usize::try_from(count).unwrap_or(usize::MAX).min(room);
                    self.open.push(OpenArray {
                        items: Vec::with_capacity(capacity),
                        remaining: count,
                    });
                    continue;
                }
            };
            if let Some(frame) = self.close(frame) {
                return Ok(Some((frame, mem::take(&mut self.len))));
            }
        }
    }

    /// Puts a complete frame into the innermost open array, closing every array it fills;
    /// returns the reply once the outermost one is complete.
    fn close(&mut self, mut frame: Frame) -> Option<Frame> {
        loop {
            let Some(mut array) = self.open.pop() else {
                return Some(frame);
            };
            array.items.push(frame);
            array.remaining = array.remaining.saturating_sub(1);
            if array.remaining > 0 {
                self.open.push(array);
                return None;
            }
            frame = Frame::Array(Some(array.items));
        }
    }
}

/// A command being read: its arguments so far, and the bytes taken so far (with the blank
/// lines skipped before it).
#[derive(Debug, Default)]
pub struct CommandState {
    open: Option<OpenCommand>,
    len: usize,
}

impl CommandState {
    /// Bytes taken for the command being read.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[derive(Debug)]
struct OpenCommand {
    argv: Vec<Bytes>,
    remaining: u64,
}

impl CommandState {
    /// Reads elements off `input` until a command is complete. `base` is the offset of
    /// `input`'s first byte when this command began, for errors.
    pub(super) fn next(
        &mut self,
        input: &mut impl Input,
        limits: &Limits,
        base: u64,
    ) -> Result<Option<(Command, usize)>, DecodeError> {
        loop {
            let at = base + self.len as u64;
            let Some(open) = self.open.as_mut() else {
                let Some((header, end)) =
                    parse::command_header(input.unread(), 0, limits).map_err(|e| e.shifted(at))?
                else {
                    return Ok(None);
                };
                input.skip(end);
                self.len += end;
                match header {
                    CommandHeader::Empty => {}
                    CommandHeader::Inline(argv) => {
                        if let Some(command) = Command::from_argv(argv) {
                            return Ok(Some((command, mem::take(&mut self.len))));
                        }
                    }
                    CommandHeader::Multibulk(count) => {
                        let room = input.unread().len() / MIN_BULK_LEN;
                        let capacity = usize::try_from(count).unwrap_or(usize::MAX).min(room);
                        self.open = Some(OpenCommand {
                            argv: Vec::with_capacity(capacity),
                            remaining: count,
                        });
                    }
                }
                continue;
            };
            let Some((payload, end)) =
                parse::command_bulk(input.unread(), 0, limits).map_err(|e| e.shifted(at))?
            else {
                return Ok(None);
            };
            let bytes = input.take(end);
            self.len += end;
            open.argv.push(bytes.slice(payload));
            open.remaining = open.remaining.saturating_sub(1);
            if open.remaining == 0 {
                let argv = self.open.take().map(|open| open.argv).unwrap_or_default();
                if let Some(command) = Command::from_argv(argv) {
                    return Ok(Some((command, mem::take(&mut self.len))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::frame::strategy;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn frame(input: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        decode_frame(&Bytes::copy_from_slice(input), &Limits::default())
    }

    fn command(input: &[u8]) -> Result<Option<(Command, usize)>, DecodeError> {
        decode_command(&Bytes::copy_from_slice(input), &Limits::default())
    }

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            frame.encode(&mut out);
        }
        out
    }

    fn simple(s: &'static str) -> Frame {
        Frame::SimpleString(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn decodes_every_type_and_counts_its_bytes() {
        let cases: [(&[u8], Frame, usize); 10] = [
            (b"+OK\r\n+next", simple("OK"), 5),
            (b"+\r\n", simple(""), 3),
            (
                b"-ERR unknown command 'foo'\r\n",
                Frame::Error(Bytes::from_static(b"ERR unknown command 'foo'")),
                28,
            ),
            (b":-42\r\n:1\r\n", Frame::Integer(-42), 6),
            (b"$5\r\nhe\r\no\r\n", Frame::bulk("he\r\no"), 11),
            (b"$0\r\n\r\n", Frame::bulk(""), 6),
            (b"$-1\r\n", Frame::Bulk(None), 5),
            (b"*-1\r\n", Frame::Array(None), 5),
            (b"*0\r\n*0\r\n", Frame::Array(Some(Vec::new())), 4),
            (
                b"*2\r\n*1\r\n:1\r\n$3\r\nfoo\r\n",
                Frame::Array(Some(vec![
                    Frame::Array(Some(vec![Frame::Integer(1)])),
                    Frame::bulk("foo"),
                ])),
                21,
            ),
        ];
        for (input, expected, consumed) in cases {
            assert_eq!(frame(input), Ok(Some((expected, consumed))), "{input:?}");
        }
    }

    #[test]
    fn ok_replies_are_skipped_only_between_replies() {
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.feed(b"+OK\r\n:1\r\n+OK\r\n*2\r\n+OK\r\n");
        assert!(decoder.skip_ok());
        assert!(!decoder.skip_ok(), "an integer is not +OK");
        assert_eq!(decoder.next_frame(), Ok(Some((Frame::Integer(1), 4))));
        assert!(decoder.skip_ok());
        // Half an array: its +OK belongs to it.
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.feed(b"+OK\r\n+OK");
        assert!(!decoder.skip_ok(), "inside an array");
        assert_eq!(
            decoder.next_frame(),
            Ok(Some((
                Frame::Array(Some(vec![simple("OK"), simple("OK")])),
                14
            )))
        );
        assert!(!decoder.skip_ok(), "not all there yet");
        decoder.feed(b"\r\n");
        assert!(decoder.skip_ok());
        assert_eq!(decoder.consumed(), 5 + 4 + 5 + 14 + 5);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn bulk_strings_are_slices_of_the_input() {
        let input = Bytes::from_static(b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n");
        let Ok(Some((Frame::Array(Some(items)), _))) = decode_frame(&input, &Limits::default())
        else {
            panic!("not an array");
        };
        let Frame::Bulk(Some(world)) = &items[1] else {
            panic!("not a bulk string");
        };
        assert_eq!(world.as_ptr(), input[19..].as_ptr());
    }

    #[test]
    fn hostile_lengths_are_errors() {
        assert_eq!(
            frame(b"$9223372036854775807\r\n"),
            Err(DecodeError::BulkTooLong {
                offset: 0,
                len: 922337203,
                max: 512 * 1024 * 1024
            })
        );
        assert!(matches!(
            frame(b"*4611686018427387904\r\n"),
            Err(DecodeError::ArrayTooLong { offset: 0, .. })
        ));
        // Before the line even ends.
        assert!(matches!(
            frame(b"$99999999999"),
            Err(DecodeError::BulkTooLong { .. })
        ));
        assert!(matches!(
            frame(b"*1\r\n*99999999999"),
            Err(DecodeError::ArrayTooLong { offset: 4, .. })
        ));
        assert!(matches!(
            command(b"*3\r\n$3\r\nSET\r\n$536870913\r\n"),
            Err(DecodeError::BulkTooLong { offset: 13, .. })
        ));
        assert!(matches!(
            command(b"*2147483648\r\n"),
            Err(DecodeError::ArrayTooLong { offset: 0, .. })
        ));
        assert_eq!(
            frame(b"$99999999999999999999\r\n"),
            Err(DecodeError::BulkTooLong {
                offset: 0,
                len: 999999999,
                max: 512 * 1024 * 1024
            })
        );
    }

    /// With every limit lifted, a declared length is still only a promise: nothing is
    /// allocated for it (a `Vec` of 2^62 frames would abort the test).
    #[test]
    fn declared_lengths_allocate_nothing() {
        let unbounded = Limits {
            max_bulk_len: u64::MAX,
            max_array_len: u64::MAX,
            max_depth: usize::MAX,
            max_line_len: 64,
        };
        for input in [
            &b"*4611686018427387904\r\n"[..],
            b"*9223372036854775807\r\n*9223372036854775807\r\n:1\r\n",
            b"$9223372036854775807\r\n",
            b"$9223372036854775806\r\nabc",
        ] {
            let bytes = Bytes::from_static(input);
            assert_eq!(decode_frame(&bytes, &unbounded), Ok(None), "{input:?}");
            let mut decoder = FrameDecoder::new(unbounded);
            decoder.feed(input);
            assert_eq!(decoder.next_frame(), Ok(None), "{input:?}");
        }
        let mut decoder = CommandDecoder::new(unbounded);
        decoder.feed(b"*9223372036854775807\r\n$9223372036854775806\r\n");
        assert_eq!(decoder.next_command(), Ok(None));
        assert_eq!(
            frame(b"$9223372036854775808\r\n").map_err(|e| e.offset()),
            Err(0)
        );
    }

    #[test]
    fn invalid_bytes_are_errors_at_their_offset() {
        let cases: [(&[u8], u64, &str); 12] = [
            (
                b"%1\r\n",
                0,
                "unexpected byte '%' at offset 0, expected a type byte",
            ),
            (
                b"*2\r\n$3\r\nfoo\r\n?",
                13,
                "unexpected byte '?' at offset 13",
            ),
            (
                b"$3\r\nfooXY",
                7,
                "expected \\r\\n after the bulk string's payload",
            ),
            (b"$3\r\nfoo\rX", 8, "unexpected byte 'X' at offset 8"),
            (b":12a\r\n", 3, "expected a digit or \\r\\n"),
            (b"+OK\rX", 4, "expected '\\n' after '\\r'"),
            (b"+O\nK\r\n", 2, "unexpected byte '\\n' at offset 2"),
            (b"$-2\r\n", 1, "expected -1 or a bulk length of 0 or more"),
            (b"*-2\r\n", 1, "expected -1 or an array length"),
            (b"$03\r\nfoo\r\n", 2, "after a leading 0"),
            (
                b"*1\r\n*1\r\n\x00",
                8,
                "unexpected byte '\\x00' at offset 8",
            ),
            (b":9223372036854775808\r\n", 0, "does not fit in 64 bits"),
        ];
        for (input, offset, message) in cases {
            let error = frame(input).expect_err(&format!("{input:?} is invalid"));
            assert_eq!(error.offset(), offset, "{input:?}: {error}");
            assert!(error.to_string().contains(message), "{input:?}: {error}");
        }
        let error = frame(b"+this line is far too long").map_err(|e| e.to_string());
        assert_eq!(error, Ok(None));
        let short = Limits {
            max_line_len: 8,
            ..Limits::default()
        };
        assert_eq!(
            decode_frame(&Bytes::from_static(b"+this line is far too long"), &short),
            Err(DecodeError::LineTooLong { offset: 1, max: 8 })
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        let decode = |input: &'static [u8]| decode_frame(&Bytes::from_static(input), &limits);
        assert!(matches!(decode(b"*1\r\n*1\r\n:1\r\n"), Ok(Some(_))));
        assert_eq!(
            decode(b"*1\r\n*1\r\n*0\r\n"),
            Err(DecodeError::TooDeep { offset: 8, max: 2 })
        );
        let error = decode(b"*1\r\n*1\r\n*1\r\n:1\r\n").map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err("array at offset 8 is nested deeper than 2 levels".to_owned())
        );
    }

    #[test]
    fn decodes_commands_as_redis_reads_requests() {
        let set = Command::new("SET").arg("k").arg("v");
        assert_eq!(
            command(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nGET"),
            Ok(Some((set.clone(), 27)))
        );
        // Blank lines and empty multibulks are skipped and counted with the next command.
        assert_eq!(
            command(b"\n\r\n*0\r\n*-1\r\n  \r\n*1\r\n$4\r\nPING\r\n"),
            Ok(Some((Command::new("PING"), 30)))
        );
        assert_eq!(command(b"\n\r\n*0\r\n"), Ok(None));
        // Inline commands, quoting included.
        assert_eq!(command(b"SET k \"v\"\r\n"), Ok(Some((set, 11))));
        assert_eq!(command(b"PING\n"), Ok(Some((Command::new("PING"), 5))));
        assert_eq!(command(b"PING"), Ok(None));
        // Replies are not commands.
        assert_eq!(
            command(b"*1\r\n:1\r\n"),
            Err(DecodeError::Unexpected {
                offset: 4,
                found: b':',
                expected: "'$'"
            })
        );
        assert!(matches!(
            command(b"*1\r\n$-1\r\n"),
            Err(DecodeError::Unexpected { offset: 5, .. })
        ));
        assert_eq!(
            command(b"SET k \"v\r\n"),
            Err(DecodeError::UnbalancedQuotes { offset: 0 })
        );
    }

    /// What a Redis 7.0.15 master propagated after a snapshot (testdata/README.md), and the
    /// `PING` it sends every `repl-ping-replica-period`.
    const REDIS7_STREAM: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$2\r\nk2\r\n$5\r\nhello\r\n*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n*1\r\n$4\r\nPING\r\n";

    #[test]
    fn decodes_what_a_master_propagates() {
        let mut decoder = CommandDecoder::default();
        let mut commands = Vec::new();
        for byte in REDIS7_STREAM {
            decoder.feed(&[*byte]);
            while let Some(next) = decoder.next_command().unwrap() {
                commands.push(next);
            }
        }
        let expected = [
            (Command::new("SELECT").arg("0"), 23),
            (Command::new("SET").arg("k2").arg("hello"), 32),
            (Command::new("INCR").arg("counter"), 27),
            (Command::new("PING"), 14),
        ];
        assert_eq!(commands, expected);
        assert_eq!(decoder.consumed(), REDIS7_STREAM.len() as u64);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn decoders_keep_returning_an_error() {
        let mut decoder = FrameDecoder::default();
        decoder.feed(b"+OK\r\n*2\r\n:1\r\n!");
        assert_eq!(decoder.next_frame(), Ok(Some((simple("OK"), 5))));
        let error = decoder.next_frame();
        assert!(matches!(
            error,
            Err(DecodeError::Unexpected {
                offset: 13,
                found: b'!',
                ..
            })
        ));
        decoder.feed(b":2\r\n");
        assert_eq!(decoder.next_frame(), error);
        assert_eq!(decoder.consumed(), 5);
        assert_eq!(decoder.buffered(), 13);
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in vec(strategy::frame(4), 1..4)) {
            let wire = Bytes::from(encoded(&frames));
            let mut pos = 0;
            for expected in &frames {
                let (frame, consumed) = decode_frame(&wire.slice(pos..), &Limits::default())
                    .unwrap()
                    .unwrap();
                prop_assert_eq!(&frame, expected);
                prop_assert_eq!(consumed, expected.encoded_len());
                pos += consumed;
            }
            prop_assert_eq!(pos, wire.len());
        }

        #[test]
        fn every_prefix_is_incomplete(frame in strategy::frame(4)) {
            let wire = Bytes::from(encoded(std::slice::from_ref(&frame)));
            for end in 0..wire.len() {
                prop_assert_eq!(decode_frame(&wire.slice(..end), &Limits::default()), Ok(None));
            }
        }

        #[test]
        fn every_command_prefix_is_incomplete(argv in strategy::argv()) {
            let mut wire = Vec::new();
            super::super::encode_command(&argv, &mut wire);
            let wire = Bytes::from(wire);
            for end in 0..wire.len() {
                prop_assert_eq!(decode_command(&wire.slice(..end), &Limits::default()), Ok(None));
            }
            let command = Command::from_argv(argv).unwrap();
            prop_assert_eq!(
                decode_command(&wire, &Limits::default()),
                Ok(Some((command, wire.len())))
            );
        }

        #[test]
        fn chunking_does_not_change_frames(
            frames in vec(strategy::frame(3), 1..6),
            chunks in vec(1usize..40, 1..200),
        ) {
            let wire = encoded(&frames);
            let mut decoder = FrameDecoder::default();
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            for chunk in chunks.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*chunk).min(rest.len()));
                decoder.feed(now);
                rest = later;
                while let Some((frame, consumed)) = decoder.next_frame().unwrap() {
                    prop_assert_eq!(consumed, frame.encoded_len());
                    decoded.push(frame);
                }
            }
            prop_assert_eq!(decoded, frames);
            prop_assert_eq!(decoder.consumed(), wire.len() as u64);
            prop_assert_eq!(decoder.buffered(), 0);
        }

        #[test]
        fn chunking_does_not_change_commands(
            commands in vec(strategy::argv(), 1..6),
            chunks in vec(1usize..40, 1..200),
        ) {
            let mut wire = Vec::new();
            for argv in &commands {
                super::super::encode_command(argv, &mut wire);
            }
            let mut decoder = CommandDecoder::default();
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            for chunk in chunks.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*chunk).min(rest.len()));
                decoder.feed(now);
                rest = later;
                while let Some((command, consumed)) = decoder.next_command().unwrap() {
                    prop_assert_eq!(consumed, command.encoded_len());
                    decoded.push(command.into_argv());
                }
            }
            prop_assert_eq!(decoded, commands);
        }

        /// Whatever the bytes, decoding answers without panicking, and a frame it finds is
        /// exactly the bytes it says it consumed (the encoding is canonical).
        #[test]
        fn any_bytes_decode_to_a_canonical_frame_or_an_error(
            input in vec(prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$'), Just(b':'), Just(b'-'),
                Just(b'+'), Just(b'1'), Just(b'0'), any::<u8>(),
            ], 0..64),
        ) {
            let bytes = Bytes::from(input.clone());
            if let Ok(Some((frame, consumed))) = decode_frame(&bytes, &Limits::default()) {
                prop_assert_eq!(encoded(&[frame]), &input[..consumed]);
            }
            if let Ok(Some((_, consumed))) = decode_command(&bytes, &Limits::default()) {
                prop_assert!(consumed <= input.len());
            }
            let mut decoder = FrameDecoder::default();
            for byte in &input {
                decoder.feed(&[*byte]);
                if decoder.next_frame().is_err() {
                    break;
                }
            }
        }
    }

    /// Splitting a stream of frames at every position gives the same frames.
    #[test]
    fn splitting_anywhere_gives_the_same_frames() {
        let frames = [
            simple("OK"),
            Frame::Array(Some(vec![
                Frame::bulk("hello\r\n"),
                Frame::Array(Some(vec![Frame::Integer(-7), Frame::Bulk(None)])),
                Frame::Error(Bytes::from_static(b"MOVED 3999 127.0.0.1:6381")),
                Frame::Array(None),
            ])),
            Frame::bulk(""),
        ];
        let wire = encoded(&frames);
        for split in 0..=wire.len() {
            let mut decoder = FrameDecoder::default();
            let mut decoded = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                decoder.feed(part);
                while let Some((frame, consumed)) = decoder.next_frame().unwrap() {
                    decoded.push((frame.clone(), consumed));
                }
            }
            let expected: Vec<_> = frames
                .iter()
                .map(|f| (f.clone(), f.encoded_len()))
                .collect();
            assert_eq!(decoded, expected, "split at {split}");
        }
    }
}
