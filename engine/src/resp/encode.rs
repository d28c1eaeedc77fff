//! Encoding frames and commands as RESP2.
//!
//! Encoders append to any [`BufMut`] (a `Vec<u8>`, a `BytesMut`) and never fail. Each has a
//! matching `*_len` that says how many bytes it will write, so a caller can size buffers and
//! count replication offsets without encoding twice.

use bytes::BufMut;

use super::{Command, Frame};

impl Frame {
    /// Appends the RESP2 encoding of this frame to `out`.
    ///
    /// Simple strings and errors are written as they are: "simple strings cannot contain CR or
    /// LF characters", and one that does encodes to bytes that decode as something else.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            Frame::SimpleString(line) => put_line(out, b'+', line),
            Frame::Error(line) => put_line(out, b'-', line),
            Frame::Integer(n) => {
                out.put_u8(b':');
                put_signed(out, *n);
                out.put_slice(b"\r\n");
            }
            Frame::Bulk(Some(bytes)) => put_bulk(out, bytes),
            Frame::Bulk(None) => out.put_slice(b"$-1\r\n"),
            Frame::Array(Some(items)) => {
                put_header(out, b'*', items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Frame::Array(None) => out.put_slice(b"*-1\r\n"),
        }
    }

    /// The number of bytes [`Frame::encode`] writes for this frame.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::SimpleString(line) | Frame::Error(line) => 1 + line.len() + 2,
            Frame::Integer(n) => 1 + signed_len(*n) + 2,
            Frame::Bulk(Some(bytes)) => bulk_len(bytes.len()),
            Frame::Bulk(None) | Frame::Array(None) => 5,
            Frame::Array(Some(items)) => {
                header_len(items.len()) + items.iter().map(Frame::encoded_len).sum::<usize>()
            }
        }
    }
}

impl Command {
    /// Appends this command to `out` as an array of bulk strings.
    pub fn encode(&self, out: &mut impl BufMut) {
        encode_command(self.argv(), out);
    }

    /// The number of bytes [`Command::encode`] writes: what this command adds to a replication
    /// offset when a master propagates it.
    pub fn encoded_len(&self) -> usize {
        command_len(self.argv())
    }
}

/// Appends the command `argv` to `out` as "an array consisting of only bulk strings", the form
/// Redis expects from clients and sends to its replicas: `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`.
pub fn encode_command<A: AsRef<[u8]>>(argv: &[A], out: &mut impl BufMut) {
    put_header(out, b'*', argv.len());
    for arg in argv {
        put_bulk(out, arg.as_ref());
    }
}

/// The number of bytes [`encode_command`] writes for `argv`.
pub fn command_len<A: AsRef<[u8]>>(argv: &[A]) -> usize {
    header_len(argv.len())
        + argv
            .iter()
            .map(|arg| bulk_len(arg.as_ref().len()))
            .sum::<usize>()
}

/// Appends `$<len>\r\n`: what precedes a bulk string of `len` bytes (then the bytes and
/// `\r\n`).
pub fn encode_bulk_header(len: usize, out: &mut impl BufMut) {
    put_header(out, b'$', len);
}

/// Appends `bytes` as a bulk string.
pub fn encode_bulk(bytes: &[u8], out: &mut impl BufMut) {
    put_bulk(out, bytes);
}

/// Appends the decimal text of `n` as a bulk string, as a command argument.
pub fn encode_bulk_decimal(n: i64, out: &mut impl BufMut) {
    // `$<len>\r\n<digits>\r\n`, put together on the stack and written at once.
    let mut number = [0u8; 21];
    let start = signed_digits(n, &mut number);
    let number = &number[start..];
    let mut line = [0u8; 2 * 21 + 5];
    let mut len = header(b'$', number.len(), &mut line);
    line[len..len + number.len()].copy_from_slice(number);
    len += number.len();
    line[len..len + 2].copy_from_slice(b"\r\n");
    out.put_slice(&line[..len + 2]);
}

fn put_line(out: &mut impl BufMut, type_byte: u8, line: &[u8]) {
    out.put_u8(type_byte);
    out.put_slice(line);
    out.put_slice(b"\r\n");
}

fn put_bulk(out: &mut impl BufMut, bytes: &[u8]) {
    put_header(out, b'$', bytes.len());
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

fn bulk_len(len: usize) -> usize {
    header_len(len) + len + 2
}

/// `*<n>\r\n` or `$<n>\r\n`.
fn put_header(out: &mut impl BufMut, type_byte: u8, n: usize) {
    let mut line = [0u8; 24];
    let len = header(type_byte, n, &mut line);
    out.put_slice(&line[..len]);
}

/// Writes `*<n>\r\n` or `$<n>\r\n` at the start of `line`; returns its length.
fn header(type_byte: u8, n: usize, line: &mut [u8]) -> usize {
    let mut number = [0u8; 21];
    let start = digits(n as u64, &mut number);
    let number = &number[start..];
    line[0] = type_byte;
    line[1..1 + number.len()].copy_from_slice(number);
    line[1 + number.len()..3 + number.len()].copy_from_slice(b"\r\n");
    3 + number.len()
}

/// The two-digit decimal texts of 0 to 99, one after the other.
const PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Writes the decimal text of `n`, its sign included, at the end of `buf` (room for
/// `i64::MIN`); returns where it starts.
fn signed_digits(n: i64, buf: &mut [u8; 21]) -> usize {
    let mut start = digits(n.unsigned_abs(), buf);
    if n < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    start
}

/// Writes the decimal digits of `n` at the end of `buf`; returns where they start.
fn digits(mut n: u64, buf: &mut [u8; 21]) -> usize {
    let mut start = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        buf[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        start -= 2;
        buf[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        start -= 1;
        buf[start] = b'0' + n as u8;
    }
    start
}

fn header_len(n: usize) -> usize {
    1 + unsigned_len(n as u64) + 2
}

fn put_signed(out: &mut impl BufMut, n: i64) {
    let mut number = [0u8; 21];
    let start = signed_digits(n, &mut number);
    out.put_slice(&number[start..]);
}

fn signed_len(n: i64) -> usize {
    usize::from(n < 0) + unsigned_len(n.unsigned_abs())
}

fn unsigned_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::frame::strategy;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        out
    }

    #[test]
    fn encodes_every_type_as_redis_does() {
        let cases: [(Frame, &[u8]); 10] = [
            (Frame::SimpleString(Bytes::from_static(b"OK")), b"+OK\r\n"),
            (
                Frame::Error(Bytes::from_static(b"ERR unknown command")),
                b"-ERR unknown command\r\n",
            ),
            (Frame::Integer(1000), b":1000\r\n"),
            (Frame::Integer(0), b":0\r\n"),
            (Frame::Integer(i64::MIN), b":-9223372036854775808\r\n"),
            (Frame::bulk("hello"), b"$5\r\nhello\r\n"),
            (Frame::bulk(""), b"$0\r\n\r\n"),
            (Frame::Bulk(None), b"$-1\r\n"),
            (Frame::Array(None), b"*-1\r\n"),
            (
                Frame::Array(Some(vec![
                    Frame::Integer(1),
                    Frame::Array(Some(Vec::new())),
                    Frame::bulk("x"),
                ])),
                b"*3\r\n:1\r\n*0\r\n$1\r\nx\r\n",
            ),
        ];
        for (frame, wire) in cases {
            assert_eq!(encoded(&frame), wire, "{frame:?}");
            assert_eq!(frame.encoded_len(), wire.len(), "{frame:?}");
        }
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&[&b"SET"[..], b"key", b""], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n");
        assert_eq!(command_len(&["SET", "key", ""]), out.len());

        let ping = Command::new("PING");
        let mut out = bytes::BytesMut::new();
        ping.encode(&mut out);
        assert_eq!(&out[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(ping.encoded_len(), 14);
    }

    #[test]
    fn piece_by_piece_writes_what_encode_command_writes() {
        for n in [0, 7, -1, i64::MIN, i64::MAX, 1_700_000_000_000] {
            let text = n.to_string();
            let mut whole = Vec::new();
            encode_command(&["PEXPIREAT", "k", &text], &mut whole);
            let mut pieces = Vec::new();
            pieces.extend_from_slice(b"*3\r\n");
            encode_bulk(b"PEXPIREAT", &mut pieces);
            encode_bulk_header(1, &mut pieces);
            pieces.extend_from_slice(b"k\r\n");
            encode_bulk_decimal(n, &mut pieces);
            assert_eq!(pieces, whole, "{n}");
        }
    }

    proptest! {
        #[test]
        fn encoded_len_matches_encode(frame in strategy::frame(4)) {
            prop_assert_eq!(frame.encoded_len(), encoded(&frame).len());
        }

        #[test]
        fn bulk_decimals_print_as_rust_does(n in any::<i64>()) {
            let text = n.to_string();
            let mut out = Vec::new();
            encode_bulk_decimal(n, &mut out);
            prop_assert_eq!(out, format!("${}\r\n{text}\r\n", text.len()).into_bytes());
        }

        #[test]
        fn integers_print_as_rust_does(n in any::<i64>()) {
            prop_assert_eq!(encoded(&Frame::Integer(n)), format!(":{n}\r\n").into_bytes());
        }
    }
}
