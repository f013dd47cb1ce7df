//! Delivery under faults other than `kill -9` (that one is `kill.rs`): lost acks, queue
//! paging boundaries, SIGSTOP/SIGCONT, SIGTERM during a burst, a consumer that stops
//! reading. Each run is checked with the history checker: 0 lost, 0 duplicated to the
//! application, 0 reordered. Disk full and read-only storage are in `storage_faults.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_protocol::limits::MAX_DELIVERY_PAGE;
use parley_protocol::wire::server::ServerBody;
use parley_tests::burst::{self, message_id};
use parley_tests::history::Verdict;
use parley_tests::{long_tests, Client, History, ServerProcess, TestAccount, TestServer};

const CLEAN: Verdict = Verdict {
    lost: 0,
    duplicated: 0,
    reordered: 0,
    unconfirmed: 0,
};

fn process(extra: &[&str]) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(dir.path(), any, extra).unwrap();
    (server, dir)
}

async fn pair(url: &str) -> (Arc<TestAccount>, TestAccount) {
    let alice = Arc::new(TestAccount::new(Some("alice"), 0));
    let bob = TestAccount::new(Some("bob"), 0);
    drop(Client::register(url, &alice).await.unwrap());
    drop(Client::register(url, &bob).await.unwrap());
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_ack_was_lost_is_redelivered_and_shown_once() {
    let iterations = if long_tests() { 1_000 } else { 200 };
    let server = TestServer::start().await.unwrap();
    let url = server.url();
    let (alice, bob) = pair(&url).await;
    let mut a = Client::login(&url, &alice).await.unwrap();
    let mut history = History::default();
    for n in 0..iterations {
        a.send(bob.address(), message_id(n), vec![1]).await.unwrap();
        history.accepted(message_id(n));
        // Received, then the connection dies before the ack.
        let mut b = Client::login(&url, &bob).await.unwrap();
        let first = b.next_deliver().await.unwrap();
        history.delivered(first.id);
        drop(b);
        // The next connection gets it again; the app drops the copy; this time it acks.
        let mut b = Client::login(&url, &bob).await.unwrap();
        let again = b.next_deliver().await.unwrap();
        assert_eq!((again.id, again.seq), (first.id, first.seq), "redelivered");
        history.delivered(again.id);
        b.ack(again.seq).await.unwrap();
        // The ack is processed before the next login's page is read.
        let reply = b
            .request(parley_protocol::wire::client::ClientBody::ResolveHandle(
                parley_protocol::wire::client::ResolveHandle {
                    handle: parley_protocol::Handle::parse("bob").unwrap(),
                },
            ))
            .await
            .unwrap();
        assert!(reply.is_ok());
    }
    let mut b = Client::login(&url, &bob).await.unwrap();
    assert!(
        matches!(b.next_push().await.unwrap(), ServerBody::Drained(d) if d.through.0 == 0),
        "queue empty at the end"
    );
    println!(
        "{iterations} lost acks: {} wire redeliveries",
        history.wire_duplicates()
    );
    assert_eq!(history.wire_duplicates(), iterations as u64);
    assert_eq!(history.check(), CLEAN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queues_at_page_boundaries_drain_exactly() {
    let p = MAX_DELIVERY_PAGE;
    let mut sizes = vec![0, 1, p - 1, p, p + 1, 2 * p - 1, 2 * p, 2 * p + 1, 1_000];
    if long_tests() {
        sizes.push(10_000);
    }
    let server = TestServer::start().await.unwrap();
    let url = server.url();
    let alice = TestAccount::new(Some("alice"), 0);
    let mut a = Client::register(&url, &alice).await.unwrap();
    // Message ids are unique per sender across all queues.
    let mut first = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let bob = TestAccount::new(Some(&format!("bob{i}")), 0);
        drop(Client::register(&url, &bob).await.unwrap());
        let history = Mutex::new(History::default());
        let replies = burst::send_pipelined(&mut a, bob.address(), first, n, 32, 64)
            .await
            .unwrap();
        for (k, reply) in replies.iter().enumerate() {
            assert!(
                matches!(reply, Ok(ServerBody::Accepted(_))),
                "{k}: {reply:?}"
            );
            history.lock().unwrap().accepted(message_id(first + k));
        }
        first += n;
        let drained = burst::drain(&url, &bob, &history).await.unwrap();
        let history = history.into_inner().unwrap();
        assert_eq!(drained.wire_deliveries, n, "queue of {n}");
        assert_eq!(history.check(), CLEAN, "queue of {n}");
    }
    println!("page size {p}: queues of {sizes:?} drained exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_and_sigcont_during_a_burst_lose_nothing() {
    let messages = if long_tests() { 5_000 } else { 1_000 };
    let (server, _dir) = process(&[]);
    let url = server.url();
    let (alice, bob) = pair(&url).await;
    let history = Arc::new(Mutex::new(History::default()));
    let (progress, sender) = burst::spawn_sender(
        url.clone(),
        alice,
        bob.address(),
        messages,
        64,
        history.clone(),
    );
    let server = tokio::task::spawn_blocking(move || {
        progress
            .wait_for(messages / 3, Duration::from_secs(60))
            .unwrap();
        server.signal("STOP").unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let frozen_at = progress.accepted.load(std::sync::atomic::Ordering::Acquire);
        server.signal("CONT").unwrap();
        (server, frozen_at)
    });
    let (server, frozen_at) = server.await.unwrap();
    let resumed = Instant::now();
    sender.await.unwrap().unwrap();
    println!(
        "stopped 2 s at {frozen_at}/{messages}; the rest took {:?} after SIGCONT",
        resumed.elapsed()
    );
    let drained = burst::drain(&url, &bob, &history).await.unwrap();
    let history = history.lock().unwrap();
    assert_eq!(history.accepted_count(), messages);
    assert_eq!(history.check(), CLEAN);
    assert_eq!(drained.wire_deliveries, messages);
    assert!(server.panics().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_exits_in_time_and_loses_nothing_accepted() {
    let messages = if long_tests() { 5_000 } else { 2_000 };
    let (server, dir) = process(&[]);
    let (addr, url) = (server.addr, server.url());
    let (alice, bob) = pair(&url).await;
    // An idle observer sees the close code.
    let observer_account = TestAccount::new(Some("observer"), 0);
    let mut observer = Client::register(&url, &observer_account).await.unwrap();
    let history = Arc::new(Mutex::new(History::default()));
    let (progress, sender) = burst::spawn_sender(
        url.clone(),
        alice,
        bob.address(),
        messages,
        64,
        history.clone(),
    );
    let stopped = tokio::task::spawn_blocking(move || {
        progress
            .wait_for(messages / 2, Duration::from_secs(60))
            .unwrap();
        let started = Instant::now();
        server.signal("TERM").unwrap();
        let clean = server.wait_exit(Duration::from_secs(10)).unwrap();
        (clean, started.elapsed())
    });
    assert_eq!(observer.closed().await.unwrap(), Some(1001));
    let (clean, took) = stopped.await.unwrap();
    println!("SIGTERM mid-burst: exited {clean} after {took:?}");
    assert!(clean, "exit status 0");
    assert!(took < Duration::from_secs(10));
    // Back up on the same data; the sender finishes; the recipient drains.
    let server = ServerProcess::start(dir.path(), addr, &[]).unwrap();
    sender.await.unwrap().unwrap();
    let drained = burst::drain(&url, &bob, &history).await.unwrap();
    let history = history.lock().unwrap();
    assert_eq!(history.accepted_count(), messages);
    assert_eq!(history.check(), CLEAN);
    assert_eq!(drained.wire_deliveries, messages);
    assert!(server.panics().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_closed_with_4003_and_later_drains_everything() {
    stalled_consumer(&["--write-timeout", "1s"]).await;
}

/// The same with holding on: envelopes for the stalled (but connected) consumer are held
/// up to the per-device bound, then committed first; the held ones are committed at the
/// deadline. Nothing is lost, nothing delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_while_envelopes_are_held_later_drains_everything() {
    let (server, _dir) =
        stalled_consumer(&["--write-timeout", "1s", "--hold-deadline", "50ms"]).await;
    assert!(
        server
            .metric("parley_held_settled_total", &[("by", "commit")])
            .await
            .unwrap()
            > 0.0,
        "envelopes for the stalled consumer were held, then committed"
    );
    assert!(
        server
            .metric("parley_hold_refused_total", &[("reason", "per_device")])
            .await
            .unwrap()
            > 0.0,
        "past the per-device bound, sends were committed first"
    );
    assert_eq!(
        server.metric("parley_held_envelopes", &[]).await.unwrap(),
        0.0
    );
}

/// Bob connects and stops reading while alice sends 8 KiB envelopes; the server evicts
/// him after the write timeout, and he drains everything on his next connection. The
/// server (still running) and its data directory, for a look at its metrics.
async fn stalled_consumer(extra: &[&str]) -> (ServerProcess, tempfile::TempDir) {
    let messages = if long_tests() { 10_000 } else { 2_000 };
    const SIZE: usize = 8 * 1024;
    let (server, dir) = process(extra);
    let url = server.url();
    let (alice, bob) = pair(&url).await;
    let rss_before = server.rss_kib().unwrap();
    // Bob connects and then never reads.
    let mut slow = Client::login(&url, &bob).await.unwrap();
    let mut a = Client::login(&url, &alice).await.unwrap();
    let mut history = History::default();
    let replies = burst::send_pipelined(&mut a, bob.address(), 0, messages, SIZE, 64)
        .await
        .unwrap();
    for (k, reply) in replies.iter().enumerate() {
        assert!(matches!(reply, Ok(ServerBody::Accepted(_))), "{reply:?}");
        history.accepted(message_id(k));
    }
    let growth = server.rss_kib().unwrap().saturating_sub(rss_before);
    // The server evicts the stalled connection after the write timeout. Its close frame
    // may not fit in the full socket, so the client sees 4003 or a dropped connection;
    // the server's own count says which it was.
    let evicted = async {
        loop {
            if slow_consumer_evictions(&server).await >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), evicted)
        .await
        .expect("the slow consumer was never evicted");
    let seen = slow.closed().await.unwrap();
    assert!(matches!(seen, Some(4003) | None), "{seen:?}");
    let history = Mutex::new(history);
    let drained = burst::drain(&url, &bob, &history).await.unwrap();
    let history = history.into_inner().unwrap();
    println!(
        "slow consumer: {messages} x {SIZE} B, server RSS growth {growth} KiB, \
         {} delivered on reconnect",
        drained.wire_deliveries
    );
    assert!(growth < 50 * 1024, "RSS grew {growth} KiB");
    assert_eq!(drained.wire_deliveries, messages);
    assert_eq!(history.check(), CLEAN);
    assert!(server.panics().is_empty());
    (server, dir)
}

async fn slow_consumer_evictions(server: &ServerProcess) -> f64 {
    server
        .metric("parley_slow_consumer_evictions_total", &[])
        .await
        .unwrap()
}
