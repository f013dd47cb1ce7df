//! What the operating system says about processes and the machine: CPU time and memory
//! from `/proc`, load average, CPU pinning with `taskset`, free listening ports.
//!
//! Linux only, read-only, and no `unsafe`: everything is parsed from text files or done
//! by running a small standard tool.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};

/// Lowest port tried for listeners: below the ephemeral range (32768-60999), so client
/// sockets never collide with them.
const PORT_BASE: u16 = 21_000;
/// How many ports above [`PORT_BASE`] are tried.
const PORT_SPAN: u16 = 10_000;
/// How far apart the searches of one process's successive [`free_port`] calls start
/// (prime, so that they cycle through the whole span).
const PORT_STRIDE: u32 = 97;

/// CPU time (user + system) a process has used so far, including its exited threads.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/PID/stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()
            .context("bad tick count")
    };
    let total = ticks(11)? + ticks(12)?;
    let per_second = clock_ticks_per_second();
    Ok(Duration::from_nanos(
        total.saturating_mul(1_000_000_000) / per_second.max(1),
    ))
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf`; 100 (Linux's value) if that fails.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A `kB` field of `/proc/PID/status` (e.g. `VmRSS`, `RssAnon`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    kib_field(&status, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A `kB` field of `/proc/meminfo` (e.g. `Slab`), in bytes.
pub fn meminfo_bytes(field: &str) -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    kib_field(&meminfo, field).with_context(|| format!("no {field} in /proc/meminfo"))
}

fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim() != field {
            return None;
        }
        let kib: u64 = value.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// Wall-clock time, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    now_micros() / 1000
}

/// Wall-clock time, µs since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The one-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPUs this process could use when it started. Cached on the first call, which
/// `main` makes before pinning (pinning narrows what the OS reports afterwards).
pub fn cpu_count() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Whether `taskset` can be used to pin processes.
pub fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Pins every thread of this process (and threads it creates later) to `cpus`, a
/// `taskset` CPU list such as `0` or `0-2`.
pub fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset failed: {status}");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 below the ephemeral range. The port is released before
/// returning, so another process could take it first; the caller's bind then fails
/// loudly rather than silently measuring something else. Each call of one process starts
/// its search elsewhere: calls made at once (tests running in parallel) would otherwise
/// find the same port before either server binds it.
pub fn free_port() -> anyhow::Result<u16> {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let start = (std::process::id().wrapping_add(call.wrapping_mul(PORT_STRIDE))
        % u32::from(PORT_SPAN)) as u16;
    for i in 0..PORT_SPAN {
        let port = PORT_BASE + (start + i) % PORT_SPAN;
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {PORT_BASE}..{}", PORT_BASE + PORT_SPAN)
}

/// The source address for client connection number `index`: connections are spread
/// over 127.0.0.2 to 127.0.0.33 so that no single address runs out of ephemeral ports
/// and per-address server limits see many peers.
pub fn source_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (index % 32) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_ok());
        assert!(status_bytes(pid, "VmRSS").is_ok_and(|b| b > 0));
    }

    #[test]
    fn parses_kib_fields() {
        let text = "VmPeak:\t  1000 kB\nVmRSS:\t    12 kB\n";
        assert_eq!(kib_field(text, "VmRSS"), Some(12 * 1024));
        assert_eq!(kib_field(text, "RssAnon"), None);
    }
}
