//! Failover between servers with the SDK and the CLI, through real server processes.
//!
//! Two independent single-node servers cannot share accounts, so "another node" here is
//! the same data directory served at another address: the server process listens on
//! `127.0.0.1:P`, and when it is SIGKILLed it comes back on `127.0.0.2:P` (then on
//! `127.0.0.1:P` again...), both URLs in the clients' list. A dead URL is port 1.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_protocol::e2e::content::{Content, Text};
use parley_protocol::Handle;
use parley_sdk::store::ClientStore;
use parley_sdk::{
    Client, ClientConfig, ConnectionState, Event, Outgoing, Peer, SdkError, ServerList,
};
use parley_tests::burst::SenderProgress;
use parley_tests::cli::CliUser;
use parley_tests::history::Verdict;
use parley_tests::{long_tests, History, ServerProcess};

/// Sends in the burst (PR tier; the long tier sends 3 000).
const BURST: usize = 600;
/// SIGKILLs during the burst (PR tier; the long tier kills 10 times).
const KILLS: usize = 3;
/// Longest wait for anything the test waits on (a restart, an event, a send).
const LIMIT: Duration = Duration::from_secs(60);
/// A URL nothing listens on.
const DEAD: &str = "ws://127.0.0.1:1";

const CLEAN: Verdict = Verdict {
    lost: 0,
    duplicated: 0,
    reordered: 0,
    unconfirmed: 0,
};

fn handle(name: &str) -> Handle {
    Handle::parse(name).unwrap()
}

/// A server process on `127.0.0.1:0`.
fn server(dir: &std::path::Path) -> ServerProcess {
    ServerProcess::start(dir, "127.0.0.1:0".parse().unwrap(), &[]).unwrap()
}

/// The same port on the other loopback address: where the server comes back.
fn twin(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new([127, 0, 0, 2].into(), addr.port())
}

fn config(addrs: &[SocketAddr]) -> ClientConfig {
    ClientConfig::with_servers(ServerList::new(addrs.iter().map(|a| format!("ws://{a}"))).unwrap())
}

async fn registered(config: &ClientConfig, name: &str) -> Arc<ClientStore> {
    let store = Arc::new(ClientStore::in_memory().unwrap());
    Client::register(config, store.clone(), Some(handle(name)))
        .await
        .unwrap();
    store
}

/// The first event `pick` takes, within [`LIMIT`].
async fn next<T>(client: &mut Client, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .expect("the event came in time")
            .expect("the engine runs");
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

/// The next message's text.
async fn next_text(client: &mut Client) -> String {
    next(client, |e| match e {
        Event::Message { text, .. } => Some(text),
        _ => None,
    })
    .await
}

/// Starts `store`'s client again and checks that it shows nothing new: every
/// redelivery is dropped as seen.
async fn nothing_shown_again(config: &ClientConfig, store: Arc<ClientStore>) {
    let mut client = Client::start(config.clone(), store).await.unwrap();
    next(&mut client, |e| match e {
        Event::Drained => Some(()),
        Event::Message { text, .. } => panic!("shown again: {text:?}"),
        _ => None,
    })
    .await;
    client.stop().await;
}

/// Polls `condition` until it holds, failing after [`LIMIT`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_first_in_the_list_is_skipped_by_the_sdk_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let config =
        ClientConfig::with_servers(ServerList::new([DEAD.to_owned(), server.url()]).unwrap());
    let alice_store = registered(&config, "alice").await;
    let bob_store = registered(&config, "bob").await;
    let alice = Client::start(config.clone(), alice_store).await.unwrap();
    let mut bob = Client::start(config.clone(), bob_store).await.unwrap();
    alice
        .send_text(&handle("bob"), "through the second")
        .await
        .unwrap();
    assert_eq!(next_text(&mut bob).await, "through the second");

    // The CLI, given the same list as one comma-separated --server.
    let home = tempfile::tempdir().unwrap();
    let carol = CliUser::new(home.path(), "carol", &format!("{DEAD},{}", server.url())).unwrap();
    carol.run(&["register", "carol"]);
    carol.run(&["send", "bob", "from the cli"]);
    assert_eq!(next_text(&mut bob).await, "from the cli");

    // No server at all: start fails at once, naming every URL.
    let nowhere = ClientConfig::new(format!("{DEAD},ws://127.0.0.2:1"));
    let store = alice.store().clone();
    let err = Client::start(nowhere, store).await.unwrap_err();
    assert!(matches!(err, SdkError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("server unreachable at ws://127.0.0.1:1, ws://127.0.0.2:1: "),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_the_sdk_fails_over_and_shows_every_accepted_send_once_in_order() {
    let (messages, kills) = if long_tests() {
        (3_000, 10)
    } else {
        (BURST, KILLS)
    };
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let addrs = [server.addr, twin(server.addr)];
    let config = config(&addrs);
    let alice_store = registered(&config, "alice").await;
    let bob_store = registered(&config, "bob").await;
    let alice = Client::start(config.clone(), alice_store.clone())
        .await
        .unwrap();
    let bob = Client::start(config.clone(), bob_store.clone())
        .await
        .unwrap();
    let history = Arc::new(Mutex::new(History::default()));
    let progress = SenderProgress::default();

    // Alice: one send after the other; each must come back accepted, through any kill.
    let sender = {
        let (history, progress) = (history.clone(), progress.clone());
        tokio::spawn(async move {
            let mut alice = alice;
            let mut connected = 0;
            for n in 0..messages {
                let id = alice
                    .send_text(&handle("bob"), &format!("burst {n}"))
                    .await
                    .unwrap_or_else(|e| panic!("send {n}: {e}"));
                history.lock().unwrap().accepted(id);
                progress.accepted.store(n + 1, Ordering::Release);
                while let Some(event) = alice.try_next_event() {
                    connected += usize::from(matches!(
                        event,
                        Event::Connection(ConnectionState::Connected)
                    ));
                }
            }
            alice.stop().await;
            connected
        })
    };
    // Bob: what his application is shown, until every message was.
    let receiver = {
        let history = history.clone();
        tokio::spawn(async move {
            let mut bob = bob;
            let mut shown = 0;
            let mut shown_twice = 0;
            while shown < messages {
                let id = next(&mut bob, |e| match e {
                    Event::Message { id, .. } => Some(id),
                    _ => None,
                })
                .await;
                if history.lock().unwrap().delivered(id) {
                    shown += 1;
                } else {
                    shown_twice += 1;
                }
            }
            bob.stop().await;
            shown_twice
        })
    };
    // The killer: SIGKILL at evenly spaced points, back at the list's other address.
    let killer = {
        let progress = progress.clone();
        let data_dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut server = server;
            for k in 1..=kills {
                progress
                    .wait_for(k * messages / (kills + 1), LIMIT)
                    .unwrap();
                server.kill().unwrap();
                server = ServerProcess::start(&data_dir, addrs[k % 2], &[]).unwrap();
            }
            server
        })
    };
    let server = killer.await.unwrap();
    let connected = tokio::time::timeout(LIMIT * 5, sender)
        .await
        .expect("the burst finished")
        .unwrap();
    let shown_twice = tokio::time::timeout(LIMIT * 5, receiver)
        .await
        .expect("everything arrived")
        .unwrap();

    assert!(
        connected > kills,
        "alice connected {connected} times: once, then after every kill"
    );
    assert_eq!(shown_twice, 0, "no message shown twice");
    {
        let history = history.lock().unwrap();
        assert_eq!(history.accepted_count(), messages);
        assert_eq!(history.check(), CLEAN);
    }
    assert!(
        alice_store.outbox().unwrap().is_empty(),
        "nothing left to send"
    );
    assert_eq!(bob_store.inbox().unwrap().len(), messages);
    nothing_shown_again(&config, bob_store).await;
    println!("{messages} sends, {kills} SIGKILLs, alice connected {connected} times");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_the_dead_server_never_answered_is_answered_by_its_retry_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let addrs = [server.addr, twin(server.addr)];
    let config = config(&addrs);
    let alice_store = registered(&config, "alice").await;
    let bob_store = registered(&config, "bob").await;
    let alice = Client::start(config.clone(), alice_store.clone())
        .await
        .unwrap();
    alice.send_text(&handle("bob"), "before").await.unwrap();

    // The server stops reading; the send (to an account with a session already: no
    // lookups) is encrypted, stored and written, and stays unanswered.
    let bob_account = bob_store.identity().unwrap().unwrap().profile.account;
    server.signal("STOP").unwrap();
    let sending = tokio::spawn(async move {
        let sent = alice
            .send_content(Outgoing {
                to: Peer::Account(bob_account),
                content: Content::Text(Text {
                    body: "retried".into(),
                    sender_handle: Some(handle("alice")),
                    category: None,
                }),
                category: None,
                id: None,
            })
            .await;
        (alice, sent)
    });
    let mut queued = None;
    until("the send is in the outbox", || {
        queued = alice_store.outbox().unwrap().first().map(|e| e.id);
        queued.is_some()
    })
    .await;
    // It dies unanswered, and comes back at the other address.
    let data_dir = dir.path().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        server.kill().unwrap();
        ServerProcess::start(&data_dir, addrs[1], &[]).unwrap()
    })
    .await
    .unwrap();
    let (alice, sent) = tokio::time::timeout(LIMIT, sending)
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(
        sent.unwrap(),
        queued.unwrap(),
        "the retry kept the message id"
    );
    assert!(alice_store.outbox().unwrap().is_empty());

    let mut bob = Client::start(config.clone(), bob_store.clone())
        .await
        .unwrap();
    assert_eq!(next_text(&mut bob).await, "before");
    assert_eq!(next_text(&mut bob).await, "retried");
    bob.stop().await;
    assert_eq!(bob_store.inbox().unwrap().len(), 2);
    nothing_shown_again(&config, bob_store).await;
    alice.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_commands_fail_at_once_and_the_client_comes_back_later() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let addrs = [server.addr, twin(server.addr)];
    let mut config = config(&addrs);
    config.failover.give_up_after = Duration::from_secs(1);
    let alice_store = registered(&config, "alice").await;
    let bob_store = registered(&config, "bob").await;
    let mut alice = Client::start(config.clone(), alice_store).await.unwrap();
    alice.send_text(&handle("bob"), "before").await.unwrap();

    let killed = Instant::now();
    tokio::task::spawn_blocking(move || server.kill().unwrap())
        .await
        .unwrap();
    next(&mut alice, |e| match e {
        Event::Connection(ConnectionState::Unreachable { .. }) => Some(()),
        _ => None,
    })
    .await;
    assert!(killed.elapsed() >= config.failover.give_up_after);
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        alice.send_text(&handle("bob"), "during"),
    )
    .await
    .expect("refused at once")
    .unwrap_err();
    let both = format!("ws://{}, ws://{}", addrs[0], addrs[1]);
    assert!(
        matches!(&err, SdkError::Unreachable { url, .. } if *url == both),
        "{err}"
    );

    // The engine kept trying: it is back as soon as a server is.
    let data_dir = dir.path().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(&data_dir, addrs[1], &[]).unwrap()
    })
    .await
    .unwrap();
    next(&mut alice, |e| {
        matches!(e, Event::Connection(ConnectionState::Connected)).then_some(())
    })
    .await;
    alice.send_text(&handle("bob"), "after").await.unwrap();

    let mut bob = Client::start(config.clone(), bob_store).await.unwrap();
    assert_eq!(next_text(&mut bob).await, "before");
    assert_eq!(next_text(&mut bob).await, "after");
    bob.stop().await;
    alice.stop().await;
    drop(server);
}
