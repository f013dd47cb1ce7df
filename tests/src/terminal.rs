//! A program in a pseudo-terminal, as a person at a terminal sees it: its output goes
//! through a terminal emulator (vt100), keys go in as the bytes a terminal sends, and a
//! test waits (with a deadline) until the screen shows what it expects. The kit's one
//! pseudo-terminal driver: used for the full-screen `parley tui` and for `parley chat`
//! as a person types in it.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

/// Bytes of a few keys, as an xterm sends them.
pub mod keys {
    /// Enter.
    pub const ENTER: &str = "\r";
    /// Arrow down.
    pub const DOWN: &str = "\x1b[B";
    /// Arrow up.
    pub const UP: &str = "\x1b[A";
    /// Escape.
    pub const ESC: &str = "\x1b";
    /// F1.
    pub const F1: &str = "\x1bOP";
    /// Ctrl-C.
    pub const CTRL_C: &str = "\x03";
    /// Ctrl-U (a line editor's "kill the line").
    pub const CTRL_U: &str = "\x15";
}

/// What the reader thread keeps: the emulated screen, and whether the program's side of
/// the terminal closed (it exited).
struct Shared {
    parser: vt100::Parser,
    closed: bool,
}

/// A running program and its screen.
pub struct Terminal {
    child: Box<dyn Child + Send + Sync>,
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    /// Whose terminal, for failure messages.
    name: String,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("name", &self.name)
            .finish()
    }
}

impl Terminal {
    /// Starts `command` (its program, arguments, environment changes and directory) in a
    /// `columns` × `rows` terminal, with TERM=xterm-256color; its standard streams are
    /// the terminal's.
    pub fn spawn(
        name: &str,
        command: &std::process::Command,
        columns: u16,
        rows: u16,
    ) -> anyhow::Result<Terminal> {
        let pair = native_pty_system().openpty(PtySize {
            rows,
            cols: columns,
            pixel_width: 0,
            pixel_height: 0,
        })?;
        let mut builder = CommandBuilder::new(command.get_program());
        builder.args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => builder.env(key, value),
                None => builder.env_remove(key),
            }
        }
        if let Some(directory) = command.get_current_dir() {
            builder.cwd(directory);
        }
        builder.env("TERM", "xterm-256color");
        let command = builder;
        let child = pair.slave.spawn_command(command)?;
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader()?;
        let writer = pair.master.take_writer()?;
        let shared = Arc::new((
            Mutex::new(Shared {
                parser: vt100::Parser::new(non_zero(rows)?, non_zero(columns)?, 0),
                closed: false,
            }),
            Condvar::new(),
        ));
        let feed = shared.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            loop {
                let read = reader.read(&mut buffer);
                let (lock, changed) = &*feed;
                let mut state = lock.lock().expect("screen lock");
                match read {
                    Ok(n) if n > 0 => state.parser.process(&buffer[..n]),
                    _ => state.closed = true,
                }
                changed.notify_all();
                if state.closed {
                    break;
                }
            }
        });
        Ok(Terminal {
            child,
            master: pair.master,
            writer,
            shared,
            name: name.to_owned(),
        })
    }

    /// Types `text` (characters or key sequences from [`keys`]).
    pub fn press(&mut self, text: &str) -> anyhow::Result<()> {
        self.writer.write_all(text.as_bytes())?;
        self.writer.flush()?;
        Ok(())
    }

    /// The screen's text now, one line per row.
    pub fn screen(&self) -> String {
        let (lock, _) = &*self.shared;
        lock.lock().expect("screen lock").parser.screen().contents()
    }

    /// Waits until `condition` holds for the screen's text, or fails at `limit` with the
    /// screen as it was.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        condition: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        let (lock, changed) = &*self.shared;
        let mut state = lock.lock().expect("screen lock");
        loop {
            let text = state.parser.screen().contents();
            if condition(&text) {
                return Ok(text);
            }
            let now = Instant::now();
            if now >= deadline || state.closed {
                anyhow::bail!(
                    "{}: {what} not on the screen after {limit:?}{}:\n{text}",
                    self.name,
                    if state.closed {
                        " (the program exited)"
                    } else {
                        ""
                    }
                );
            }
            state = changed
                .wait_timeout(state, deadline - now)
                .expect("screen lock")
                .0;
        }
    }

    /// Waits until the screen shows `text`.
    pub fn wait_for_text(&self, text: &str, limit: Duration) -> anyhow::Result<String> {
        self.wait_for(&format!("{text:?}"), limit, |screen| screen.contains(text))
    }

    /// Resizes the terminal (the program gets SIGWINCH) and its emulated screen.
    pub fn resize(&mut self, columns: u16, rows: u16) -> anyhow::Result<()> {
        let (rows_n, columns_n) = (non_zero(rows)?, non_zero(columns)?);
        {
            let (lock, _) = &*self.shared;
            lock.lock()
                .expect("screen lock")
                .parser
                .screen_mut()
                .set_size(rows_n, columns_n);
        }
        self.master.resize(PtySize {
            rows,
            cols: columns,
            pixel_width: 0,
            pixel_height: 0,
        })?;
        Ok(())
    }

    /// Whether the program shows the alternate screen (a full-screen program does; it
    /// must leave it when it exits).
    pub fn alternate_screen(&self) -> bool {
        let (lock, _) = &*self.shared;
        lock.lock()
            .expect("screen lock")
            .parser
            .screen()
            .alternate_screen()
    }

    /// Waits for the program to exit (its side of the terminal closes) within `limit`;
    /// returns whether it exited with success.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + limit;
        {
            let (lock, changed) = &*self.shared;
            let mut state = lock.lock().expect("screen lock");
            while !state.closed {
                let now = Instant::now();
                anyhow::ensure!(
                    now < deadline,
                    "{} did not exit within {limit:?}",
                    self.name
                );
                state = changed
                    .wait_timeout(state, deadline - now)
                    .expect("screen lock")
                    .0;
            }
        }
        let status = self.child.wait().context("waiting for the program")?;
        Ok(status.success())
    }
}

fn non_zero(n: u16) -> anyhow::Result<std::num::NonZeroU16> {
    std::num::NonZeroU16::new(n).context("a terminal has at least one row and one column")
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
