//! Any bytes into the RDB parser: no panic, and feeding them in chunks gives what feeding
//! them whole gives (the same error, or the same events).
//!
//! The first byte sets the chunk size; the second what the sink wants of values, how small
//! the raw-value limit is, and whether a `REDIS0011` header goes first (seed the corpus with
//! whole RDB files, `../shared/rdb-corpus`, to start from valid ones).

#![no_main]

use ferry_engine::rdb::{
    Checksum, Config, Element, EmptyKeys, Header, Key, Parser, RdbError, Sink, Status, ValueEnd,
    Want,
};
use libfuzzer_sys::fuzz_target;

/// A running hash of everything the sink saw; string parts hash as the bytes they join to.
struct Digest {
    want: Want,
    hash: u64,
    events: u64,
}

impl Digest {
    fn mix(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn event(&mut self, tag: u8) {
        self.events += 1;
        self.mix(&[0xff, tag]);
    }
}

impl Sink for Digest {
    type Error = RdbError;

    fn header(&mut self, header: Header) -> Result<(), RdbError> {
        self.event(0);
        self.mix(&header.to_bytes());
        Ok(())
    }
    fn aux(&mut self, name: &[u8], value: &[u8]) -> Result<(), RdbError> {
        self.event(1);
        self.mix(name);
        self.mix(value);
        Ok(())
    }
    fn select_db(&mut self, db: u32) -> Result<(), RdbError> {
        self.event(2);
        self.mix(&db.to_le_bytes());
        Ok(())
    }
    fn key(&mut self, key: &Key<'_>) -> Result<Want, RdbError> {
        self.event(3);
        self.mix(key.key);
        self.mix(&[key.rdb_type.byte()]);
        self.mix(&key.expire_at_ms.unwrap_or(-1).to_le_bytes());
        Ok(self.want)
    }
    fn element(&mut self, _key: &Key<'_>, element: &Element<'_>) -> Result<(), RdbError> {
        match element {
            // Parts depend on the chunking: hash them without a separator.
            Element::String(part) => self.mix(&part.to_bytes()),
            other => {
                self.event(4);
                self.mix(format!("{other:?}").as_bytes());
            }
        }
        Ok(())
    }
    fn value(&mut self, _key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), RdbError> {
        self.event(5);
        self.mix(&value.len.to_le_bytes());
        self.mix(&value.rdb_len.to_le_bytes());
        if let Some(raw) = value.raw {
            assert_eq!(raw.len() as u64, value.rdb_len);
            self.mix(raw);
        }
        Ok(())
    }
    fn end(&mut self, checksum: Checksum) -> Result<(), RdbError> {
        self.event(6);
        self.mix(format!("{checksum:?}").as_bytes());
        Ok(())
    }
}

fn run(
    input: &[u8],
    chunk: usize,
    want: Want,
    config: Config,
) -> Result<(u64, u64, u64), RdbError> {
    let mut parser = Parser::new(config);
    let mut sink = Digest {
        want,
        hash: 0xcbf2_9ce4_8422_2325,
        events: 0,
    };
    let mut fed = 0u64;
    let mut unused = 0u64;
    for piece in input.chunks(chunk) {
        fed += piece.len() as u64;
        if let Status::Done { unused: n } = parser.feed(piece, &mut sink)? {
            unused += n as u64;
        }
        assert!(parser.consumed() + parser.buffered() as u64 + unused == fed);
    }
    parser.finish()?;
    Ok((sink.hash, sink.events, parser.consumed()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let Some((&control, body)) = rest.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let want = match control & 3 {
        0 => Want::Nothing,
        1 => Want::Raw,
        2 => Want::Elements,
        _ => Want::RawAndElements,
    };
    let config = Config {
        max_raw_value: if control & 4 == 0 { 64 } else { 1 << 16 },
        max_string_len: 1 << 16,
        empty_keys: if control & 8 == 0 {
            EmptyKeys::Refuse
        } else {
            EmptyKeys::Report
        },
    };
    let mut input = Vec::with_capacity(body.len() + 9);
    if control & 16 != 0 {
        input.extend_from_slice(b"REDIS0011");
    }
    input.extend_from_slice(body);

    let whole = run(&input, input.len().max(1), want, config);
    let chunked = run(&input, chunk, want, config);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("whole {whole:?}, in chunks of {chunk} {chunked:?}"),
    }
});
