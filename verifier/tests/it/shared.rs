//! Deployments shared by the tests of this binary (a 3-master cluster takes about 2 s), and
//! running the verifier on them. Tests sharing a deployment keep to their own key prefix and
//! verify only it, so they can run at once.

use std::sync::OnceLock;
use std::time::Duration;

use ferry_fixtures::{Deployment, LocalCluster};
use ferry_verifier::{verify, Config, DiffKind, Difference, Endpoint, Report};

/// A source and a target cluster, three masters each.
pub struct Pair {
    pub source: LocalCluster,
    pub target: LocalCluster,
}

pub fn clusters() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let (source, target) = std::thread::scope(|s| {
            let source = s.spawn(|| LocalCluster::builder().masters(3).start());
            let target = s.spawn(|| LocalCluster::builder().masters(3).start());
            (source.join().unwrap(), target.join().unwrap())
        });
        Pair {
            source: source.expect("source cluster"),
            target: target.expect("target cluster"),
        }
    })
}

/// The URL of the first node of a deployment.
pub fn url(deployment: &dyn Deployment) -> String {
    deployment.nodes()[0].addr().url()
}

/// A config comparing only keys matching `pattern`, with quick re-checks.
pub fn config(source: &dyn Deployment, target: &dyn Deployment, pattern: &str) -> Config {
    let mut config = Config::new(
        Endpoint::parse("source", &url(source)).unwrap(),
        Endpoint::parse("target", &url(target)).unwrap(),
    );
    if !pattern.is_empty() {
        config.filter.patterns = vec![pattern.as_bytes().to_vec()];
    }
    config.rounds = 1;
    config.recheck_interval = Duration::from_millis(100);
    config
}

pub fn run(config: &Config) -> Report {
    verify(config).expect("verification finishes")
}

/// The differences of `key`.
pub fn of<'r>(report: &'r Report, key: &[u8]) -> Vec<&'r Difference> {
    report
        .differences
        .iter()
        .filter(|d| d.key.as_bytes() == key)
        .collect()
}

/// The kinds of difference `key` has, in order.
pub fn kinds(report: &Report, key: &[u8]) -> Vec<DiffKind> {
    let mut kinds: Vec<DiffKind> = of(report, key).iter().map(|d| d.kind).collect();
    kinds.sort();
    kinds
}

/// The report as text, for assertion messages.
pub fn show(report: &Report) -> String {
    report.render(ferry_verifier::Format::Text)
}
