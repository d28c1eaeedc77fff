//! Value differences in detail: a duplicated list tail, a changed zset score (infinities
//! too), field-level hash and stream group differences, and big keys compared in windows.

use ferry_fixtures::data::BigKeys;
use ferry_fixtures::Dataset;
use ferry_verifier::{Cause, Detail, DiffKind, Mode};

use crate::copy::{copy, Nodes};
use crate::shared::{clusters, config, of, run, show};

#[test]
fn value_details_name_what_changed() {
    let pair = clusters();
    let pattern = "vals:*";
    let mut src = Nodes::new(&pair.source);
    for n in 0..40 {
        let _: () = src.run(
            b"vals:list",
            redis::cmd("RPUSH").arg("vals:list").arg(format!("e{n}")),
        );
    }
    let _: () = src.run(
        b"vals:zset",
        redis::cmd("ZADD")
            .arg("vals:zset")
            .arg("1.5")
            .arg("a")
            .arg("inf")
            .arg("top")
            .arg("-inf")
            .arg("bottom"),
    );
    let _: () = src.run(
        b"vals:hash",
        redis::cmd("HSET")
            .arg("vals:hash")
            .arg("f1")
            .arg("one")
            .arg("f2")
            .arg("two"),
    );
    for n in 1..=5 {
        let _: String = src.run(
            b"vals:stream",
            redis::cmd("XADD")
                .arg("vals:stream")
                .arg(format!("{n}-0"))
                .arg("n")
                .arg(n),
        );
    }
    let _: () = src.run(
        b"vals:stream",
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("vals:stream")
            .arg("g")
            .arg("0"),
    );
    let _: redis::Value = src.run(
        b"vals:stream",
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("alice")
            .arg("COUNT")
            .arg(2)
            .arg("STREAMS")
            .arg("vals:stream")
            .arg(">"),
    );
    let _: () = src.run(
        b"vals:string",
        redis::cmd("SET").arg("vals:string").arg("x".repeat(300)),
    );
    copy(&pair.source, &pair.target, pattern);
    assert!(run(&config(&pair.source, &pair.target, pattern)).is_consistent());

    let mut tgt = Nodes::new(&pair.target);
    // A replay of the last two pushes.
    let _: () = tgt.run(
        b"vals:list",
        redis::cmd("RPUSH").arg("vals:list").arg("e38").arg("e39"),
    );
    let _: () = tgt.run(
        b"vals:zset",
        redis::cmd("ZADD").arg("vals:zset").arg("2.5").arg("a"),
    );
    let _: () = tgt.run(
        b"vals:zset",
        redis::cmd("ZADD").arg("vals:zset").arg("-inf").arg("top"),
    );
    let _: () = tgt.run(
        b"vals:hash",
        redis::cmd("HSET").arg("vals:hash").arg("f2").arg("TWO"),
    );
    let _: () = tgt.run(b"vals:hash", redis::cmd("HDEL").arg("vals:hash").arg("f1"));
    let _: () = tgt.run(
        b"vals:hash",
        redis::cmd("HSET").arg("vals:hash").arg("f3").arg("three"),
    );
    // The group has acknowledged one pending entry on the target.
    let _: () = tgt.run(
        b"vals:stream",
        redis::cmd("XACK").arg("vals:stream").arg("g").arg("1-0"),
    );
    let _: () = tgt.run(
        b"vals:string",
        redis::cmd("SETRANGE").arg("vals:string").arg(200).arg("y"),
    );

    let report = run(&config(&pair.source, &pair.target, pattern));
    let text = show(&report);
    let value = |key: &[u8]| -> ferry_verifier::Difference {
        let diffs = of(&report, key);
        assert_eq!(diffs.len(), 1, "{}\n{text}", String::from_utf8_lossy(key));
        assert_eq!(diffs[0].kind, DiffKind::Value, "{text}");
        diffs[0].clone()
    };
    let list = value(b"vals:list");
    assert_eq!(
        list.cause,
        Some(Cause::DuplicatedListTail { duplicated: 2 }),
        "{text}"
    );
    match list.detail {
        Some(Detail::List {
            source_len: 40,
            target_len: 42,
            first_difference_at: 40,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match value(b"vals:zset").detail {
        Some(Detail::Zset {
            changed,
            missing,
            extra,
            ..
        }) => {
            assert_eq!(changed.total, 2, "{text}");
            assert!(missing.is_empty() && extra.is_empty());
            let shown: Vec<String> = changed
                .shown
                .iter()
                .map(|c| format!("{} {} {}", c.member, c.source, c.target))
                .collect();
            assert_eq!(shown, ["a 1.5 2.5", "top inf -inf"]);
        }
        other => panic!("{other:?}"),
    }
    match value(b"vals:hash").detail {
        Some(Detail::Hash {
            missing,
            extra,
            changed,
            ..
        }) => {
            assert_eq!(missing.shown[0].field.0, "f1");
            assert_eq!(extra.shown[0].field.0, "f3");
            assert_eq!(changed.shown[0].field.0, "f2");
            assert_eq!(changed.shown[0].target.0, "TWO");
        }
        other => panic!("{other:?}"),
    }
    match value(b"vals:stream").detail {
        Some(Detail::Stream {
            entries, groups, ..
        }) => {
            assert!(entries.is_none(), "{text}");
            let what: Vec<&str> = groups.shown.iter().map(|c| c.what.as_str()).collect();
            assert!(what.contains(&"group g pending"), "{what:?}");
            assert!(what.contains(&"group g consumer alice pending"), "{what:?}");
        }
        other => panic!("{other:?}"),
    }
    match value(b"vals:string").detail {
        Some(Detail::String {
            first_difference_at: 200,
            target_excerpt,
            ..
        }) => {
            assert!(target_excerpt.0.contains('y'));
        }
        other => panic!("{other:?}"),
    }

    // Length mode sees only the list, whose length changed; outline mode nothing.
    let mut cfg = config(&pair.source, &pair.target, pattern);
    cfg.mode = Mode::Length;
    let lengths = run(&cfg);
    let keys: Vec<String> = lengths
        .differences
        .iter()
        .map(|d| d.key.to_string())
        .collect();
    assert_eq!(keys, ["vals:list"], "{}", show(&lengths));
    cfg.mode = Mode::Outline;
    assert!(run(&cfg).is_consistent());
}

#[test]
fn big_keys_are_compared_in_windows() {
    let pair = clusters();
    let pattern = "big:*";
    let dataset = Dataset::new(61).prefix("big").scale(0).big_keys(BigKeys {
        hash_fields: 200_000,
        string_bytes: 3 << 20,
        list_elements: 20_000,
        set_members: 20_000,
        zset_members: 20_000,
    });
    dataset.load(&pair.source).unwrap();
    copy(&pair.source, &pair.target, pattern);
    let cfg = config(&pair.source, &pair.target, pattern);
    let clean = run(&cfg);
    assert!(clean.is_consistent(), "{}", show(&clean));
    assert_eq!(clean.counts.keys_compared, 5);

    let mut tgt = Nodes::new(&pair.target);
    let field: Vec<u8> = tgt.run(
        b"big:big-hash",
        redis::cmd("HRANDFIELD").arg("big:big-hash"),
    );
    let _: () = tgt.run(
        b"big:big-hash",
        redis::cmd("HSET").arg("big:big-hash").arg(field).arg("x"),
    );
    let _: () = tgt.run(
        b"big:big-string",
        redis::cmd("SETRANGE")
            .arg("big:big-string")
            .arg(2_500_000)
            .arg("#"),
    );
    let _: () = tgt.run(
        b"big:big-list",
        redis::cmd("LSET").arg("big:big-list").arg(15_000).arg("x"),
    );
    let removed: Vec<Vec<u8>> =
        tgt.run(b"big:big-set", redis::cmd("SPOP").arg("big:big-set").arg(3));
    let member: Vec<Vec<u8>> = tgt.run(
        b"big:big-zset",
        redis::cmd("ZRANGE").arg("big:big-zset").arg(100).arg(100),
    );
    let _: () = tgt.run(
        b"big:big-zset",
        redis::cmd("ZADD")
            .arg("big:big-zset")
            .arg("XX")
            .arg("12345.5")
            .arg(&member[0]),
    );
    let report = run(&cfg);
    let text = show(&report);
    assert_eq!(report.counts.differing_keys, 5, "{text}");
    match &of(&report, b"big:big-hash")[0].detail {
        Some(Detail::Hash {
            changed,
            missing,
            extra,
            ..
        }) => {
            assert_eq!(
                (changed.total, missing.total, extra.total),
                (1, 0, 0),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    match &of(&report, b"big:big-string")[0].detail {
        Some(Detail::String {
            first_difference_at,
            ..
        }) => {
            assert_eq!(*first_difference_at, 2_500_000)
        }
        other => panic!("{other:?}"),
    }
    match &of(&report, b"big:big-list")[0].detail {
        Some(Detail::List {
            first_difference_at,
            ..
        }) => assert_eq!(*first_difference_at, 15_000),
        other => panic!("{other:?}"),
    }
    match &of(&report, b"big:big-set")[0].detail {
        Some(Detail::Set { missing, extra, .. }) => {
            assert_eq!((missing.total, extra.total), (3, 0));
            let mut shown: Vec<String> = missing.shown.iter().map(|m| m.0.clone()).collect();
            let mut want: Vec<String> = removed
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect();
            shown.sort();
            want.sort();
            assert_eq!(shown, want);
        }
        other => panic!("{other:?}"),
    }
    match &of(&report, b"big:big-zset")[0].detail {
        Some(Detail::Zset { changed, .. }) => assert_eq!(changed.total, 1),
        other => panic!("{other:?}"),
    }
}
