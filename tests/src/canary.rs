//! A well-behaved client that measures round trips while a test attacks the server.
//!
//! [`Canary::start`] registers an account and resolves its own handle every
//! [`CANARY_INTERVAL`] until [`Canary::finish`], which returns the latencies. An attack
//! "costs nobody else anything" when the canary's worst round trip stays under the bound
//! the test states.

use std::time::{Duration, Instant};

use parley_protocol::ids::Handle;
use parley_protocol::wire::client::{ClientBody, ResolveHandle};
use parley_protocol::wire::server::ServerBody;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Client, TestAccount};

/// Time between two canary requests.
pub const CANARY_INTERVAL: Duration = Duration::from_millis(5);

/// A running canary.
#[derive(Debug)]
pub struct Canary {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<Vec<Duration>>>,
}

/// What the canary measured.
#[derive(Clone, Debug)]
pub struct CanaryReport {
    /// Round trips completed.
    pub samples: usize,
    /// The median round trip.
    pub median: Duration,
    /// The 99th-percentile round trip.
    pub p99: Duration,
    /// The slowest round trip.
    pub max: Duration,
}

impl Canary {
    /// Registers a fresh account on the server at `url` and starts measuring.
    pub async fn start(url: &str) -> anyhow::Result<Canary> {
        let handle = format!("canary{}", rand_suffix());
        let account = TestAccount::new(Some(&handle), 0);
        let mut client = Client::register(url, &account).await?;
        let handle = Handle::parse(&handle)?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stopped.is_cancelled() {
                let started = Instant::now();
                let reply = client
                    .request(ClientBody::ResolveHandle(ResolveHandle {
                        handle: handle.clone(),
                    }))
                    .await?;
                if !matches!(reply, Ok(ServerBody::Resolved(_))) {
                    anyhow::bail!("canary request failed: {reply:?}");
                }
                samples.push(started.elapsed());
                tokio::time::sleep(CANARY_INTERVAL).await;
            }
            Ok(samples)
        });
        Ok(Canary { stop, task })
    }

    /// Stops the canary and reports; fails if any of its requests failed.
    pub async fn finish(self) -> anyhow::Result<CanaryReport> {
        self.stop.cancel();
        let mut samples = self.task.await??;
        anyhow::ensure!(!samples.is_empty(), "the canary completed no round trip");
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Ok(CanaryReport {
            samples: samples.len(),
            median: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

fn rand_suffix() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64() % 1_000_000_000
}
