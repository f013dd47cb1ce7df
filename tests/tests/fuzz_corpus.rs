//! Replays the committed corpus of the `connection` fuzz target (`fuzz/corpus/connection/`)
//! through the same harness the target uses (`fuzz/src/connection.rs`, compiled in here):
//! a server in this process, each input on its own loopback WebSocket. No server task may
//! panic, and every input must be answered or closed within the harness's deadline.
//!
//! With `PARLEY_REGENERATE_VECTORS=1` it first rewrites its `seed-*` files.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../../fuzz/src/connection.rs"]
mod connection;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parley_protocol::ids::{DeviceAddress, DeviceId, MessageId, RequestId, Seq};
use parley_protocol::signature::Signature;
use parley_protocol::wire::client::{
    Ack, Auth, ClientBody, DeleteAccount, FetchBundle, ResolveHandle, Send,
};
use parley_protocol::wire::ClientFrame;
use parley_protocol::{AccountId, Handle};
use parley_tests::{long_tests, TestAccount};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/connection")
}

#[test]
fn every_committed_connection_input_is_handled_without_panic() {
    if std::env::var_os("PARLEY_REGENERATE_VECTORS").is_some_and(|v| v == "1") {
        write_seeds();
    }
    // Tokio keeps a panicking task's panic to itself; count them here.
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let harness = connection::Harness::start().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let rounds = if long_tests() { 20 } else { 1 };
    for _ in 0..rounds {
        for file in &files {
            let data = std::fs::read(file).unwrap();
            harness
                .run(&data)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
    println!("replayed {} connection inputs x {rounds}", files.len());
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a server task panicked");
}

fn frame(n: u32, body: ClientBody) -> ClientFrame {
    ClientFrame::new(RequestId(n), body)
}

fn write_seeds() {
    let me = TestAccount::new(None, 0);
    let stranger = DeviceAddress {
        account: AccountId([9; 32]),
        device: DeviceId::PRIMARY,
    };
    let send = |n: u32, to| {
        frame(
            n,
            ClientBody::Send(Send {
                to,
                id: MessageId([n as u8; 16]),
                ciphertext: vec![0xab; 32],
                category: None,
                receipt: false,
            }),
        )
    };
    let seeds: Vec<(&str, bool, Vec<ClientFrame>)> = vec![
        (
            "bad-auth",
            false,
            vec![frame(
                1,
                ClientBody::Auth(Auth {
                    address: me.address(),
                    signature: Signature([0; 64]),
                }),
            )],
        ),
        ("send-before-auth", false, vec![send(1, stranger)]),
        (
            "requests",
            true,
            vec![
                send(1, stranger),
                frame(
                    2,
                    ClientBody::ResolveHandle(ResolveHandle {
                        handle: Handle::parse("nobody").unwrap(),
                    }),
                ),
                frame(
                    3,
                    ClientBody::FetchBundle(FetchBundle { address: stranger }),
                ),
                frame(4, ClientBody::Ack(Ack { through: Seq(5) })),
            ],
        ),
        (
            "second-auth",
            true,
            vec![frame(
                1,
                ClientBody::Auth(Auth {
                    address: me.address(),
                    signature: Signature([1; 64]),
                }),
            )],
        ),
        (
            "delete-account",
            true,
            vec![frame(1, ClientBody::DeleteAccount(DeleteAccount {}))],
        ),
    ];
    std::fs::create_dir_all(corpus()).unwrap();
    for (name, log_in, frames) in seeds {
        let bytes = connection::encode_input(log_in, &frames);
        std::fs::write(corpus().join(format!("seed-{name}")), bytes).unwrap();
    }
    // Raw junk after login, and an empty message.
    let mut junk = vec![1u8, 0, 3, 0xc1, 0x93, 0x01, 0, 0];
    junk.extend_from_slice(&[0, 1, 0x80]);
    std::fs::write(corpus().join("seed-junk"), junk).unwrap();
}
