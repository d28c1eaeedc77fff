//! Running `ferry` as a child process and measuring it: wall time, CPU seconds (user and
//! system), peak RSS and context switches, from `wait4`.

use std::process::{Command, Stdio};
use std::time::Instant;

/// What one run of a child cost.
pub struct Measured {
    pub wall: f64,
    pub cpu: f64,
    pub peak_rss_mb: f64,
    /// Context switches, voluntary (waiting for I/O) and not: how often it woke.
    #[allow(dead_code)] // not every benchmark prints it
    pub switches: f64,
}

/// Runs `command` to completion with its output discarded; an error when it fails.
#[allow(dead_code)] // not every benchmark uses both
pub fn run(command: Command) -> Result<Measured, Box<dyn std::error::Error>> {
    run_expecting(command, 0)
}

/// Runs `command` to completion with its output discarded; an error unless it exits with
/// `code` (`ferry verify` exits 1 when it found differences).
#[allow(dead_code)]
pub fn run_expecting(
    mut command: Command,
    code: i32,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let wall = started.elapsed().as_secs_f64();
    if libc::WEXITSTATUS(status) != code {
        return Err(format!("{command:?} exited with {}", libc::WEXITSTATUS(status)).into());
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall,
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        switches: (usage.ru_nvcsw + usage.ru_nivcsw) as f64,
    })
}

/// The middle value (the upper one of an even count); `values` must not be empty.
#[allow(dead_code)]
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Several runs as one: the medians of wall time, CPU seconds and context switches, and the
/// largest peak RSS; `runs` must not be empty.
#[allow(dead_code)]
pub fn typical<'a>(runs: impl IntoIterator<Item = &'a Measured>) -> Measured {
    let runs: Vec<&Measured> = runs.into_iter().collect();
    let median_of = |field: fn(&Measured) -> f64| median(runs.iter().map(|m| field(m)).collect());
    Measured {
        wall: median_of(|m| m.wall),
        cpu: median_of(|m| m.cpu),
        peak_rss_mb: runs.iter().map(|m| m.peak_rss_mb).fold(0.0, f64::max),
        switches: median_of(|m| m.switches),
    }
}

/// CPU seconds the servers of `deployments` have used so far, with their fork children's
/// once reaped (a snapshot is made in a fork): `INFO cpu` of every node.
#[allow(dead_code)]
pub fn servers_cpu(
    deployments: &[&dyn ferry_fixtures::Deployment],
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut seconds = 0.0;
    for deployment in deployments {
        for node in deployment.nodes() {
            let info = ferry_fixtures::conn::info(&node.addr(), "cpu")?;
            for field in [
                "used_cpu_sys",
                "used_cpu_user",
                "used_cpu_sys_children",
                "used_cpu_user_children",
            ] {
                seconds += info
                    .get(field)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    Ok(seconds)
}

/// The ferry binary to measure: `FERRY_BIN`, else the one `cargo build --release` made
/// (under `$CARGO_TARGET_DIR` when it is set).
#[allow(dead_code)]
pub fn ferry_bin() -> String {
    std::env::var("FERRY_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/release/ferry")
    })
}

/// The numeric command-line argument `n`, or `default` when it is not given.
#[allow(dead_code)]
pub fn arg(n: usize, default: u64) -> Result<u64, Box<dyn std::error::Error>> {
    Ok(std::env::args()
        .nth(n)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(default))
}

/// `bin sync --mode full` from `source` into `target`, every target master flushed first.
#[allow(dead_code)]
pub fn full_sync(
    bin: &str,
    source: &dyn ferry_fixtures::Deployment,
    target: &dyn ferry_fixtures::Deployment,
) -> Result<Command, Box<dyn std::error::Error>> {
    for master in target.masters()? {
        let _: () = master.query(&redis::cmd("FLUSHALL"))?;
    }
    let mut sync = Command::new(bin);
    sync.args(["sync", "--mode", "full", "--source"])
        .arg(source.nodes()[0].addr().url())
        .arg("--target")
        .arg(target.nodes()[0].addr().url());
    Ok(sync)
}
