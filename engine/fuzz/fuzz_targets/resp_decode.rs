//! Any bytes into the RESP decoders: no panic, and they agree with each other.
//!
//! The first byte sets the chunk size the stateful decoders are fed in; the rest is the input.
//! A frame decoded from the input must re-encode to exactly the bytes it consumed (the
//! encoding is canonical), and feeding the same bytes in chunks must give the same frames and
//! byte counts as decoding the whole buffer.

#![no_main]

use bytes::Bytes;
use ferry_engine::resp::{decode_command, decode_frame, CommandDecoder, FrameDecoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let limits = Limits {
        max_depth: 8,
        max_line_len: 256,
        ..Limits::default()
    };
    let input = Bytes::copy_from_slice(input);

    // Frames, whole buffer.
    let mut whole = Vec::new();
    let mut rest = input.clone();
    let whole_error = loop {
        match decode_frame(&rest, &limits) {
            Ok(Some((frame, consumed))) => {
                assert!(consumed > 0 && consumed <= rest.len());
                let mut encoded = Vec::new();
                frame.encode(&mut encoded);
                assert_eq!(encoded, rest[..consumed]);
                assert_eq!(frame.encoded_len(), consumed);
                whole.push((frame, consumed));
                rest = rest.slice(consumed..);
            }
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };

    // Frames, in chunks.
    let mut decoder = FrameDecoder::new(limits);
    let mut chunked = Vec::new();
    let mut chunked_error = None;
    'feed: for piece in input.chunks(chunk) {
        decoder.feed(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(next)) => chunked.push(next),
                Ok(None) => break,
                Err(error) => {
                    chunked_error = Some(error);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(whole, chunked);
    let base = (input.len() - rest.len()) as u64;
    assert_eq!(
        whole_error.map(|e| e.offset() + base),
        chunked_error.map(|e| e.offset())
    );

    // Commands, whole buffer and in chunks.
    let mut whole = Vec::new();
    let mut rest = input.clone();
    while let Ok(Some((command, consumed))) = decode_command(&rest, &limits) {
        assert!(consumed > 0 && consumed <= rest.len());
        whole.push((command, consumed));
        rest = rest.slice(consumed..);
    }
    let mut decoder = CommandDecoder::new(limits);
    let mut chunked = Vec::new();
    'commands: for piece in input.chunks(chunk) {
        decoder.feed(piece);
        loop {
            match decoder.next_command() {
                Ok(Some(next)) => chunked.push(next),
                Ok(None) => break,
                Err(_) => break 'commands,
            }
        }
    }
    assert_eq!(whole, chunked);
});
