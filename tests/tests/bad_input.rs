//! Hostile and broken input: every case gets its error code or close code, and nobody
//! else notices.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use parley_protocol::ids::{MessageId, RequestId};
use parley_protocol::limits::MAX_FRAME_BYTES;
use parley_protocol::wire::client::{Ack, ClientBody, ResolveHandle};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::{self, ClientFrame, CloseCode, ErrorCode};
use parley_protocol::{Handle, Seq};
use parley_tests::{Client, TestAccount, TestServer};
use tokio_tungstenite::tungstenite::{Bytes, Message};

async fn registered(server: &TestServer, handle: &str) -> (TestAccount, Client) {
    let account = TestAccount::new(Some(handle), 1);
    let client = Client::register(&server.url(), &account).await.unwrap();
    (account, client)
}

/// A bystander keeps working while others misbehave.
async fn bystander_still_works(client: &mut Client) {
    let reply = client
        .request(ClientBody::ResolveHandle(ResolveHandle {
            handle: Handle::parse("bystander").unwrap(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Ok(ServerBody::Resolved(_))), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_then_close_1007() {
    let server = TestServer::start().await.unwrap();
    let (_, mut bystander) = registered(&server, "bystander").await;
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xc1],                         // never-used MessagePack byte
        vec![0xdf, 0xff, 0xff, 0xff, 0xff], // map with 2^32-1 entries, no data
        vec![0x93, 0x01, 0x02, 0x03],       // an array, not a frame
        b"\x83\xa1v\x01\xa3rid\x01\xa4body\x81\xa4nope\x80".to_vec(), // unknown kind
    ];
    for bytes in cases {
        for authenticated in [false, true] {
            let mut c = if authenticated {
                registered(&server, &format!("u{}", rand_handle())).await.1
            } else {
                Client::connect(&server.url()).await.unwrap()
            };
            c.send_raw(Message::Binary(Bytes::from(bytes.clone())))
                .await
                .unwrap();
            loop {
                match c.next_frame().await.unwrap().body {
                    ServerBody::Error(e) => {
                        assert_eq!(e.code, ErrorCode::MalformedFrame);
                        break;
                    }
                    ServerBody::Drained(_) => continue,
                    other => panic!("expected an error for {bytes:02x?}, got {other:?}"),
                }
            }
            assert_eq!(
                c.closed().await.unwrap(),
                Some(CloseCode::InvalidPayload.code())
            );
        }
    }
    bystander_still_works(&mut bystander).await;
}

fn rand_handle() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64() % 1_000_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_version_is_refused_with_1002() {
    let server = TestServer::start().await.unwrap();
    let mut c = Client::connect(&server.url()).await.unwrap();
    let mut frame = ClientFrame::new(RequestId(1), ClientBody::Ack(Ack { through: Seq(1) }));
    frame.v = 9;
    c.send_raw(Message::Binary(Bytes::from(
        wire::encode_client(&frame).unwrap(),
    )))
    .await
    .unwrap();
    match c.next_frame().await.unwrap().body {
        ServerBody::Error(e) => assert_eq!(e.code, ErrorCode::UnsupportedVersion),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        c.closed().await.unwrap(),
        Some(CloseCode::ProtocolError.code())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_closed_with_1009() {
    let server = TestServer::start().await.unwrap();
    let (_, mut bystander) = registered(&server, "bystander").await;
    let (_, mut c) = registered(&server, "big").await;
    c.send_raw(Message::Binary(Bytes::from(vec![0u8; MAX_FRAME_BYTES + 1])))
        .await
        .unwrap();
    assert_eq!(
        c.closed().await.unwrap(),
        Some(CloseCode::MessageTooBig.code())
    );
    bystander_still_works(&mut bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_is_closed_with_1003() {
    let server = TestServer::start().await.unwrap();
    let mut c = Client::connect(&server.url()).await.unwrap();
    c.send_raw(Message::text("hello")).await.unwrap();
    assert_eq!(
        c.closed().await.unwrap(),
        Some(CloseCode::UnsupportedData.code())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_authentication_are_refused_but_the_connection_may_still_log_in() {
    let server = TestServer::start().await.unwrap();
    let bob = TestAccount::new(Some("bob"), 1);
    drop(Client::register(&server.url(), &bob).await.unwrap());
    let mut c = Client::connect(&server.url()).await.unwrap();
    let reply = c
        .request(ClientBody::Send(parley_protocol::wire::client::Send {
            to: bob.address(),
            id: MessageId([1; 16]),
            ciphertext: vec![1],
            category: None,
            receipt: false,
        }))
        .await
        .unwrap();
    assert_eq!(
        Client::error_code(&reply),
        Some(ErrorCode::NotAuthenticated)
    );
    let reply = c.request(bob.auth_body(&c.hello)).await.unwrap();
    assert!(matches!(reply, Ok(ServerBody::Authenticated(_))));
    // And a second auth on an authenticated connection is refused.
    let reply = c.request(bob.auth_body(&c.hello)).await.unwrap();
    assert_eq!(
        Client::error_code(&reply),
        Some(ErrorCode::AlreadyAuthenticated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_authentication_before_the_deadline_closes_with_4000() {
    let server = TestServer::start_with(|c| c.auth_timeout = Duration::from_millis(200))
        .await
        .unwrap();
    let mut c = Client::connect(&server.url()).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        c.closed().await.unwrap(),
        Some(CloseCode::AuthTimeout.code())
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_the_same_device_displaces_the_first_with_4002() {
    let server = TestServer::start().await.unwrap();
    let (alice, mut first) = registered(&server, "alice").await;
    let mut second = Client::login(&server.url(), &alice).await.unwrap();
    assert_eq!(
        first.closed().await.unwrap(),
        Some(CloseCode::Displaced.code())
    );
    // The queue goes to the new connection.
    let (_, mut bob) = registered(&server, "bob").await;
    bob.send(
        alice.address(),
        MessageId([4; 16]),
        b"to the new one".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        second.next_deliver().await.unwrap().ciphertext,
        b"to the new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_address() {
    let server = TestServer::start_with(|c| c.registrations_per_ip_per_hour = 2)
        .await
        .unwrap();
    for n in 0..2 {
        drop(registered(&server, &format!("user{n}")).await);
    }
    let extra = TestAccount::new(Some("user3"), 1);
    let mut c = Client::connect(&server.url()).await.unwrap();
    let reply = c.request(extra.register_body(&c.hello)).await.unwrap();
    let error = reply.expect_err("third registration refused");
    assert_eq!(error.code, ErrorCode::RateLimited);
    assert!(error.retry_after_ms.is_some_and(|ms| ms > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited() {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 2)
        .await
        .unwrap();
    let _one = Client::connect(&server.url()).await.unwrap();
    let _two = Client::connect(&server.url()).await.unwrap();
    assert!(Client::connect(&server.url()).await.is_err());
    drop(_one);
    // The slot frees once the server notices the first connection is gone.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Client::connect(&server.url()).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a freed slot is usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_clients_with_1001_and_keeps_the_queue() {
    let server = TestServer::start().await.unwrap();
    let (_alice, mut a) = registered(&server, "alice").await;
    let bob = TestAccount::new(Some("bob"), 1);
    drop(Client::register(&server.url(), &bob).await.unwrap());
    a.send(bob.address(), MessageId([9; 16]), b"kept".to_vec())
        .await
        .unwrap();
    let url = server.url();
    let stopping = tokio::spawn(server.stop());
    assert_eq!(a.closed().await.unwrap(), Some(CloseCode::GoingAway.code()));
    let dir = stopping.await.unwrap().unwrap();
    assert!(Client::connect(&url).await.is_err(), "no longer accepting");

    let server = TestServer::start_in(dir, |_| {}).await.unwrap();
    let mut b = Client::login(&server.url(), &bob).await.unwrap();
    assert_eq!(b.next_deliver().await.unwrap().ciphertext, b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_closed_with_4004() {
    let server = TestServer::start_with(|c| c.keepalive_interval = Duration::from_millis(200))
        .await
        .unwrap();
    let (_, mut silent) = registered(&server, "silent").await;
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        silent.closed().await.unwrap(),
        Some(CloseCode::KeepaliveTimeout.code())
    );
}

/// Regression: a client's close frame was never answered (the server dropped the socket
/// with tungstenite's queued reply unsent), and a forbidden close code got no 1002.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_client_close_is_answered_with_its_code_or_1002() {
    use parley_tests::raw_ws::{opcode, Ending, RawFrame, RawWs};
    let server = TestServer::start().await.unwrap();
    for (code, expected) in [(1000u16, 1000u16), (4321, 4321), (5000, 1002), (1005, 1002)] {
        let mut ws = RawWs::connect(server.addr).await.unwrap();
        ws.send(&RawFrame::new(opcode::CLOSE, code.to_be_bytes().to_vec()))
            .await
            .unwrap();
        let (ending, _) = ws.ending(Duration::from_secs(1)).await.unwrap();
        assert_eq!(ending, Ending::Close(expected), "client close {code}");
    }
}

/// Regression: a frame whose unknown key held a value nested 80 000 arrays deep made the
/// decoder recurse past the worker thread's stack while skipping it: the whole server
/// process aborted. Nesting is now bounded (`limits::MAX_NESTING_DEPTH`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_deeply_nested_frame_is_malformed_and_the_server_lives_on() {
    let server = TestServer::start().await.unwrap();
    let (_, mut bystander) = registered(&server, "bystander").await;
    let mut bytes = b"\x84\xa1v\x01\xa3rid\x01\xa4body\x81\xa3ack\x81\xa7through\x01\xa1x".to_vec();
    bytes.extend(std::iter::repeat_n(0x91, MAX_FRAME_BYTES - bytes.len() - 1));
    bytes.push(0x00);
    for authenticated in [false, true] {
        let mut c = if authenticated {
            registered(&server, &format!("u{}", rand_handle())).await.1
        } else {
            Client::connect(&server.url()).await.unwrap()
        };
        c.send_raw(Message::Binary(Bytes::from(bytes.clone())))
            .await
            .unwrap();
        loop {
            match c.next_frame().await.unwrap().body {
                ServerBody::Error(e) => {
                    assert_eq!(e.code, ErrorCode::MalformedFrame);
                    break;
                }
                ServerBody::Drained(_) => continue,
                other => panic!("expected an error, got {other:?}"),
            }
        }
        assert_eq!(
            c.closed().await.unwrap(),
            Some(CloseCode::InvalidPayload.code())
        );
    }
    bystander_still_works(&mut bystander).await;
}
