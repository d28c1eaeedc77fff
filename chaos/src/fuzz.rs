//! Randomised fault schedules: proptest picks sequences of faults from the catalogue's menu
//! (engine SIGKILLs, broken replication links, FLUSHALL, paused masters), each run as an "exact" scenario; a failure shrinks to the smallest schedule that
//! still fails.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::fault::{ClientType, Fault};
use crate::runner::{run, RunConfig, ScenarioReport};
use crate::scenario::{Action, Expect, Load, Mix, Scenario, Shape, Step, When};
use crate::selector::NodeSelector;

/// How a fuzzing session ended.
#[derive(Debug)]
pub enum FuzzOutcome {
    /// Every case reached "exact".
    Passed { cases: u32 },
    /// A case failed; `schedule` is the smallest failing one found, `report` its run.
    Failed {
        schedule: Vec<Step>,
        report: Box<ScenarioReport>,
        reason: String,
    },
}

fn after(seconds: f64, action: Action) -> Step {
    Step::new(When::After { seconds }, action)
}

/// One fault of the menu, as the steps that do it.
fn fault() -> impl Strategy<Value = Vec<Step>> {
    let source = |fault: Fault| Action::Source { fault };
    prop_oneof![
        (0.2f64..1.5).prop_map(|pause| vec![
            after(pause, Action::KillEngine),
            after(0.1, Action::StartEngine)
        ]),
        (0usize..3).prop_map(move |m| vec![after(
            0.3,
            source(Fault::ClientKill {
                node: NodeSelector::Master(m),
                kind: ClientType::Replica,
            })
        )]),
        (0usize..3).prop_map(move |m| vec![after(
            0.3,
            source(Fault::FlushAll {
                node: NodeSelector::Master(m),
                asynchronous: false,
            })
        )]),
        (0usize..3, 0.2f64..1.5).prop_map(move |(m, held)| vec![
            after(
                0.3,
                source(Fault::Pause {
                    node: NodeSelector::Master(m)
                })
            ),
            after(
                held,
                source(Fault::Resume {
                    node: NodeSelector::Master(m)
                })
            ),
        ]),
    ]
}

/// Schedules of one to four faults, the first once every shard streams.
pub fn schedules() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(fault(), 1..=4).prop_map(|faults| {
        let mut steps: Vec<Step> = faults.into_iter().flatten().collect();
        if let Some(first) = steps.first_mut() {
            first.when = When::Streaming;
        }
        steps
    })
}

/// The scenario a schedule runs in.
pub fn scenario(steps: Vec<Step>) -> Scenario {
    Scenario {
        name: "fuzz".into(),
        about: "A randomised fault schedule under unique pushes and increments.".into(),
        source: Shape {
            masters: 3,
            replicas: 0,
            config: Vec::new(),
            proxy: false,
        },
        target: Shape {
            masters: 2,
            replicas: 0,
            config: Vec::new(),
            proxy: false,
        },
        keys: 3_000,
        workload: Load {
            rate: 2_000,
            seconds: 6.0,
            mix: Mix::Counting,
        },
        sync_args: Vec::new(),
        steps,
        expect: Expect::Exact,
    }
}

/// Runs `cases` random schedules from `seed`; shrinks a failure (at most `shrinks` more
/// runs). `sync_args` go to every run's engine.
pub fn fuzz(
    cases: u32,
    seed: u64,
    shrinks: u32,
    sync_args: &[String],
    config: &RunConfig,
) -> FuzzOutcome {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let runner_config = Config {
        cases,
        max_shrink_iters: shrinks,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(runner_config, rng);
    let last = std::cell::RefCell::new(None::<ScenarioReport>);
    let result = runner.run(&schedules(), |steps| {
        let mut scenario = scenario(steps);
        scenario.sync_args.extend(sync_args.iter().cloned());
        let report = run(&scenario, config);
        let passed = report.passed;
        let why = format!(
            "{}{}",
            report.verdict,
            report
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        *last.borrow_mut() = Some(report);
        if passed {
            Ok(())
        } else {
            Err(TestCaseError::fail(why))
        }
    });
    match result {
        Ok(()) => FuzzOutcome::Passed { cases },
        Err(TestError::Fail(reason, schedule)) => {
            // Run the smallest schedule once more for its report.
            let mut scenario = scenario(schedule.clone());
            scenario.sync_args.extend(sync_args.iter().cloned());
            let report = run(&scenario, config);
            FuzzOutcome::Failed {
                schedule,
                report: Box::new(report),
                reason: reason.to_string(),
            }
        }
        Err(TestError::Abort(reason)) => FuzzOutcome::Failed {
            schedule: Vec::new(),
            report: Box::new(
                last.into_inner()
                    .unwrap_or_else(|| run(&scenario(Vec::new()), config)),
            ),
            reason: reason.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn schedules_wait_for_streaming_then_pair_their_faults() {
        let mut runner = TestRunner::deterministic();
        for _ in 0..200 {
            let steps = schedules().new_tree(&mut runner).unwrap().current();
            assert_eq!(steps[0].when, When::Streaming);
            let kills = steps
                .iter()
                .filter(|s| s.action == Action::KillEngine)
                .count();
            let starts = steps
                .iter()
                .filter(|s| s.action == Action::StartEngine)
                .count();
            assert_eq!(kills, starts, "every SIGKILL is followed by a restart");
            let pauses = steps
                .iter()
                .filter(|s| {
                    matches!(
                        &s.action,
                        Action::Source {
                            fault: Fault::Pause { .. }
                        }
                    )
                })
                .count();
            let resumes = steps
                .iter()
                .filter(|s| {
                    matches!(
                        &s.action,
                        Action::Source {
                            fault: Fault::Resume { .. }
                        }
                    )
                })
                .count();
            assert_eq!(pauses, resumes, "every paused master is resumed");
        }
    }
}
