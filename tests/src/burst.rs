//! Bursts of sends that survive server faults, and the drain that checks them.
//!
//! [`spawn_sender`] sends numbered messages in order, retrying each (same id) on a new
//! connection until the server accepts it, and records every acceptance in a shared
//! [`History`]. [`drain`] logs the recipient in, records every delivery, acks, and stops
//! at `drained`. Between the two a test does whatever fault it is about (SIGKILL,
//! SIGTERM, SIGSTOP...); the history checker then counts what was lost, duplicated or
//! reordered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use parley_protocol::ids::{DeviceAddress, MessageId, Seq};
use parley_protocol::wire::client::{ClientBody, Send};
use parley_protocol::wire::server::ServerBody;
use tokio::task::JoinHandle;

use crate::client::Reply;
use crate::{Client, History, TestAccount};

/// How long [`login_when_up`] keeps retrying.
pub const SERVER_RETURN_LIMIT: Duration = Duration::from_secs(60);

/// The id of message `n` of a burst.
pub fn message_id(n: usize) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
    MessageId(bytes)
}

/// The bytes [`send_pipelined`] sends as message `n` (at least `size` of them).
pub fn ciphertext(n: usize, size: usize) -> Vec<u8> {
    let mut bytes = format!("message {n} ").into_bytes();
    bytes.resize(size.max(bytes.len()), b'.');
    bytes
}

/// Logs in, retrying while the server is down (at most [`SERVER_RETURN_LIMIT`]).
pub async fn login_when_up(url: &str, account: &TestAccount) -> anyhow::Result<Client> {
    let deadline = Instant::now() + SERVER_RETURN_LIMIT;
    loop {
        match Client::login(url, account).await {
            Ok(client) => return Ok(client),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => bail!("server did not come back: {e:#}"),
        }
    }
}

/// What a running sender shares with the test.
#[derive(Clone, Debug, Default)]
pub struct SenderProgress {
    /// Messages accepted so far (the sender is in order, so also the next index).
    pub accepted: Arc<AtomicUsize>,
    /// Connections the sender lost and replaced.
    pub reconnects: Arc<AtomicUsize>,
}

impl SenderProgress {
    /// Waits until at least `n` messages were accepted (bounded by `limit`).
    pub fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.accepted.load(Ordering::Acquire) < n {
            if Instant::now() > deadline {
                bail!("the burst stalled before {n} messages");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// Logs in through the first of `urls` (from `*next`, round robin) that answers,
/// retrying for at most [`SERVER_RETURN_LIMIT`]; leaves `*next` after the one used.
pub async fn login_to_any(
    urls: &[String],
    next: &mut usize,
    account: &TestAccount,
) -> anyhow::Result<Client> {
    let deadline = Instant::now() + SERVER_RETURN_LIMIT;
    loop {
        let Some(url) = urls.get(*next % urls.len().max(1)) else {
            bail!("no server URL");
        };
        *next += 1;
        match Client::login(url, account).await {
            Ok(client) => return Ok(client),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => bail!("no server came back: {e:#}"),
        }
    }
}

/// Sends `count` messages of `size` bytes from `from` to `to`, in order, each retried
/// until accepted; records acceptances in `history`.
pub fn spawn_sender(
    url: String,
    from: Arc<TestAccount>,
    to: DeviceAddress,
    count: usize,
    size: usize,
    history: Arc<Mutex<History>>,
) -> (SenderProgress, JoinHandle<anyhow::Result<()>>) {
    spawn_sender_across(vec![url], from, to, count, size, history)
}

/// [`spawn_sender`] through several servers of one deployment: after a failure it
/// reconnects to the next URL (round robin), as a client of a cluster does.
pub fn spawn_sender_across(
    urls: Vec<String>,
    from: Arc<TestAccount>,
    to: DeviceAddress,
    count: usize,
    size: usize,
    history: Arc<Mutex<History>>,
) -> (SenderProgress, JoinHandle<anyhow::Result<()>>) {
    let progress = SenderProgress::default();
    let shared = progress.clone();
    let task = tokio::spawn(async move {
        let mut client: Option<Client> = None;
        let mut next = 0;
        let mut n = 0;
        while n < count {
            let c = match client.as_mut() {
                Some(c) => c,
                None => client.insert(login_to_any(&urls, &mut next, &from).await?),
            };
            let mut body = format!("message {n} ").into_bytes();
            body.resize(size.max(body.len()), b'.');
            match c.send(to, message_id(n), body).await {
                Ok(_) => {
                    history
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .accepted(message_id(n));
                    n += 1;
                    shared.accepted.store(n, Ordering::Release);
                }
                Err(_) => {
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    client = None;
                }
            }
        }
        Ok(())
    });
    (progress, task)
}

/// What [`drain`] saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drain {
    /// `deliver` frames received (wire duplicates included).
    pub wire_deliveries: usize,
}

/// Deliveries [`drain`] receives between two (cumulative) acks.
pub const ACK_EVERY: usize = 64;

/// Logs `account` in, records every delivery in `history`, acks cumulatively every
/// [`ACK_EVERY`] deliveries and at `drained`, and returns at `drained`. Fails if seqs
/// do not increase.
pub async fn drain(
    url: &str,
    account: &TestAccount,
    history: &Mutex<History>,
) -> anyhow::Result<Drain> {
    let mut client = login_when_up(url, account).await?;
    let mut last = Seq(0);
    let mut seen = Drain::default();
    loop {
        match client.next_push().await? {
            ServerBody::Deliver(d) => {
                seen.wire_deliveries += 1;
                if d.seq <= last {
                    bail!("seq {} after {}", d.seq.0, last.0);
                }
                last = d.seq;
                history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .delivered(d.id);
                if seen.wire_deliveries % ACK_EVERY == 0 {
                    client.ack(d.seq).await?;
                }
            }
            ServerBody::Drained(_) => {
                if last.0 > 0 {
                    client.ack(last).await?;
                }
                return Ok(seen);
            }
            ServerBody::PrekeysLow(_) => continue,
            other => bail!("unexpected {other:?}"),
        }
    }
}

/// Receives for `account` until `stop` is cancelled, through any of `urls` (round robin
/// after a failure, as a client of a cluster does): records every delivery in
/// `history` and acks every [`ACK_EVERY`] deliveries. Returns the reconnects it made.
/// Stopping leaves unacked deliveries queued; a [`drain`] afterwards gets them again.
pub fn spawn_receiver_across(
    urls: Vec<String>,
    account: Arc<TestAccount>,
    history: Arc<Mutex<History>>,
    stop: tokio_util::sync::CancellationToken,
) -> JoinHandle<anyhow::Result<usize>> {
    spawn_receiver_acking(urls, account, history, stop, ACK_EVERY)
}

/// [`spawn_receiver_across`], acking every `ack_every` deliveries (1: each one, as
/// `parley-sdk` does once it has stored it).
pub fn spawn_receiver_acking(
    urls: Vec<String>,
    account: Arc<TestAccount>,
    history: Arc<Mutex<History>>,
    stop: tokio_util::sync::CancellationToken,
    ack_every: usize,
) -> JoinHandle<anyhow::Result<usize>> {
    let ack_every = ack_every.max(1);
    tokio::spawn(async move {
        let mut next = 1;
        let mut reconnects = 0;
        'connections: while !stop.is_cancelled() {
            let mut client = tokio::select! {
                () = stop.cancelled() => break,
                client = login_to_any(&urls, &mut next, &account) => client?,
            };
            let mut delivered = 0usize;
            loop {
                let push = tokio::select! {
                    () = stop.cancelled() => break 'connections,
                    push = client.next_push() => push,
                };
                match push {
                    Ok(ServerBody::Deliver(d)) => {
                        history
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .delivered(d.id);
                        delivered += 1;
                        if delivered.is_multiple_of(ack_every) && client.ack(d.seq).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    // The node went away (or the read timed out on a quiet connection).
                    Err(_) => break,
                }
            }
            reconnects += 1;
        }
        Ok(reconnects)
    })
}

/// Sends `count` envelopes to `to`, pipelined `window` at a time, and returns each reply
/// in order (ids from [`message_id`] starting at `first`).
pub async fn send_pipelined(
    client: &mut Client,
    to: DeviceAddress,
    first: usize,
    count: usize,
    size: usize,
    window: usize,
) -> anyhow::Result<Vec<Reply>> {
    let mut replies = Vec::with_capacity(count);
    let mut n = first;
    while n < first + count {
        let end = (n + window.max(1)).min(first + count);
        let mut rids = Vec::with_capacity(end - n);
        for i in n..end {
            let ciphertext = ciphertext(i, size);
            rids.push(
                client
                    .send_frame(ClientBody::Send(Send {
                        to,
                        id: message_id(i),
                        ciphertext,
                        category: None,
                        receipt: false,
                    }))
                    .await?,
            );
        }
        for rid in rids {
            replies.push(client.reply_to(rid).await?);
        }
        n = end;
    }
    Ok(replies)
}
