//! `ferry lab up|down|status`: local source and target deployments that outlive the command,
//! recorded in a state file so that `status` and `down` find them again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ferry_fixtures::local::{DetachedDeployment, DetachedNode};
use ferry_fixtures::{conn, LocalCluster, LocalServer, ServerBinary};
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
    /// Directory holding the lab's servers and state [default: ~/.cache/ferry/lab]
    #[arg(long, global = true, env = "FERRY_LAB_DIR")]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Start a source and a target deployment and print their addresses.
    Up(UpArgs),
    /// Show the lab's nodes, their roles and whether they answer.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every server the lab started and remove its files.
    Down,
}

#[derive(Args)]
struct UpArgs {
    /// Masters in the source cluster (0 = a standalone source server).
    #[arg(long, default_value_t = 3)]
    source_masters: usize,
    /// Replicas per source master.
    #[arg(long, default_value_t = 1)]
    source_replicas: usize,
    /// Masters in the target cluster (0 = a standalone target server).
    #[arg(long, default_value_t = 3)]
    target_masters: usize,
    /// Replicas per target master.
    #[arg(long, default_value_t = 0)]
    target_replicas: usize,
    /// Server binary for both sides [default: $REDIS_SERVER, then redis-server on PATH].
    #[arg(long)]
    server: Option<PathBuf>,
    /// Server binary for the source only.
    #[arg(long)]
    source_server: Option<PathBuf>,
    /// Server binary for the target only.
    #[arg(long)]
    target_server: Option<PathBuf>,
}

/// What `lab up` leaves behind for `status` and `down`.
#[derive(Serialize, Deserialize)]
struct LabState {
    source: DetachedDeployment,
    target: DetachedDeployment,
}

pub fn run(args: LabArgs) -> Result<()> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => default_dir()?,
    };
    match args.command {
        LabCommand::Up(up) => self::up(&dir, &up),
        LabCommand::Status { json } => status(&dir, json),
        LabCommand::Down => down(&dir),
    }
}

fn default_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --dir")?;
    Ok(Path::new(&home).join(".cache/ferry/lab"))
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

fn read_state(dir: &Path) -> Result<Option<LabState>> {
    let path = state_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a lab state file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn binary(specific: &Option<PathBuf>, both: &Option<PathBuf>) -> Result<ServerBinary> {
    Ok(match specific.as_ref().or(both.as_ref()) {
        Some(path) => ServerBinary::at(path)?,
        None => ServerBinary::find()?,
    })
}

fn start(
    dir: PathBuf,
    masters: usize,
    replicas: usize,
    binary: ServerBinary,
) -> Result<DetachedDeployment> {
    Ok(if masters == 0 {
        LocalServer::builder()
            .binary(binary)
            .replicas(replicas)
            .base_dir(dir)
            .detached(true)
            .start()?
            .detach()
    } else {
        LocalCluster::builder()
            .binary(binary)
            .masters(masters)
            .replicas(replicas)
            .base_dir(dir)
            .detached(true)
            .start()?
            .detach()
    })
}

fn up(dir: &Path, args: &UpArgs) -> Result<()> {
    if let Some(state) = read_state(dir)? {
        let nodes = state.source.nodes.iter().chain(&state.target.nodes);
        if nodes.clone().any(DetachedNode::is_ours) {
            bail!(
                "a lab is already running in {} (run `ferry lab down` first)",
                dir.display()
            );
        }
        // Left over from a lab whose servers are gone: clear it.
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let source_binary = binary(&args.source_server, &args.server)?;
    let target_binary = binary(&args.target_server, &args.server)?;
    let started = Instant::now();
    let source = start(
        dir.join("source"),
        args.source_masters,
        args.source_replicas,
        source_binary,
    )?;
    let target = match start(
        dir.join("target"),
        args.target_masters,
        args.target_replicas,
        target_binary,
    ) {
        Ok(target) => target,
        Err(e) => {
            let _ = source.destroy();
            return Err(e);
        }
    };
    let state = LabState { source, target };
    std::fs::write(state_path(dir), serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("writing {}", state_path(dir).display()))?;
    println!(
        "lab up in {:.1?} (state in {})",
        started.elapsed(),
        dir.display()
    );
    print_side("source", &state.source);
    print_side("target", &state.target);
    println!("stop it with: ferry lab down");
    Ok(())
}

fn print_side(name: &str, side: &DetachedDeployment) {
    let first = &side.nodes[0].addr;
    println!(
        "{name}: {} ({} nodes, {} {})",
        first.url(),
        side.nodes.len(),
        side.binary.family,
        side.binary.version
    );
}

#[derive(Serialize)]
struct NodeStatus {
    side: &'static str,
    addr: String,
    pid: Option<u32>,
    running: bool,
    role: Option<String>,
}

fn status(dir: &Path, json: bool) -> Result<()> {
    let Some(state) = read_state(dir)? else {
        bail!(
            "no lab in {} (start one with `ferry lab up`)",
            dir.display()
        );
    };
    let rows: Vec<NodeStatus> = [("source", &state.source), ("target", &state.target)]
        .into_iter()
        .flat_map(|(side, deployment)| deployment.nodes.iter().map(move |n| (side, n)))
        .map(|(side, node)| NodeStatus {
            side,
            addr: node.addr.to_string(),
            pid: node.pid,
            running: node.is_ours(),
            role: conn::info(&node.addr, "replication")
                .ok()
                .and_then(|info| info.get("role").cloned()),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<7} {:<22} {:>8} {:<8} ROLE",
        "SIDE", "ADDRESS", "PID", "RUNNING"
    );
    for row in &rows {
        println!(
            "{:<7} {:<22} {:>8} {:<8} {}",
            row.side,
            row.addr,
            row.pid.map(|p| p.to_string()).unwrap_or_default(),
            if row.running { "yes" } else { "no" },
            row.role.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let Some(state) = read_state(dir)? else {
        println!("no lab in {}", dir.display());
        return Ok(());
    };
    let count = state.source.nodes.len() + state.target.nodes.len();
    state.source.destroy()?;
    state.target.destroy()?;
    std::fs::remove_dir_all(dir).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    println!("lab down: stopped {count} servers");
    Ok(())
}
