//! People at the keyboard: the real `parley` binary run as a process, one profile each,
//! against a server URL. Safe to call from async tests (the wait is moved off the
//! runtime's workers).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::Context as _;
use serde_json::Value;

use crate::server::workspace_binary;

/// One profile of the `parley` CLI.
#[derive(Clone, Debug)]
pub struct CliUser {
    /// The `parley` binary.
    pub binary: PathBuf,
    /// `--home`.
    pub home: PathBuf,
    /// `--profile`.
    pub profile: String,
    /// `--server`.
    pub url: String,
}

impl CliUser {
    /// A profile named `profile` under `home`, talking to `url`.
    pub fn new(home: &std::path::Path, profile: &str, url: &str) -> anyhow::Result<CliUser> {
        Ok(CliUser {
            binary: workspace_binary("parley-cli", "parley")?,
            home: home.to_owned(),
            profile: profile.to_owned(),
            url: url.to_owned(),
        })
    }

    /// The command with this profile's global options, stdin closed, and times shown in
    /// UTC (`TZ`), so that what the tests read does not depend on the machine's zone.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env("TZ", "UTC")
            .args(args)
            .args(["--profile", &self.profile, "--server", &self.url])
            .arg("--home")
            .arg(&self.home)
            .stdin(Stdio::null());
        command
    }

    /// Runs `parley ARGS` to the end.
    pub fn output(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        blocking(move || command.output().expect("parley runs"))
    }

    /// Runs `parley ARGS` with `input` on standard input.
    pub fn output_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut command = self.command(args);
        let input = input.to_owned();
        blocking(move || {
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("parley starts");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
            child.wait_with_output().expect("parley runs")
        })
    }

    /// Runs `parley ARGS`, which must succeed.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "parley {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `parley ARGS`, which must fail; returns its standard error.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "parley {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `parley ARGS --json` (must succeed) and returns the JSON lines.
    pub fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        json_lines(&self.run(&with_json))
    }
}

/// A `parley --json` command left running (one that waits, like `parley link`), whose
/// lines a test reads as they come, each within a deadline.
#[derive(Debug)]
pub struct RunningCli {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    what: String,
}

impl CliUser {
    /// Links `new` (an empty profile) to this profile's account as a device named
    /// `name`, as a person would at two terminals: `parley link --yes --name NAME` here,
    /// `parley link CODE` there. Panics if either side fails.
    pub fn link_device(&self, new: &CliUser, name: &str) {
        let limit = std::time::Duration::from_secs(60);
        let mut showing = self
            .spawn_json(&["link", "--yes", "--name", name])
            .expect("parley link starts");
        let shown = showing.next_json(limit).expect("a linking code");
        let code = shown["code"].as_str().expect("a code").to_owned();
        let joined = new.json(&["link", &code]);
        assert_eq!(joined[0]["type"], "linked", "{joined:?}");
        let (ok, _, stderr) = showing.finish(limit).expect("parley link ends");
        assert!(ok, "parley link failed: {stderr}");
    }

    /// Starts `parley ARGS --json` with stdin closed, without waiting for it.
    pub fn spawn_json(&self, args: &[&str]) -> anyhow::Result<RunningCli> {
        use std::io::{BufRead, Read};
        let mut command = self.command(args);
        let mut child = command
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stderr = child.stderr.take().context("no stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(RunningCli {
            child,
            lines,
            stderr: Some(stderr),
            what: format!("parley {args:?} ({})", self.profile),
        })
    }
}

impl RunningCli {
    /// The next line it prints, as JSON, within `limit`.
    pub fn next_json(&mut self, limit: std::time::Duration) -> anyhow::Result<Value> {
        let line = self
            .lines
            .recv_timeout(limit)
            .map_err(|e| anyhow::anyhow!("{}: no line within {limit:?} ({e})", self.what))?;
        serde_json::from_str(&line).with_context(|| format!("{}: not JSON: {line}", self.what))
    }

    /// Waits up to `limit` for it to exit (else kills it, an error); returns whether it
    /// succeeded, the JSON lines not read yet, and its standard error.
    pub fn finish(
        mut self,
        limit: std::time::Duration,
    ) -> anyhow::Result<(bool, Vec<Value>, String)> {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("{}: still running after {limit:?}", self.what);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // The reader ends at the end of the output, which the exit closed.
        let rest = self
            .lines
            .iter()
            .map(|line| serde_json::from_str(&line).context("a JSON line"))
            .collect::<anyhow::Result<Vec<Value>>>()?;
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        Ok((status.success(), rest, stderr))
    }
}

impl Drop for RunningCli {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON objects a `--json` command printed, one per line.
pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .collect()
}

/// Runs `f` without holding up an async runtime's worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Alice and Bob, registered with the CLI on a deployment (on a cluster, on different
/// nodes), and what must live as long as they do.
#[derive(Debug)]
pub struct TwoPeople {
    /// `alice`, on the deployment's first node.
    pub alice: CliUser,
    /// `bob`, on its second (the same server when there is one).
    pub bob: CliUser,
    /// The server or cluster.
    pub deployment: crate::deployment::Deployment,
    /// The server's data directory and the CLI's home.
    _dirs: [tempfile::TempDir; 2],
}

impl TwoPeople {
    /// Starts the deployment and registers both; `None` when the cluster's services are
    /// not installed (the test is then skipped).
    pub fn start() -> Option<TwoPeople> {
        let data = tempfile::tempdir().expect("a data directory");
        let home = tempfile::tempdir().expect("a home directory");
        let deployment = crate::deployment::Deployment::start(data.path(), &[])
            .expect("the deployment starts")?;
        let person = |profile, party| {
            CliUser::new(home.path(), profile, &deployment.url_for(party)).expect("parley")
        };
        let (alice, bob) = (person("alice", 0), person("bob", 1));
        alice.run(&["register", "alice"]);
        bob.run(&["register", "@bob"]);
        Some(TwoPeople {
            alice,
            bob,
            deployment,
            _dirs: [data, home],
        })
    }
}
