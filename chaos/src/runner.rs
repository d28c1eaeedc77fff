//! Runs a scenario: deployments from the fixtures, the dataset, the workload, `ferry sync` as
//! a child process, the fault schedule, then the verifier's verdict against the expected one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_fixtures::data::OpKind;
use ferry_fixtures::{Dataset, Workload};
use serde::Serialize;

use crate::backend::Backend;
use crate::engine::{Engine, Status};
use crate::error::ChaosError;
use crate::outcome::Effect;
use crate::scenario::{Action, Expect, Mix, Scenario, When};

/// How scenarios run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `ferry` binary the engine runs as.
    pub ferry: PathBuf,
    /// Where engine logs go.
    pub log_dir: PathBuf,
    /// Seeds the dataset and workload.
    pub seed: u64,
    /// Where the deployments run.
    pub backend: Backend,
}

/// Something that happened during a run, at seconds since its start.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_s: f64,
    pub what: String,
}

/// How one scenario went.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub about: String,
    pub passed: bool,
    pub expected: String,
    /// What the verifier (or the precheck) said.
    pub verdict: String,
    pub events: Vec<Event>,
    pub full_resyncs: u64,
    pub resumes: u64,
    pub max_lag_ms: u64,
    pub duration_s: f64,
    /// Differences by kind, and by cause where the verifier named one.
    pub differences: BTreeMap<String, u64>,
    pub causes: BTreeMap<String, u64>,
    /// Why the run could not reach a verdict.
    pub error: Option<String>,
}

struct Run<'a> {
    scenario: &'a Scenario,
    config: &'a RunConfig,
    started: Instant,
    events: Vec<Event>,
    /// Counters of engines that were killed.
    resyncs: u64,
    resumes: u64,
    max_lag_ms: u64,
    last: Status,
    source_url: String,
    target_url: String,
    log: PathBuf,
}

impl Run<'_> {
    fn event(&mut self, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(scenario = %self.scenario.name, %what);
        self.events.push(Event {
            at_s: self.started.elapsed().as_secs_f64(),
            what,
        });
    }

    fn start_engine(&mut self) -> Result<Engine, ChaosError> {
        self.event("engine started");
        Engine::start(
            &self.config.ferry,
            &self.source_url,
            &self.target_url,
            &self.scenario.sync_args,
            &self.log,
        )
    }

    fn wait(
        &mut self,
        engine: &mut Engine,
        what: &str,
        done: impl FnMut(&Status) -> bool,
    ) -> Result<(), ChaosError> {
        let mut max_lag = self.max_lag_ms;
        let mut last = Status::default();
        let result = engine.wait_for(
            what,
            Duration::from_secs(120),
            |s| {
                max_lag = max_lag.max(s.lag_ms);
                last = s.clone();
            },
            done,
        );
        self.max_lag_ms = max_lag;
        self.last = last;
        result.map(|_| ())
    }

    /// Lets `time` pass, watching the engine's lag meanwhile (faults show there).
    fn idle(&mut self, engine: Option<&Engine>, time: Duration) {
        let until = Instant::now() + time;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Some(status) = engine.and_then(Engine::status) {
                self.max_lag_ms = self.max_lag_ms.max(status.lag_ms);
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// Folds a dying engine's counters into the totals.
    fn retire(&mut self, engine: &mut Engine) {
        if let Some(status) = engine.status() {
            self.last = status;
        }
        engine.kill();
        self.resyncs += self.last.full_resyncs;
        self.resumes += self.last.resumes;
        self.last = Status::default();
    }
}

/// Runs one scenario to its verdict. Errors are part of the report, not returned.
pub fn run(scenario: &Scenario, config: &RunConfig) -> ScenarioReport {
    let started = Instant::now();
    let mut report = ScenarioReport {
        name: scenario.name.clone(),
        about: scenario.about.clone(),
        passed: false,
        expected: describe(&scenario.expect),
        verdict: String::new(),
        events: Vec::new(),
        full_resyncs: 0,
        resumes: 0,
        max_lag_ms: 0,
        duration_s: 0.0,
        differences: BTreeMap::new(),
        causes: BTreeMap::new(),
        error: None,
    };
    match run_inner(scenario, config, started, &mut report) {
        Ok(()) => {}
        Err(e) => {
            report.passed = false;
            report.error = Some(e.to_string());
            if report.verdict.is_empty() {
                report.verdict = "no verdict".into();
            }
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    report
}

fn run_inner(
    scenario: &Scenario,
    config: &RunConfig,
    started: Instant,
    report: &mut ScenarioReport,
) -> Result<(), ChaosError> {
    let source = config.backend.start(&scenario.source)?;
    let target = config.backend.start(&scenario.target)?;
    let source = source.as_ref();
    let target = target.as_ref();
    // A proxied deployment's nodes announce their proxies: the engine, replicas and the
    // workload all go through them.
    let source_engine_url = source.nodes()[0].addr().url();
    let target_engine_url = target.nodes()[0].addr().url();
    std::fs::create_dir_all(&config.log_dir)
        .map_err(|e| ChaosError::Engine(format!("{}: {e}", config.log_dir.display())))?;
    let log = config.log_dir.join(format!("{}.log", scenario.name));
    let _ = std::fs::remove_file(&log);
    let mut run = Run {
        scenario,
        config,
        started,
        events: Vec::new(),
        resyncs: 0,
        resumes: 0,
        max_lag_ms: 0,
        last: Status::default(),
        source_url: source_engine_url,
        target_url: target_engine_url,
        log,
    };
    if scenario.keys > 0 {
        Dataset::new(config.seed)
            .scale(scenario.keys)
            .load(source)?;
        run.event(format!("{} keys loaded into the source", scenario.keys));
    }
    let mut workload = Workload::new(config.seed ^ 0x5eed)
        .key_space(500)
        .rate(scenario.workload.rate)
        .duration(Duration::from_secs_f64(scenario.workload.seconds));
    workload = match scenario.workload.mix {
        Mix::All => workload,
        Mix::Counting => {
            workload.only(&[OpKind::RPush, OpKind::LPush, OpKind::Incr, OpKind::HIncrBy])
        }
        Mix::Pushes => workload.only(&[OpKind::RPush]),
    };
    let mut writes = Some(workload.spawn(source)?);
    run.event(format!(
        "workload: {} ops/s for {} s",
        scenario.workload.rate, scenario.workload.seconds
    ));
    let mut engine = Some(run.start_engine()?);

    if let Expect::Refused { item } = &scenario.expect {
        let engine = engine.as_mut().expect("started");
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let code = engine.exited();
        let said = engine.tail(20);
        let refused = code == Some(2) && said.contains(&format!("precheck {item}"));
        report.verdict = match code {
            Some(code) => format!(
                "ferry sync exited {code}: {}",
                said.lines().last().unwrap_or_default()
            ),
            None => "ferry sync did not stop".into(),
        };
        report.passed = refused;
        if let Some(writes) = writes {
            let _ = writes.stop();
        }
        report.events = run.events;
        return Ok(());
    }

    // Nodes a fault killed: they are started again (they rejoin as replicas) before the
    // verifier reads the deployments.
    let (mut dead_source, mut dead_target) = (Vec::new(), Vec::new());
    for step in &scenario.steps {
        match &step.when {
            When::After { seconds } => run.idle(engine.as_ref(), Duration::from_secs_f64(*seconds)),
            when => {
                let e = engine.as_mut().ok_or_else(|| {
                    ChaosError::Engine(
                        "the schedule waits for an engine that is not running".into(),
                    )
                })?;
                match when {
                    When::Snapshot => run.wait(e, "receiving a snapshot", |s| s.any("transfer"))?,
                    When::Streaming => run.wait(e, "streaming", |s| s.all("streaming"))?,
                    When::CaughtUp => run.wait(e, "caught up", |s| s.caught_up)?,
                    When::After { .. } => unreachable!(),
                }
            }
        }
        match &step.action {
            Action::Source { fault } => {
                let outcome = fault.apply(source)?;
                if matches!(
                    outcome.effect,
                    Effect::Killed { .. } | Effect::Promoted { .. }
                ) {
                    dead_source.push(outcome.node.clone());
                }
                run.event(format!(
                    "source: {} on {} ({:?})",
                    fault_name(fault),
                    outcome.node,
                    outcome.effect
                ));
            }
            Action::Target { fault } => {
                let outcome = fault.apply(target)?;
                if matches!(
                    outcome.effect,
                    Effect::Killed { .. } | Effect::Promoted { .. }
                ) {
                    dead_target.push(outcome.node.clone());
                }
                run.event(format!(
                    "target: {} on {} ({:?})",
                    fault_name(fault),
                    outcome.node,
                    outcome.effect
                ));
            }
            Action::KillEngine => {
                if let Some(mut e) = engine.take() {
                    run.retire(&mut e);
                    run.event("engine SIGKILLed");
                }
            }
            Action::StartEngine => {
                if engine.is_none() {
                    engine = Some(run.start_engine()?);
                }
            }
            Action::Proxy {
                source: on_source,
                node,
                fault,
            } => {
                let (side, deployment) = if *on_source {
                    ("source", source)
                } else {
                    ("target", target)
                };
                let addr = node.resolve(deployment)?;
                let proxy = deployment
                    .node(&addr)
                    .and_then(|n| n.proxy())
                    .ok_or_else(|| {
                        ChaosError::Engine(format!("{side} node {addr} has no proxy (shape.proxy)"))
                    })?;
                proxy.apply(*fault);
                run.event(format!("{side} proxy of {addr}: {fault:?}"));
            }
            Action::StopWorkload => {
                if let Some(w) = writes.take() {
                    let sent = w.stop()?;
                    run.event(format!("workload stopped: {} ops", sent.ops));
                }
            }
            Action::SourceScript { script, keys } => {
                let first = keys.first().map(String::as_bytes).unwrap_or_default();
                let slot = ferry_engine::route::Slot::of_key(first);
                let owner = source
                    .topology()?
                    .shard_for_slot(slot)
                    .map(|s| s.master.clone())
                    .ok_or_else(|| {
                        ChaosError::Engine(format!("no source master serves slot {slot}"))
                    })?;
                let node = source
                    .node(&owner)
                    .ok_or_else(|| ChaosError::Engine(format!("{owner} is not a source node")))?;
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(script).arg(keys.len());
                for key in keys {
                    cmd.arg(key);
                }
                let _: redis::Value = node.query(&cmd)?;
                run.event(format!("source script on {owner}"));
            }
        }
    }

    if let Expect::Stopped { message } = &scenario.expect {
        let engine = engine
            .as_mut()
            .ok_or_else(|| ChaosError::Engine("no engine runs".into()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while engine.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let said = engine.tail(40);
        let code = engine.exited();
        let last = said
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default()
            .to_string();
        report.verdict = match code {
            Some(code) => format!("ferry sync exited {code}: {last}"),
            None => "ferry sync kept running".into(),
        };
        report.passed = code == Some(2) && said.contains(message.as_str());
        if let Some(writes) = writes {
            let _ = writes.stop();
        }
        run.event(format!("engine stopped: {last}"));
        report.events = run.events;
        return Ok(());
    }
    if let Some(writes) = writes {
        let sent = writes.join()?;
        run.event(format!(
            "workload done: {} ops, {} error replies",
            sent.ops,
            sent.errors()
        ));
    }
    let mut engine = match engine {
        Some(engine) => engine,
        None => run.start_engine()?,
    };
    // The source is quiet now: the engine must catch up and the copy must be judged.
    // Caught up for 600 ms in a row: the source offset is polled every 250 ms, so this
    // spans polls taken after the last write.
    let mut since: Option<Instant> = None;
    run.wait(&mut engine, "caught up", |s| {
        if !s.caught_up {
            since = None;
            return false;
        }
        since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(600)
    })?;
    run.event("caught up");
    // The engine keeps running while the verifier reads: keys that expire on the source now
    // reach the target as the source's DELs, and the verifier's rechecks see them land.
    for (deployment, dead) in [(source, &dead_source), (target, &dead_target)] {
        for addr in dead {
            if let Some(node) = deployment.node(addr) {
                if !node.is_running() {
                    node.restart()?;
                    run.event(format!("{addr} restarted"));
                }
            }
        }
        if !dead.is_empty() {
            deployment.wait_healthy(Duration::from_secs(60))?;
        }
    }

    // The verifier reads the deployments directly, never through a proxy.
    let mut verifier = ferry_verifier::Config::new(
        ferry_verifier::Endpoint::parse("source", &source.nodes()[0].addr().url())?,
        ferry_verifier::Endpoint::parse("target", &target.nodes()[0].addr().url())?,
    );
    // Up to 10 s of re-checks: keys the source expires during the run reach the target as
    // the source deletes them (on access or by its expiry cycle), a little later.
    verifier.rounds = 5;
    verifier.recheck_interval = Duration::from_secs(2);
    let verdict = ferry_verifier::verify(&verifier)?;
    run.retire(&mut engine);
    let details = config
        .log_dir
        .join(format!("{}.verify.json", scenario.name));
    let _ = std::fs::write(&details, verdict.render(ferry_verifier::Format::Json));
    for d in &verdict.differences {
        *report
            .differences
            .entry(d.kind.as_str().to_string())
            .or_default() += 1;
        if let Some(cause) = &d.cause {
            *report.causes.entry(cause.name().to_string()).or_default() += 1;
        }
    }
    for d in &verdict.functions.differences {
        *report
            .differences
            .entry(format!("function library {}", d.kind.as_str()))
            .or_default() += 1;
    }
    report.verdict = if verdict.is_consistent() {
        format!("exact ({} keys compared)", verdict.counts.keys_compared)
    } else {
        let kinds: Vec<String> = report
            .differences
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let causes: Vec<String> = report
            .causes
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "{} differences ({}){}",
            verdict.counts.differences + verdict.functions.differences.len() as u64,
            kinds.join(", "),
            if causes.is_empty() {
                String::new()
            } else {
                format!("; causes: {}", causes.join(", "))
            }
        )
    };
    run.event(format!("verifier: {}", report.verdict));
    report.passed = match &scenario.expect {
        // A key read just as it expired on one side is the verifier's timing, not the
        // copy's: it names the cause, and only such differences still count as exact.
        Expect::Exact => {
            verdict.counts.differences_not_kept == 0
                && verdict.functions.differences.is_empty()
                && verdict
                    .differences
                    .iter()
                    .all(|d| matches!(d.cause, Some(ferry_verifier::Cause::ExpiredInFlight { .. })))
        }
        Expect::Divergence { kind, cause } => {
            report.differences.contains_key(kind)
                && cause.as_ref().is_none_or(|c| report.causes.contains_key(c))
        }
        Expect::Refused { .. } | Expect::Stopped { .. } => false,
    };
    report.full_resyncs = run.resyncs;
    report.resumes = run.resumes;
    report.max_lag_ms = run.max_lag_ms;
    report.events = run.events;
    Ok(())
}

fn fault_name(fault: &crate::fault::Fault) -> String {
    let json = serde_json::to_value(fault).unwrap_or_default();
    json["fault"].as_str().unwrap_or("fault").to_string()
}

/// The expected verdict in words.
pub fn describe(expect: &Expect) -> String {
    match expect {
        Expect::Exact => "exact".into(),
        Expect::Divergence {
            kind,
            cause: Some(cause),
        } => {
            format!("{kind} differences diagnosed as {cause}")
        }
        Expect::Divergence { kind, cause: None } => format!("{kind} differences"),
        Expect::Refused { item } => format!("refused by precheck {item}"),
        Expect::Stopped { message } => format!("stopped with \"{message}\""),
    }
}
