//! Structured logs: a server process at `trace` level with `--log-format json` carries a
//! full chat between two `parley` CLI processes. Every line is a JSON object, and no line
//! holds a message's plaintext or a secret key.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::{Command, Output, Stdio};

use parley_tests::server::workspace_binary;
use parley_tests::{Client, ServerProcess, TestAccount};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_level_json_logs_of_a_chat_hold_no_plaintext_or_keys() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        &["--log", "trace", "--log-format", "json"],
    )
    .unwrap();
    let url = server.url();
    let binary = workspace_binary("parley-cli", "parley").unwrap();
    let parley = |profile: &str, args: &[&str]| -> Output {
        let out = Command::new(&binary)
            .args(args)
            .args(["--profile", profile, "--server", &url])
            .arg("--home")
            .arg(home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "parley {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let canaries = ["canary-7f3a: the vault code", "canary-91bc: meet at noon"];
    parley("alice", &["register", "alice"]);
    parley("bob", &["register", "bob"]);
    parley("alice", &["send", "bob", canaries[0]]);
    let inbox = parley("bob", &["inbox"]);
    assert!(String::from_utf8_lossy(&inbox.stdout).contains(canaries[0]));
    parley("bob", &["send", "alice", canaries[1]]);
    let inbox = parley("alice", &["inbox"]);
    assert!(String::from_utf8_lossy(&inbox.stdout).contains(canaries[1]));

    // A raw client whose secret key the test knows logs in too.
    let carol = TestAccount::new(Some("carol"), 2);
    drop(Client::register(&url, &carol).await.unwrap());
    drop(Client::login(&url, &carol).await.unwrap());
    let secret = hex::encode(carol.identity.to_secret_bytes().as_slice());
    let secret_halves = [&secret[..64], &secret[64..]];

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(logs.len() > 10, "the server logged the chat: {logs:?}");
    let mut levels = std::collections::BTreeSet::new();
    for line in &logs {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        levels.insert(value["level"].as_str().unwrap_or_default().to_owned());
        let lower = line.to_lowercase();
        for canary in canaries {
            assert!(!line.contains(canary), "plaintext in the log: {line}");
            assert!(
                !lower.contains(&hex::encode(canary)),
                "hex plaintext in the log: {line}"
            );
            assert!(
                !line.contains("canary-"),
                "part of a plaintext in the log: {line}"
            );
        }
        for half in secret_halves {
            assert!(!lower.contains(half), "secret key in the log: {line}");
        }
    }
    assert!(
        levels.contains("DEBUG") || levels.contains("TRACE"),
        "the trace filter was in force: {levels:?}"
    );
    server.kill().unwrap();
}
