//! The SDK's engine against a real server over real WebSockets (here rather than in
//! `sdk/tests/`, so that the SDK does not depend on the server crate).
//! `two_clients_talk_both_ways` runs what the SDK's crate documentation shows.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use parley_protocol::Handle;
use parley_sdk::store::ClientStore;
use parley_sdk::{Client, ClientConfig, Event};
use parley_tests::ServerProcess;
use tokio_util::sync::CancellationToken;

struct Server {
    url: String,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), parley_server::ServerError>>,
}

impl Server {
    /// Stops gracefully and starts again on the same address and data.
    async fn restart(&mut self) {
        self.shutdown.cancel();
        (&mut self.task).await.unwrap().unwrap();
        let addr = self.url.trim_start_matches("ws://").to_owned();
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        self.shutdown = CancellationToken::new();
        let config = parley_server::Config::with_data_dir(self.dir.path());
        self.task = tokio::spawn(parley_server::run(config, listener, self.shutdown.clone()));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let config = parley_server::Config::with_data_dir(dir.path());
    let task = tokio::spawn(parley_server::run(config, listener, shutdown.clone()));
    Server {
        url,
        dir,
        shutdown,
        task,
    }
}

fn handle(name: &str) -> Handle {
    Handle::parse(name).unwrap()
}

async fn registered(url: &str, name: &str) -> Arc<ClientStore> {
    let store = Arc::new(ClientStore::in_memory().unwrap());
    Client::register(&ClientConfig::new(url), store.clone(), Some(handle(name)))
        .await
        .unwrap();
    store
}

/// A started client on `store`.
async fn started(url: &str, store: Arc<ClientStore>) -> Client {
    Client::start(ClientConfig::new(url), store).await.unwrap()
}

/// Alice and Bob, registered and started.
async fn alice_and_bob(url: &str) -> (Client, Client) {
    let alice_store = registered(url, "alice").await;
    let bob_store = registered(url, "bob").await;
    let alice = started(url, alice_store).await;
    let bob = started(url, bob_store).await;
    (alice, bob)
}

/// The next message event, skipping others; None if the engine stopped or nothing came.
async fn next_message(client: &mut Client) -> Option<(Option<Handle>, String)> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .ok()??;
        if let Event::Message { handle, text, .. } = event {
            return Some((handle, text));
        }
    }
}

/// Waits for `drained`, failing on any message before it.
async fn drained_without_messages(client: &mut Client) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .expect("drained in time")
            .expect("engine running")
        {
            Event::Drained => return,
            Event::Message { text, .. } => panic!("unexpected message {text:?}"),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_talk_both_ways() {
    let server = server().await;
    let (mut alice, mut bob) = alice_and_bob(&server.url).await;

    alice.send_text(&handle("bob"), "hi bob").await.unwrap();
    assert_eq!(
        next_message(&mut bob).await,
        Some((Some(handle("alice")), "hi bob".into()))
    );
    bob.send_text(&handle("alice"), "hi alice").await.unwrap();
    assert_eq!(
        next_message(&mut alice).await,
        Some((Some(handle("bob")), "hi alice".into()))
    );
    for n in 0..5 {
        alice
            .send_text(&handle("bob"), &format!("{n}"))
            .await
            .unwrap();
    }
    for n in 0..5 {
        assert_eq!(next_message(&mut bob).await.unwrap().1, format!("{n}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_an_offline_recipient() {
    let server = server().await;
    let alice_store = registered(&server.url, "alice").await;
    let bob_store = registered(&server.url, "bob").await;
    let alice = started(&server.url, alice_store).await;
    for n in 0..3 {
        alice
            .send_text(&handle("bob"), &format!("while you were out {n}"))
            .await
            .unwrap();
    }
    let mut bob = started(&server.url, bob_store).await;
    for n in 0..3 {
        assert_eq!(
            next_message(&mut bob).await.unwrap().1,
            format!("while you were out {n}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_between_decrypt_and_ack_shows_the_message_once() {
    let server = server().await;
    let alice_store = registered(&server.url, "alice").await;
    let bob_store = registered(&server.url, "bob").await;
    let alice = started(&server.url, alice_store).await;
    alice
        .send_text(&handle("bob"), "exactly once")
        .await
        .unwrap();

    // Bob stores the message, shows it, and dies before acknowledging it.
    let mut config = ClientConfig::new(&server.url);
    config.halt_before_ack = true;
    let mut dying = Client::start(config, bob_store.clone()).await.unwrap();
    assert_eq!(next_message(&mut dying).await.unwrap().1, "exactly once");
    assert_eq!(next_message(&mut dying).await, None, "the engine halted");
    dying.stop().await;

    // The server redelivers (no ack came); the restarted client drops it as seen.
    let mut bob = started(&server.url, bob_store.clone()).await;
    drained_without_messages(&mut bob).await;
    let inbox = bob_store.inbox().unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].text, "exactly once");

    // And the session still works in both directions.
    bob.send_text(&handle("alice"), "still here").await.unwrap();
    alice.send_text(&handle("bob"), "good").await.unwrap();
    assert_eq!(next_message(&mut bob).await.unwrap().1, "good");
}

/// Hold, then persist: the crash window. Bob's client stores a held envelope and dies
/// before acking it; the server is killed (`kill -9`) before the deadline, so the
/// envelope was never committed nor `accepted`. Alice's client sends it again (same id)
/// on its next connection; it is stored under a new seq and delivered to Bob again, and
/// his client drops it as seen: shown once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_envelope_delivered_again_after_a_server_crash_is_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let hold = ["--hold-deadline", "60s"];
    let server = ServerProcess::start(dir.path(), "127.0.0.1:0".parse().unwrap(), &hold).unwrap();
    let (addr, url) = (server.addr, server.url());
    let alice_store = registered(&url, "alice").await;
    let bob_store = registered(&url, "bob").await;
    let alice = started(&url, alice_store).await;
    let mut config = ClientConfig::new(&url);
    config.halt_before_ack = true;
    let mut dying = Client::start(config, bob_store.clone()).await.unwrap();
    drained_without_messages(&mut dying).await;

    let sending = tokio::spawn(async move {
        let sent = alice.send_text(&handle("bob"), "exactly once").await;
        (alice, sent)
    });
    assert_eq!(next_message(&mut dying).await.unwrap().1, "exactly once");
    assert_eq!(next_message(&mut dying).await, None, "the engine halted");
    dying.stop().await;
    assert!(
        !sending.is_finished(),
        "held and never acked: no `accepted` yet"
    );

    server.kill().unwrap();
    let _server = ServerProcess::start(dir.path(), addr, &hold).unwrap();
    let (_alice, sent) = tokio::time::timeout(Duration::from_secs(60), sending)
        .await
        .expect("alice's client sent it again")
        .unwrap();
    sent.expect("accepted on the new connection");

    let mut bob = started(&url, bob_store.clone()).await;
    drained_without_messages(&mut bob).await;
    let inbox = bob_store.inbox().unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].text, "exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do() {
    let server = server().await;
    let alice_store = registered(&server.url, "alice").await;
    let alice = started(&server.url, alice_store.clone()).await;
    let err = alice.send_text(&handle("nobody"), "?").await.unwrap_err();
    assert_eq!(err.to_string(), "no such user: @nobody");

    let fresh = Arc::new(ClientStore::in_memory().unwrap());
    let err = Client::start(ClientConfig::new(&server.url), fresh)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("parley register"), "{err}");

    let err = Client::start(ClientConfig::new("ws://127.0.0.1:1"), alice_store)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("server unreachable at ws://127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_after_the_server_restarts() {
    let mut server = server().await;
    let (mut alice, mut bob) = alice_and_bob(&server.url).await;
    alice.send_text(&handle("bob"), "before").await.unwrap();
    assert_eq!(next_message(&mut bob).await.unwrap().1, "before");

    server.restart().await;
    // The send waits for the engine to reconnect, then goes through.
    tokio::time::timeout(
        Duration::from_secs(20),
        alice.send_text(&handle("bob"), "after"),
    )
    .await
    .expect("reconnected in time")
    .unwrap();
    assert_eq!(next_message(&mut bob).await.unwrap().1, "after");
    let mut reconnected = false;
    while let Some(event) = alice.try_next_event() {
        reconnected |= matches!(
            event,
            Event::Connection(parley_sdk::ConnectionState::Reconnecting { .. })
        );
    }
    assert!(reconnected, "alice saw the connection drop and come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_registration_is_resumed_with_the_same_identity() {
    let server = server().await;
    let store = Arc::new(ClientStore::in_memory().unwrap());
    let err = Client::register(
        &ClientConfig::new("ws://127.0.0.1:1"),
        store.clone(),
        Some(handle("alice")),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("server unreachable"), "{err}");
    let pending = store.identity().unwrap().unwrap();
    assert!(pending.pending);
    assert!(matches!(
        Client::start(ClientConfig::new(&server.url), store.clone()).await,
        Err(parley_sdk::SdkError::NotRegistered)
    ));

    let profile = Client::register(
        &ClientConfig::new(&server.url),
        store.clone(),
        Some(handle("alice")),
    )
    .await
    .unwrap();
    assert_eq!(
        profile.account, pending.profile.account,
        "the stored key was reused"
    );
    assert!(!store.identity().unwrap().unwrap().pending);
    started(&server.url, store).await;
}

/// Beside the process that holds a profile, a reader sees its store but can neither
/// write nor start a second engine on it.
#[tokio::test]
async fn a_profile_in_use_can_be_read_beside_but_not_connected_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.db");
    let holder = ClientStore::open(&path).unwrap();
    let reader = ClientStore::open_read_only(&path).unwrap();
    assert!(reader.is_read_only() && !holder.is_read_only());
    assert_eq!(reader.contacts().unwrap(), holder.contacts().unwrap());
    assert!(
        reader.forget_identity().is_err(),
        "a read-only store refuses writes"
    );
    let reader = Arc::new(reader);
    assert!(matches!(
        Client::start(ClientConfig::new("ws://127.0.0.1:9"), reader.clone()).await,
        Err(parley_sdk::SdkError::ProfileInUse)
    ));
    assert!(matches!(
        Client::register(&ClientConfig::new("ws://127.0.0.1:9"), reader, None).await,
        Err(parley_sdk::SdkError::ProfileInUse)
    ));
}
