//! Servers for tests: in-process on `127.0.0.1:0`, or a real `parley-server` process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use parley_server::{Config, ServerError};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A configuration for tests: defaults, but rate limits high enough for test traffic,
/// and no "prekeys low" pushes (the test about them turns them on).
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::with_data_dir(data_dir);
    config.prekeys_low_threshold = 0;
    config.registrations_per_ip_per_hour = 10_000;
    config.auth_failures_per_ip_per_hour = 1_000_000;
    config.bundle_fetches_per_minute = 10_000;
    config.failed_handle_lookups_per_minute = 10_000;
    config.bundle_fetches_per_target_per_minute = 10_000;
    config
}

/// A server running inside the test process.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin HTTP listener listens.
    pub admin_addr: SocketAddr,
    /// Its data directory (deleted on drop).
    pub dir: TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    /// Starts a server with [`test_config`].
    pub async fn start() -> anyhow::Result<TestServer> {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server with [`test_config`] adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        TestServer::start_in(dir, adjust).await
    }

    /// Starts a server on an existing data directory.
    pub async fn start_in(
        dir: TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestServer> {
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin_addr = admin.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(parley_server::run_with_admin(
            config,
            listener,
            Some(admin),
            shutdown.clone(),
        ));
        Ok(TestServer {
            addr,
            admin_addr,
            dir,
            shutdown,
            task,
        })
    }

    /// `ws://` URL of the server.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Shuts down gracefully and returns the data directory.
    pub async fn stop(self) -> anyhow::Result<TempDir> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(self.dir)
    }
}

/// A `parley-server` process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin HTTP listener listens (`127.0.0.1:0` unless `extra` says
    /// otherwise), if it has one.
    pub admin_addr: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts `parley-server` on `listen` (port 0 picks one) with `data_dir` and extra
    /// arguments, its admin listener on `127.0.0.1:0`; returns once it listens.
    pub fn start(data_dir: &Path, listen: SocketAddr, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(server_binary()?)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--admin-listen",
                "127.0.0.1:0",
                "--log",
                "info",
                "--registrations-per-ip-per-hour",
                "10000",
                "--auth-failures-per-ip-per-hour",
                "1000000",
                "--bundle-fetches-per-minute",
                "10000",
                "--failed-handle-lookups-per-minute",
                "10000",
                "--bundle-fetches-per-target-per-minute",
                "10000",
                "--prekeys-low-threshold",
                "0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting parley-server")?;
        let stderr = child.stderr.take().context("no stderr")?;
        // Read the log on a thread (so it never blocks the server on a full pipe) and
        // wait, bounded, for the "ready" line that names the address.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = ready_address(&line) {
                    let _ = ready_tx.send(addr);
                }
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < MAX_KEPT_LOG_LINES {
                    kept.push(line);
                }
            }
        });
        let (addr, admin_addr) = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("parley-server was not ready within 30 s ({status})");
            }
        };
        Ok(ServerProcess {
            child,
            logs,
            addr,
            admin_addr,
        })
    }

    /// `ws://` URL of the server.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The server's log lines so far (at most [`MAX_KEPT_LOG_LINES`]).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Log lines that report a panic (a panic anywhere in the server is a bug).
    pub fn panics(&self) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|line| line.contains("panicked"))
            .collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of metric `name` with exactly `labels` on its admin listener (0 when the
    /// sample is absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let admin = self.admin_addr.context("no admin listener")?;
        let (_, body) = crate::admin::http_get(admin, "/metrics").await?;
        Ok(crate::admin::parse_exposition(&body)?
            .value(name, labels)
            .unwrap_or(0.0))
    }

    /// The resident set size, in KiB (from `/proc/PID/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS line")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends a signal (e.g. `TERM`) with `kill(1)`.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{name} failed");
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit; returns whether it exited cleanly.
    pub fn wait_exit(mut self, limit: Duration) -> anyhow::Result<bool> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            if std::time::Instant::now() > deadline {
                self.child.kill()?;
                bail!("parley-server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Most log lines a [`ServerProcess`] keeps for [`ServerProcess::logs`].
pub const MAX_KEPT_LOG_LINES: usize = 200_000;

/// The listening addresses (clients, admin) in the server's "ready" log line, if this is
/// that line.
fn ready_address(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    parley_server::ready::parse_ready_line(line).map(|r| (r.listen, r.admin))
}

/// The `parley-server` binary of this build.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("parley-server", "parley-server")
}

/// A binary of this workspace, from this build's profile directory (next to the test
/// executable's `deps`). Built with cargo if it is not there yet, which happens when
/// only this package's tests were asked for.
pub fn workspace_binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no profile directory")?;
    let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", package, "--bin", name]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().with_context(|| format!("building {name}"))?;
        if !status.success() || !binary.exists() {
            bail!("could not build {}", binary.display());
        }
    }
    Ok(binary)
}
