//! LZF decompression (liblzf's `lzf_d.c`), for the strings Redis saves compressed
//! (`RDB_ENC_LZF`, when `rdbcompression` is on and the string is longer than 20 bytes).
//!
//! The compressed form is a sequence of runs. A control byte below 32 starts a literal run of
//! `ctrl + 1` bytes. Any other control byte is a back reference: its top 3 bits are the length
//! minus 2 (7 means "add the next byte"), its low 5 bits and the byte after the length are the
//! distance minus 1 back into what was already decompressed.

/// Why compressed bytes cannot be what the RDB string said they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LzfError {
    /// Position in the compressed input.
    pub at: usize,
    pub expected: &'static str,
}

/// `lzf_decompress`: decompresses `input`, appending exactly `len` bytes to `out`.
///
/// Back references may only reach bytes this call appended. `len` is the length the RDB
/// declared, already checked against the caller's limits; nothing beyond it is allocated.
pub(super) fn decompress(input: &[u8], len: usize, out: &mut Vec<u8>) -> Result<(), LzfError> {
    let start = out.len();
    let end = start + len;
    out.reserve_exact(len);
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = usize::from(input[ip]);
        ip += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            let Some(literal) = input.get(ip..ip + run) else {
                return Err(LzfError {
                    at: ip,
                    expected: "a literal run within the compressed bytes",
                });
            };
            if out.len() + run > end {
                return Err(LzfError {
                    at: ip - 1,
                    expected: "no more output than the declared length",
                });
            }
            out.extend_from_slice(literal);
            ip += run;
        } else {
            let mut run = ctrl >> 5;
            if run == 7 {
                let Some(&more) = input.get(ip) else {
                    return Err(LzfError {
                        at: ip,
                        expected: "the length byte of a back reference",
                    });
                };
                run += usize::from(more);
                ip += 1;
            }
            let Some(&low) = input.get(ip) else {
                return Err(LzfError {
                    at: ip,
                    expected: "the distance byte of a back reference",
                });
            };
            ip += 1;
            run += 2;
            let distance = ((ctrl & 0x1f) << 8) + usize::from(low) + 1;
            let produced = out.len() - start;
            if distance > produced {
                return Err(LzfError {
                    at: ip - 2,
                    expected: "a back reference into the bytes already decompressed",
                });
            }
            if out.len() + run > end {
                return Err(LzfError {
                    at: ip - 2,
                    expected: "no more output than the declared length",
                });
            }
            let from = out.len() - distance;
            if distance >= run {
                out.extend_from_within(from..from + run);
            } else {
                // The run overlaps what it produces: copy byte by byte, as lzf_d.c does.
                for i in 0..run {
                    let byte = out[from + i];
                    out.push(byte);
                }
            }
        }
    }
    if out.len() != end {
        return Err(LzfError {
            at: input.len(),
            expected: "as many decompressed bytes as the declared length",
        });
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A small LZF compressor (greedy, hash of 3 bytes), enough to produce test inputs with
    /// literals, short and long back references and overlapping runs.
    pub(crate) fn compress(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut literal: Vec<u8> = Vec::new();
        let flush = |out: &mut Vec<u8>, literal: &mut Vec<u8>| {
            for run in literal.chunks(32) {
                out.push((run.len() - 1) as u8);
                out.extend_from_slice(run);
            }
            literal.clear();
        };
        let mut table = std::collections::HashMap::new();
        let mut i = 0;
        while i < input.len() {
            let mut matched = None;
            if i + 3 <= input.len() {
                let key = &input[i..i + 3];
                if let Some(&candidate) = table.get(key) {
                    let distance = i - candidate;
                    if distance <= 8192 {
                        let mut len = 0;
                        while i + len < input.len()
                            && len < 264
                            && input[candidate + len] == input[i + len]
                        {
                            len += 1;
                        }
                        if len >= 3 {
                            matched = Some((distance, len));
                        }
                    }
                }
                table.insert(key, i);
            }
            match matched {
                Some((distance, len)) => {
                    flush(&mut out, &mut literal);
                    let d = distance - 1;
                    let l = len - 2;
                    if l < 7 {
                        out.push(((l << 5) | (d >> 8)) as u8);
                    } else {
                        out.push(((7 << 5) | (d >> 8)) as u8);
                        out.push((l - 7) as u8);
                    }
                    out.push((d & 0xff) as u8);
                    i += len;
                }
                None => {
                    literal.push(input[i]);
                    i += 1;
                }
            }
        }
        flush(&mut out, &mut literal);
        out
    }

    #[test]
    fn decompresses_literals_and_back_references() {
        for input in [
            b"".to_vec(),
            b"a".to_vec(),
            b"abcabcabcabcabcabcabcabcabcabc".to_vec(),
            vec![b'x'; 5000],
            (0..3000u32).map(|i| (i % 251) as u8).collect(),
            (0..3000u32).map(|i| (i * i % 7) as u8).collect(),
        ] {
            let compressed = compress(&input);
            let mut out = b"prefix".to_vec();
            decompress(&compressed, input.len(), &mut out).unwrap();
            assert_eq!(&out[6..], &input[..]);
        }
    }

    #[test]
    fn refuses_what_cannot_be_decompressed() {
        let mut out = Vec::new();
        // A literal run longer than the input.
        assert_eq!(
            decompress(&[5, b'a'], 6, &mut out).unwrap_err().expected,
            "a literal run within the compressed bytes"
        );
        // A back reference before the start of this output, even with bytes already in `out`.
        let mut out = b"earlier".to_vec();
        assert_eq!(
            decompress(&[0, b'a', 0x20, 0x05], 4, &mut out)
                .unwrap_err()
                .expected,
            "a back reference into the bytes already decompressed"
        );
        // More output than declared, and less.
        let mut out = Vec::new();
        assert!(decompress(&[2, b'a', b'b', b'c'], 2, &mut out).is_err());
        let mut out = Vec::new();
        assert!(decompress(&[2, b'a', b'b', b'c'], 4, &mut out).is_err());
        // Truncated back references.
        let mut out = Vec::new();
        assert!(decompress(&[0, b'a', 0xe0], 20, &mut out).is_err());
        let mut out = Vec::new();
        assert!(decompress(&[0, b'a', 0x20], 20, &mut out).is_err());
    }
}
