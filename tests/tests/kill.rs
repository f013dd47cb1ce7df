//! Durability across `kill -9`: a real server process is killed repeatedly during a burst
//! of sends and restarted on the same data directory. Every envelope that got
//! `accepted` is delivered afterwards, none twice to the application, in order.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_protocol::ids::{MessageId, Seq};
use parley_protocol::wire::server::ServerBody;
use parley_tests::history::Verdict;
use parley_tests::{Client, History, ServerProcess, TestAccount};

const MESSAGES: usize = 2_000;
const KILLS: usize = 5;

fn id(n: usize) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
    MessageId(bytes)
}

/// Logs in, retrying while the server is down (bounded).
async fn login_when_up(url: &str, account: &TestAccount) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::login(url, account).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("server did not come back: {e:#}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_nothing_that_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(dir.path(), any_port, &[]).unwrap();
    let addr = server.addr;
    let url = server.url();

    let alice = Arc::new(TestAccount::new(Some("alice"), 1));
    let bob = TestAccount::new(Some("bob"), 1);
    drop(Client::register(&url, &alice).await.unwrap());
    drop(Client::register(&url, &bob).await.unwrap());
    let to = bob.address();

    let history = Arc::new(Mutex::new(History::default()));
    let progress = Arc::new(AtomicUsize::new(0));
    let lost_connections = Arc::new(AtomicUsize::new(0));

    // The sender: in order, retrying each message (same id) until it is accepted.
    let sender = {
        let (url, alice, history, progress, lost_connections) = (
            url.clone(),
            alice.clone(),
            history.clone(),
            progress.clone(),
            lost_connections.clone(),
        );
        tokio::spawn(async move {
            let mut client: Option<Client> = None;
            let mut n = 0;
            while n < MESSAGES {
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => client.insert(login_when_up(&url, &alice).await),
                };
                match c.send(to, id(n), format!("message {n}").into_bytes()).await {
                    Ok(_) => {
                        history.lock().unwrap().accepted(id(n));
                        n += 1;
                        progress.store(n, Ordering::Release);
                    }
                    Err(_) => {
                        lost_connections.fetch_add(1, Ordering::Relaxed);
                        client = None;
                    }
                }
            }
        })
    };

    // The killer: SIGKILL at evenly spaced points of the burst, restart on the same
    // address and data directory.
    let killer = {
        let progress = progress.clone();
        let data_dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut server = server;
            for k in 1..=KILLS {
                let at = k * MESSAGES / (KILLS + 1);
                let deadline = Instant::now() + Duration::from_secs(120);
                while progress.load(Ordering::Acquire) < at {
                    assert!(Instant::now() < deadline, "the burst stalled");
                    std::thread::sleep(Duration::from_millis(1));
                }
                server.kill().unwrap();
                server = ServerProcess::start(&data_dir, addr, &[]).unwrap();
            }
            server
        })
    };
    let server = killer.await.unwrap();
    sender.await.unwrap();

    // The receiver: everything, in order, each once to the application.
    let mut b = login_when_up(&url, &bob).await;
    let mut last = Seq(0);
    let mut wire_deliveries = 0;
    loop {
        match b.next_push().await.unwrap() {
            ServerBody::Deliver(d) => {
                wire_deliveries += 1;
                assert!(d.seq > last, "seqs increase");
                last = d.seq;
                history.lock().unwrap().delivered(d.id);
                b.ack(d.seq).await.unwrap();
            }
            ServerBody::Drained(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let history = history.lock().unwrap();
    assert!(
        lost_connections.load(Ordering::Relaxed) >= KILLS,
        "every kill interrupted the burst"
    );
    assert_eq!(history.accepted_count(), MESSAGES);
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
        wire_deliveries, MESSAGES,
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
