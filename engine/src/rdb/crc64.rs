//! CRC-64/Jones, the checksum Redis writes after an RDB file's EOF opcode and at the end of
//! every `DUMP` payload (Redis's `crc64.c`).
//!
//! "Jones" polynomial 0xad93d23594c935a9, reflected input and output, initial value 0, no final
//! xor. Inputs under 32 bytes go through slicing-by-8 tables built at compile time, as Redis's
//! `crcspeed` does; inputs up to 512 bytes (most `DUMP` payloads) are folded 16 bytes at a time
//! with carry-less multiplication where the processor has it (about 3 to 4 times the tables'
//! speed); longer ones (the whole snapshot passes through here) through `crc-fast`, which folds
//! several blocks at once.

/// The polynomial as `crc64.c` names it, in normal (MSB-first) form.
pub const POLY: u64 = 0xad93_d235_94c9_35a9;

/// The eight slicing tables: `TABLES[0]` is the classic byte table of the reflected
/// polynomial, `TABLES[k][b]` the CRC of byte `b` followed by `k` zero bytes.
static TABLES: [[u64; 256]; 8] = tables();

const fn tables() -> [[u64; 256]; 8] {
    let reflected = POLY.reverse_bits();
    let mut tables = [[0u64; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ reflected
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[k - 1][byte];
            tables[k][byte] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

/// Inputs at least this long go to `crc-fast`, which folds several blocks in parallel.
const FOLD_FROM: usize = 512;
/// Inputs at least this long (and shorter than [`FOLD_FROM`]) are folded 16 bytes at a time
/// with carry-less multiplication where the processor has it: most `DUMP` payloads.
const CLMUL_FROM: usize = 32;

/// `crc64(crc, s, l)`: continues the checksum `crc` over `bytes`. Start with 0.
pub fn crc64(crc: u64, bytes: &[u8]) -> u64 {
    if bytes.len() >= FOLD_FROM {
        let mut digest =
            crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc64Redis, crc);
        digest.update(bytes);
        return digest.finalize();
    }
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= CLMUL_FROM && std::arch::is_x86_feature_detected!("pclmulqdq") {
        // SAFETY: the processor has PCLMULQDQ (checked just above); SSE2 is part of x86_64.
        return unsafe { clmul::crc64_folded(crc, bytes) };
    }
    crc64_sliced(crc, bytes)
}

/// Folding 16 bytes at a time. The checksum of a message is linear in its bits (initial value
/// 0, no final xor), so a leading 16-byte block `A` followed by more bytes can be replaced by
/// a block congruent to `A * x^128` modulo the polynomial, xored into the next block: with
/// `A`'s first eight bytes (the higher-degree half, reflected) times `x^191 mod P` and the
/// other eight times `x^127 mod P` (one degree less than the plain powers, as the reflected
/// product comes out shifted by one bit). What is left, one block and a tail of under 16
/// bytes, goes through the tables.
#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::{
        __m128i, _mm_clmulepi64_si128, _mm_loadu_si128, _mm_set_epi64x, _mm_storeu_si128,
        _mm_xor_si128,
    };

    /// `x^e mod P`, reflected to the bit order of the checksum.
    const fn power(e: u32) -> u64 {
        let mut r: u64 = 1;
        let mut i = 0;
        while i < e {
            let carry = r >> 63;
            r <<= 1;
            if carry == 1 {
                r ^= super::POLY;
            }
            i += 1;
        }
        r.reverse_bits()
    }

    /// For the first eight bytes of a block.
    const K_HIGH: u64 = power(191);
    /// For the last eight.
    const K_LOW: u64 = power(127);

    /// # Safety
    /// The processor must have PCLMULQDQ.
    #[target_feature(enable = "pclmulqdq")]
    pub(super) unsafe fn crc64_folded(crc: u64, bytes: &[u8]) -> u64 {
        let mut blocks = bytes.chunks_exact(16);
        let load = |block: &[u8]| -> __m128i {
            // SAFETY: `block` holds 16 bytes; the load is unaligned.
            unsafe { _mm_loadu_si128(block.as_ptr().cast()) }
        };
        let Some(first) = blocks.next() else {
            return super::crc64_sliced(crc, bytes);
        };
        let keys = _mm_set_epi64x(K_LOW as i64, K_HIGH as i64);
        let mut x = _mm_xor_si128(load(first), _mm_set_epi64x(0, crc as i64));
        for block in &mut blocks {
            let high = _mm_clmulepi64_si128::<0x00>(x, keys);
            let low = _mm_clmulepi64_si128::<0x11>(x, keys);
            x = _mm_xor_si128(_mm_xor_si128(high, low), load(block));
        }
        let mut last = [0u8; 16];
        // SAFETY: `last` holds 16 bytes; the store is unaligned.
        unsafe { _mm_storeu_si128(last.as_mut_ptr().cast(), x) };
        let crc = super::crc64_sliced(0, &last);
        super::crc64_sliced(crc, blocks.remainder())
    }
}

/// Slicing by 8, for short inputs.
fn crc64_sliced(mut crc: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        crc ^= u64::from_le_bytes(eight);
        crc = TABLES[7][(crc & 0xff) as usize]
            ^ TABLES[6][((crc >> 8) & 0xff) as usize]
            ^ TABLES[5][((crc >> 16) & 0xff) as usize]
            ^ TABLES[4][((crc >> 24) & 0xff) as usize]
            ^ TABLES[3][((crc >> 32) & 0xff) as usize]
            ^ TABLES[2][((crc >> 40) & 0xff) as usize]
            ^ TABLES[1][((crc >> 48) & 0xff) as usize]
            ^ TABLES[0][(crc >> 56) as usize];
    }
    for &byte in words.remainder() {
        crc = TABLES[0][((crc ^ u64::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit by bit, straight from the definition, to check the tables against.
    fn crc64_bitwise(mut crc: u64, bytes: &[u8]) -> u64 {
        let reflected = POLY.reverse_bits();
        for &byte in bytes {
            crc ^= u64::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ reflected
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn check_value_from_crc64_c() {
        // crc64.c's own test: crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9ca.
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(crc64(0, b""), 0);
    }

    #[test]
    fn slicing_agrees_with_the_definition_and_continues() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 100, 255, 256, 257, 1000] {
            assert_eq!(crc64(0, &data[..len]), crc64_bitwise(0, &data[..len]));
            assert_eq!(
                crc64_sliced(0, &data[..len]),
                crc64_bitwise(0, &data[..len])
            );
        }
        let whole = crc64(0, &data);
        for split in [1, 5, 8, 300, 333, 999] {
            assert_eq!(crc64(crc64(0, &data[..split]), &data[split..]), whole);
        }
    }

    proptest::proptest! {
        #[test]
        fn folding_and_slicing_agree(
            seed in proptest::prelude::any::<u64>(),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000),
        ) {
            proptest::prop_assert_eq!(crc64(seed, &data), crc64_sliced(seed, &data));
        }

        #[test]
        #[cfg(target_arch = "x86_64")]
        fn block_folding_and_slicing_agree(
            seed in proptest::prelude::any::<u64>(),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1100),
        ) {
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: checked just above.
                let folded = unsafe { clmul::crc64_folded(seed, &data) };
                proptest::prop_assert_eq!(folded, crc64_sliced(seed, &data));
            }
        }
    }
}
