//! Replays every committed fuzz corpus file (`fuzz/corpus/TARGET/`) through the same
//! functions the cargo-fuzz targets call (`fuzz/src/decoders.rs`, compiled in here), so a
//! crash once found stays fixed under plain `cargo test`.
//!
//! With `PARLEY_REGENERATE_VECTORS=1` it first rewrites the seeds it owns (`seed-*`
//! files: the hex vectors of `docs/protocol.md`, frames of every kind, messages and
//! records of a real session) and the decrypt target's session fixture. Files found by
//! fuzzing (any other name) are kept as they are.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

#[path = "../../fuzz/src/decoders.rs"]
mod decoders;

use std::path::{Path, PathBuf};

use common::{established, regenerate, TestRng};
use parley_protocol::e2e::content::{Card, CardAction, CardField, CardId, Content, Receipt};
use parley_protocol::e2e::content::{ReceiptKind, Text};
use parley_protocol::ids::{DeviceAddress, DeviceId, MessageId, PrekeyId, RequestId, Seq};
use parley_protocol::wire::client::{
    Ack, ClientBody, DeleteAccount, FetchBundle, ResolveHandle, Send, UploadPrekeys,
};
use parley_protocol::wire::{self, ClientFrame};
use parley_protocol::Handle;

type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 7] = [
    ("wire_client", decoders::wire_client),
    ("wire_server", decoders::wire_server),
    ("e2e_message", decoders::e2e_message),
    ("e2e_content", decoders::e2e_content),
    ("session_record", decoders::session_record),
    ("handshake_guard", decoders::handshake_guard),
    ("session_decrypt", decoders::session_decrypt),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn corpus(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
}

#[test]
fn every_committed_corpus_file_replays_without_panic() {
    if regenerate() {
        write_seeds();
    }
    let mut replayed = Vec::new();
    for (target, run) in TARGETS {
        let mut files: Vec<_> = std::fs::read_dir(corpus(target))
            .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target} has no corpus");
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
        }
        replayed.push(format!("{target}: {}", files.len()));
    }
    println!("replayed {}", replayed.join(", "));
}

#[test]
fn the_session_fixture_is_current_and_decrypts_its_seed() {
    // A stale fixture would make the decrypt target fuzz nothing.
    assert!(
        parley_protocol::e2e::Session::from_record(decoders::SESSION_FIXTURE).is_ok(),
        "fuzz/fixtures/bob_session.record does not decode: regenerate it"
    );
    let seed = std::fs::read(corpus("session_decrypt").join("seed-next-message")).unwrap();
    let mut session =
        parley_protocol::e2e::Session::from_record(decoders::SESSION_FIXTURE).unwrap();
    assert_eq!(session.decrypt(&seed, 0).unwrap(), b"second");
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// The `vector` hex blocks of docs/protocol.md, by name.
fn doc_vectors() -> Vec<(String, Vec<u8>)> {
    let doc = std::fs::read_to_string(fuzz_dir().join("../docs/protocol.md")).unwrap();
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- vector: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(lines.next(), Some("```hex"));
        let hex: String = lines
            .by_ref()
            .take_while(|l| *l != "```")
            .collect::<Vec<_>>()
            .concat();
        out.push((name.to_owned(), hex::decode(hex).unwrap()));
    }
    out
}

fn write_seeds() {
    let client_vectors = ["auth", "send", "ack"];
    let server_vectors = ["hello", "accepted", "deliver", "drained", "error"];
    for (name, bytes) in doc_vectors() {
        if client_vectors.contains(&name.as_str()) {
            write("wire_client", &format!("doc-{name}"), &bytes);
        } else if server_vectors.contains(&name.as_str()) {
            write("wire_server", &format!("doc-{name}"), &bytes);
        }
    }

    let mut rng = TestRng::new(0xf022);
    let (alice, bob, mut a, mut b) = established(&mut rng, true);
    let bob_address = DeviceAddress {
        account: bob.identity.account_id(),
        device: DeviceId::PRIMARY,
    };
    let frames = [
        (
            "fetch-bundle",
            ClientBody::FetchBundle(FetchBundle {
                address: bob_address,
            }),
        ),
        (
            "resolve-handle",
            ClientBody::ResolveHandle(ResolveHandle {
                handle: Handle::parse("bob").unwrap(),
            }),
        ),
        (
            "upload-prekeys",
            ClientBody::UploadPrekeys(UploadPrekeys {
                signed_prekey: Some(
                    parley_protocol::prekeys::PrekeySecret::generate(PrekeyId(2), &mut rng)
                        .signed_by(&alice.identity),
                ),
                kem_prekey: None,
                one_time_prekeys: vec![parley_protocol::prekeys::PrekeySecret::generate(
                    PrekeyId(3),
                    &mut rng,
                )
                .one_time()],
            }),
        ),
        (
            "ack-max",
            ClientBody::Ack(Ack {
                through: Seq(u64::MAX),
            }),
        ),
        (
            "delete-account",
            ClientBody::DeleteAccount(DeleteAccount {}),
        ),
        (
            "send-empty",
            ClientBody::Send(Send {
                to: bob_address,
                id: MessageId([7; 16]),
                ciphertext: Vec::new(),
                category: None,
                receipt: false,
            }),
        ),
    ];
    for (name, body) in frames {
        let bytes = wire::encode_client(&ClientFrame::new(RequestId(9), body)).unwrap();
        write("wire_client", name, &bytes);
    }

    // Messages of the conversation vectors, and of this session.
    let conversation =
        std::fs::read_to_string(common::vector_path("e2e_conversation.txt")).unwrap();
    for (section, fields) in common::parse_vectors(&conversation) {
        if let Some((_, hex)) = fields.iter().find(|(k, _)| k == "bytes") {
            write("e2e_message", &section, &hex::decode(hex).unwrap());
        }
    }
    let prekey_message = a.encrypt(b"still a prekey message", &mut rng, 0).unwrap();
    write("e2e_message", "prekey", &prekey_message);

    let contents = [
        (
            "text",
            Content::Text(Text {
                body: "hello".into(),
                sender_handle: Some(Handle::parse("alice").unwrap()),
                category: None,
            }),
        ),
        (
            "card",
            Content::Card(Card {
                id: CardId([5; 16]),
                title: "Confirm".into(),
                fields: vec![CardField {
                    label: "amount".into(),
                    value: "10".into(),
                }],
                actions: vec![CardAction {
                    id: "yes".into(),
                    label: "Yes".into(),
                }],
                expires_at_ms: Some(1),
                category: None,
            }),
        ),
        (
            "receipt",
            Content::Receipt(Receipt {
                kind: ReceiptKind::Read,
                messages: vec![MessageId([1; 16]), MessageId([2; 16])],
            }),
        ),
    ];
    for (name, content) in contents {
        write("e2e_content", name, &content.encode().unwrap());
    }

    // Bob's session as it is now is the decrypt target's fixture; Alice's next message
    // is a seed that decrypts.
    let fixture = b.to_record();
    std::fs::write(fuzz_dir().join("fixtures/bob_session.record"), &*fixture).unwrap();
    write("session_record", "bob", &fixture);
    write("session_record", "alice", &a.to_record());
    let next = a.encrypt(b"second", &mut rng, 0).unwrap();
    write("session_decrypt", "next-message", &next);
    write("session_decrypt", "prekey-replay", &prekey_message);
    let reply = b.encrypt(b"reply", &mut rng, 0).unwrap();
    write("session_decrypt", "own-message", &reply);

    write("handshake_guard", "empty", &[]);
    write("handshake_guard", "one", &bob.guard.to_bytes());
}
