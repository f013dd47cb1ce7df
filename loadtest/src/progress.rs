//! A progress line on the terminal while a phase runs: elapsed time against the phase's
//! length, and a live counter. Silent when stderr is not a terminal (CI logs, pipes).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Width of the bar in characters.
const BAR: usize = 30;

/// A running progress line; cleared by [`Progress::finish`] or on drop.
#[derive(Debug)]
pub struct Progress {
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `label`, a bar over `length`, and `counter` (named `unit`), every 250 ms.
    pub fn start(
        label: String,
        length: Duration,
        counter: Arc<AtomicU64>,
        unit: &'static str,
    ) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let elapsed = started.elapsed();
                let done = (elapsed.as_secs_f64() / length.as_secs_f64().max(1e-9)).min(1.0);
                let filled = (done * BAR as f64) as usize;
                let line = format!(
                    "\r{label:<28} [{}{}] {:5.1}/{:.1} s  {} {unit}   ",
                    "#".repeat(filled),
                    " ".repeat(BAR - filled),
                    elapsed.as_secs_f64(),
                    length.as_secs_f64(),
                    counter.load(Ordering::Relaxed),
                );
                let mut stderr = std::io::stderr();
                let _ = stderr.write_all(line.as_bytes());
                let _ = stderr.flush();
            }
        });
        Progress { task: Some(task) }
    }

    /// Stops and clears the line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let mut stderr = std::io::stderr();
            let _ = stderr.write_all(format!("\r{}\r", " ".repeat(100)).as_bytes());
            let _ = stderr.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
