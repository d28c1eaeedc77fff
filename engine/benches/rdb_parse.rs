//! RDB parser throughput on in-memory files, fed in 64 KiB chunks as a socket would: many
//! small strings (a quarter with an expire time), a few big strings, and the corpus files that
//! hold ziplists, intsets and hash tables. `ci/bench-rdb.sh` compares whole files saved by
//! redis-server against `redis-check-rdb`. `snapshot_sink` is what a full sync does with a
//! snapshot short of sending it: parsed without decoding values, each key written as a
//! `RESTORE` into batches of 2000 keys.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry_engine::rdb::{Config, Key, Parser, RdbError, Sink, Status, ValueEnd, Want};
use ferry_engine::sync::{Selection, SnapshotSink, ValueMode};

/// Counts keys and value bytes, asking the parser for `want`.
struct Count {
    want: Want,
    keys: u64,
    bytes: u64,
}

impl Sink for Count {
    type Error = RdbError;

    fn key(&mut self, _key: &Key<'_>) -> Result<Want, RdbError> {
        self.keys += 1;
        Ok(self.want)
    }

    fn value(&mut self, _key: &Key<'_>, value: &ValueEnd<'_>) -> Result<(), RdbError> {
        self.bytes += value.rdb_len;
        Ok(())
    }
}

fn parse(file: &[u8], want: Want) -> u64 {
    let mut parser = Parser::new(Config::default());
    let mut sink = Count {
        want,
        keys: 0,
        bytes: 0,
    };
    for chunk in file.chunks(64 * 1024) {
        parser.feed(chunk, &mut sink).expect("a valid file");
    }
    parser.finish().expect("a complete file");
    sink.keys + sink.bytes
}

/// `rdbSaveLen`: 6-bit, 14-bit or 32-bit length.
fn push_len(file: &mut Vec<u8>, len: usize) {
    if len < 64 {
        file.push(len as u8);
    } else if len < 16384 {
        file.extend_from_slice(&(0x4000 | len as u16).to_be_bytes());
    } else {
        file.push(0x80);
        file.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn push_string(file: &mut Vec<u8>, bytes: &[u8]) {
    push_len(file, bytes.len());
    file.extend_from_slice(bytes);
}

/// A `REDIS0011` file of string keys with values of `value_len` bytes; with `rdbchecksum no`.
fn strings(keys: usize, value_len: usize) -> Vec<u8> {
    let mut file = b"REDIS0011\xfe\x00".to_vec();
    let value: Vec<u8> = (0..value_len).map(|i| b'a' + (i % 26) as u8).collect();
    for i in 0..keys {
        if i % 4 == 0 {
            file.push(0xfc);
            file.extend_from_slice(&(1_900_000_000_000i64 + i as i64).to_le_bytes());
        }
        file.push(0);
        push_string(&mut file, format!("key:{i:08}").as_bytes());
        push_string(&mut file, &value);
    }
    file.push(0xff);
    file.extend_from_slice(&[0; 8]);
    file
}

fn corpus(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/rdb-corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn bench(c: &mut Criterion) {
    let files = [
        ("small_strings", strings(200_000, 32)),
        ("big_strings", strings(4, 16 << 20)),
        ("hashtable_hash", corpus("rdb-tools/dictionary.rdb")),
        ("ziplists", corpus("rdb-tools/ziplist_with_integers.rdb")),
        ("sorted_set", corpus("rdb-tools/regular_sorted_set.rdb")),
    ];
    let mut group = c.benchmark_group("rdb_parse");
    for (name, file) in &files {
        group.throughput(Throughput::Bytes(file.len() as u64));
        for want in [Want::Nothing, Want::Raw, Want::Elements] {
            group.bench_with_input(
                BenchmarkId::new(*name, format!("{want:?}")),
                file,
                |b, file| b.iter(|| parse(file, want)),
            );
        }
    }
    group.finish();
}

/// The sync's parse of a snapshot into batches of `RESTORE` groups; the number of groups.
fn restore_batches(file: &[u8]) -> usize {
    let mode = ValueMode {
        force_rewrite: false,
        target_rdb_version: 11,
        target_reads_valkey: false,
    };
    let mut parser = Parser::new(Config {
        decode_raw_values: false,
        ..Config::default()
    });
    let mut sink = SnapshotSink::new(mode, 0, Selection::default()).batch_limits(2000, 4 << 20);
    let mut groups = 0;
    for chunk in file.chunks(16 * 1024) {
        let mut input = chunk;
        while parser.feed(input, &mut sink).expect("a valid file") == Status::Paused {
            input = &[];
            groups += sink.take_groups().len();
        }
    }
    parser.finish().expect("a complete file");
    groups + sink.take_groups().len()
}

fn bench_snapshot_sink(c: &mut Criterion) {
    let files = [
        ("small_strings", strings(200_000, 32)),
        ("ziplists", corpus("rdb-tools/ziplist_with_integers.rdb")),
        ("sorted_set", corpus("rdb-tools/regular_sorted_set.rdb")),
    ];
    let mut group = c.benchmark_group("snapshot_sink");
    for (name, file) in &files {
        group.throughput(Throughput::Bytes(file.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), file, |b, file| {
            b.iter(|| restore_batches(file))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_snapshot_sink);
criterion_main!(benches);
