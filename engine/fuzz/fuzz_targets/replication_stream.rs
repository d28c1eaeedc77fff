//! Any bytes into the replica's side of a replication link: no panic, and every byte fed is
//! either handed out in an event or still buffered.
//!
//! The first byte sets the chunk size; the input follows a `+FULLRESYNC` half the time, so
//! the snapshot framing and the command stream are reached as well as the PSYNC reply.

#![no_main]

use ferry_engine::resp::{Limits, ReplEvent, ReplicationStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control >> 1).max(1);
    let mut fed = Vec::new();
    if control & 1 == 1 {
        fed.extend_from_slice(b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n");
    }
    fed.extend_from_slice(input);
    let limits = Limits {
        max_line_len: 256,
        ..Limits::default()
    };
    let mut stream = ReplicationStream::new(limits);
    let mut counted = 0u64;
    let mut fed_so_far = 0u64;
    for piece in fed.chunks(chunk) {
        stream.feed(piece);
        fed_so_far += piece.len() as u64;
        loop {
            match stream.next_event() {
                Ok(Some((event, len))) => {
                    if let ReplEvent::SnapshotChunk(bytes) = &event {
                        assert_eq!(bytes.len(), len);
                    }
                    counted += len as u64;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert_eq!(counted, stream.consumed());
        assert_eq!(counted + stream.buffered() as u64, fed_so_far);
    }
});
