//! Throwaway PostgreSQL servers, one per test: its own data directory, port and
//! processes, so a test can stop, SIGKILL, pause (SIGSTOP) and restart it without
//! touching anyone else's (least of all the machine's own cluster on 5432).
//!
//! This module owns finding the PostgreSQL binaries, a per-machine template data
//! directory, and the life of each [`TestPostgres`]:
//!
//! * Binaries: `initdb`, `pg_ctl`, `postgres` and `psql` from one directory: the one
//!   `initdb` on `PATH` resolves to, else the highest version of
//!   `/usr/lib/postgresql/*/bin` (where Debian's package puts them). None there: the
//!   test skips or fails by the rule in [`services`](crate::services).
//! * Root: PostgreSQL refuses to run as root, so as root every server-side command runs
//!   as user `postgres` (`runuser -u postgres --`), and the instance's directory, under
//!   `/tmp`, belongs to `postgres`.
//! * Template: `initdb` (with `-A trust -U postgres --no-sync -E UTF8 --locale=C`) and
//!   the `parley` database are made once per machine, PostgreSQL version and user, in
//!   `/tmp/parley-pg-template-v1-VERSION-uidUID` (built under another name and renamed
//!   into place, so it is complete or absent; about 40 MB). Each instance is a `cp -a`
//!   of it: a start takes about 0.5 s (0.3 s of it the copy) instead of 0.9 s with
//!   `initdb` and `CREATE DATABASE`.
//! * Each instance listens on 127.0.0.1 on a port from
//!   [`PORT_RANGE`](crate::services::PORT_RANGE), with its Unix socket inside its own
//!   directory, `max_connections = 200` and `fsync` on (durability tests need real
//!   commits). Its settings are in `parley-test.conf` in the data directory.
//!
//! Queries go through the `psql` binary ([`TestPostgres::query`]): this crate has no
//! PostgreSQL client library on purpose.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::services::{self, ReservedPort};

/// The service's name in skip messages.
const SERVICE: &str = "PostgreSQL";
/// The binaries a [`TestPostgres`] needs, all from one directory.
const BINARIES: [&str; 4] = ["initdb", "pg_ctl", "postgres", "psql"];
/// Where Debian installs PostgreSQL (`/usr/lib/postgresql/VERSION/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// Bump when the template's contents change, so old templates are not reused.
const TEMPLATE_LAYOUT: &str = "v1";
/// Written into a template last: its presence means the template is complete.
const TEMPLATE_MARKER: &str = "parley-template-complete";
/// How long `pg_ctl` may wait for a start or a stop.
const PG_CTL_SECONDS: &str = "30";
/// How long [`TestPostgres::query`] waits for `psql`.
const QUERY_LIMIT: Duration = Duration::from_secs(30);

/// Serialises the template's construction within this process (other processes race
/// by renaming; the first complete template wins).
static TEMPLATE_LOCK: Mutex<()> = Mutex::new(());

/// A PostgreSQL server of this test's own, with a database `parley`; stopped
/// (`pg_ctl stop -m immediate`) and deleted on drop.
#[derive(Debug)]
pub struct TestPostgres {
    bin: PathBuf,
    as_postgres: bool,
    port: ReservedPort,
    dir: TempDir,
    state: Mutex<State>,
}

/// What the server is doing, as far as this handle knows.
#[derive(Debug, Clone, Copy)]
struct State {
    running: bool,
    paused: bool,
}

impl TestPostgres {
    /// [`TestPostgres::start_for`] the current test (named after its thread, see
    /// [`services::current_test_name`]).
    pub fn start() -> anyhow::Result<Option<TestPostgres>> {
        TestPostgres::start_for(&services::current_test_name())
    }

    /// Starts a server for the test named `test`. `Ok(None)` when PostgreSQL is not
    /// installed and `PARLEY_REQUIRE_SERVICES` is not `1` (a `SKIPPED:` line is printed;
    /// the test should return); an error when it is required, or when anything fails.
    ///
    /// ```no_run
    /// # fn t() -> anyhow::Result<()> {
    /// let Some(pg) = parley_tests::postgres::TestPostgres::start_for("c4_postgres_outage")?
    /// else {
    ///     return Ok(());
    /// };
    /// assert_eq!(pg.query("select 1")?, "1");
    /// # Ok(()) }
    /// ```
    pub fn start_for(test: &str) -> anyhow::Result<Option<TestPostgres>> {
        let bin = match find_binaries() {
            Ok(bin) => bin,
            Err(why) => {
                services::missing(SERVICE, test, &why)?;
                return Ok(None);
            }
        };
        let as_postgres = services::running_as_root();
        let template = template(&bin, as_postgres)?;
        // Another process may bind the picked port before the server does: then start
        // again, in a new directory, on another port.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let pg = TestPostgres {
                bin: bin.clone(),
                as_postgres,
                port: ReservedPort::pick()?,
                dir: instance_dir(&template, as_postgres)?,
                state: Mutex::new(State {
                    running: false,
                    paused: false,
                }),
            };
            pg.write_settings()?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.state().running = true;
                    return Ok(Some(pg));
                }
                Err(e) if attempts < 5 && pg.log().contains("Address already in use") => {
                    eprintln!("port {} was taken, trying another: {e:#}", pg.port());
                }
                Err(e) => bail!("{e:#}\nPostgreSQL log:\n{}", pg.log()),
            }
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/parley` (user `postgres`, trusted: no
    /// password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/parley", self.port())
    }

    /// The TCP port on 127.0.0.1 (the same across [`TestPostgres::start_again`]).
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let file = self.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no pid in {}", file.display()))
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, then a shutdown
    /// checkpoint). Resumes it first if it is paused.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        if !state.running {
            bail!("PostgreSQL on port {} is not running", self.port());
        }
        if state.paused {
            self.signal_all("CONT")?;
            state.paused = false;
        }
        services::run(
            self.server_command("pg_ctl")
                .args(["stop", "-m", "fast", "-w", "-s", "-t"])
                .args([PG_CTL_SECONDS, "-D"])
                .arg(self.data_dir()),
            "pg_ctl stop -m fast",
        )?;
        state.running = false;
        Ok(())
    }

    /// SIGKILLs the postmaster and every process it started, as a crash would, and
    /// waits (up to 10 s) until they are gone. [`TestPostgres::start_again`] then runs
    /// crash recovery. Works on a paused server too.
    pub fn kill(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        if !state.running {
            bail!("PostgreSQL on port {} is not running", self.port());
        }
        let postmaster = self.postmaster_pid()?;
        // The postmaster first, so it cannot restart the children killed after it.
        services::signal(&[postmaster], "KILL")?;
        let children = services::children_of(postmaster);
        let _ = services::signal(&children, "KILL");
        services::wait_until(Duration::from_secs(10), "PostgreSQL processes gone", || {
            Ok(!services::is_alive(postmaster) && !children.iter().any(|&c| services::is_alive(c)))
        })?;
        // A postmaster its adopter has not reaped yet stays a zombie for a while, and
        // PostgreSQL takes a lock file naming a zombie for a live server. Then (only)
        // the lock files go; otherwise they stay for PostgreSQL to judge, as after a
        // crash.
        if Path::new(&format!("/proc/{postmaster}")).exists() {
            let sock_lock = format!(".s.PGSQL.{}.lock", self.port());
            for lock in [
                self.data_dir().join("postmaster.pid"),
                self.dir.path().join("sock").join(sock_lock),
            ] {
                if let Err(e) = std::fs::remove_file(&lock) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(e).with_context(|| format!("removing {}", lock.display()));
                    }
                }
            }
        }
        state.running = false;
        state.paused = false;
        Ok(())
    }

    /// Starts the server again on the same data directory and port, after
    /// [`TestPostgres::stop`] or [`TestPostgres::kill`]; returns once it accepts
    /// connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        if state.running {
            bail!("PostgreSQL on port {} is already running", self.port());
        }
        if let Err(e) = self.pg_ctl_start() {
            bail!("{e:#}\nPostgreSQL log:\n{}", self.log());
        }
        state.running = true;
        Ok(())
    }

    /// SIGSTOPs the postmaster and all its children, and returns once they are all
    /// stopped: connections are still accepted by the kernel, but nothing answers.
    /// Stopping the postmaster first means it cannot start a new child meanwhile.
    pub fn pause(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        if !state.running {
            bail!("PostgreSQL on port {} is not running", self.port());
        }
        if !state.paused {
            let postmaster = self.postmaster_pid()?;
            services::stop_processes(&[postmaster])?;
            // A child may exit meanwhile: stop what is still there.
            let children = services::children_of(postmaster);
            let _ = services::signal(&children, "STOP");
            services::wait_until(Duration::from_secs(5), "SIGSTOP taking effect", || {
                Ok(children.iter().all(|&c| services::is_stopped(c)))
            })?;
            state.paused = true;
        }
        Ok(())
    }

    /// SIGCONTs what [`TestPostgres::pause`] stopped.
    pub fn resume(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        if state.paused {
            self.signal_all("CONT")?;
            state.paused = false;
        }
        Ok(())
    }

    /// Runs `sql` with `psql` over TCP as user `postgres` in database `parley` and
    /// returns its unaligned, tuples-only output (`psql -tA`: one row a line, columns
    /// separated by `|`), without the final newline. An error if `psql` fails or takes
    /// more than 30 s.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.query_within(sql, QUERY_LIMIT)?
            .with_context(|| format!("psql -c {sql:?}: no answer within {QUERY_LIMIT:?}"))
    }

    /// [`TestPostgres::query`] with a deadline: `Ok(None)` if `psql` had not finished
    /// within `limit` (it is killed), an error if it failed (e.g. the connection was
    /// refused).
    pub fn query_within(&self, sql: &str, limit: Duration) -> anyhow::Result<Option<String>> {
        let child = Command::new(self.bin.join("psql"))
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
                &self.port().to_string(),
                "-U",
                "postgres",
                "-d",
                "parley",
            ])
            .args(["-c", sql])
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running psql")?;
        match services::wait_child_within(child, limit)? {
            None => Ok(None),
            Some(done) if done.success => Ok(Some(done.stdout.trim_end_matches('\n').to_owned())),
            Some(done) => bail!("psql -c {sql:?} failed: {}", done.stderr.trim()),
        }
    }

    /// The server's log so far (all its runs), for debugging a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A PostgreSQL server-side binary, run as user `postgres` when this is root.
    fn server_command(&self, program: &str) -> Command {
        server_command(&self.bin, self.as_postgres, program, self.dir.path())
    }

    /// Writes this instance's settings (`parley-test.conf`, included by the template's
    /// `postgresql.conf`).
    fn write_settings(&self) -> anyhow::Result<()> {
        let settings = format!(
            "# Written by parley-tests for this instance.\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             max_connections = 200\n\
             shared_buffers = '32MB'\n\
             fsync = on\n",
            port = self.port(),
            sock = self.dir.path().join("sock").display(),
        );
        let path = self.data_dir().join("parley-test.conf");
        std::fs::write(&path, settings).with_context(|| format!("writing {}", path.display()))
    }

    /// `pg_ctl start`, waiting (bounded) until the server accepts connections.
    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        services::run(
            self.server_command("pg_ctl")
                .args(["start", "-w", "-s", "-t", PG_CTL_SECONDS, "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file()),
            "pg_ctl start",
        )
        .map(|_| ())
    }

    /// Signals the postmaster and its children (a postmaster already gone is an error).
    fn signal_all(&self, name: &str) -> anyhow::Result<()> {
        let postmaster = self.postmaster_pid()?;
        let _ = services::signal(&services::children_of(postmaster), name);
        services::signal(&[postmaster], name)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let state = *self.state();
        if state.paused {
            let _ = self.signal_all("CONT");
        }
        if !self.data_dir().join("postmaster.pid").exists() {
            return;
        }
        let stopped = services::run(
            self.server_command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-s", "-t", "10", "-D"])
                .arg(self.data_dir()),
            "pg_ctl stop -m immediate",
        );
        if stopped.is_err() {
            if let Ok(postmaster) = self.postmaster_pid() {
                let _ = services::signal(&[postmaster], "KILL");
                let _ = services::signal(&services::children_of(postmaster), "KILL");
            }
        }
    }
}

/// The directory holding all of [`BINARIES`], or why there is none (for the skip line).
fn find_binaries() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(initdb) = services::find_binary("initdb", &[]) {
        // A symlink (e.g. /usr/local/bin/initdb) points into the real installation,
        // which has the other binaries next to it.
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
    candidates.extend(debian_bin_dirs());
    let missing_in = |dir: &Path| -> Vec<&str> {
        BINARIES
            .into_iter()
            .filter(|name| !services::is_executable(&dir.join(name)))
            .collect()
    };
    if let Some(dir) = candidates.iter().find(|dir| missing_in(dir).is_empty()) {
        return Ok(dir.clone());
    }
    let what = match candidates.first() {
        None => format!("initdb not found on PATH or in {DEBIAN_ROOT}/*/bin"),
        Some(dir) => format!(
            "{} not found in {}",
            missing_in(dir).join(", "),
            dir.display()
        ),
    };
    Err(format!(
        "{what} (install the Debian package postgresql; .ci/run does)"
    ))
}

/// `/usr/lib/postgresql/*/bin`, highest version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Where instance and template directories go: as root `/tmp` (which user `postgres`
/// can traverse, whatever `TMPDIR` says), else the usual temporary directory.
fn base_dir(as_postgres: bool) -> PathBuf {
    if as_postgres {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    }
}

/// A PostgreSQL binary from `bin`, run as user `postgres` if `as_postgres`, in `cwd`
/// (a directory `postgres` can enter).
fn server_command(bin: &Path, as_postgres: bool, program: &str, cwd: &Path) -> Command {
    let mut command = if as_postgres {
        let mut runuser = Command::new("runuser");
        runuser
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        runuser
    } else {
        Command::new(bin.join(program))
    };
    command.current_dir(cwd).stdin(Stdio::null());
    command
}

/// The template data directory (`TEMPLATE/data`) for this PostgreSQL version and user,
/// built if it is not there yet.
fn template(bin: &Path, as_postgres: bool) -> anyhow::Result<PathBuf> {
    let _guard = TEMPLATE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let output = services::run(
        Command::new(bin.join("postgres")).arg("--version"),
        "postgres --version",
    )?;
    // "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let version = text
        .split_whitespace()
        .nth(2)
        .filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
        .with_context(|| format!("no version in `postgres --version`: {text}"))?;
    let uid = services::effective_uid().context("no uid in /proc/self/status")?;
    let name = format!("parley-pg-template-{TEMPLATE_LAYOUT}-{version}-uid{uid}");
    let base = base_dir(as_postgres);
    let template = base.join(&name);
    if template.join(TEMPLATE_MARKER).exists() {
        return Ok(template);
    }

    let build = tempfile::Builder::new()
        .prefix(&format!("{name}.build-"))
        .tempdir_in(&base)
        .context("creating the template directory")?;
    if as_postgres {
        services::run(
            Command::new("chown").arg("postgres:").arg(build.path()),
            "chown postgres",
        )?;
    }
    let data = build.path().join("data");
    services::run(
        server_command(bin, as_postgres, "initdb", build.path())
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C"),
        "initdb",
    )?;
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .context("opening postgresql.conf")?;
    conf.write_all(
        b"\n# parley-tests: this instance's settings\ninclude_if_exists = 'parley-test.conf'\n",
    )?;
    drop(conf);

    // The database, in single-user mode (no port needed). No fsync: a template need not
    // survive a crash, and each instance's own writes are synced.
    let mut single = server_command(bin, as_postgres, "postgres", build.path());
    single
        .args(["--single", "-c", "fsync=off", "-D"])
        .arg(&data)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = single.spawn().context("running postgres --single")?;
    child
        .stdin
        .take()
        .context("no stdin for postgres --single")?
        .write_all(b"CREATE DATABASE parley\n")?;
    let output = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() || said.contains("ERROR") || said.contains("FATAL") {
        bail!("creating database parley in single-user mode failed: {said}");
    }

    std::fs::write(build.path().join(TEMPLATE_MARKER), b"")?;
    match std::fs::rename(build.path(), &template) {
        Ok(()) => {
            let _ = build.keep();
            Ok(template)
        }
        // Another process renamed its template into place first; ours is deleted.
        Err(_) if template.join(TEMPLATE_MARKER).exists() => Ok(template),
        Err(e) => {
            Err(e).with_context(|| format!("renaming the template to {}", template.display()))
        }
    }
}

/// A new instance directory: `data` copied from the template, an empty `sock`; owned by
/// `postgres` if `as_postgres`.
fn instance_dir(template: &Path, as_postgres: bool) -> anyhow::Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("parley-pg-")
        .tempdir_in(base_dir(as_postgres))
        .context("creating the instance directory")?;
    services::run(
        Command::new("cp")
            .arg("-a")
            .arg(template.join("data"))
            .arg(dir.path().join("data")),
        "copying the template data directory",
    )?;
    std::fs::create_dir(dir.path().join("sock"))?;
    if as_postgres {
        services::run(
            Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .arg(dir.path().join("sock")),
            "chown postgres",
        )?;
    }
    Ok(dir)
}
