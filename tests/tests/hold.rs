//! Hold, then persist (`--hold-deadline`, ADR 0005 option 2) on the embedded store, with
//! a real server process: a person's envelope for a connected device waits in memory for
//! the recipient's ack, and its sender's `accepted` comes with that ack or, at the
//! deadline, with its commit to the queue. What `accepted` promises does not change: the
//! envelope survives `kill -9` (it is on the recipient's disk, or committed).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_protocol::ids::Seq;
use parley_protocol::wire::client::{ClientBody, Send};
use parley_protocol::wire::server::ServerBody;
use parley_tests::burst::{self, login_when_up, message_id as id};
use parley_tests::history::Verdict;
use parley_tests::{Client, History, ServerProcess, TestAccount};

/// The value of metric `name` with `labels` on `server`.
async fn metric(server: &ServerProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    server.metric(name, labels).await.unwrap()
}

fn start(dir: &Path, listen: SocketAddr, deadline: &str) -> ServerProcess {
    ServerProcess::start(dir, listen, &["--hold-deadline", deadline]).unwrap()
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server holding for `deadline`, with alice (`a`) and bob (`b`) registered and both
/// connected (bob's empty queue drained).
struct Pair {
    dir: tempfile::TempDir,
    server: ServerProcess,
    addr: SocketAddr,
    url: String,
    bob: TestAccount,
    a: Client,
    b: Client,
}

async fn pair(deadline: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), any_port(), deadline);
    let (addr, url) = (server.addr, server.url());
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let a = Client::register(&url, &alice).await.unwrap();
    let mut b = Client::register(&url, &bob).await.unwrap();
    assert!(matches!(
        b.next_push().await.unwrap(),
        ServerBody::Drained(_)
    ));
    Pair {
        dir,
        server,
        addr,
        url,
        bob,
        a,
        b,
    }
}

/// Whether `client`, just logged in, is told at once that its queue is empty: nothing is
/// queued for it.
async fn finds_its_queue_empty(client: &mut Client) -> bool {
    matches!(client.next_push().await.unwrap(), ServerBody::Drained(d) if d.through == Seq(0))
}

fn send(to: &TestAccount, n: usize, text: &[u8]) -> ClientBody {
    ClientBody::Send(Send {
        to: to.address(),
        id: id(n),
        ciphertext: text.to_vec(),
        category: None,
        receipt: false,
    })
}

/// With a long deadline, `accepted` can only come from the recipient's ack: the
/// envelope never reaches the queue table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_comes_with_the_recipients_ack_and_nothing_is_queued() {
    let Pair {
        dir: _dir,
        server,
        bob,
        mut a,
        mut b,
        ..
    } = pair("60s").await;

    let rid = a.send_frame(send(&bob, 1, b"held")).await.unwrap();
    let delivered = b.next_deliver().await.unwrap();
    assert_eq!(delivered.ciphertext, b"held");
    assert_eq!(metric(&server, "parley_held_envelopes", &[]).await, 1.0);
    b.ack(delivered.seq).await.unwrap();
    match a.reply_to(rid).await.unwrap() {
        Ok(ServerBody::Accepted(accepted)) => assert_eq!(accepted.seq, delivered.seq),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        metric(&server, "parley_held_settled_total", &[("by", "ack")]).await,
        1.0
    );
    assert_eq!(
        metric(&server, "parley_held_settled_total", &[("by", "commit")]).await,
        0.0
    );
    assert_eq!(metric(&server, "parley_held_envelopes", &[]).await, 0.0);
    // A retry of the same id is answered as the first, from the dedup row written with
    // the ack.
    assert_eq!(
        a.send(bob.address(), id(1), b"held".to_vec())
            .await
            .unwrap(),
        delivered.seq
    );
}

/// An ack settles only the held envelopes it covers: the one after it stays held, its
/// sender unanswered, so a `kill -9` then loses nothing that was `accepted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_settles_only_what_it_covers() {
    let Pair {
        dir,
        server,
        addr,
        url,
        bob,
        mut a,
        mut b,
        ..
    } = pair("60s").await;

    let first = a.send_frame(send(&bob, 1, b"one")).await.unwrap();
    let second = a.send_frame(send(&bob, 2, b"two")).await.unwrap();
    let d1 = b.next_deliver().await.unwrap();
    let d2 = b.next_deliver().await.unwrap();
    b.ack(d1.seq).await.unwrap();
    assert!(matches!(
        a.reply_to(first).await.unwrap(),
        Ok(ServerBody::Accepted(_))
    ));
    assert_eq!(metric(&server, "parley_held_envelopes", &[]).await, 1.0);

    // Bob's client crashed before storing the second; the server is killed.
    server.kill().unwrap();
    let second_accepted = matches!(a.reply_to(second).await, Ok(Ok(ServerBody::Accepted(_))));
    assert!(
        !second_accepted,
        "the second was neither acked nor committed"
    );
    let _server = start(dir.path(), addr, "60s");
    let mut b = login_when_up(&url, &bob).await.unwrap();
    assert!(
        finds_its_queue_empty(&mut b).await,
        "nothing was queued for bob (the second, unaccepted, is the sender's to retry; d2 was {})",
        d2.seq.0
    );
}

/// A recipient that never acks: the envelope is committed at the deadline, `accepted`
/// comes then, and it survives `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_ack_the_envelope_is_committed_at_the_deadline_and_survives_sigkill() {
    let Pair {
        dir,
        server,
        addr,
        url,
        bob,
        mut a,
        mut b,
        ..
    } = pair("200ms").await;

    let seq = a
        .send(bob.address(), id(1), b"kept".to_vec())
        .await
        .unwrap();
    assert_eq!(b.next_deliver().await.unwrap().seq, seq);
    assert_eq!(
        metric(&server, "parley_held_settled_total", &[("by", "commit")]).await,
        1.0
    );

    server.kill().unwrap();
    let _server = start(dir.path(), addr, "200ms");
    let mut b = login_when_up(&url, &bob).await.unwrap();
    let again = b.next_deliver().await.unwrap();
    assert_eq!((again.seq, again.ciphertext), (seq, b"kept".to_vec()));
}

/// A recipient that reconnects while an envelope is held for it reads its queue anew:
/// the read first commits what is held, so the envelope is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_the_queue_first_commits_what_is_held() {
    let Pair {
        dir: _dir,
        server,
        url,
        bob,
        mut a,
        mut b,
        ..
    } = pair("60s").await;

    let rid = a.send_frame(send(&bob, 1, b"one")).await.unwrap();
    let first = b.next_deliver().await.unwrap();
    b.close().await.unwrap();
    let mut b = Client::login(&url, &bob).await.unwrap();
    let again = b.next_deliver().await.unwrap();
    assert_eq!(
        (again.seq, again.id),
        (first.seq, first.id),
        "read from the queue"
    );
    match a.reply_to(rid).await.unwrap() {
        Ok(ServerBody::Accepted(accepted)) => assert_eq!(accepted.seq, first.seq),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        metric(&server, "parley_held_settled_total", &[("by", "commit")]).await,
        1.0
    );
    // Acked now, it leaves the queue: a third connection gets nothing before `drained`.
    b.ack(again.seq).await.unwrap();
    b.close().await.unwrap();
    let mut b = Client::login(&url, &bob).await.unwrap();
    assert!(finds_its_queue_empty(&mut b).await);
}

/// An ack skips the queue's delete only when the queue holds nothing it covers: once
/// the server knows bob's queue is empty (his first ack), an envelope committed at its
/// deadline, and one queued while he was away, are still deleted by his acks, so a later
/// connection gets neither again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_delete_what_was_committed_or_queued_after_the_queue_was_known_empty() {
    let Pair {
        dir: _dir,
        server,
        url,
        bob,
        mut a,
        mut b,
        ..
    } = pair("200ms").await;

    // Held and acked: the ack's delete finds bob's queue empty and the server learns it.
    let rid = a.send_frame(send(&bob, 1, b"one")).await.unwrap();
    let one = b.next_deliver().await.unwrap();
    b.ack(one.seq).await.unwrap();
    assert!(matches!(
        a.reply_to(rid).await.unwrap(),
        Ok(ServerBody::Accepted(_))
    ));

    // Not acked in time: committed to the queue at the deadline, then acked.
    let two = a.send(bob.address(), id(2), b"two".to_vec()).await.unwrap();
    assert_eq!(
        metric(&server, "parley_held_settled_total", &[("by", "commit")]).await,
        1.0
    );
    assert_eq!(b.next_deliver().await.unwrap().seq, two);
    b.ack(two).await.unwrap();
    b.close().await.unwrap();

    // Bob away: queued first; read and acked on his return.
    let three = a
        .send(bob.address(), id(3), b"three".to_vec())
        .await
        .unwrap();
    let mut b = Client::login(&url, &bob).await.unwrap();
    let delivered = b.next_deliver().await.unwrap();
    assert_eq!(
        (delivered.seq, delivered.ciphertext.as_slice()),
        (three, b"three".as_slice()),
        "the envelope committed at the deadline was deleted by its ack"
    );
    b.ack(three).await.unwrap();
    b.close().await.unwrap();

    let mut b = Client::login(&url, &bob).await.unwrap();
    assert!(
        finds_its_queue_empty(&mut b).await,
        "the queued envelope was deleted by its ack"
    );
}

/// The kill -9 history test with holding on and the recipient online, acking each
/// delivery as `parley-sdk` does (the sender waits for each `accepted` before the next
/// send, so a recipient acking every 64 would make each wait for the deadline): the
/// envelopes settle by ack, and by commit at every kill and reconnection. Everything
/// accepted is delivered, none twice to the application, in order. Unlike with holding
/// off, a retry after a crash may reach the recipient's connection twice (the client
/// drops it by id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_envelopes_are_held_loses_nothing_that_was_accepted() {
    let (messages, kills) = if parley_tests::long_tests() {
        (10_000, 20)
    } else {
        (2_000, 5)
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), any_port(), "50ms");
    let (addr, url) = (server.addr, server.url());
    let alice = Arc::new(TestAccount::new(Some("alice"), 1));
    let bob = Arc::new(TestAccount::new(Some("bob"), 1));
    drop(Client::register(&url, &alice).await.unwrap());
    drop(Client::register(&url, &bob).await.unwrap());

    let history = Arc::new(Mutex::new(History::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let receiver = burst::spawn_receiver_acking(
        vec![url.clone()],
        bob.clone(),
        history.clone(),
        stop.clone(),
        1,
    );
    let (progress, sender) = burst::spawn_sender(
        url.clone(),
        alice,
        bob.address(),
        messages,
        16,
        history.clone(),
    );
    let killer = {
        let progress = progress.clone();
        let data_dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut server = server;
            let mut acked = 0.0;
            for k in 1..=kills {
                let at = k * messages / (kills + 1);
                progress.wait_for(at, Duration::from_secs(120)).unwrap();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                acked += runtime.block_on(metric(
                    &server,
                    "parley_held_settled_total",
                    &[("by", "ack")],
                ));
                server.kill().unwrap();
                server = start(&data_dir, addr, "50ms");
            }
            (server, acked)
        })
    };
    let (server, acked) = killer.await.unwrap();
    sender.await.unwrap().unwrap();
    stop.cancel();
    receiver.await.unwrap().unwrap();

    let drained = burst::drain(&url, &bob, &history).await.unwrap();
    let history = history.lock().unwrap();
    assert!(progress.reconnects.load(Ordering::Relaxed) >= kills);
    assert!(
        acked > 0.0,
        "envelopes were held and settled by the recipient's ack"
    );
    assert_eq!(history.accepted_count(), messages);
    assert_eq!(history.check(), Verdict::CLEAN);
    drop((server, drained));
}

/// SIGTERM commits what is held before the store closes: an envelope the recipient
/// received but never acked is delivered again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_what_is_held() {
    let Pair {
        dir,
        server,
        addr,
        url,
        bob,
        mut a,
        mut b,
        ..
    } = pair("60s").await;
    a.send_frame(send(&bob, 1, b"kept")).await.unwrap();
    let first = b.next_deliver().await.unwrap();

    server.signal("TERM").unwrap();
    assert_eq!(b.closed().await.unwrap(), Some(1001));
    let exited_cleanly =
        tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(15)).unwrap())
            .await
            .unwrap();
    assert!(exited_cleanly, "exit status 0 after SIGTERM");

    let _server = start(dir.path(), addr, "60s");
    let mut b = login_when_up(&url, &bob).await.unwrap();
    let again = b.next_deliver().await.unwrap();
    assert_eq!((again.seq, again.ciphertext), (first.seq, b"kept".to_vec()));
}
