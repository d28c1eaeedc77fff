//! Cluster slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.

use std::fmt;

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// A cluster hash slot, always `< 16384`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u16);

/// A slot number outside `0..16384`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("slot {0} out of range 0..16383")]
pub struct InvalidSlot(pub u32);

impl Slot {
    /// The slot `n`, if it is a valid slot number.
    pub fn new(n: u16) -> Result<Self, InvalidSlot> {
        if n < SLOT_COUNT {
            Ok(Slot(n))
        } else {
            Err(InvalidSlot(n.into()))
        }
    }

    /// The slot Redis Cluster assigns to `key`, honouring `{hash tags}`.
    pub fn of_key(key: &[u8]) -> Self {
        Slot(crc16(hash_tag(key)) % SLOT_COUNT)
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An inclusive range of slots, as `CLUSTER SLOTS` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotRange {
    pub first: Slot,
    pub last: Slot,
}

impl SlotRange {
    pub fn new(first: Slot, last: Slot) -> Self {
        assert!(first <= last, "slot range {first}-{last} is reversed");
        SlotRange { first, last }
    }

    pub fn contains(&self, slot: Slot) -> bool {
        self.first <= slot && slot <= self.last
    }

    pub fn len(&self) -> usize {
        usize::from(self.last.0 - self.first.0) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Splits all 16384 slots into `n` contiguous ranges of near-equal size (as
    /// `redis-cli --cluster create` does). `n` must be between 1 and 16384.
    pub fn split_even(n: usize) -> Vec<SlotRange> {
        assert!(
            (1..=usize::from(SLOT_COUNT)).contains(&n),
            "cannot split slots {n} ways"
        );
        let total = usize::from(SLOT_COUNT);
        (0..n)
            .map(|i| {
                let first = i * total / n;
                let last = (i + 1) * total / n - 1;
                SlotRange::new(Slot(first as u16), Slot(last as u16))
            })
            .collect()
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The part of the key that is hashed: the content of the first `{...}` when it is non-empty.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// `TABLES[k][b]`: the CRC16 of byte `b` followed by `k` zero bytes (`b·x^(8k+16) mod P`).
/// `TABLES[0]` is the usual byte-at-a-time table; the others let eight bytes be folded in at
/// once, from eight independent lookups instead of a chain of eight.
const TABLES: [[u16; 256]; 8] = {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for key slots: eight bytes at a
/// time (the state folded into the first two), then the rest one by one.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    let mut blocks = bytes.chunks_exact(8);
    for block in &mut blocks {
        let [hi, lo] = crc.to_be_bytes();
        crc = TABLES[7][usize::from(block[0] ^ hi)]
            ^ TABLES[6][usize::from(block[1] ^ lo)]
            ^ TABLES[5][usize::from(block[2])]
            ^ TABLES[4][usize::from(block[3])]
            ^ TABLES[3][usize::from(block[4])]
            ^ TABLES[2][usize::from(block[5])]
            ^ TABLES[1][usize::from(block[6])]
            ^ TABLES[0][usize::from(block[7])];
    }
    blocks.remainder().iter().fold(crc, crc16_byte)
}

fn crc16_byte(crc: u16, &b: &u8) -> u16 {
    (crc << 8) ^ TABLES[0][usize::from(((crc >> 8) as u8) ^ b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_cluster_spec_check_value() {
        // The Redis Cluster specification gives 0x31C3 for "123456789".
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    proptest::proptest! {
        #[test]
        fn crc16_by_eight_bytes_matches_byte_by_byte(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)
        ) {
            proptest::prop_assert_eq!(crc16(&bytes), bytes.iter().fold(0, crc16_byte));
        }
    }

    #[test]
    fn slots_match_values_redis_reports() {
        // Values from CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(Slot::of_key(b"foo").get(), 12182);
        assert_eq!(Slot::of_key(b"bar").get(), 5061);
        assert_eq!(Slot::of_key(b"").get(), 0);
    }

    #[test]
    fn hash_tags_follow_the_first_braces() {
        assert_eq!(
            Slot::of_key(b"{user1000}.following"),
            Slot::of_key(b"user1000")
        );
        assert_eq!(Slot::of_key(b"foo{}{bar}"), Slot::of_key(b"foo{}{bar}"));
        assert_ne!(Slot::of_key(b"foo{}{bar}"), Slot::of_key(b"bar"));
        assert_eq!(Slot::of_key(b"foo{{bar}}zap"), Slot::of_key(b"{bar"));
        assert_eq!(Slot::of_key(b"foo{bar}{zap}"), Slot::of_key(b"bar"));
        assert_eq!(
            Slot::of_key(b"no{close"),
            Slot(crc16(b"no{close") % SLOT_COUNT)
        );
    }

    #[test]
    fn even_split_covers_every_slot_once() {
        for n in [1, 2, 3, 5, 7, 16384] {
            let ranges = SlotRange::split_even(n);
            assert_eq!(ranges.len(), n);
            assert_eq!(ranges[0].first.get(), 0);
            assert_eq!(ranges[n - 1].last.get(), SLOT_COUNT - 1);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].last.get() + 1, pair[1].first.get());
            }
            assert_eq!(ranges.iter().map(SlotRange::len).sum::<usize>(), 16384);
        }
    }

    #[test]
    fn slot_numbers_are_checked() {
        assert!(Slot::new(16383).is_ok());
        assert_eq!(Slot::new(16384), Err(InvalidSlot(16384)));
    }
}
