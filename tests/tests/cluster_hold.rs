//! Hold, then persist on a cluster (ADR 0005 §3) with real processes: a person's envelope
//! for a device connected to another node rides the wake there, and the sender's node
//! answers `accepted` on that node's word of the ack, or once it committed the envelope
//! (no ack by the deadline, the recipient gone). C2's `kill -9` history test
//! (`cluster.rs`) runs with holding on, the default.
//!
//! Each test skips itself where PostgreSQL or NATS is not installed, and fails instead
//! under `PARLEY_REQUIRE_SERVICES=1`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::ids::Seq;
use parley_protocol::wire::server::ServerBody;
use parley_tests::admin::{http_get, parse_exposition};
use parley_tests::burst::{self, message_id};
use parley_tests::cluster::TestCluster;
use parley_tests::{Client, TestAccount};

fn account(name: &str) -> Arc<TestAccount> {
    Arc::new(TestAccount::new(Some(name), 2))
}

/// The sum over the cluster's nodes of `parley_held_settled_total{by}`.
async fn held_settled(cluster: &TestCluster, by: &str) -> f64 {
    let mut total = 0.0;
    for addr in cluster.admin_addrs() {
        let (_, body) = http_get(addr, "/metrics").await.unwrap();
        let scrape = parse_exposition(&body).unwrap();
        total += scrape
            .value("parley_held_settled_total", &[("by", by)])
            .unwrap_or(0.0);
    }
    total
}

/// Waits, up to `limit`, until `sql` answers `expected` on the cluster's database.
async fn wait_for_rows(cluster: &TestCluster, sql: &str, expected: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = cluster.postgres.query(sql).unwrap();
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {got} after {limit:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs `account` in on `url` and waits for `drained`: from then on its node reads its
/// queue only on a gap, so what is held for it is settled by its acks.
async fn login_drained(url: &str, account: &TestAccount) -> Client {
    let mut client = Client::login(url, account).await.unwrap();
    loop {
        match client.next_push().await.unwrap() {
            ServerBody::Drained(_) => return client,
            ServerBody::PrekeysLow(_) => continue,
            other => panic!("expected drained, got {other:?}"),
        }
    }
}

/// Alice on node 0 and Bob on node 1, registered.
async fn pair(cluster: &TestCluster) -> (Arc<TestAccount>, Arc<TestAccount>) {
    let (alice, bob) = (account("alice"), account("bob"));
    drop(Client::register(&cluster.url(0), &alice).await.unwrap());
    drop(Client::register(&cluster.url(1), &bob).await.unwrap());
    (alice, bob)
}

/// Messages to a recipient on another node that acks them are `accepted` on its ack: no
/// queue row is ever written, and each send's dedup row follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_across_nodes_never_touch_the_queue() {
    // A deadline no ack of this test misses, however loaded the machine.
    let Some(cluster) = TestCluster::start_with(2, &["--hold-deadline", "10s"]).unwrap() else {
        return;
    };
    const MESSAGES: usize = 40;
    let (alice, bob) = pair(&cluster).await;
    let mut receiver = login_drained(&cluster.url(1), &bob).await;
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < MESSAGES {
            let d = tokio::time::timeout(Duration::from_secs(20), receiver.next_deliver())
                .await
                .expect("a delivery within 20 s")
                .unwrap();
            receiver.ack(d.seq).await.unwrap();
            ids.push(d.id);
        }
        ids
    });
    let mut sender = Client::login(&cluster.url(0), &alice).await.unwrap();
    let started = Instant::now();
    let replies = burst::send_pipelined(&mut sender, bob.address(), 0, MESSAGES, 64, 8)
        .await
        .unwrap();
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered by the acks, not at the 10 s deadline"
    );
    let ids = reader.await.unwrap();
    assert_eq!(ids, (0..MESSAGES).map(message_id).collect::<Vec<_>>());
    assert_eq!(held_settled(&cluster, "ack").await, MESSAGES as f64);
    assert_eq!(held_settled(&cluster, "commit").await, 0.0);
    assert_eq!(
        cluster
            .postgres
            .query("SELECT count(*) FROM queue")
            .unwrap(),
        "0"
    );
    // The dedup rows, written behind the answers.
    wait_for_rows(
        &cluster,
        "SELECT count(*) FROM sent",
        &MESSAGES.to_string(),
        Duration::from_secs(10),
    )
    .await;
    // A retry of an acked message is a duplicate, answered with its first seq.
    let seq = sender
        .send(bob.address(), message_id(0), burst::ciphertext(0, 64))
        .await
        .unwrap();
    assert_eq!(seq, Seq(1));
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

/// A recipient that is connected but does not ack: the sender's `accepted` waits for the
/// commit at the deadline, and the envelope survives the recipient's node's `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_ack_the_envelope_is_committed_at_the_deadline() {
    const DEADLINE: Duration = Duration::from_millis(400);
    let Some(mut cluster) = TestCluster::start_with(2, &["--hold-deadline", "400ms"]).unwrap()
    else {
        return;
    };
    let (alice, bob) = pair(&cluster).await;
    let mut silent = login_drained(&cluster.url(1), &bob).await;
    let mut sender = Client::login(&cluster.url(0), &alice).await.unwrap();
    let started = Instant::now();
    let seq = sender
        .send(bob.address(), message_id(1), burst::ciphertext(1, 64))
        .await
        .unwrap();
    let waited = started.elapsed();
    let delivered = tokio::time::timeout(Duration::from_secs(5), silent.next_deliver())
        .await
        .expect("the held envelope reached Bob's connection")
        .unwrap();
    assert_eq!((delivered.seq, delivered.id), (seq, message_id(1)));
    assert!(
        waited >= DEADLINE,
        "accepted after {waited:?}: before the deadline, without an ack"
    );
    assert_eq!(held_settled(&cluster, "commit").await, 1.0);
    assert_eq!(
        cluster
            .postgres
            .query("SELECT count(*) FROM queue")
            .unwrap(),
        "1"
    );
    cluster.kill(1).unwrap();
    drop(silent);
    let mut bob_again = Client::login(&cluster.url(0), &bob).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), bob_again.next_deliver())
        .await
        .expect("the committed envelope is read back")
        .unwrap();
    assert_eq!((again.seq, again.id), (seq, message_id(1)));
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

/// A recipient that disconnects before acking: its node asks the sender's node to
/// commit at once (not at the deadline), and the next connection reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_before_the_ack_has_the_envelope_committed_at_once() {
    let Some(cluster) = TestCluster::start_with(2, &["--hold-deadline", "30s"]).unwrap() else {
        return;
    };
    let (alice, bob) = pair(&cluster).await;
    let mut leaving = login_drained(&cluster.url(1), &bob).await;
    let mut sender = Client::login(&cluster.url(0), &alice).await.unwrap();
    let rid = sender
        .send_frame(parley_protocol::wire::client::ClientBody::Send(
            parley_protocol::wire::client::Send {
                to: bob.address(),
                id: message_id(7),
                ciphertext: burst::ciphertext(7, 64),
                category: None,
                receipt: false,
            },
        ))
        .await
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(10), leaving.next_deliver())
        .await
        .expect("the held envelope reached Bob's connection")
        .unwrap();
    assert_eq!(delivered.id, message_id(7));
    let left = Instant::now();
    leaving.close().await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), sender.reply_to(rid))
        .await
        .expect("accepted long before the 30 s deadline")
        .unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    eprintln!("accepted {:?} after the disconnect", left.elapsed());
    assert_eq!(held_settled(&cluster, "commit").await, 1.0);
    // Bob comes back on the other node and reads it from the queue.
    let mut bob_again = Client::login(&cluster.url(0), &bob).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), bob_again.next_deliver())
        .await
        .expect("the committed envelope is read back")
        .unwrap();
    assert_eq!((again.seq, again.id), (delivered.seq, message_id(7)));
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
