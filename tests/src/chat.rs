//! A `parley chat` process driven through pipes, as a script would ([`ChatProcess`]:
//! lines typed on its standard input, its standard output and error collected as they
//! come), or on a pseudo-terminal, as a person would ([`on_a_terminal`]: keys, and the
//! screen it draws, through the kit's [`Terminal`]); waits on what it printed, each with
//! a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::CliUser;
use crate::services::wait_until;
use crate::terminal::Terminal;

/// Longest wait for something a chat should print.
pub const CHAT_WAIT: Duration = Duration::from_secs(20);

/// A running `parley chat`.
#[derive(Debug)]
pub struct ChatProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl ChatProcess {
    /// Starts `parley chat HANDLE` for `user` and waits for its greeting.
    pub fn open(user: &CliUser, handle: &str) -> ChatProcess {
        let mut child = user
            .command(&["chat", handle])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("parley chat starts");
        let stdin = child.stdin.take();
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let chat = ChatProcess {
            child,
            stdin,
            stdout,
            stderr,
        };
        chat.wait_stderr("Chatting with");
        chat
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the chat");
        stdin.flush().expect("flush");
    }

    /// What it printed on standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What it printed on standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until standard output contains `text`; returns all of it.
    pub fn wait_stdout(&self, text: &str) -> String {
        self.wait(text, || self.stdout())
    }

    /// Waits until standard error contains `text`; returns all of it.
    pub fn wait_stderr(&self, text: &str) -> String {
        self.wait(text, || self.stderr())
    }

    fn wait(&self, text: &str, read: impl Fn() -> String) -> String {
        let mut seen = String::new();
        let waited = wait_until(CHAT_WAIT, "the chat's output", || {
            seen = read();
            Ok(seen.contains(text))
        });
        assert!(
            waited.is_ok(),
            "the chat did not print {text:?} within {CHAT_WAIT:?}; stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        seen
    }

    /// Types `/quit` and waits for the process to end; returns whether it succeeded.
    pub fn quit(mut self) -> bool {
        self.type_line("/quit");
        drop(self.stdin.take());
        let stderr = self.stderr.clone();
        exited(&mut self.child, || {
            format!(
                "parley chat did not leave on /quit; stderr:\n{}",
                stderr.lock().unwrap_or_else(|p| p.into_inner())
            )
        })
    }
}

impl Drop for ChatProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects what `pipe` gives, line by line, on a thread of its own.
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let seen = Arc::new(Mutex::new(String::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    seen
}

/// Starts `parley chat HANDLE` for `user` on an 80 × 24 pseudo-terminal of its own (it
/// reads keys in raw mode, as it does for a person) and waits for its prompt.
pub fn on_a_terminal(user: &CliUser, handle: &str) -> anyhow::Result<Terminal> {
    let terminal = Terminal::spawn(
        &format!("{}'s chat", user.profile),
        &user.command(&["chat", handle]),
        80,
        24,
    )?;
    let prompt = format!("to @{}>", handle.trim_start_matches('@'));
    terminal.wait_for_text(&prompt, CHAT_WAIT)?;
    Ok(terminal)
}

/// Waits for `child` to end; whether it succeeded.
fn exited(child: &mut Child, failure: impl Fn() -> String) -> bool {
    let mut succeeded = false;
    let waited = wait_until(CHAT_WAIT, "parley chat to end", || {
        let status = child.try_wait()?;
        succeeded = status.is_some_and(|s| s.success());
        Ok(status.is_some())
    });
    assert!(waited.is_ok(), "{} (waited {CHAT_WAIT:?})", failure());
    succeeded
}
