//! What the `cluster` scenario runs besides the nodes: a throwaway PostgreSQL (initdb
//! into a temporary directory, `fsync` on, default `synchronous_commit`), a throwaway
//! `nats-server`, and cgroup v1 CPU quotas that hold every relay to the same budget.
//!
//! Everything here is stopped and removed on drop. PostgreSQL refuses to run as root, so
//! as root its server-side tools run as user `postgres` (`runuser -u postgres --`) in a
//! directory under `/tmp` that belongs to `postgres`. This deliberately does not use the
//! `parley-tests` crate (the harness must not depend on it); the rules are the same as
//! its `postgres` and `nats` modules.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::sys;

/// Where Debian installs PostgreSQL (`/usr/lib/postgresql/VERSION/bin`).
const DEBIAN_PG: &str = "/usr/lib/postgresql";
/// The PostgreSQL binaries the scenario needs, all from one directory.
const PG_BINARIES: [&str; 4] = ["initdb", "pg_ctl", "postgres", "psql"];
/// Root of the cgroup v1 `cpu` controller.
const CGROUP_CPU: &str = "/sys/fs/cgroup/cpu";
/// The CFS period written into every group, in µs: short, so that a node that used up
/// its quota waits at most the rest of one period (18 ms at 0.1 core, where the default
/// 100 ms period made light-load p99 a measure of throttling).
const CFS_PERIOD_US: u64 = 20_000;

/// A binary on `PATH` or in one of `extra`.
fn find_binary(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The directory holding every PostgreSQL binary the scenario needs, or why none does.
pub fn postgres_bin_dir() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(initdb) = find_binary("initdb", &[]) {
        if let Some(dir) = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf))
        {
            candidates.push(dir);
        }
        if let Some(dir) = initdb.parent() {
            candidates.push(dir.to_path_buf());
        }
    }
    if let Ok(entries) = std::fs::read_dir(DEBIAN_PG) {
        let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                let version: Vec<u32> = name
                    .split('.')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?;
                Some((version, e.path().join("bin")))
            })
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        candidates.extend(versions.into_iter().map(|(_, dir)| dir));
    }
    candidates
        .into_iter()
        .find(|dir| PG_BINARIES.iter().all(|b| dir.join(b).is_file()))
        .ok_or_else(|| {
            "initdb, pg_ctl, postgres and psql not found on PATH or in /usr/lib/postgresql/*/bin (install the Debian package postgresql)".to_owned()
        })
}

/// `nats-server` on `PATH`, in `/usr/sbin` or `/usr/bin`, or why not.
pub fn nats_binary() -> Result<PathBuf, String> {
    find_binary("nats-server", &["/usr/sbin", "/usr/bin"]).ok_or_else(|| {
        "nats-server not found on PATH or in /usr/sbin, /usr/bin (install the Debian package nats-server)".to_owned()
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_port(port: u16, limit: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not open port {port} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A PostgreSQL server of the run's own with a database `parley`; stopped
/// (`pg_ctl stop -m immediate`) and deleted on drop.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    dir: TempDir,
}

impl Postgres {
    /// initdb, start, `CREATE DATABASE parley`.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = postgres_bin_dir().map_err(anyhow::Error::msg)?;
        let as_postgres = running_as_root();
        let base = if as_postgres {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("parley-loadtest-pg-")
            .tempdir_in(base)?;
        if as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(dir.path()),
                "chown postgres",
            )?;
        }
        let port = sys::free_port()?;
        let pg = Postgres {
            bin,
            as_postgres,
            port,
            dir,
        };
        run(
            pg.server_command("initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-D",
                ])
                .arg(pg.data_dir()),
            "initdb",
        )?;
        // fsync on and synchronous_commit at its default (on): commits are real.
        let settings = format!(
            "\n# parley-loadtest cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\nmax_connections = 200\nfsync = on\n",
            sock = pg.dir.path().display()
        );
        let conf = pg.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).context("reading postgresql.conf")?;
        text.push_str(&settings);
        std::fs::write(&conf, text).context("writing postgresql.conf")?;
        run(
            pg.server_command("pg_ctl")
                .args(["start", "-w", "-s", "-t", "30", "-D"])
                .arg(pg.data_dir())
                .arg("-l")
                .arg(pg.dir.path().join("postgres.log")),
            "pg_ctl start",
        )?;
        pg.psql("postgres", "CREATE DATABASE parley")?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/parley`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/parley", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn server_command(&self, program: &str) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        };
        command.current_dir(self.dir.path());
        command
    }

    /// Runs one statement with `psql` and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = run(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-t",
                    "-A",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                ])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                ])
                .args(["-c", sql])
                .env_remove("PGOPTIONS"),
            "psql",
        )?;
        Ok(out.trim().to_owned())
    }

    /// `pg_current_wal_lsn()` as a byte position.
    pub fn wal_lsn(&self) -> anyhow::Result<u64> {
        let text = self.psql("parley", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")?;
        let value: f64 = text.parse().with_context(|| format!("bad LSN {text:?}"))?;
        Ok(value as u64)
    }

    /// Rows inserted, updated and deleted in the `parley` database so far
    /// (`pg_stat_database`). A backend reports its counts when it has been idle for 10 s
    /// (or at the end of a transaction a second after its last report), so this first
    /// waits [`STATS_SETTLE`] for every backend of the phase before to have reported.
    pub fn rows_written(&self) -> anyhow::Result<u64> {
        std::thread::sleep(STATS_SETTLE);
        let text = self.psql(
            "parley",
            "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database
             WHERE datname = 'parley'",
        )?;
        text.parse()
            .with_context(|| format!("bad row count {text:?}"))
    }

    /// The postmaster's pid.
    pub fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let file = self.data_dir().join("postmaster.pid");
        std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("no pid in postmaster.pid")
    }

    /// CPU time (utime + stime) of the postmaster and every process it started that is
    /// alive now (backends, WAL writer, checkpointer...).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let postmaster = self.postmaster_pid()?;
        let mut total = sys::cpu_time(postmaster)?;
        for child in children_of(postmaster) {
            total += sys::cpu_time(child).unwrap_or_default();
        }
        Ok(total)
    }
}

/// How long [`Postgres::rows_written`] waits for idle backends to report their counts
/// (PostgreSQL's `PGSTAT_IDLE_INTERVAL` is 10 s).
pub const STATS_SETTLE: Duration = Duration::from_millis(11_000);

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = run(
            self.server_command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-s", "-t", "10", "-D"])
                .arg(self.data_dir()),
            "pg_ctl stop",
        );
    }
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// A `nats-server` of the run's own (NATS core, no JetStream); killed on drop.
#[derive(Debug)]
pub struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    /// Starts it on a free port and waits until the port answers.
    pub fn start() -> anyhow::Result<Nats> {
        let binary = nats_binary().map_err(anyhow::Error::msg)?;
        let port = sys::free_port()?;
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        let mut nats = Nats { child, port };
        if let Err(e) = wait_port(port, Duration::from_secs(10), "nats-server") {
            let _ = nats.child.kill();
            return Err(e);
        }
        Ok(nats)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup v1 `cpu` group with a CFS quota; removed on drop (after its processes
/// ended: the owner kills them first).
#[derive(Debug)]
pub struct CpuGroup {
    path: PathBuf,
}

impl CpuGroup {
    /// Creates `/sys/fs/cgroup/cpu/NAME` with `cores` of CPU per period.
    pub fn create(name: &str, cores: f64) -> anyhow::Result<CpuGroup> {
        let path = Path::new(CGROUP_CPU).join(name);
        if !path.exists() {
            std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let group = CpuGroup { path };
        let quota = ((cores * CFS_PERIOD_US as f64).round() as u64).max(1000);
        group.write("cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
        group.write("cpu.cfs_quota_us", &quota.to_string())?;
        Ok(group)
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        let path = self.path.join(file);
        std::fs::write(&path, value)
            .with_context(|| format!("writing {value} to {}", path.display()))
    }

    /// Moves process `pid` (all its threads) into the group.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Whether cgroups can be made here (tries and removes a probe group).
    pub fn available() -> Result<(), String> {
        let name = format!("parley-loadtest-probe-{}", std::process::id());
        match CpuGroup::create(&name, 0.5) {
            Ok(group) => {
                drop(group);
                Ok(())
            }
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // A group can only be removed once it has no processes; give exiting ones a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
