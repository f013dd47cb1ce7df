//! The system under test as a separate process: `parley-server` (the product) or this
//! binary's hidden `baseline-server` subcommand (the bare relay), optionally pinned to
//! one CPU, with its CPU time and memory read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::cluster_env::CpuGroup;
use crate::sys;

/// How long a server gets to print its "ready" line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of a server's log kept until it is ready, to say why when it is not.
const EARLY_LOG_LINES: usize = 20;

/// Which relay a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `parley-server`: authentication, durable storage, acknowledgements.
    Product,
    /// The bare tokio-tungstenite relay in `baseline.rs`.
    Baseline,
}

impl Target {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Product => "product",
            Target::Baseline => "baseline",
        }
    }
}

/// How to start the servers.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `parley-server` binary.
    pub server_bin: PathBuf,
    /// Pin the server to this CPU (the generator takes the others).
    pub server_cpu: Option<usize>,
    /// `--durability` for the product.
    pub durability: String,
    /// Extra `parley-server` arguments.
    pub server_args: Vec<String>,
}

/// A running server process; killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Which relay it is.
    pub target: Target,
    // Kept so the data directory lives as long as the server.
    data_dir: Option<TempDir>,
    // Dropped after the process is killed (a group with processes cannot be removed).
    _cgroup: Option<CpuGroup>,
}

/// What a cluster node (or a quota-held relay) adds to a plain start.
#[derive(Debug, Default)]
pub struct Extra {
    /// More `parley-server` arguments (ignored for the baseline).
    pub args: Vec<String>,
    /// The data directory to use instead of a fresh one.
    pub data_dir: Option<TempDir>,
    /// The CPU group to put the process in right after it starts.
    pub cgroup: Option<CpuGroup>,
}

impl ServerProcess {
    /// Starts `target` on a free port below the ephemeral range, sized for
    /// `connections` concurrent connections; returns once it listens.
    pub fn start(launch: &Launch, target: Target, connections: usize) -> anyhow::Result<Self> {
        ServerProcess::start_with(launch, target, connections, Extra::default())
    }

    /// [`ServerProcess::start`] with more arguments, a given data directory and a CPU
    /// group.
    pub fn start_with(
        launch: &Launch,
        target: Target,
        connections: usize,
        extra: Extra,
    ) -> anyhow::Result<Self> {
        let port = sys::free_port()?;
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let (program, data_dir) = match (target, extra.data_dir) {
            (Target::Product, Some(dir)) => (launch.server_bin.clone(), Some(dir)),
            (Target::Product, None) => (launch.server_bin.clone(), Some(tempfile::tempdir()?)),
            (Target::Baseline, _) => (std::env::current_exe()?, None),
        };
        let mut command = match launch.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        match (&data_dir, target) {
            (Some(dir), Target::Product) => {
                let limit = (connections + 64).to_string();
                command
                    .arg("--listen")
                    .arg(listen.to_string())
                    .arg("--data-dir")
                    .arg(dir.path())
                    .args(["--log", "info", "--durability", &launch.durability])
                    .args(["--max-connections", &limit])
                    .args(["--max-connections-per-ip", &limit])
                    .args(["--registrations-per-ip-per-hour", "100000000"])
                    .args(["--prekeys-low-threshold", "0"])
                    // The harness measures the relay; the admin listener would also
                    // collide on its fixed default port between concurrent runs.
                    .args(["--admin-listen", "off"])
                    .args(&extra.args)
                    .args(&launch.server_args);
            }
            _ => {
                command
                    .arg("baseline-server")
                    .arg("--listen")
                    .arg(listen.to_string());
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        if let Some(group) = &extra.cgroup {
            if let Err(e) = group.add(child.id()) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        let stderr = child.stderr.take().context("no stderr")?;
        // Read the log on a thread so the server never blocks on a full pipe; until the
        // server is ready, keep its last lines to say why it is not.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let early_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let early = early_lines.clone();
        std::thread::spawn(move || {
            let mut ready = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = ready_address(&line) {
                    ready = true;
                    let _ = ready_tx.send(addr);
                } else if !ready {
                    let mut early = early.lock().unwrap_or_else(|p| p.into_inner());
                    if early.len() == EARLY_LOG_LINES {
                        early.remove(0);
                    }
                    early.push(line);
                }
            }
        });
        let Ok(addr) = ready_rx.recv_timeout(READY_TIMEOUT) else {
            let _ = child.kill();
            let status = child.wait()?;
            let early = early_lines.lock().unwrap_or_else(|p| p.into_inner());
            bail!(
                "{} was not ready within {READY_TIMEOUT:?} ({status}); its last lines:\n{}",
                program.display(),
                early.join("\n")
            );
        };
        Ok(ServerProcess {
            child,
            addr,
            target,
            data_dir,
            _cgroup: extra.cgroup,
        })
    }

    /// The product's data directory (the harness owns it; `None` for the baseline).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(TempDir::path)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        sys::cpu_time(self.pid())
    }

    /// Resident memory (`VmRSS`) in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        sys::status_bytes(self.pid(), "VmRSS")
    }

    /// Bytes on disk in the data directory (database, WAL), if there is one.
    pub fn data_bytes(&self) -> Option<u64> {
        let dir = self.data_dir.as_ref()?;
        let entries = std::fs::read_dir(dir.path()).ok()?;
        Some(
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum(),
        )
    }

    /// Open file descriptors.
    pub fn fd_count(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The listening address in the ready log line of `parley-server` or of the baseline
/// relay (which prints `baseline-server ready listen=ADDR`, uncoloured).
fn ready_address(line: &str) -> Option<SocketAddr> {
    if let Some(ready) = parley_server::ready::parse_ready_line(line) {
        return Some(ready.listen);
    }
    line.strip_prefix(crate::baseline::READY_PREFIX)?
        .trim()
        .parse()
        .ok()
}

/// `parley-server` next to this binary (cargo puts both in the same profile directory),
/// or in the directory above (when this is a test executable in `deps/`).
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let name = format!("parley-server{}", std::env::consts::EXE_SUFFIX);
    let dir = exe.parent().context("binary has no directory")?;
    for candidate in [Some(dir), dir.parent()].into_iter().flatten() {
        let path = candidate.join(&name);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!(
        "no {name} next to {}; build it (cargo build --release -p parley-server) or pass --server-bin",
        exe.display()
    )
}

/// Whether a path looks like a usable binary.
pub fn check_bin(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!("{} is not a file", path.display());
    }
    Ok(())
}
