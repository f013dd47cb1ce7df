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

/// Starts a TLS server with `cert` / `key` and returns it with its `wss://` URL.
fn tls_server(
    data: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (ServerProcess, String) {
    let server = ServerProcess::start(
        data,
        "127.0.0.1:0".parse().unwrap(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .unwrap();
    let url = format!("wss://127.0.0.1:{}", server.addr.port());
    (server, url)
}

/// Runs the real `parley` with `args` against `url`, trusting `ca_file` if given.
fn parley(
    home: &std::path::Path,
    url: &str,
    ca_file: Option<&std::path::Path>,
    args: &[&str],
) -> std::process::Output {
    let binary = parley_tests::server::workspace_binary("parley-cli", "parley").unwrap();
    let mut command = std::process::Command::new(binary);
    command
        .args(args)
        .args(["--server", url])
        .arg("--home")
        .arg(home)
        .stdin(std::process::Stdio::null());
    if let Some(ca_file) = ca_file {
        command.arg("--ca-file").arg(ca_file);
    }
    command.output().unwrap()
}

/// The one line `parley` printed on stderr, after checking that it failed.
fn one_sentence(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("OtherError"), "{stderr}");
    assert!(!stderr.contains("IO error"), "{stderr}");
    stderr
}

/// Issue 17, TLS on a first try: `parley-server admin self-signed-cert` makes a
/// certificate the server serves and `parley --ca-file` trusts, end to end; without
/// `--ca-file` the client says in one sentence what to do.
#[test]
fn the_self_signed_cert_command_works_end_to_end_with_a_ca_file() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let out_dir = certs.path().join("tls");
    let server_binary = parley_tests::server::server_binary().unwrap();
    let made = std::process::Command::new(&server_binary)
        .args([
            "admin",
            "self-signed-cert",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
        ])
        .arg("--out")
        .arg(&out_dir)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (out_dir.join("cert.pem"), out_dir.join("key.pem"));
    assert!(String::from_utf8_lossy(&made.stdout).contains("--ca-file"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is private");
    }

    let (server, url) = tls_server(data.path(), &cert, &key);
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(parley(
        home.path(),
        &url,
        Some(&cert),
        &["--profile", "alice", "register", "alice"],
    ));
    ok(parley(
        home.path(),
        &url,
        Some(&cert),
        &["--profile", "bob", "register", "bob"],
    ));
    ok(parley(
        home.path(),
        &url,
        Some(&cert),
        &["--profile", "alice", "send", "bob", "hi over wss"],
    ));
    let inbox = ok(parley(
        home.path(),
        &url,
        Some(&cert),
        &["--profile", "bob", "--json", "inbox"],
    ));
    assert!(inbox.contains("hi over wss"), "{inbox}");

    // The same certificate, not trusted: one sentence naming the server and --ca-file.
    let untrusted = one_sentence(&parley(
        home.path(),
        &url,
        None,
        &["--profile", "mallory", "register", "mallory"],
    ));
    assert!(
        untrusted.contains("is not signed by any authority this client trusts"),
        "{untrusted}"
    );
    assert!(untrusted.contains(&url), "{untrusted}");
    assert!(untrusted.contains("--ca-file FILE"), "{untrusted}");
    server.kill().unwrap();
}

/// Issue 17: a CA certificate as the server's own (what `openssl req -x509` makes) used
/// to end in `invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`; now one
/// sentence says to give the server an end-entity certificate and how to make one.
#[test]
fn regression_a_ca_certificate_as_the_servers_certificate_is_explained() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&key_pair).unwrap();
    let (cert, key) = (certs.path().join("ca.pem"), certs.path().join("ca.key"));
    std::fs::write(&cert, ca.pem()).unwrap();
    std::fs::write(&key, key_pair.serialize_pem()).unwrap();

    let (server, url) = tls_server(data.path(), &cert, &key);
    let out = parley(
        home.path(),
        &url,
        Some(&cert),
        &["--profile", "alice", "register", "alice"],
    );
    let sentence = one_sentence(&out);
    assert!(
        sentence.contains("presents a CA certificate as its own"),
        "{sentence}"
    );
    assert!(
        sentence.contains("parley-server admin self-signed-cert --host 127.0.0.1"),
        "{sentence}"
    );
    assert!(sentence.contains(&url), "{sentence}");
    server.kill().unwrap();
}
