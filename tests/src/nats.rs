//! Throwaway NATS servers, one per test: a `nats-server` process of the test's own (no
//! JetStream) that a test can stop, SIGKILL, pause (SIGSTOP) and restart on the same
//! port.
//!
//! This module owns finding `nats-server` (on `PATH`, then `/usr/sbin`, `/usr/bin`,
//! where Debian's package puts it; missing: the rule in
//! [`services`](crate::services)) and the life of each [`TestNats`]: it listens on
//! 127.0.0.1 on a port from [`PORT_RANGE`](crate::services::PORT_RANGE), optionally with
//! a user and password, and logs to a file in its own temporary directory.
//!
//! A start returns once the server's log says it is ready and a TCP connection to its
//! port reads the `INFO {` banner (polled every 10 ms, up to 10 s).

use std::fs::OpenOptions;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::services::{self, ReservedPort};

/// The service's name in skip messages.
const SERVICE: &str = "NATS";
/// Where Debian installs `nats-server`, looked at after `PATH`.
const EXTRA_DIRS: [&str; 2] = ["/usr/sbin", "/usr/bin"];
/// How long a start may take before it is an error.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long [`TestNats::stop`] waits after SIGTERM before it SIGKILLs.
const TERM_LIMIT: Duration = Duration::from_secs(5);

/// A `nats-server` of this test's own; SIGKILLed on drop.
#[derive(Debug)]
pub struct TestNats {
    binary: PathBuf,
    port: ReservedPort,
    credentials: Option<(String, String)>,
    dir: TempDir,
    state: Mutex<State>,
}

/// The process, while it runs.
#[derive(Debug)]
struct State {
    child: Option<Child>,
    paused: bool,
}

impl TestNats {
    /// [`TestNats::start_for`] the current test (named after its thread, see
    /// [`services::current_test_name`]).
    pub fn start() -> anyhow::Result<Option<TestNats>> {
        TestNats::start_for(&services::current_test_name())
    }

    /// Starts a server without authentication for the test named `test`. `Ok(None)`
    /// when `nats-server` is not installed and `PARLEY_REQUIRE_SERVICES` is not `1` (a
    /// `SKIPPED:` line is printed; the test should return); an error when it is
    /// required, or when anything fails.
    ///
    /// ```no_run
    /// # fn t() -> anyhow::Result<()> {
    /// let Some(nats) = parley_tests::nats::TestNats::start_for("c5_nats_outage")? else {
    ///     return Ok(());
    /// };
    /// assert!(nats.info_within(std::time::Duration::from_secs(1))?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn start_for(test: &str) -> anyhow::Result<Option<TestNats>> {
        TestNats::start_with(test, None)
    }

    /// [`TestNats::start_with_auth_for`] the current test.
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Option<TestNats>> {
        TestNats::start_with_auth_for(&services::current_test_name(), user, password)
    }

    /// [`TestNats::start_for`] with a user and password that clients must present
    /// (`--user`, `--pass`); [`TestNats::url`] includes them.
    pub fn start_with_auth_for(
        test: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Option<TestNats>> {
        TestNats::start_with(test, Some((user.to_owned(), password.to_owned())))
    }

    fn start_with(
        test: &str,
        credentials: Option<(String, String)>,
    ) -> anyhow::Result<Option<TestNats>> {
        let extra: Vec<&Path> = EXTRA_DIRS.iter().map(Path::new).collect();
        let Some(binary) = services::find_binary("nats-server", &extra) else {
            services::missing(
                SERVICE,
                test,
                "nats-server not found on PATH or in /usr/sbin, /usr/bin \
                 (install the Debian package nats-server; .ci/run does)",
            )?;
            return Ok(None);
        };
        // Another process may bind the picked port before the server does: then try
        // another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let nats = TestNats {
                binary: binary.clone(),
                port: ReservedPort::pick()?,
                credentials: credentials.clone(),
                dir: tempfile::Builder::new()
                    .prefix("parley-nats-")
                    .tempdir()
                    .context("creating the NATS directory")?,
                state: Mutex::new(State {
                    child: None,
                    paused: false,
                }),
            };
            match nats.spawn_and_wait() {
                Ok(child) => {
                    nats.state().child = Some(child);
                    return Ok(Some(nats));
                }
                Err(e) if attempts < 5 && nats.log().contains("address already in use") => {
                    eprintln!("port {} was taken, trying another: {e:#}", nats.port());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `nats://127.0.0.1:PORT`, or `nats://USER:PASSWORD@127.0.0.1:PORT` with
    /// authentication.
    pub fn url(&self) -> String {
        match &self.credentials {
            None => format!("nats://127.0.0.1:{}", self.port()),
            Some((user, password)) => {
                format!("nats://{user}:{password}@127.0.0.1:{}", self.port())
            }
        }
    }

    /// The TCP port on 127.0.0.1 (the same across [`TestNats::start_again`]).
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.state().child.as_ref().map(Child::id)
    }

    /// SIGTERM (after resuming a paused server), and wait for the exit: up to 5 s, then
    /// SIGKILL.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        let Some(mut child) = state.child.take() else {
            bail!("NATS on port {} is not running", self.port());
        };
        if state.paused {
            services::signal(&[child.id()], "CONT")?;
            state.paused = false;
        }
        services::signal(&[child.id()], "TERM")?;
        let deadline = Instant::now() + TERM_LIMIT;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                eprintln!("nats-server ignored SIGTERM for {TERM_LIMIT:?}; SIGKILL");
                child.kill()?;
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGKILL (a paused server too), and wait for the exit.
    pub fn kill(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        let Some(mut child) = state.child.take() else {
            bail!("NATS on port {} is not running", self.port());
        };
        state.paused = false;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the server again on the same port, after [`TestNats::stop`] or
    /// [`TestNats::kill`]; returns once it is ready.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        if state.child.is_some() {
            bail!("NATS on port {} is already running", self.port());
        }
        state.child = Some(self.spawn_and_wait()?);
        Ok(())
    }

    /// SIGSTOP, and returns once every thread is stopped: connections are still accepted
    /// by the kernel, but nothing answers.
    pub fn pause(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        let pid = state.child.as_ref().map(Child::id);
        let Some(pid) = pid else {
            bail!("NATS on port {} is not running", self.port());
        };
        if !state.paused {
            services::stop_processes(&[pid])?;
            state.paused = true;
        }
        Ok(())
    }

    /// SIGCONT after [`TestNats::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        let pid = state.child.as_ref().map(Child::id);
        if let (Some(pid), true) = (pid, state.paused) {
            services::signal(&[pid], "CONT")?;
            state.paused = false;
        }
        Ok(())
    }

    /// Connects to the port and reads the first line the server sends (the protocol's
    /// `INFO {...}` banner), within `limit` all told. `Ok(None)` if no full line came in
    /// time (a paused server); an error if the connection failed (e.g. refused by a
    /// stopped server).
    pub fn info_within(&self, limit: Duration) -> std::io::Result<Option<String>> {
        first_line(self.addr(), limit)
    }

    /// The server's log so far (all its runs), for debugging a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `nats-server` and waits until it is ready: its log (this run's part) says
    /// so and its port answers with `INFO`. Kills it on failure.
    fn spawn_and_wait(&self) -> anyhow::Result<Child> {
        let log_start = self.log().len();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .context("opening the NATS log")?;
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &self.port().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((user, password)) = &self.credentials {
            command.args(["--user", user, "--pass", password]);
        }
        let mut child = command.spawn().context("starting nats-server")?;
        let ready = services::wait_until(START_LIMIT, "nats-server ready", || {
            if let Some(status) = child.try_wait()? {
                bail!("nats-server exited ({status})");
            }
            let run_log = self.log().get(log_start..).unwrap_or_default().to_owned();
            Ok(run_log.contains("Server is ready")
                && first_line(self.addr(), Duration::from_millis(500))
                    .ok()
                    .flatten()
                    .is_some_and(|line| line.starts_with("INFO ")))
        });
        match ready {
            Ok(()) => Ok(child),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.context(format!(
                    "port {}, log:\n{}",
                    self.port(),
                    self.log().get(log_start..).unwrap_or_default()
                )))
            }
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let mut state = self.state();
        if let Some(mut child) = state.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first line (without its CRLF) `addr` sends on a new connection, within `limit`.
fn first_line(addr: SocketAddr, limit: Duration) -> std::io::Result<Option<String>> {
    let deadline = Instant::now() + limit;
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                line.extend_from_slice(buf.get(..n).unwrap_or_default());
                if let Some(end) = line.windows(2).position(|w| w == b"\r\n") {
                    line.truncate(end);
                    return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}
