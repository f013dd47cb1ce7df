//! The fuzzed function for the server's connection state machine.
//!
//! The server's connection states (`awaiting_auth`, `authenticated`) are async loops
//! around a WebSocket, not a pure `on_frame` function, so they cannot be driven without
//! a socket. The nearest honest target is the whole path: a real server runs in this
//! process on `127.0.0.1:0` (one for the fuzzing session), and each input is played on
//! a fresh loopback WebSocket connection as a sequence of binary messages, each one a
//! Parley frame candidate that goes through `wire::decode_client` and the request
//! dispatch of whichever state the connection is in.
//!
//! Input layout:
//!
//! ```text
//!  byte 0: mode   bit 0 = log in first (fuzz the authenticated state)
//!  then:  repeated [len: u16 BE][len bytes]   one WebSocket binary message each
//! ```
//!
//! After the messages a sentinel request (`resolve_handle`) is sent and its answer (or
//! the server's close) awaited, so every frame of this input was handled before the next
//! input starts. A panic in any server task aborts the process (libFuzzer's panic hook),
//! which attributes it to this input.
//!
//! It reuses the test kit (`parley-tests`: the server configuration for tests, test
//! accounts, the client). This file is also compiled into `tests/tests/fuzz_corpus.rs`,
//! which replays the committed corpus under `cargo test`.

use std::sync::Mutex;
use std::time::Duration;

use parley_protocol::ids::Handle;
use parley_protocol::wire::client::{ClientBody, ResolveHandle};
use parley_protocol::wire::{self, ClientFrame};
use parley_tests::{Client, TestAccount};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

/// How long one input may take before the harness gives up on it (a hang is a finding:
/// the server must answer the sentinel or close).
pub const INPUT_DEADLINE: Duration = Duration::from_secs(5);

/// A server in this process, and the account inputs log in as.
#[derive(Debug)]
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    url: String,
    account: Mutex<TestAccount>,
    _shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the server (rate limits lifted, short deadlines) and registers an account.
    pub fn start() -> Result<Harness, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut config = parley_tests::server::test_config(dir.path());
        config.registrations_per_ip_per_hour = u32::MAX;
        config.auth_timeout = Duration::from_secs(2);
        let shutdown = CancellationToken::new();
        let url = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(parley_server::run(config, listener, shutdown.clone()));
            Ok::<_, String>(format!("ws://{addr}"))
        })?;
        let account = runtime.block_on(register(&url))?;
        Ok(Harness {
            runtime,
            url,
            account: Mutex::new(account),
            _shutdown: shutdown,
            _dir: dir,
        })
    }

    /// Plays one input. `Err` means the server misbehaved (no answer, no close, in time).
    pub fn run(&self, data: &[u8]) -> Result<(), String> {
        let Some((&mode, rest)) = data.split_first() else {
            return Ok(());
        };
        let messages = split_messages(rest);
        self.runtime.block_on(async {
            tokio::time::timeout(INPUT_DEADLINE, self.play(mode & 1 == 1, messages))
                .await
                .map_err(|_| "the server neither answered nor closed in time".to_owned())?
        })
    }

    async fn play(&self, log_in: bool, messages: Vec<&[u8]>) -> Result<(), String> {
        let mut client = if log_in {
            let mut client = Client::connect(&self.url)
                .await
                .map_err(|e| e.to_string())?;
            let body = {
                let account = self.account.lock().map_err(|_| "poisoned")?;
                account.auth_body(&client.hello)
            };
            let login = client.request(body).await.map(|reply| (client, reply));
            match login {
                Ok((client, Ok(_))) => client,
                _ => {
                    // An earlier input deleted the account: make a new one, skip this one.
                    let fresh = register(&self.url).await?;
                    *self.account.lock().map_err(|_| "poisoned")? = fresh;
                    return Ok(());
                }
            }
        } else {
            Client::connect(&self.url)
                .await
                .map_err(|e| e.to_string())?
        };
        for message in messages {
            let message = Message::Binary(Bytes::copy_from_slice(message));
            if client.send_raw(message).await.is_err() {
                return Ok(()); // The server closed: it has handled everything.
            }
        }
        let sentinel = ClientBody::ResolveHandle(ResolveHandle {
            handle: Handle::parse("sentinel").map_err(|e| e.to_string())?,
        });
        // Its answer, or the end of the connection, means every frame was handled.
        if let Ok(rid) = client.send_frame(sentinel).await {
            let _ = client.reply_to(rid).await;
        }
        Ok(())
    }
}

/// Registers a fresh account without a handle.
async fn register(url: &str) -> Result<TestAccount, String> {
    let account = TestAccount::new(None, 0);
    Client::register(url, &account)
        .await
        .map_err(|e| e.to_string())?;
    Ok(account)
}

/// Splits the input into messages: `[len u16 BE][bytes]`..., the last one truncated to
/// what is left.
pub fn split_messages(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (message, next) = tail.split_at(len);
        out.push(message);
        rest = next;
    }
    out
}

/// Encodes frames in the input layout (for seeds): `mode`, then each frame.
pub fn encode_input(log_in: bool, frames: &[ClientFrame]) -> Vec<u8> {
    let mut out = vec![u8::from(log_in)];
    for frame in frames {
        if let Ok(bytes) = wire::encode_client(frame) {
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&bytes);
        }
    }
    out
}
