//! `wss://`: a real server process with a certificate generated in the test; two
//! accounts register and exchange an envelope over TLS, and a client that does not
//! trust the certificate, or speaks plain `ws://`, gets nowhere.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_protocol::ids::MessageId;
use parley_protocol::wire::server::ServerBody;
use parley_tests::admin::{http_get, parse_exposition};
use parley_tests::tls::TestCertificate;
use parley_tests::{Client, ServerProcess, TestAccount};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_send_and_deliver_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let cert = TestCertificate::generate(certs.path()).unwrap();
    let server = ServerProcess::start(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &[
            "--tls-cert",
            cert.cert_file.to_str().unwrap(),
            "--tls-key",
            cert.key_file.to_str().unwrap(),
        ],
    )
    .unwrap();
    let url = format!("wss://127.0.0.1:{}", server.addr.port());

    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::connect_with(&url, Some(cert.connector().unwrap()))
        .await
        .unwrap();
    let reply = a.request(alice.register_body(&a.hello)).await.unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::Authenticated(_))),
        "{reply:?}"
    );
    let mut b = Client::connect_with(&url, Some(cert.connector().unwrap()))
        .await
        .unwrap();
    let reply = b.request(bob.register_body(&b.hello)).await.unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::Authenticated(_))),
        "{reply:?}"
    );

    let id = MessageId([7; 16]);
    a.send(bob.address(), id, b"opaque over tls".to_vec())
        .await
        .unwrap();
    let delivered = b.next_deliver().await.unwrap();
    assert_eq!(delivered.id, id);
    assert_eq!(delivered.ciphertext, b"opaque over tls");

    // A client that does not trust the certificate is refused in the handshake, and a
    // plain WebSocket client gets no hello.
    assert!(
        Client::connect(&url).await.is_err(),
        "untrusted certificate"
    );
    let plain = format!("ws://127.0.0.1:{}", server.addr.port());
    assert!(
        Client::connect(&plain).await.is_err(),
        "plain ws:// to a TLS port"
    );

    let (_, body) = http_get(server.admin_addr.unwrap(), "/metrics")
        .await
        .unwrap();
    let metrics = parse_exposition(&body).unwrap();
    assert!(
        metrics
            .value("parley_tls_handshake_failures_total", &[])
            .unwrap()
            >= 1.0
    );
    drop((a, b));
    server.kill().unwrap();
}
