//! One message to many people, paced inside the business's per-second limit: sends are
//! spaced by [`Pacing::interval`], a `rate_limited` answer is waited out (its
//! `retry_after`) and the same recipient tried again, and a suspension stops the run.
//! Each recipient gets its own idempotency key (`key/handle`), so running the same
//! broadcast again reaches nobody twice.

use std::time::Duration;

use parley_protocol::business::Category;
use parley_protocol::ids::Handle;

use super::{BotMessage, BusinessBot, SendOutcome};
use crate::engine::Peer;
use crate::error::SdkError;

/// How fast a broadcast goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// The pause between two sends.
    pub interval: Duration,
    /// How many times one recipient is retried after `rate_limited`.
    pub max_retries: u32,
}

impl Default for Pacing {
    /// Ten sends a second, three retries each.
    fn default() -> Pacing {
        Pacing {
            interval: Duration::from_millis(100),
            max_retries: 3,
        }
    }
}

/// Per-recipient results, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Each recipient and what became of its message; recipients not tried because the
    /// business was suspended mid-run are reported `Suspended`.
    pub results: Vec<(Handle, SendOutcome)>,
}

impl BroadcastReport {
    /// How many were accepted.
    pub fn accepted(&self) -> usize {
        self.results.iter().filter(|(_, o)| o.is_accepted()).count()
    }
}

impl BusinessBot {
    /// Sends `message` to each of `users` in `category`, paced by `pacing`.
    pub async fn broadcast(
        &self,
        users: &[Handle],
        message: &BotMessage,
        category: Category,
        key: &str,
        pacing: Pacing,
    ) -> Result<BroadcastReport, SdkError> {
        let mut results = Vec::with_capacity(users.len());
        let mut suspended = false;
        for user in users {
            if suspended {
                results.push((user.clone(), SendOutcome::Suspended));
                continue;
            }
            let per_user = format!("{key}/{}", user.as_str());
            let mut attempts = 0;
            let outcome = loop {
                let outcome = self
                    .send(
                        Peer::Handle(user.clone()),
                        message.clone(),
                        category,
                        &per_user,
                    )
                    .await?;
                match outcome {
                    SendOutcome::RateLimited { retry_after } if attempts < pacing.max_retries => {
                        attempts += 1;
                        tokio::time::sleep(retry_after).await;
                    }
                    other => break other,
                }
            };
            suspended = outcome == SendOutcome::Suspended;
            results.push((user.clone(), outcome));
            tokio::time::sleep(pacing.interval).await;
        }
        Ok(BroadcastReport { results })
    }
}
