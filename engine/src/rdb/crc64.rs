//! CRC-64/Jones, the checksum Redis writes after an RDB file's EOF opcode and at the end of
//! every `DUMP` payload (Redis's `crc64.c`).
//!
//! "Jones" polynomial 0xad93d23594c935a9, reflected input and output, initial value 0, no final
//! xor. Short inputs (DUMP payloads of small values) go through slicing-by-8 tables built at
//! compile time, as Redis's `crcspeed` does; long ones (the whole snapshot passes through here)
//! through `crc-fast`'s carry-less-multiply folding (`CRC-64/REDIS`), several times faster.

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

/// Inputs at least this long go to the folding implementation.
const FOLD_FROM: usize = 256;

/// `crc64(crc, s, l)`: continues the checksum `crc` over `bytes`. Start with 0.
pub fn crc64(crc: u64, bytes: &[u8]) -> u64 {
    if bytes.len() < FOLD_FROM {
        return crc64_sliced(crc, bytes);
    }
    let mut digest = crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc64Redis, crc);
    digest.update(bytes);
    digest.finalize()
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
    }
}
