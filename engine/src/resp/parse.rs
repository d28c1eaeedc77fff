//! Reading one RESP2 element off the front of a buffer.
//!
//! Every function here takes the whole input and the position to read at, and answers with
//! the element and the position just past it, `None` when the input ends before the element
//! does, or the error at the first byte that no continuation could make valid. So a prefix of
//! a valid encoding is always `None`, and a hostile length is an error as soon as its digits
//! show it is over the limit, before its line even ends. Positions in errors are positions in
//! the input. Nothing here allocates from a length read off the wire.

use std::ops::Range;

use bytes::Bytes;

use super::inline;
use super::{DecodeError, Limits};

/// What reading an element gives: the element and the position just past it, `None` when the
/// input ends first, or the error.
pub(super) type Parsed<T> = Result<Option<(T, usize)>, DecodeError>;

/// The shortest encoding of any frame (`+\r\n`): no array can have more elements than the
/// bytes received could hold at this size.
pub(super) const MIN_FRAME_LEN: usize = 3;

/// The shortest encoding of a bulk string (`$0\r\n\r\n`), the only element a command has.
pub(super) const MIN_BULK_LEN: usize = 6;

/// One element of a reply: a whole frame (other than a non-empty array), or the header of a
/// non-empty array whose elements follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReplyItem {
    SimpleString(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Option<Range<usize>>),
    NullArray,
    EmptyArray,
    /// `*<count>\r\n` with `count > 0`.
    ArrayHeader(u64),
}

/// What starts a command, as Redis's `processInputBuffer` reads it: a `*` starts a multibulk
/// request, anything else is an inline command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CommandHeader {
    /// `*<count>\r\n` with `count > 0`: that many bulk strings follow.
    Multibulk(u64),
    /// `*0\r\n`, `*-1\r\n` or a blank inline line: Redis skips it and reads on.
    Empty,
    /// An inline command, already split into its arguments.
    Inline(Vec<Bytes>),
}

/// What a decimal integer on the wire stands for, and so how large it may be.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bound {
    /// A `:` integer: anything that fits in an `i64`.
    Integer,
    /// A `$` length, at most this many bytes.
    BulkLen(u64),
    /// A `*` length, at most this many elements.
    ArrayLen(u64),
}

impl Bound {
    fn max(self) -> u64 {
        let max = match self {
            Bound::Integer => u64::MAX,
            Bound::BulkLen(max) | Bound::ArrayLen(max) => max,
        };
        max.min(i64::MAX.unsigned_abs())
    }

    /// The error for a positive value over the bound; `value` may be only the digits read so
    /// far, which are already too many.
    fn exceeded(self, header: usize, value: u64) -> DecodeError {
        match self {
            Bound::BulkLen(max) if value <= i64::MAX.unsigned_abs() => DecodeError::BulkTooLong {
                offset: header as u64,
                len: value,
                max,
            },
            Bound::ArrayLen(max) if value <= i64::MAX.unsigned_abs() => DecodeError::ArrayTooLong {
                offset: header as u64,
                len: value,
                max,
            },
            _ => DecodeError::IntegerOverflow {
                offset: header as u64,
            },
        }
    }
}

fn unexpected(offset: usize, found: u8, expected: &'static str) -> DecodeError {
    DecodeError::Unexpected {
        offset: offset as u64,
        found,
        expected,
    }
}

/// Reads the reply element at `at`.
pub(super) fn reply_item(input: &[u8], at: usize, limits: &Limits) -> Parsed<ReplyItem> {
    let Some(&type_byte) = input.get(at) else {
        return Ok(None);
    };
    let start = at + 1;
    let max_line = limits.max_line_len;
    match type_byte {
        b'+' => Ok(
            line(input, start, max_line)?.map(|cr| (ReplyItem::SimpleString(start..cr), cr + 2))
        ),
        b'-' => Ok(line(input, start, max_line)?.map(|cr| (ReplyItem::Error(start..cr), cr + 2))),
        b':' => {
            Ok(integer(input, start, Bound::Integer, at)?
                .map(|(n, end)| (ReplyItem::Integer(n), end)))
        }
        b'$' => Ok(
            bulk(input, at, limits, true)?.map(|(payload, end)| (ReplyItem::Bulk(payload), end))
        ),
        b'*' => array_header(input, at, limits),
        other => Err(unexpected(
            at,
            other,
            "a type byte: '+', '-', ':', '$' or '*'",
        )),
    }
}

/// Reads the array header whose `*` is at `at`.
fn array_header(input: &[u8], at: usize, limits: &Limits) -> Parsed<ReplyItem> {
    let Some((count, end)) = integer(input, at + 1, Bound::ArrayLen(limits.max_array_len), at)?
    else {
        return Ok(None);
    };
    let item = match count {
        -1 => ReplyItem::NullArray,
        0 => ReplyItem::EmptyArray,
        _ => match u64::try_from(count) {
            Ok(count) => ReplyItem::ArrayHeader(count),
            Err(_) => {
                return Err(unexpected(
                    at + 1,
                    b'-',
                    "-1 or an array length of 0 or more",
                ));
            }
        },
    };
    Ok(Some((item, end)))
}

/// Reads what starts a command at `at`: a multibulk header, or a whole inline command.
pub(super) fn command_header(input: &[u8], at: usize, limits: &Limits) -> Parsed<CommandHeader> {
    match input.get(at) {
        None => Ok(None),
        Some(b'*') => Ok(
            integer(input, at + 1, Bound::ArrayLen(limits.max_array_len), at)?.map(
                |(count, end)| match u64::try_from(count) {
                    Ok(count) if count > 0 => (CommandHeader::Multibulk(count), end),
                    _ => (CommandHeader::Empty, end),
                },
            ),
        ),
        Some(_) => Ok(
            inline::command(input, at, limits.max_line_len)?.map(|(argv, end)| {
                if argv.is_empty() {
                    (CommandHeader::Empty, end)
                } else {
                    (CommandHeader::Inline(argv), end)
                }
            }),
        ),
    }
}

/// Reads one argument of a multibulk command at `at`: it must be a bulk string, and not null.
pub(super) fn command_bulk(input: &[u8], at: usize, limits: &Limits) -> Parsed<Range<usize>> {
    match input.get(at) {
        None => Ok(None),
        Some(b'$') => Ok(bulk(input, at, limits, false)?
            .and_then(|(payload, end)| payload.map(|payload| (payload, end)))),
        Some(&other) => Err(unexpected(at, other, "'$'")),
    }
}

/// Reads the bulk string whose `$` is at `at`: `$<len>\r\n<payload>\r\n`, or `$-1\r\n` when
/// `allow_null`.
fn bulk(
    input: &[u8],
    at: usize,
    limits: &Limits,
    allow_null: bool,
) -> Parsed<Option<Range<usize>>> {
    let Some((len, start)) = integer(input, at + 1, Bound::BulkLen(limits.max_bulk_len), at)?
    else {
        return Ok(None);
    };
    let len = match usize::try_from(len) {
        Ok(len) => len,
        Err(_) if len == -1 && allow_null => return Ok(Some((None, start))),
        Err(_) if len < 0 => {
            let expected = if allow_null {
                "-1 or a bulk length of 0 or more"
            } else {
                "a bulk length of 0 or more"
            };
            return Err(unexpected(at + 1, b'-', expected));
        }
        Err(_) => {
            return Err(DecodeError::BulkTooLong {
                offset: at as u64,
                len: len.unsigned_abs(),
                max: limits.max_bulk_len,
            })
        }
    };
    let end = start.saturating_add(len);
    let terminator = input.get(end..).unwrap_or_default();
    for (i, expected) in [(0, b'\r'), (1, b'\n')] {
        match terminator.get(i) {
            None => return Ok(None),
            Some(&byte) if byte != expected => {
                return Err(unexpected(
                    end + i,
                    byte,
                    "\\r\\n after the bulk string's payload",
                ))
            }
            Some(_) => {}
        }
    }
    Ok(Some((Some(start..end), end + 2)))
}

/// Finds the CRLF that ends the line starting at `start` and returns the position of its CR.
/// A line holds no bare CR or LF and is at most `max` bytes long.
pub(super) fn line(input: &[u8], start: usize, max: usize) -> Result<Option<usize>, DecodeError> {
    let rest = input.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(max.saturating_add(1))];
    match memchr::memchr2(b'\r', b'\n', window) {
        Some(i) if window[i] == b'\n' => Err(unexpected(start + i, b'\n', "'\\r' before '\\n'")),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(start + i)),
            Some(&other) => Err(unexpected(start + i + 1, other, "'\\n' after '\\r'")),
        },
        None if rest.len() > max => Err(DecodeError::LineTooLong {
            offset: start as u64,
            max,
        }),
        None => Ok(None),
    }
}

/// Reads the CRLF-terminated decimal integer at `start` as Redis's `string2ll` reads it: an
/// optional `-`, then `0` or a digit from 1 to 9 followed by digits; no `+`, no spaces, no
/// leading zeros, and it fits in 64 bits. A positive value over `bound` is an error as soon as
/// the digits read exceed it. `header` (the type byte's position) is where errors point.
pub(super) fn integer(input: &[u8], start: usize, bound: Bound, header: usize) -> Parsed<i64> {
    let negative = input.get(start) == Some(&b'-');
    let digits = start + usize::from(negative);
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        bound.max()
    };
    let mut magnitude: u64 = 0;
    let mut pos = digits;
    loop {
        let Some(&byte) = input.get(pos) else {
            return Ok(None);
        };
        match byte {
            b'0'..=b'9' => {
                if pos > digits && input.get(digits) == Some(&b'0') {
                    return Err(unexpected(pos, byte, "\\r\\n after a leading 0"));
                }
                if pos == digits && negative && byte == b'0' {
                    return Err(unexpected(pos, byte, "a digit from 1 to 9 after '-'"));
                }
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u64::from(byte - b'0')))
                    .filter(|&m| m <= limit)
                    .ok_or_else(|| {
                        if negative {
                            DecodeError::IntegerOverflow {
                                offset: header as u64,
                            }
                        } else {
                            bound.exceeded(
                                header,
                                magnitude
                                    .saturating_mul(10)
                                    .saturating_add(u64::from(byte - b'0')),
                            )
                        }
                    })?;
                pos += 1;
            }
            b'\r' if pos > digits => {
                return match input.get(pos + 1) {
                    None => Ok(None),
                    Some(b'\n') => {
                        let value = if negative {
                            0i64.checked_sub_unsigned(magnitude)
                        } else {
                            i64::try_from(magnitude).ok()
                        };
                        value.map(|value| Some((value, pos + 2))).ok_or(
                            DecodeError::IntegerOverflow {
                                offset: header as u64,
                            },
                        )
                    }
                    Some(&other) => Err(unexpected(pos + 1, other, "'\\n' after '\\r'")),
                };
            }
            _ if pos == digits && !negative => {
                return Err(unexpected(pos, byte, "a digit or '-'"));
            }
            _ if pos == digits => return Err(unexpected(pos, byte, "a digit")),
            _ => return Err(unexpected(pos, byte, "a digit or \\r\\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(input: &[u8]) -> Parsed<i64> {
        integer(input, 1, Bound::Integer, 0)
    }

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(int(b":0\r\n"), Ok(Some((0, 4))));
        assert_eq!(int(b":-1\r\n"), Ok(Some((-1, 5))));
        assert_eq!(int(b":9223372036854775807\r\n"), Ok(Some((i64::MAX, 22))));
        assert_eq!(int(b":-9223372036854775808\r\n"), Ok(Some((i64::MIN, 23))));
        for incomplete in [&b":"[..], b":-", b":12", b":12\r", b":-9"] {
            assert_eq!(int(incomplete), Ok(None), "{incomplete:?}");
        }
        let invalid: [(&[u8], u64); 9] = [
            (b":01", 2),
            (b":-0", 2),
            (b":+1\r\n", 1),
            (b": 1\r\n", 1),
            (b":\r\n", 1),
            (b":-\r\n", 2),
            (b":1 \r\n", 2),
            (b":1\r1", 3),
            (b":1\n", 2),
        ];
        for (input, offset) in invalid {
            match int(input) {
                Err(DecodeError::Unexpected { offset: at, .. }) => {
                    assert_eq!(at, offset, "{input:?}")
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        assert_eq!(
            int(b":9223372036854775808"),
            Err(DecodeError::IntegerOverflow { offset: 0 })
        );
        assert_eq!(
            int(b":-9223372036854775809"),
            Err(DecodeError::IntegerOverflow { offset: 0 })
        );
        assert_eq!(
            int(b":99999999999999999999999"),
            Err(DecodeError::IntegerOverflow { offset: 0 })
        );
    }

    #[test]
    fn lengths_over_the_bound_fail_before_the_line_ends() {
        assert_eq!(
            integer(b"$1025", 1, Bound::BulkLen(1024), 0),
            Err(DecodeError::BulkTooLong {
                offset: 0,
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(integer(b"$1024", 1, Bound::BulkLen(1024), 0), Ok(None));
        assert_eq!(
            integer(b"*100", 1, Bound::ArrayLen(10), 0),
            Err(DecodeError::ArrayTooLong {
                offset: 0,
                len: 100,
                max: 10
            })
        );
    }

    #[test]
    fn lines_end_with_crlf_within_the_limit() {
        assert_eq!(line(b"+OK\r\n", 1, 8), Ok(Some(3)));
        assert_eq!(line(b"+OK\r", 1, 8), Ok(None));
        assert_eq!(line(b"+OK", 1, 8), Ok(None));
        assert_eq!(line(b"+12345678\r\n", 1, 8), Ok(Some(9)));
        assert_eq!(
            line(b"+123456789", 1, 8),
            Err(DecodeError::LineTooLong { offset: 1, max: 8 })
        );
        assert!(matches!(
            line(b"+O\nK\r\n", 1, 8),
            Err(DecodeError::Unexpected {
                offset: 2,
                found: b'\n',
                ..
            })
        ));
        assert!(matches!(
            line(b"+O\rK\r\n", 1, 8),
            Err(DecodeError::Unexpected {
                offset: 3,
                found: b'K',
                ..
            })
        ));
    }
}
