//! Durability across `kill -9`: a real server process is killed repeatedly during a burst
//! of sends and restarted on the same data directory. Every envelope that got
//! `accepted` is delivered afterwards, none twice to the application, in order; and no
//! seq is given twice across the kills.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_protocol::ids::{MessageId, Seq};
use parley_protocol::wire::server::{Deliver, ServerBody};
use parley_tests::burst::{self, login_when_up, message_id as id};
use parley_tests::history::Verdict;
use parley_tests::{long_tests, Client, History, ServerProcess, TestAccount};

/// Messages in the burst (PR tier; the long tier sends 10 000).
const MESSAGES: usize = 2_000;
/// SIGKILLs during the burst (PR tier; the long tier kills 20 times).
const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_nothing_that_was_accepted() {
    let (messages, kills) = if long_tests() {
        (10_000, 20)
    } else {
        (MESSAGES, KILLS)
    };
    let dir = tempfile::tempdir().unwrap();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(dir.path(), any_port, &[]).unwrap();
    let addr = server.addr;
    let url = server.url();

    let alice = Arc::new(TestAccount::new(Some("alice"), 1));
    let bob = TestAccount::new(Some("bob"), 1);
    drop(Client::register(&url, &alice).await.unwrap());
    drop(Client::register(&url, &bob).await.unwrap());

    // The sender: in order, retrying each message (same id) until it is accepted.
    let history = Arc::new(Mutex::new(History::default()));
    let (progress, sender) = burst::spawn_sender(
        url.clone(),
        alice,
        bob.address(),
        messages,
        16,
        history.clone(),
    );

    // The killer: SIGKILL at evenly spaced points of the burst, restart on the same
    // address and data directory.
    let killer = {
        let progress = progress.clone();
        let data_dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut server = server;
            for k in 1..=kills {
                let at = k * messages / (kills + 1);
                progress.wait_for(at, Duration::from_secs(120)).unwrap();
                server.kill().unwrap();
                server = ServerProcess::start(&data_dir, addr, &[]).unwrap();
            }
            server
        })
    };
    let server = killer.await.unwrap();
    sender.await.unwrap().unwrap();

    // The receiver: everything, in order, each once to the application.
    let drained = burst::drain(&url, &bob, &history).await.unwrap();
    let history = history.lock().unwrap();
    assert!(
        progress.reconnects.load(Ordering::Relaxed) >= kills,
        "every kill interrupted the burst"
    );
    assert_eq!(history.accepted_count(), messages);
    assert_eq!(
        history.check(),
        Verdict {
            lost: 0,
            duplicated: 0,
            reordered: 0,
            unconfirmed: 0
        }
    );
    assert_eq!(
        drained.wire_deliveries, messages,
        "retries were deduplicated by the server"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_exits_cleanly_and_keeps_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(dir.path(), any_port, &[]).unwrap();
    let (addr, url) = (server.addr, server.url());
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&url, &alice).await.unwrap();
    drop(Client::register(&url, &bob).await.unwrap());
    a.send(bob.address(), id(1), b"kept".to_vec())
        .await
        .unwrap();

    server.signal("TERM").unwrap();
    assert_eq!(a.closed().await.unwrap(), Some(1001));
    let exited_cleanly =
        tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(15)).unwrap())
            .await
            .unwrap();
    assert!(exited_cleanly, "exit status 0 after SIGTERM");

    let _server = ServerProcess::start(dir.path(), addr, &[]).unwrap();
    let mut b = Client::login(&url, &bob).await.unwrap();
    assert_eq!(b.next_deliver().await.unwrap().ciphertext, b"kept");
}

/// Rounds of [`seqs_are_never_reused_after_sigkill`], each ended by a SIGKILL.
const SEQ_ROUNDS: usize = 3;
/// Messages sent in each round.
const SEQ_ROUND_MESSAGES: usize = 20;

/// Records `d` under its seq; fails if that seq was delivered before with another id.
fn record(ids_by_seq: &mut HashMap<Seq, MessageId>, d: &Deliver) {
    let earlier = *ids_by_seq.entry(d.seq).or_insert(d.id);
    assert_eq!(
        earlier, d.id,
        "seq {} delivered with two message ids: a seq was given twice",
        d.seq.0
    );
}

/// Reads `client`'s backlog until `drained`, recording each delivery; their seqs.
async fn backlog(client: &mut Client, ids_by_seq: &mut HashMap<Seq, MessageId>) -> Vec<Seq> {
    let mut seqs = Vec::new();
    loop {
        match client.next_push().await.unwrap() {
            ServerBody::Deliver(d) => {
                record(ids_by_seq, &d);
                seqs.push(d.seq);
            }
            ServerBody::Drained(_) => return seqs,
            ServerBody::PrekeysLow(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Seqs come from reservations that are durable before any seq of them is answered: a
/// server killed with SIGKILL and restarted on its data directory never gives a seq
/// twice (the recipient never sees one seq with two message ids; every seq accepted after
/// a restart is above every seq accepted before it), and the recipient gets every
/// accepted message: what it had not acknowledged comes again under the same seq, and
/// what is sent after the restart comes live, across the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_are_never_reused_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = ServerProcess::start(dir.path(), any_port, &[]).unwrap();
    let (addr, url) = (server.addr, server.url());
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    drop(Client::register(&url, &alice).await.unwrap());
    drop(Client::register(&url, &bob).await.unwrap());

    let mut ids_by_seq = HashMap::new();
    let mut accepted = Vec::new();
    let mut highest = Seq(0);
    for round in 0..SEQ_ROUNDS {
        // Bob first: what he did not acknowledge before the kill comes again.
        let mut b = login_when_up(&url, &bob).await.unwrap();
        let mut seen = backlog(&mut b, &mut ids_by_seq).await;
        let mut a = login_when_up(&url, &alice).await.unwrap();
        for i in 0..SEQ_ROUND_MESSAGES {
            let n = round * SEQ_ROUND_MESSAGES + i;
            let body = format!("message {n}").into_bytes();
            let seq = a.send(bob.address(), id(n), body).await.unwrap();
            assert!(
                seq > highest,
                "round {round}: seq {} accepted after {}",
                seq.0,
                highest.0
            );
            highest = seq;
            accepted.push(id(n));
        }
        for _ in 0..SEQ_ROUND_MESSAGES {
            let d = b.next_deliver().await.unwrap();
            record(&mut ids_by_seq, &d);
            seen.push(d.seq);
        }
        // About half acknowledged; the rest is queued through the kill.
        b.ack(seen[seen.len() / 2]).await.unwrap();
        drop((a, b));
        server = tokio::task::block_in_place(|| {
            server.kill().unwrap();
            ServerProcess::start(dir.path(), addr, &[]).unwrap()
        });
    }

    let mut b = login_when_up(&url, &bob).await.unwrap();
    backlog(&mut b, &mut ids_by_seq).await;
    let delivered: HashSet<MessageId> = ids_by_seq.values().copied().collect();
    let missing = accepted.iter().filter(|id| !delivered.contains(id)).count();
    assert_eq!(missing, 0, "every accepted message is delivered");
    assert_eq!(
        ids_by_seq.len(),
        accepted.len(),
        "each message was delivered under one seq"
    );
    drop(server);
}
