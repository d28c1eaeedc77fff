//! One RESP2 value, as a reply (or the pieces of a command) travels on the wire.

use bytes::Bytes;

/// One RESP2 value.
///
/// "In RESP, the first byte determines the data type": `+` simple string, `-` error, `:`
/// integer, `$` bulk string, `*` array. Strings are bytes, not text: Redis strings are binary
/// safe, and even status replies are only conventionally ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    /// `+OK\r\n`: a status reply. "Simple strings cannot contain CR or LF characters."
    SimpleString(Bytes),
    /// `-ERR unknown command 'FOO'\r\n`: an error reply. By convention its first word is the
    /// error code (`ERR`, `MOVED`, `ASK`, `LOADING`, ...).
    Error(Bytes),
    /// `:1000\r\n`: a signed 64-bit integer.
    Integer(i64),
    /// `$5\r\nhello\r\n`: a binary-safe string; `$-1\r\n` is the null bulk string (`None`).
    Bulk(Option<Bytes>),
    /// `*2\r\n...`: an array of frames, which may nest; `*-1\r\n` is the null array (`None`).
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// A bulk string holding `bytes`.
    pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(Some(bytes.into()))
    }

    /// The error code of an error reply: its first word, such as `MOVED` in
    /// `-MOVED 3999 127.0.0.1:6381`. `None` for every other frame.
    pub fn error_code(&self) -> Option<&[u8]> {
        match self {
            Frame::Error(message) => message.split(|&b| b == b' ').next(),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(super) mod strategy {
    //! Arbitrary frames for the codec's property tests.

    use super::Frame;
    use bytes::Bytes;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Bytes that a simple string or an error may hold: anything but CR and LF.
    fn line_bytes() -> impl Strategy<Value = Bytes> {
        vec(
            any::<u8>().prop_filter("no CR or LF", |b| *b != b'\r' && *b != b'\n'),
            0..24,
        )
        .prop_map(Bytes::from)
    }

    /// Any frame, nested at most `depth` arrays deep.
    pub fn frame(depth: u32) -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            line_bytes().prop_map(Frame::SimpleString),
            line_bytes().prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            prop::option::weighted(0.9, vec(any::<u8>(), 0..64).prop_map(Bytes::from))
                .prop_map(Frame::Bulk),
            Just(Frame::Array(None)),
        ];
        leaf.prop_recursive(depth, 64, 8, |inner| {
            vec(inner, 0..8).prop_map(|items| Frame::Array(Some(items)))
        })
    }

    /// A command as a master propagates it: a name and up to seven arguments.
    pub fn argv() -> impl Strategy<Value = Vec<Bytes>> {
        vec(vec(any::<u8>(), 0..32).prop_map(Bytes::from), 1..8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_is_the_first_word() {
        let moved = Frame::Error(Bytes::from_static(b"MOVED 3999 127.0.0.1:6381"));
        assert_eq!(moved.error_code(), Some(&b"MOVED"[..]));
        let bare = Frame::Error(Bytes::from_static(b"LOADING"));
        assert_eq!(bare.error_code(), Some(&b"LOADING"[..]));
        assert_eq!(Frame::bulk("MOVED").error_code(), None);
    }
}
