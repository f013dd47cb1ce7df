//! What [`postgres`](crate::postgres) and [`nats`](crate::nats) share: the rule for a
//! test whose outside service is not installed, and the plumbing for running a
//! throwaway service process (finding binaries, a free port, signals, bounded waits).
//!
//! The rule, in one place ([`missing`]): when a service's binaries are not on this
//! machine, the test prints one line, `SKIPPED: <test> needs <service>: <why>`, and
//! passes; unless `PARLEY_REQUIRE_SERVICES=1` ([`services_required`]), which `.ci/run`
//! sets after installing the services, and then the test fails. Anything else that goes
//! wrong with an installed service (initdb fails, the port never opens) is always an
//! error: only a missing installation skips.
//!
//! Ports come from [`PORT_RANGE`], below Linux's ephemeral range (32768 and up), so that
//! no outgoing connection of another process can take a service's port while a test has
//! the service stopped between [`stop`](crate::postgres::TestPostgres::stop) and
//! `start_again`.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The environment variable that turns a missing service from a skip into a failure.
pub const REQUIRE_SERVICES: &str = "PARLEY_REQUIRE_SERVICES";

/// Whether missing services fail tests (`PARLEY_REQUIRE_SERVICES=1`) instead of
/// skipping them.
pub fn services_required() -> bool {
    std::env::var_os(REQUIRE_SERVICES).is_some_and(|v| v == "1")
}

/// The skip-or-fail rule for a test (`test`) whose `service` is not installed, `why`
/// saying what is missing and how to install it: prints
/// `SKIPPED: <test> needs <service>: <why>` to stderr and returns `Ok(())` (the caller
/// then skips the test), or, when [`services_required`], returns that as an error.
pub fn missing(service: &str, test: &str, why: &str) -> anyhow::Result<()> {
    missing_when(services_required(), service, test, why)
}

/// [`missing`] with the requirement given instead of read from the environment.
pub fn missing_when(required: bool, service: &str, test: &str, why: &str) -> anyhow::Result<()> {
    if required {
        bail!("{test} needs {service}: {why}; {REQUIRE_SERVICES}=1 makes that a failure");
    }
    eprintln!("SKIPPED: {test} needs {service}: {why}");
    Ok(())
}

/// The name of the running test: libtest runs each test on a thread named after it
/// (`module::test_name`), `#[tokio::test]` bodies included. `"a test"` on an unnamed
/// thread.
pub fn current_test_name() -> String {
    std::thread::current()
        .name()
        .map_or_else(|| "a test".to_owned(), str::to_owned)
}

/// Finds an executable named `name` on `PATH`, then in `extra_dirs`, in that order.
pub fn find_binary(name: &str, extra_dirs: &[&Path]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain(extra_dirs.iter().copied())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// This process's effective user id (from `/proc/self/status`), if it can be read.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    // Real, effective, saved, file system: the effective one decides.
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Whether this process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

/// Where service ports are picked from: below the ephemeral range (32768–60999 on
/// Linux), so no outgoing connection is ever given one.
pub const PORT_RANGE: Range<u16> = 20_000..32_000;

/// Ports handed out by [`ReservedPort::pick`] and not yet dropped, in this process.
static RESERVED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port from [`PORT_RANGE`] that was free on 127.0.0.1 when picked and that no other
/// [`ReservedPort`] of this process holds. Released (for this process) on drop.
///
/// Another process can still bind it between the check and the service's start; the
/// services retry their first start on another port when the port turns out taken.
#[derive(Debug)]
pub struct ReservedPort(u16);

impl ReservedPort {
    /// Picks a random free port from [`PORT_RANGE`].
    pub fn pick() -> anyhow::Result<ReservedPort> {
        let mut seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
        for _ in 0..200 {
            // xorshift: cheap, and good enough to spread ports out.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let offset = u16::try_from(seed % span).context("port offset")?;
            let port = PORT_RANGE.start + offset;
            let mut reserved = RESERVED.lock().unwrap_or_else(|p| p.into_inner());
            let reserved = reserved.get_or_insert_with(HashSet::new);
            if reserved.contains(&port) {
                continue;
            }
            if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok() {
                reserved.insert(port);
                return Ok(ReservedPort(port));
            }
        }
        bail!("no free port found in {PORT_RANGE:?} after 200 tries")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0
    }
}

impl Drop for ReservedPort {
    fn drop(&mut self) {
        let mut reserved = RESERVED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reserved) = reserved.as_mut() {
            reserved.remove(&self.0);
        }
    }
}

/// Runs `command` to completion; an error (naming `what`, with its stderr and stdout)
/// unless it exits with status 0.
pub fn run(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !output.status.success() {
        let said = format!(
            "{} {}",
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
        bail!("{what} failed ({}): {}", output.status, said.trim());
    }
    Ok(output)
}

/// What a child process printed, once it exited within the deadline.
#[derive(Debug)]
pub struct Finished {
    /// Whether it exited with status 0.
    pub success: bool,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// Waits up to `limit` for a child spawned with piped stdout and stderr; `None` (the
/// child killed and reaped) if it was still running then. The pipes are read on
/// threads, so a talkative child never blocks on them.
pub fn wait_child_within(mut child: Child, limit: Duration) -> anyhow::Result<Option<Finished>> {
    let deadline = Instant::now() + limit;
    let stdout = child.stdout.take().map(read_on_thread);
    let stderr = child.stderr.take().map(read_on_thread);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let collect = |reader: Option<std::thread::JoinHandle<String>>| {
        reader
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default()
    };
    Ok(Some(Finished {
        success: status.success(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    }))
}

fn read_on_thread(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Polls `condition` every 10 ms until it returns `Ok(true)`, an error, or `limit`
/// passes (an error naming `what`).
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends signal `name` (`STOP`, `CONT`, `TERM`, `KILL`, ...) to `pids` with `kill(1)`;
/// an error if it could not be delivered to every one of them.
pub fn signal(pids: &[u32], name: &str) -> anyhow::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut kill = Command::new("kill");
    kill.arg(format!("-{name}"))
        .arg("--")
        .args(pids.iter().map(u32::to_string));
    run(&mut kill, &format!("kill -{name} {pids:?}")).map(|_| ())
}

/// Sends SIGSTOP to `pids` and waits (up to 5 s) until every thread of each is stopped:
/// `kill(1)` returns once the signal is sent, not once it has taken effect. A process
/// that is gone meanwhile counts as stopped.
pub fn stop_processes(pids: &[u32]) -> anyhow::Result<()> {
    signal(pids, "STOP")?;
    wait_until(Duration::from_secs(5), "SIGSTOP taking effect", || {
        Ok(pids.iter().all(|&pid| is_stopped(pid)))
    })
}

/// Whether every thread of `pid` is stopped (state `T`), or the process is gone.
pub fn is_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.filter_map(Result::ok).all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| state_of(&stat))
            .is_none_or(|state| matches!(state, 'T' | 't' | 'Z' | 'X'))
    })
}

/// The processes whose parent is `pid` (from `/proc/*/stat`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| proc_stat(child).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// Whether `pid` is still a live process: it exists and is not a zombie (a zombie has
/// exited; only its parent has not collected it yet).
pub fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// A process's state letter and parent pid, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = after_comm(&stat)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The state letter of a `/proc/.../stat` line.
fn state_of(stat: &str) -> Option<char> {
    after_comm(stat)?.split_whitespace().next()?.chars().next()
}

/// A `/proc/.../stat` line after "PID (COMM)": COMM may hold spaces and parentheses,
/// so this splits after the last ')'.
fn after_comm(stat: &str) -> Option<&str> {
    stat.get(stat.rfind(')')? + 1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_service_skips_unless_required() {
        assert!(missing_when(false, "PostgreSQL", "t", "initdb not found").is_ok());
        let err = missing_when(true, "PostgreSQL", "t", "initdb not found").unwrap_err();
        assert!(err
            .to_string()
            .contains("t needs PostgreSQL: initdb not found"));
    }

    #[test]
    fn reserved_ports_are_below_the_ephemeral_range_and_distinct() {
        let ports: Vec<_> = (0..20).map(|_| ReservedPort::pick().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().map(ReservedPort::port).collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| PORT_RANGE.contains(&p.port())));
    }

    #[test]
    fn this_process_has_parents_and_children_in_proc() {
        let me = std::process::id();
        assert!(is_alive(me));
        let child = Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        assert!(children_of(me).contains(&pid));
        let finished = wait_child_within(child, Duration::from_millis(50)).unwrap();
        assert!(finished.is_none(), "sleep 5 finished within 50 ms");
        assert!(!is_alive(pid));
    }
}
