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

/// The `parley` CLI as processes: two people chat over `wss://` with `--ca-file`; without
/// it the generated certificate is not trusted.
#[test]
fn the_cli_chats_over_wss_with_a_ca_file() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let cert = TestCertificate::generate(certs.path()).unwrap();
    let server = ServerProcess::start(
        data.path(),
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
    let binary = parley_tests::server::workspace_binary("parley-cli", "parley").unwrap();
    let parley = |profile: &str, ca: bool, args: &[&str]| {
        let mut command = std::process::Command::new(&binary);
        command
            .args(args)
            .args(["--profile", profile, "--server", &url])
            .arg("--home")
            .arg(home.path())
            .stdin(std::process::Stdio::null());
        if ca {
            command.arg("--ca-file").arg(&cert.cert_file);
        }
        command.output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let refused = parley("mallory", false, &["register", "mallory"]);
    assert!(
        !refused.status.success(),
        "an untrusted certificate is refused"
    );

    ok(parley("alice", true, &["register", "alice"]));
    ok(parley("bob", true, &["register", "bob"]));
    ok(parley("alice", true, &["send", "bob", "hello over tls"]));
    let inbox = ok(parley("bob", true, &["--json", "inbox"]));
    assert!(inbox.contains("hello over tls"), "{inbox}");
    server.kill().unwrap();
}
