//! The hex test vectors in `docs/protocol.md` are exactly what this implementation
//! encodes. Run with `PARLEY_PRINT_VECTORS=1 cargo test -p parley-protocol --test
//! wire_vectors -- --nocapture` to print them after a deliberate wire change.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_protocol::auth::auth_transcript;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, MessageId, Nonce, RequestId, Seq, ServerId};
use parley_protocol::wire::client::{Ack, Auth, ClientBody, Send};
use parley_protocol::wire::server::{Accepted, Deliver, Drained, ErrorBody, Hello, ServerBody};
use parley_protocol::wire::{self, ClientFrame, ErrorCode, ServerFrame};

fn alice() -> IdentityKeyPair {
    IdentityKeyPair::from_secret_bytes(&[0x01; 64])
}

fn bob_address() -> DeviceAddress {
    DeviceAddress {
        account: IdentityKeyPair::from_secret_bytes(&[0x02; 64]).account_id(),
        device: DeviceId(1),
    }
}

fn alice_address() -> DeviceAddress {
    DeviceAddress {
        account: alice().account_id(),
        device: DeviceId(1),
    }
}

const SERVER_ID: ServerId = ServerId([0x11; 32]);
const NONCE: Nonce = Nonce([0x22; 32]);

/// (name, hex) of every vector in the document.
fn vectors() -> Vec<(&'static str, String)> {
    let hex = |b: &[u8]| parley_protocol::to_hex(b);
    let server = |f: ServerFrame| hex(&wire::encode_server(&f).unwrap());
    let client = |f: ClientFrame| hex(&wire::encode_client(&f).unwrap());
    let transcript = auth_transcript(&SERVER_ID, &NONCE, &alice_address());
    let signature = alice().sign(&transcript);
    vec![
        ("alice-account", hex(alice().account_id().as_bytes())),
        ("auth-transcript", hex(transcript.as_bytes())),
        ("auth-signature", hex(signature.as_bytes())),
        (
            "hello",
            server(ServerFrame::push(ServerBody::Hello(Hello {
                server_id: SERVER_ID,
                nonce: NONCE,
                max_envelope_bytes: 65536,
                auth_timeout_ms: 10000,
            }))),
        ),
        (
            "auth",
            client(ClientFrame::new(
                RequestId(1),
                ClientBody::Auth(Auth {
                    address: alice_address(),
                    signature,
                }),
            )),
        ),
        (
            "send",
            client(ClientFrame::new(
                RequestId(2),
                ClientBody::Send(Send {
                    to: bob_address(),
                    id: MessageId([0x33; 16]),
                    ciphertext: b"opaque".to_vec(),
                    category: None,
                    receipt: false,
                }),
            )),
        ),
        (
            "accepted",
            server(ServerFrame::reply(
                RequestId(2),
                ServerBody::Accepted(Accepted {
                    id: MessageId([0x33; 16]),
                    seq: Seq(1),
                }),
            )),
        ),
        (
            "deliver",
            server(ServerFrame::push(ServerBody::Deliver(Deliver {
                seq: Seq(1),
                from: alice_address(),
                id: MessageId([0x33; 16]),
                sent_at_ms: 1_764_000_000_000,
                ciphertext: b"opaque".to_vec(),
                category: None,
            }))),
        ),
        (
            "drained",
            server(ServerFrame::push(ServerBody::Drained(Drained {
                through: Seq(1),
            }))),
        ),
        (
            "ack",
            client(ClientFrame::new(
                RequestId(3),
                ClientBody::Ack(Ack { through: Seq(1) }),
            )),
        ),
        (
            "error",
            server(ServerFrame::reply(
                RequestId(4),
                ServerBody::Error(ErrorBody {
                    code: ErrorCode::NotFound,
                    message: "recipient not found".into(),
                    retry_after_ms: None,
                }),
            )),
        ),
    ]
}

/// The hex block following `<!-- vector: NAME -->` in the document.
fn documented(doc: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- vector: {name} -->");
    let after = doc.split(&marker).nth(1)?;
    let block = after.split("```hex").nth(1)?.split("```").next()?;
    Some(block.split_whitespace().collect())
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn documented_vectors_match_the_encoder() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md exists");
    let print = std::env::var_os("PARLEY_PRINT_VECTORS").is_some();
    let mut wrong = Vec::new();
    for (name, hex) in vectors() {
        if print {
            let wrapped: Vec<String> = hex
                .as_bytes()
                .chunks(64)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            println!(
                "<!-- vector: {name} -->\n```hex\n{}\n```\n",
                wrapped.join("\n")
            );
        }
        if documented(&doc, name).as_deref() != Some(hex.as_str()) {
            wrong.push(name);
        }
    }
    assert!(
        wrong.is_empty(),
        "vectors missing or different in docs/protocol.md: {wrong:?}"
    );
}

#[test]
fn documented_frames_decode_to_what_they_describe() {
    for (name, hex) in vectors() {
        let bytes = from_hex(&hex);
        match name {
            "auth" | "send" | "ack" => {
                let frame = wire::decode_client(&bytes).unwrap();
                assert_eq!(wire::encode_client(&frame).unwrap(), bytes);
            }
            "hello" | "accepted" | "deliver" | "drained" | "error" => {
                let frame = wire::decode_server(&bytes).unwrap();
                assert_eq!(wire::encode_server(&frame).unwrap(), bytes);
            }
            _ => {}
        }
    }
}
