//! The core against a scripted server over an in-memory pipe: real WebSocket framing,
//! no socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::SinkExt;
use parley_protocol::auth::auth_transcript;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{
    AccountId, DeviceAddress, DeviceId, MessageId, Nonce, RequestId, Seq, ServerId,
};
use parley_protocol::limits::MAX_FRAME_BYTES;
use parley_protocol::signature;
use parley_protocol::wire::client::{Ack, ClientBody, ResolveHandle};
use parley_protocol::wire::server::{
    Authenticated as AuthenticatedBody, Deliver, Done, Drained, ErrorBody, Hello, ServerBody,
};
use parley_protocol::wire::{self, ClientFrame, ErrorCode, ServerFrame};
use parley_protocol::Handle;
use rand_core::OsRng;
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use super::*;

/// The server's end of the pipe, driven by each test.
struct Script {
    ws: WebSocketStream<DuplexStream>,
}

impl Script {
    async fn send(&mut self, frame: ServerFrame) {
        let bytes = wire::encode_server(&frame).unwrap();
        self.ws
            .send(Message::Binary(Bytes::from(bytes)))
            .await
            .unwrap();
    }

    async fn hello(&mut self) -> Hello {
        let hello = Hello {
            server_id: ServerId([7; 32]),
            nonce: Nonce([9; 32]),
            max_envelope_bytes: 65536,
            auth_timeout_ms: 10_000,
        };
        self.send(ServerFrame::push(ServerBody::Hello(hello.clone())))
            .await;
        hello
    }

    async fn receive(&mut self) -> ClientFrame {
        let bytes = next_binary(&mut self.ws, || {}).await.unwrap();
        wire::decode_client(&bytes).unwrap()
    }

    /// Reads an `auth` and answers `authenticated` if its signature is right, else
    /// `auth_failed`.
    async fn answer_login(&mut self, hello: &Hello) {
        let frame = self.receive().await;
        let ClientBody::Auth(auth) = frame.body else {
            panic!("expected auth, got {:?}", frame.body)
        };
        let transcript = auth_transcript(&hello.server_id, &hello.nonce, &auth.address);
        let body = match signature::verify(&auth.address.account, &transcript, &auth.signature) {
            Ok(()) => ServerBody::Authenticated(AuthenticatedBody {
                address: auth.address,
                one_time_prekeys: 0,
            }),
            Err(_) => ServerBody::Error(ErrorBody {
                code: ErrorCode::AuthFailed,
                message: "authentication failed".into(),
                retry_after_ms: None,
                devices: Vec::new(),
            }),
        };
        self.send(ServerFrame::reply(frame.rid, body)).await;
    }
}

/// Reads one request, then sends `before`, the reply `done` to it, and `after`.
async fn answer_between(
    mut script: Script,
    before: Vec<ServerFrame>,
    after: Vec<ServerFrame>,
) -> Script {
    let request = script.receive().await;
    for frame in before {
        script.send(frame).await;
    }
    script
        .send(ServerFrame::reply(request.rid, ServerBody::Done(Done {})))
        .await;
    for frame in after {
        script.send(frame).await;
    }
    script
}

/// A client WebSocket and the script of the server it talks to.
async fn pipe() -> (WebSocketStream<DuplexStream>, Script) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let client =
        WebSocketStream::from_raw_socket(client, Role::Client, Some(websocket_config())).await;
    let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
    (client, Script { ws: server })
}

fn quick() -> WireLimits {
    WireLimits {
        reply_timeout: Duration::from_millis(300),
        ..WireLimits::default()
    }
}

fn deliver(seq: u64) -> ServerBody {
    ServerBody::Deliver(Deliver {
        seq: Seq(seq),
        from: DeviceAddress {
            account: AccountId([3; 32]),
            device: DeviceId::PRIMARY,
        },
        id: MessageId([4; 16]),
        sent_at_ms: 1,
        ciphertext: vec![5; 10],
        category: None,
    })
}

fn resolve() -> ClientBody {
    ClientBody::ResolveHandle(ResolveHandle {
        handle: Handle::parse("alice").unwrap(),
    })
}

/// Logs in as `device` of a fresh identity, within `limits`, against a script that
/// answers correctly.
async fn logged_in_as(
    device: DeviceId,
    limits: WireLimits,
) -> (Authenticated<DuplexStream>, IdentityKeyPair, Script) {
    let (socket, mut script) = pipe().await;
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let server = tokio::spawn(async move {
        let hello = script.hello().await;
        script.answer_login(&hello).await;
        script
    });
    let conn = Unauthenticated::start(socket, limits)
        .await
        .unwrap()
        .login(&identity, device)
        .await
        .unwrap();
    (conn, identity, server.await.unwrap())
}

async fn logged_in() -> (Authenticated<DuplexStream>, Script) {
    let (conn, _, script) = logged_in_as(DeviceId::PRIMARY, quick()).await;
    (conn, script)
}

#[tokio::test]
async fn the_login_exchange_signs_the_challenge_and_yields_an_authenticated_connection() {
    // The script answers `authenticated` only to a signature over its challenge.
    let (conn, identity, _script) = logged_in_as(DeviceId(3), quick()).await;
    assert_eq!(
        conn.address(),
        DeviceAddress {
            account: identity.account_id(),
            device: DeviceId(3),
        },
        "the address the server confirmed"
    );
}

#[tokio::test]
async fn a_refused_login_is_the_servers_error_not_a_connection_failure() {
    let (socket, mut script) = pipe().await;
    let server = tokio::spawn(async move {
        let mut hello = script.hello().await;
        // The script checks against another challenge: the signature cannot match.
        hello.nonce = Nonce([0; 32]);
        script.answer_login(&hello).await;
    });
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let refused = Unauthenticated::start(socket, quick())
        .await
        .unwrap()
        .login(&identity, DeviceId::PRIMARY)
        .await
        .unwrap_err();
    server.await.unwrap();
    match &refused {
        WireError::Refused(e) => assert_eq!(e.code, ErrorCode::AuthFailed),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!refused.is_connection_error());
}

#[tokio::test]
async fn a_first_frame_other_than_hello_is_refused() {
    let (socket, mut script) = pipe().await;
    script
        .send(ServerFrame::push(ServerBody::Drained(Drained {
            through: Seq(0),
        })))
        .await;
    let error = Unauthenticated::start(socket, quick()).await.unwrap_err();
    assert!(
        matches!(&error, WireError::Unexpected(m) if m.starts_with("expected hello")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_reply_is_matched_by_request_id_and_a_push_in_between_is_kept() {
    let (mut conn, script) = logged_in().await;
    // A push, then a reply to a request nobody sent, before the awaited reply.
    let stray = ServerFrame::reply(RequestId(u32::MAX), ServerBody::Done(Done {}));
    let server = tokio::spawn(answer_between(
        script,
        vec![ServerFrame::push(deliver(1)), stray],
        vec![ServerFrame::push(deliver(2))],
    ));
    let reply = conn.request(resolve()).await.unwrap();
    assert_eq!(reply, Ok(ServerBody::Done(Done {})));
    // The push that came before the reply first, the stray reply dropped, then the next.
    assert_eq!(conn.next_push().await.unwrap(), deliver(1));
    assert_eq!(conn.next_push().await.unwrap(), deliver(2));
    drop(server.await.unwrap());
}

#[tokio::test]
async fn replies_to_requests_sent_ahead_are_found_in_any_order() {
    let (mut conn, mut script) = logged_in().await;
    let first = conn.send(resolve()).await.unwrap();
    let second = conn.send(resolve()).await.unwrap();
    assert_ne!(first, second, "fresh request ids");
    let (a, b) = (script.receive().await, script.receive().await);
    script
        .send(ServerFrame::reply(
            b.rid,
            ServerBody::Error(ErrorBody {
                code: ErrorCode::NotFound,
                message: "no".into(),
                retry_after_ms: None,
                devices: Vec::new(),
            }),
        ))
        .await;
    script
        .send(ServerFrame::reply(a.rid, ServerBody::Done(Done {})))
        .await;
    assert_eq!(
        conn.reply_to(first).await.unwrap(),
        Ok(ServerBody::Done(Done {}))
    );
    let refused = conn.reply_to(second).await.unwrap().unwrap_err();
    assert_eq!(
        refused.code,
        ErrorCode::NotFound,
        "an error reply is a reply"
    );
}

#[tokio::test]
async fn an_ack_is_sent_without_waiting() {
    let (mut conn, mut script) = logged_in().await;
    conn.send(ClientBody::Ack(Ack { through: Seq(4) }))
        .await
        .unwrap();
    assert_eq!(
        script.receive().await.body,
        ClientBody::Ack(Ack { through: Seq(4) })
    );
}

#[tokio::test]
async fn a_silent_server_times_the_request_out() {
    let (mut conn, _script) = logged_in().await;
    let error = conn.request(resolve()).await.unwrap_err();
    assert!(matches!(error, WireError::TimedOut(_)), "{error:?}");
    assert!(error.is_connection_error());
}

#[tokio::test]
async fn a_message_over_the_frame_limit_is_refused_unread() {
    let (mut conn, mut script) = logged_in().await;
    let server = tokio::spawn(async move {
        let oversized = vec![0x90; MAX_FRAME_BYTES + 1];
        script
            .ws
            .send(Message::Binary(Bytes::from(oversized)))
            .await
            .unwrap();
        script
    });
    let error = conn.next_push().await.unwrap_err();
    assert!(
        matches!(
            error,
            WireError::TooLarge {
                size,
                limit: MAX_FRAME_BYTES
            } if size > MAX_FRAME_BYTES
        ),
        "{error:?}"
    );
    assert!(error.is_connection_error());
    drop(server.await.unwrap());
}

#[tokio::test]
async fn too_many_pushes_while_waiting_end_the_connection() {
    let limits = WireLimits {
        max_buffered_frames: 3,
        ..quick()
    };
    let (mut conn, _, script) = logged_in_as(DeviceId::PRIMARY, limits).await;
    let pushes = (1..=4).map(|seq| ServerFrame::push(deliver(seq))).collect();
    let server = tokio::spawn(answer_between(script, pushes, Vec::new()));
    let error = conn.request(resolve()).await.unwrap_err();
    assert!(matches!(error, WireError::TooManyBuffered(3)), "{error:?}");
    drop(server.await.unwrap());
}

#[tokio::test]
async fn a_close_carries_the_servers_code_and_a_text_message_is_a_violation() {
    let (mut conn, mut script) = logged_in().await;
    script.ws.send(Message::Text("hi".into())).await.unwrap();
    let error = conn.next_push().await.unwrap_err();
    assert!(matches!(error, WireError::Unexpected(_)), "{error:?}");
    script
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let error = conn.next_push().await.unwrap_err();
    assert_eq!(error.to_string(), "closed by server (1008: bye)");
    assert!(error.is_connection_error());
}

#[tokio::test]
async fn pings_and_pongs_are_not_frames_but_count_as_heard() {
    let (mut conn, mut script) = logged_in().await;
    let before = conn.last_heard();
    // Until the clock has moved past `before`, so that "heard later" is observable.
    while tokio::time::Instant::now() <= before {
        tokio::task::yield_now().await;
    }
    script.ws.send(Message::Ping(Bytes::new())).await.unwrap();
    script.send(ServerFrame::push(deliver(1))).await;
    assert_eq!(conn.next_push().await.unwrap(), deliver(1));
    assert!(conn.last_heard() > before);
}

#[tokio::test]
async fn the_escape_hatch_sends_a_request_before_login() {
    let (socket, mut script) = pipe().await;
    let server = tokio::spawn(async move {
        script.hello().await;
        let frame = script.receive().await;
        script
            .send(ServerFrame::reply(
                frame.rid,
                ServerBody::Error(ErrorBody {
                    code: ErrorCode::NotAuthenticated,
                    message: "log in first".into(),
                    retry_after_ms: None,
                    devices: Vec::new(),
                }),
            ))
            .await;
        frame.body
    });
    let (mut unchecked, _hello) = Unauthenticated::start(socket, quick())
        .await
        .unwrap()
        .into_unchecked();
    let reply = unchecked.request(resolve()).await.unwrap();
    assert_eq!(reply.unwrap_err().code, ErrorCode::NotAuthenticated);
    assert_eq!(server.await.unwrap(), resolve());
}

#[tokio::test]
async fn the_websocket_is_handed_over_with_the_frames_kept_for_later() {
    let (mut conn, script) = logged_in().await;
    let server = tokio::spawn(answer_between(
        script,
        vec![ServerFrame::push(deliver(1))],
        vec![ServerFrame::push(deliver(2))],
    ));
    conn.request(resolve()).await.unwrap().unwrap();
    let (mut socket, kept) = conn.into_parts();
    assert_eq!(kept, [ServerFrame::push(deliver(1))]);
    let next = next_frame(&mut socket, || {}).await.unwrap();
    assert_eq!(
        next,
        ServerFrame::push(deliver(2)),
        "nothing lost in between"
    );
    drop(server.await.unwrap());
}

#[tokio::test]
async fn a_join_waits_past_the_reply_timeout_for_the_seal_then_logs_in_on_the_same_connection() {
    use parley_protocol::devices::{LinkJoin, LinkOffer};
    use parley_protocol::wire::client::JoinLink;
    use parley_protocol::wire::server::LinkSealed;

    let (socket, mut script) = pipe().await;
    let server = tokio::spawn(async move {
        let hello = script.hello().await;
        let join = script.receive().await;
        assert!(matches!(join.body, ClientBody::JoinLink(_)), "{join:?}");
        // The existing device takes longer than a reply may (`quick`: 300 ms) to seal.
        tokio::time::sleep(Duration::from_millis(600)).await;
        script
            .send(ServerFrame::reply(
                join.rid,
                ServerBody::LinkSealed(LinkSealed {
                    sealed: vec![1, 2, 3],
                }),
            ))
            .await;
        script.answer_login(&hello).await;
    });
    let offer = LinkOffer::generate(&mut OsRng);
    let join = LinkJoin::new(offer.code().clone(), &mut OsRng);
    let mut opened = Unauthenticated::start(socket, quick()).await.unwrap();
    let reply = opened
        .join_link(
            JoinLink {
                rendezvous: join.rendezvous(),
                public: join.public(),
                mac: join.mac(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        matches!(&reply, Ok(ServerBody::LinkSealed(s)) if s.sealed == [1, 2, 3]),
        "{reply:?}"
    );
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let conn = opened.login(&identity, DeviceId(2)).await.unwrap();
    assert_eq!(conn.address().device, DeviceId(2));
    server.await.unwrap();
}
