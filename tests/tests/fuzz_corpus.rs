//! Replays the committed corpus of the `connection` fuzz target (`fuzz/corpus/connection/`)
//! through the same harness the target uses (`fuzz/src/connection.rs`, compiled in here):
//! a server in this process, each input on its own loopback WebSocket. No server task may
//! panic, and every input must be answered or closed within the harness's deadline.
//!
//! With `PARLEY_REGENERATE_VECTORS=1` it first rewrites its `seed-*` files.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../../fuzz/src/connection.rs"]
mod connection;
#[path = "../../fuzz/src/connection_core.rs"]
mod connection_core;

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

fn core_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/connection_core")
}

#[test]
fn every_committed_connection_core_input_keeps_the_cores_properties() {
    if std::env::var_os("PARLEY_REGENERATE_VECTORS").is_some_and(|v| v == "1") {
        write_core_seeds();
    }
    let mut files: Vec<_> = std::fs::read_dir(core_corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let played = std::panic::catch_unwind(|| connection_core::run(&data));
        assert!(played.is_ok(), "{}", file.display());
    }
    println!("replayed {} connection core inputs", files.len());
}

/// Scripts from a fixed pseudo-random sequence, built on the committed seeds (a few
/// bytes of each changed, some spliced together): a small fuzz run in every `cargo test`
/// (more in the long tier), deterministic so that a failure is reproducible.
#[test]
fn generated_connection_core_scripts_keep_the_cores_properties() {
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(core_corpus())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let count: u32 = if long_tests() { 200_000 } else { 20_000 };
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for n in 0..count {
        let mut script = seeds[(next() as usize) % seeds.len()].clone();
        if n.is_multiple_of(3) {
            script.extend_from_slice(&seeds[(next() as usize) % seeds.len()]);
        }
        for _ in 0..1 + next() % 8 {
            let at = (next() as usize) % script.len().max(1);
            if let Some(byte) = script.get_mut(at) {
                *byte = next() as u8;
            }
        }
        if n.is_multiple_of(5) {
            script.extend((0..next() % 64).map(|_| next() as u8));
        }
        let played = std::panic::catch_unwind(|| connection_core::run(&script));
        assert!(played.is_ok(), "script {n}: {script:?}");
    }
}

/// The core's seed scripts (`fuzz/src/connection_core.rs` describes the layout).
fn write_core_seeds() {
    let stranger = DeviceAddress {
        account: AccountId([9; 32]),
        device: DeviceId::PRIMARY,
    };
    let encoded = |body: ClientBody| {
        let bytes = parley_protocol::wire::encode_client(&frame(0, body)).unwrap();
        let mut step = vec![0u8, u8::try_from(bytes.len()).unwrap()];
        step.extend(bytes);
        step
    };
    let send = |n: u8| {
        encoded(ClientBody::Send(Send {
            to: stranger,
            id: MessageId([n; 16]),
            ciphertext: vec![0xab; 32],
            category: None,
            receipt: false,
        }))
    };
    let ack = |through| {
        encoded(ClientBody::Ack(Ack {
            through: Seq(through),
        }))
    };
    let resolve = encoded(ClientBody::ResolveHandle(ResolveHandle {
        handle: Handle::parse("nobody").unwrap(),
    }));
    let complete = |which: u8, kind: u8| vec![1u8, which, kind];
    let backlog = complete(0, 1);
    let seeds: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "sends-out-of-order",
            vec![
                backlog.clone(),
                send(1),
                send(2),
                send(3),
                complete(2, 0),
                complete(0, 2),
                complete(0, 3),
                complete(0, 0),
                complete(0, 0),
            ],
        ),
        (
            "alone-after-sends",
            vec![
                backlog.clone(),
                send(1),
                resolve.clone(),
                send(2),
                complete(0, 0),
                complete(0, 0),
            ],
        ),
        (
            "wake-gap-and-ack",
            vec![
                backlog.clone(),
                vec![2, 3, 4, 1],
                vec![2, 2, 6, 1],
                complete(0, 4),
                ack(9),
                complete(0, 1),
            ],
        ),
        (
            "malformed-after-send",
            vec![
                backlog.clone(),
                send(1),
                vec![0, 3, 0xc1, 0x93, 0x01],
                complete(0, 0),
            ],
        ),
        (
            "keepalive",
            vec![
                backlog.clone(),
                vec![3, 30],
                vec![4],
                vec![3, 30],
                vec![3, 31],
                vec![3, 31],
            ],
        ),
        (
            "gone-with-sends",
            vec![
                backlog.clone(),
                send(1),
                ack(1),
                vec![5],
                complete(0, 0),
                complete(0, 0),
            ],
        ),
        ("endings", vec![backlog, vec![6, 2], send(1), vec![7, 2]]),
    ];
    std::fs::create_dir_all(core_corpus()).unwrap();
    for (name, steps) in seeds {
        std::fs::write(core_corpus().join(format!("seed-{name}")), steps.concat()).unwrap();
    }
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
