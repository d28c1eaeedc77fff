//! The named scenarios `ferry chaos run` knows, at a scale that fits CI: each is a fault
//! production brings (or a control that must be caught) and the verdict it must reach.

use crate::fault::{ClientType, Fault, MaxmemoryPolicy};
use crate::scenario::{Action, Expect, Load, Mix, Scenario, Shape, Step, When};
use crate::selector::NodeSelector;
use crate::{Conditions, ProxyFault};

fn shape(masters: usize, replicas: usize) -> Shape {
    Shape {
        masters,
        replicas,
        config: Vec::new(),
        proxy: false,
    }
}

fn load(rate: u32, seconds: f64, mix: Mix) -> Load {
    Load { rate, seconds, mix }
}

fn source(fault: Fault) -> Action {
    Action::Source { fault }
}

fn target(fault: Fault) -> Action {
    Action::Target { fault }
}

fn after(seconds: f64, action: Action) -> Step {
    Step::new(When::After { seconds }, action)
}

fn scenario(name: &str, about: &str, expect: Expect) -> Scenario {
    Scenario {
        name: name.into(),
        about: about.into(),
        source: shape(3, 0),
        target: shape(2, 0),
        keys: 5_000,
        workload: load(2_000, 5.0, Mix::All),
        sync_args: Vec::new(),
        steps: Vec::new(),
        expect,
    }
}

/// Every scenario, in the order `run --all` runs them.
pub fn all() -> Vec<Scenario> {
    let master = NodeSelector::Master;
    let mut list = Vec::new();

    list.push(scenario(
        "baseline",
        "No fault: a full+incremental sync under live writes ends exact.",
        Expect::Exact,
    ));

    let mut s = scenario(
        "kill-source-master-during-snapshot",
        "A source master is SIGKILLed while its snapshot streams; its replica is promoted and the shard is followed there.",
        Expect::Exact,
    );
    s.source = shape(3, 1);
    s.keys = 60_000;
    s.steps = vec![Step::new(
        When::Snapshot,
        source(Fault::KillMasterAwaitPromotion { node: master(0) }),
    )];
    list.push(s);

    let mut s = scenario(
        "kill-source-master-while-streaming",
        "A source master is SIGKILLed while streaming; the promoted replica continues the stream (PSYNC with the old replid).",
        Expect::Exact,
    );
    s.source = shape(3, 1);
    s.steps = vec![Step::new(
        When::Streaming,
        source(Fault::KillMasterAwaitPromotion { node: master(1) }),
    )];
    list.push(s);

    let mut s = scenario(
        "kill-source-replica",
        "A source replica dies; nothing the engine reads depends on it.",
        Expect::Exact,
    );
    s.source = shape(3, 1);
    s.steps = vec![Step::new(
        When::Streaming,
        source(Fault::Kill {
            node: NodeSelector::replica_of_master(0),
        }),
    )];
    list.push(s);

    let mut s = scenario(
        "kill-target-master",
        "A target master is SIGKILLed while streaming; its replica is promoted and the writer follows it from its checkpoint.",
        Expect::Exact,
    );
    s.target = shape(3, 1);
    s.steps = vec![Step::new(
        When::Streaming,
        target(Fault::KillMasterAwaitPromotion { node: master(0) }),
    )];
    list.push(s);

    let mut s = scenario(
        "failover-target-master",
        "CLUSTER FAILOVER on a target replica while streaming (the routine way to patch a node): the writer follows the new master without stopping.",
        Expect::Exact,
    );
    s.target = shape(3, 1);
    s.steps = vec![Step::new(
        When::Streaming,
        target(Fault::Failover {
            node: NodeSelector::replica_of_master(0),
            mode: ferry_fixtures::FailoverMode::Default,
        }),
    )];
    list.push(s);

    let mut s = scenario(
        "stall-target-past-expiries",
        "A target master is SIGSTOPped for 3 s while keys that expire within seconds are written, appended to and given new TTLs: the stream reaches the target after its clock passed their first expiry, and every write lands as on the source.",
        Expect::Exact,
    );
    s.workload = load(3_000, 6.0, Mix::All);
    s.steps = vec![
        Step::new(When::Streaming, target(Fault::Pause { node: master(0) })),
        after(3.0, target(Fault::Resume { node: master(0) })),
    ];
    list.push(s);

    let mut s = scenario(
        "sigkill-engine-repeatedly",
        "The engine is SIGKILLed five times at different points under unique pushes and increments, and restarted each time.",
        Expect::Exact,
    );
    s.workload = load(3_000, 6.0, Mix::Counting);
    s.steps = vec![Step::new(When::Streaming, Action::KillEngine)];
    for pause in [0.3, 0.9, 0.5, 1.2] {
        s.steps.push(after(0.1, Action::StartEngine));
        s.steps.push(after(pause, Action::KillEngine));
    }
    s.steps.push(after(0.1, Action::StartEngine));
    list.push(s);

    let mut s = scenario(
        "break-replication-link",
        "The source drops the engine's replication links three times; it continues with partial resyncs.",
        Expect::Exact,
    );
    s.steps = vec![Step::new(
        When::Streaming,
        source(Fault::ClientKill {
            node: master(0),
            kind: ClientType::Replica,
        }),
    )];
    for n in [1, 2] {
        s.steps.push(after(
            0.5,
            source(Fault::ClientKill {
                node: master(n),
                kind: ClientType::Replica,
            }),
        ));
    }
    list.push(s);

    let mut s = scenario(
        "backlog-overflow",
        "A source backlog overflows while the link is down: the shard is reloaded (its slots cleared first), no duplicates, no stale keys.",
        Expect::Exact,
    );
    s.workload = load(2_000, 6.0, Mix::Counting);
    s.steps = vec![Step::new(
        When::Streaming,
        source(Fault::ForceFullResync {
            node: master(0),
            restore_backlog: true,
        }),
    )];
    list.push(s);

    let mut s = scenario(
        "flushall-during-snapshot",
        "FLUSHALL on one source master while snapshots stream: only its slots are cleared on the target.",
        Expect::Exact,
    );
    s.keys = 60_000;
    s.steps = vec![Step::new(
        When::Snapshot,
        source(Fault::FlushAll {
            node: master(1),
            asynchronous: false,
        }),
    )];
    list.push(s);

    let mut s = scenario(
        "flushall-and-flushdb-while-streaming",
        "FLUSHALL on one source master and FLUSHDB on another while streaming: only their slots are cleared.",
        Expect::Exact,
    );
    s.steps = vec![
        Step::new(
            When::Streaming,
            source(Fault::FlushAll {
                node: master(0),
                asynchronous: false,
            }),
        ),
        after(
            0.5,
            source(Fault::FlushDb {
                node: master(2),
                db: 0,
                asynchronous: true,
            }),
        ),
    ];
    list.push(s);

    let mut s = scenario(
        "target-eviction-refused",
        "A target that may evict (allkeys-lru) is refused by the precheck: nothing is written.",
        Expect::Refused {
            item: "eviction-policy".into(),
        },
    );
    s.target.config = vec!["maxmemory-policy allkeys-lru".into()];
    s.workload = load(500, 1.0, Mix::All);
    list.push(s);

    let mut s = scenario(
        "target-eviction-allowed",
        "With --allow-eviction into a small allkeys-lru target, keys go missing and the verifier says they were evicted.",
        Expect::Divergence {
            kind: "missing".into(),
            cause: Some("evicted".into()),
        },
    );
    s.target.config = vec![
        "maxmemory-policy allkeys-lru".into(),
        "maxmemory 4mb".into(),
    ];
    s.keys = 20_000;
    s.workload = load(500, 2.0, Mix::All);
    s.sync_args = vec!["--allow-eviction".into()];
    list.push(s);

    let mut s = scenario(
        "target-oom-then-raised",
        "A target master runs out of memory (noeviction) while streaming: the engine waits and warns, then finishes exact once memory is raised.",
        Expect::Exact,
    );
    let squeeze = |bytes| Fault::SetMaxmemory {
        node: master(0),
        bytes,
        policy: MaxmemoryPolicy::Noeviction,
    };
    s.steps = vec![
        Step::new(When::Streaming, target(squeeze(1 << 20))),
        after(3.0, target(squeeze(0))),
    ];
    list.push(s);

    let mut s = scenario(
        "pause-source-master-past-repl-timeout",
        "A source master is SIGSTOPped for longer than its repl-timeout (2 s), then resumed; the engine reconnects and continues.",
        Expect::Exact,
    );
    s.source.config = vec!["repl-timeout 2".into()];
    s.steps = vec![
        Step::new(When::Streaming, source(Fault::Pause { node: master(0) })),
        after(4.0, source(Fault::Resume { node: master(0) })),
    ];
    list.push(s);

    let proxy = |source: bool, node: NodeSelector, fault: ProxyFault| Action::Proxy {
        source,
        node,
        fault,
    };
    let set = |latency_ms, bytes_per_sec, blackhole| ProxyFault::Set {
        conditions: Conditions {
            latency_ms,
            bytes_per_sec,
            blackhole,
        },
    };

    let mut s = scenario(
        "slow-link-to-the-source",
        "20 ms of latency and a 200 KB/s cap between the engine and a (standalone) source for 3 s: lag grows, then drains, exact.",
        Expect::Exact,
    );
    s.source = Shape {
        proxy: true,
        ..shape(0, 0)
    };
    s.steps = vec![
        Step::new(
            When::Streaming,
            proxy(true, master(0), set(20, 200_000, false)),
        ),
        after(3.0, proxy(true, master(0), ProxyFault::Heal)),
    ];
    list.push(s);

    let mut s = scenario(
        "partition-from-a-source-node",
        "A 10 s partition in front of one master of a (proxied) source cluster: nothing reaches it, connections stay open; once healed the stream continues, exact.",
        Expect::Exact,
    );
    s.source = Shape {
        proxy: true,
        ..shape(3, 0)
    };
    s.workload = load(2_000, 12.0, Mix::All);
    s.steps = vec![
        Step::new(When::Streaming, proxy(true, master(1), set(0, 0, true))),
        after(10.0, proxy(true, master(1), ProxyFault::Heal)),
    ];
    list.push(s);

    let mut s = scenario(
        "partition-and-latency-to-a-target-node",
        "10 ms of latency, then a 10 s partition, then a reset in front of one master of a (proxied) target cluster: writes wait, resume from the checkpoint, exact.",
        Expect::Exact,
    );
    s.target = Shape {
        proxy: true,
        ..shape(2, 0)
    };
    s.workload = load(2_000, 14.0, Mix::All);
    let node = || master(1);
    s.steps = vec![
        Step::new(When::Streaming, proxy(false, node(), set(10, 0, false))),
        after(1.0, proxy(false, node(), set(0, 0, true))),
        after(10.0, proxy(false, node(), ProxyFault::Heal)),
        after(1.0, proxy(false, node(), ProxyFault::Reset)),
    ];
    list.push(s);

    let mut s = scenario(
        "big-list-grows-during-snapshot",
        "Lists grow under unique pushes while a large snapshot is taken and applied; the stream after it lands exactly once.",
        Expect::Exact,
    );
    s.keys = 60_000;
    s.workload = load(4_000, 5.0, Mix::Pushes);
    list.push(s);

    let mut s = scenario(
        "source-slot-migration-while-streaming",
        "A slot moves between source masters while streaming: the engine stops with an error naming the slot rather than apply the moved keys out of order.",
        Expect::Stopped {
            message: "source slot 100".into(),
        },
    );
    s.steps = vec![Step::new(
        When::Streaming,
        source(Fault::MigrateSlot {
            node: master(1),
            slot: 100,
        }),
    )];
    list.push(s);

    let mut s = scenario(
        "control-at-least-once-sigkill",
        "Control: --apply at-least-once with engine SIGKILLs under unique pushes replays writes, and the verifier finds the duplicated list tails.",
        Expect::Divergence {
            kind: "value".into(),
            cause: Some("duplicated list tail".into()),
        },
    );
    s.keys = 0;
    s.workload = load(3_000, 10.0, Mix::Pushes);
    s.sync_args = vec!["--apply".into(), "at-least-once".into()];
    // A kill mid-stream (replayed pushes land inside lists), then one right after the
    // source goes quiet (replayed pushes are the lists' last entries).
    s.steps = vec![
        Step::new(When::Streaming, Action::KillEngine),
        after(0.1, Action::StartEngine),
        after(1.5, Action::StopWorkload),
        after(0.0, Action::KillEngine),
    ];
    list.push(s);

    let mut s = scenario(
        "control-script-without-replication",
        "Control: a source script writes with redis.set_repl(redis.REPL_NONE), so the write never reaches the stream; the verifier finds the key missing.",
        Expect::Divergence {
            kind: "missing".into(),
            cause: None,
        },
    );
    s.steps = vec![Step::new(
        When::Streaming,
        Action::SourceScript {
            script: "redis.set_repl(redis.REPL_NONE); redis.call('SET', KEYS[1], 'unreplicated')"
                .into(),
            keys: vec!["chaos:unreplicated".into()],
        },
    )];
    list.push(s);

    list
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
