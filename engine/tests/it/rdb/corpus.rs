//! Every file of the third-party corpus (`../shared/rdb-corpus`): it parses (the two corrupt
//! ones fail with an offset), it survives truncation and bit flips, and what the parser
//! reports is what Redis 7 holds after loading the same file.

use std::path::{Path, PathBuf};

use ferry_engine::rdb::{Config, EmptyKeys, Parser, RdbError, Status};
use ferry_fixtures::{LocalServer, Node};
use proptest::prelude::*;

use super::model::{assert_same, live, parse_file, Abilities, Data};
use super::payloads::assert_payloads_restore;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/rdb-corpus");

/// Files no server can load: modules not installed, or broken on purpose.
const MODULE_FILES: [&str; 2] = ["redis_40_with_module.rdb", "redis_60_with_module_aux.rdb"];
const CORRUPT_ZIPLIST: &str = "corrupt_ziplist.rdb";
const CORRUPT_EMPTY_KEYS: &str = "corrupt_empty_keys.rdb";

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["rdb-tools", "redis-tests"] {
        let dir = Path::new(CORPUS).join(dir);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path: PathBuf = entry.expect("corpus entry").path();
            if path.extension().is_some_and(|e| e == "rdb") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                files.push((name, std::fs::read(&path).expect("corpus file")));
            }
        }
    }
    files.sort();
    assert!(files.len() >= 30, "corpus has {} files", files.len());
    files
}

fn is_corrupt(name: &str) -> bool {
    name == CORRUPT_ZIPLIST || name == CORRUPT_EMPTY_KEYS
}

#[test]
fn every_corpus_file_parses_and_the_corrupt_ones_fail_with_an_offset() {
    for (name, file) in corpus() {
        let chunks = if file.len() <= 4096 {
            vec![1, 7, file.len()]
        } else {
            vec![7, 4096, file.len()]
        };
        for chunk in chunks {
            let result = parse_file(&file, chunk, true, Config::default());
            match name.as_str() {
                CORRUPT_ZIPLIST => {
                    let error = result.err().expect("corrupt_ziplist.rdb parsed");
                    assert!(
                        matches!(
                            error,
                            RdbError::BadEncoding {
                                encoding: "ziplist",
                                ..
                            }
                        ),
                        "{error}"
                    );
                    assert!(error.to_string().contains("at offset"));
                    assert!(error.offset() > 9 && error.offset() < file.len() as u64);
                }
                CORRUPT_EMPTY_KEYS => {
                    let error = result.err().expect("corrupt_empty_keys.rdb parsed");
                    assert!(matches!(error, RdbError::EmptyKey { .. }), "{error}");
                    assert!(error.offset() > 9 && error.offset() < file.len() as u64);
                }
                _ => {
                    let parsed = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                    // This one was captured from a diskless transfer, EOF mark included.
                    let trailing = if name == MODULE_FILES[0] { 40 } else { 0 };
                    assert_eq!(parsed.trailing, trailing, "{name}");
                    let header = parsed.header.expect("header");
                    assert_eq!(&header.to_bytes(), &file[..9], "{name}");
                    // Every value came with its raw bytes too.
                    assert_eq!(parsed.raw.len(), parsed.model.len(), "{name}");
                }
            }
        }
    }
}

#[test]
fn module_values_are_kept_opaque() {
    let file = |name: &str| corpus().into_iter().find(|(n, _)| n == name).expect(name).1;
    // Redis 6.0 module aux data, before and after the key space.
    let parsed = parse_file(&file(MODULE_FILES[1]), 3, true, Config::default()).expect("aux");
    assert!(!parsed.module_aux.is_empty());
    assert!(parsed.module_aux.iter().all(|name| name.len() == 9));
    // Redis 4.0 module values (RDB_TYPE_MODULE_2), skipped by their opcodes.
    {
        let name = MODULE_FILES[0];
        let parsed = parse_file(&file(name), 5, true, Config::default()).expect(name);
        let modules: Vec<_> = parsed
            .model
            .iter()
            .filter_map(|(key, entry)| match &entry.data {
                Data::Module(module) => Some((key.1.clone(), module.clone())),
                _ => None,
            })
            .collect();
        assert!(!modules.is_empty(), "{name}: no module value");
        for (key, module) in &modules {
            assert_eq!(module.len(), 9, "{name}: module type name of {key:?}");
            assert!(parsed.raw.contains_key(&(0, key.clone())));
        }
    }
}

#[test]
fn empty_keys_are_reported_on_request() {
    let file = corpus()
        .into_iter()
        .find(|(n, _)| n == CORRUPT_EMPTY_KEYS)
        .expect("corrupt_empty_keys.rdb")
        .1;
    let config = Config {
        empty_keys: EmptyKeys::Report,
        ..Config::default()
    };
    let parsed = parse_file(&file, 3, true, config).expect("with empty keys reported");
    assert!(parsed.model.len() >= 9);
}

#[test]
fn truncated_corpus_files_need_more_and_then_fail_at_the_cut() {
    for (name, file) in corpus() {
        // Bytes after the file (a diskless transfer's EOF mark) are not part of it.
        let len = match parse_file(&file, file.len(), false, Config::default()) {
            Ok(parsed) => file.len() - parsed.trailing,
            Err(_) => file.len(),
        };
        let cuts: Vec<usize> = if len <= 4096 {
            (0..len).collect()
        } else {
            (0..256).map(|i| i * len / 256).collect()
        };
        for cut in cuts {
            let mut parser = Parser::new(Config::default());
            let mut sink = super::model::Parsed::new(true);
            match parser.feed(&file[..cut], &mut sink) {
                Ok(Status::NeedMore) => match parser.finish() {
                    Err(RdbError::Truncated { offset, .. }) => assert_eq!(offset, cut as u64),
                    other => panic!("{name} cut at {cut}: {other:?}"),
                },
                Ok(status) => panic!("{name} cut at {cut}: {status:?}"),
                Err(e) => assert!(is_corrupt(&name), "{name} cut at {cut}: {e}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Bit flips anywhere in any corpus file: an error or a file, never a panic.
    #[test]
    fn corpus_bit_flips_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0..8u8), 1..8),
        chunk in 1..512usize,
    ) {
        let files = corpus();
        let (_, mut file) = files[pick.index(files.len())].clone();
        for (index, bit) in flips {
            let i = index.index(file.len());
            file[i] ^= 1 << bit;
        }
        let config = Config { max_raw_value: 1 << 20, max_string_len: 1 << 20, empty_keys: EmptyKeys::Report, decode_raw_values: chunk % 2 == 0 };
        let mut parser = Parser::new(config);
        let mut sink = Lenient;
        for piece in file.chunks(chunk) {
            if parser.feed(piece, &mut sink).is_err() {
                break;
            }
        }
        let _ = parser.finish();
    }
}

/// Each key's raw bytes, as a sink that wants nothing else gets them.
#[derive(Default)]
struct RawValues(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl ferry_engine::rdb::Sink for RawValues {
    type Error = RdbError;

    fn key(
        &mut self,
        key: &ferry_engine::rdb::Key<'_>,
    ) -> Result<ferry_engine::rdb::Want, RdbError> {
        self.0.push((key.key.to_vec(), None));
        Ok(ferry_engine::rdb::Want::Raw)
    }

    fn value(
        &mut self,
        _key: &ferry_engine::rdb::Key<'_>,
        value: &ferry_engine::rdb::ValueEnd<'_>,
    ) -> Result<(), RdbError> {
        if let Some(last) = self.0.last_mut() {
            last.1 = value.raw.map(<[u8]>::to_vec);
        }
        Ok(())
    }
}

#[test]
fn raw_values_are_the_same_bytes_decoded_or_not() {
    let raw_values = |file: &[u8], chunk: usize, decode_raw_values: bool| {
        let mut parser = Parser::new(Config {
            decode_raw_values,
            ..Config::default()
        });
        let mut sink = RawValues::default();
        for piece in file.chunks(chunk) {
            parser.feed(piece, &mut sink)?;
        }
        parser.finish()?;
        Ok::<_, RdbError>(sink.0)
    };
    for (name, file) in corpus().into_iter().filter(|(name, _)| !is_corrupt(name)) {
        let decoded = raw_values(&file, file.len(), true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(decoded.iter().all(|(_, raw)| raw.is_some()), "{name}");
        for chunk in [7, 4096, file.len()] {
            let read_past =
                raw_values(&file, chunk, false).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(read_past, decoded, "{name} in chunks of {chunk}");
        }
    }
}

/// Takes everything and checks nothing, for inputs that may be anything.
struct Lenient;

impl ferry_engine::rdb::Sink for Lenient {
    type Error = RdbError;
    fn key(&mut self, _: &ferry_engine::rdb::Key<'_>) -> Result<ferry_engine::rdb::Want, RdbError> {
        Ok(ferry_engine::rdb::Want::RawAndElements)
    }
}

/// The oracle: Redis 7.0 loads each file itself; the parser must report exactly what it then
/// holds (keys, types, values, expire times), and every raw value must restore as a `DUMP`
/// payload to the same digest.
#[test]
fn corpus_matches_what_redis_loads() {
    let server = LocalServer::builder().start().expect("redis-server");
    let node = server.master();
    let abilities = Abilities {
        pexpiretime: true,
        field_ttls: false,
    };
    let mut compared = 0;
    for (name, file) in corpus() {
        if MODULE_FILES.contains(&name.as_str()) || name == CORRUPT_ZIPLIST {
            continue;
        }
        let config = Config {
            empty_keys: EmptyKeys::Report,
            ..Config::default()
        };
        let mut parsed =
            parse_file(&file, 4096, true, config).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Redis drops empty keys (corrupt_empty_keys.rdb) and, as a master, expired ones.
        parsed.model.retain(|_, entry| match &entry.data {
            Data::List(l) => !l.is_empty(),
            Data::Set(s) => !s.is_empty(),
            Data::Zset(z) => !z.is_empty(),
            Data::Hash(h) => !h.is_empty(),
            _ => true,
        });
        let expected = parsed.unexpired();

        node.stop().expect("stop");
        std::fs::write(node.dir().join("dump.rdb"), &file).expect("copy the file");
        node.restart()
            .unwrap_or_else(|e| panic!("{name}: redis did not load it: {e}"));
        let mut con = node.connect().expect("connect");
        let held = live(&mut con, abilities);
        assert_same(&expected, &held, 0, &name);
        let restored = assert_payloads_restore(&mut con, &parsed, &expected, &name);
        assert_eq!(restored, expected.len(), "{name}");
        compared += 1;
    }
    assert_eq!(compared, 29);
}
