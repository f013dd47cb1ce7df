//! Authentication: one uniform failure for every reason, and no replay. Against a real
//! server process or, through the [`Deployment`] switch, a two-node cluster: accounts
//! register on one node and authenticate (or fail to) on the other.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use futures_util::{SinkExt, StreamExt};
use parley_protocol::ids::RequestId;
use parley_protocol::signature::Signature;
use parley_protocol::wire::client::{Auth, ClientBody};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::{self, ClientFrame, CloseCode, ErrorCode};
use parley_tests::deployment::Deployment;
use parley_tests::{Client, TestAccount, TestServer};
use tokio_tungstenite::tungstenite::{Bytes, Message};

async fn auth_error(client: &mut Client, body: ClientBody) -> (ErrorCode, String) {
    let reply = client.request(body).await.unwrap();
    let error = reply.expect_err("auth must fail");
    (error.code, error.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_auth_frame_is_refused() {
    let Some(server) = Deployment::start_temp(&[]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    drop(Client::register(&server.url_for(0), &alice).await.unwrap());

    // Capture a valid auth frame, as a network observer would.
    let mut first = Client::connect(&server.url_for(1)).await.unwrap();
    let captured = alice.auth_body(&first.hello);
    let reply = first.request(captured.clone()).await.unwrap();
    assert!(matches!(reply, Ok(ServerBody::Authenticated(_))));

    // Replay it on a new connection (a new nonce; on a cluster, on the other node).
    let mut replay = Client::connect(&server.url_for(0)).await.unwrap();
    let (code, _) = auth_error(&mut replay, captured).await;
    assert_eq!(code, ErrorCode::AuthFailed);
    assert_eq!(
        replay.closed().await.unwrap(),
        Some(CloseCode::AuthFailed.code())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_unknown_accounts_fail_identically() {
    let Some(server) = Deployment::start_temp(&[]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    drop(Client::register(&server.url_for(0), &alice).await.unwrap());
    let stranger = TestAccount::new(None, 0);

    let mut outcomes = Vec::new();
    // 1. A bit-flipped signature.
    let mut c = Client::connect(&server.url_for(1)).await.unwrap();
    let ClientBody::Auth(mut auth) = alice.auth_body(&c.hello) else {
        unreachable!()
    };
    auth.signature.0[10] ^= 1;
    outcomes.push(auth_error(&mut c, ClientBody::Auth(auth)).await);
    // 2. A valid signature by an account the server does not know.
    let mut c = Client::connect(&server.url_for(1)).await.unwrap();
    let body = stranger.auth_body(&c.hello);
    outcomes.push(auth_error(&mut c, body).await);
    // 3. Alice's address signed by the stranger's key.
    let mut c = Client::connect(&server.url_for(1)).await.unwrap();
    let ClientBody::Auth(theirs) = stranger.auth_body(&c.hello) else {
        unreachable!()
    };
    let forged = Auth {
        address: alice.address(),
        signature: theirs.signature,
    };
    outcomes.push(auth_error(&mut c, ClientBody::Auth(forged)).await);
    // 4. An all-zero signature.
    let mut c = Client::connect(&server.url_for(1)).await.unwrap();
    outcomes.push(
        auth_error(
            &mut c,
            ClientBody::Auth(Auth {
                address: alice.address(),
                signature: Signature([0; 64]),
            }),
        )
        .await,
    );
    for outcome in &outcomes {
        assert_eq!(outcome, &outcomes[0], "every failure looks the same");
    }
    assert_eq!(outcomes[0].0, ErrorCode::AuthFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_for_another_server_is_refused() {
    let Some(server) = Deployment::start_temp(&[]).unwrap() else {
        return;
    };
    // Any other server: its identity is all that matters.
    let other = TestServer::start().await.unwrap();
    let alice = TestAccount::new(Some("alice"), 1);
    drop(Client::register(&server.url_for(0), &alice).await.unwrap());
    let mut c = Client::connect(&server.url_for(1)).await.unwrap();
    let elsewhere = Client::connect(&other.url()).await.unwrap();
    assert_ne!(c.hello.server_id, elsewhere.hello.server_id);
    // Signed for the other server's identity, with this connection's nonce.
    let mut hello = c.hello.clone();
    hello.server_id = elsewhere.hello.server_id;
    let body = alice.auth_body(&hello);
    let (code, _) = auth_error(&mut c, body).await;
    assert_eq!(code, ErrorCode::AuthFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_byte_exchange_matches_the_protocol_document() {
    // Drives the handshake with nothing but tungstenite and the codec.
    let Some(server) = Deployment::start_temp(&[]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    let Some(Ok(Message::Binary(hello))) = ws.next().await else {
        panic!("no hello")
    };
    let hello = wire::decode_server(&hello).unwrap();
    assert_eq!(hello.rid, None);
    let ServerBody::Hello(hello) = hello.body else {
        panic!("first frame is hello")
    };
    let frame = ClientFrame::new(RequestId(77), alice.register_body(&hello));
    ws.send(Message::Binary(Bytes::from(
        wire::encode_client(&frame).unwrap(),
    )))
    .await
    .unwrap();
    let Some(Ok(Message::Binary(reply))) = ws.next().await else {
        panic!("no reply")
    };
    let reply = wire::decode_server(&reply).unwrap();
    assert_eq!(reply.rid, Some(RequestId(77)));
    assert!(matches!(reply.body, ServerBody::Authenticated(a) if a.address == alice.address()));
}
