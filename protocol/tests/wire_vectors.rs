//! The hex test vectors in `docs/protocol.md` are exactly what this implementation
//! encodes. Run with `PARLEY_PRINT_VECTORS=1 cargo test -p parley-protocol --test
//! wire_vectors -- --nocapture` to print them after a deliberate wire change.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_protocol::auth::auth_transcript;
use parley_protocol::devices::{
    DeviceEntry, DeviceList, LinkCode, LinkJoin, LinkOffer, LinkSecrets, SignedDeviceList,
};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{
    DeviceAddress, DeviceId, Handle, MessageId, Nonce, RequestId, Seq, ServerId,
};
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

/// Hands out the bytes it was given, in order: for vectors whose secrets the document
/// states (never for real keys).
struct ScriptRng(std::collections::VecDeque<u8>);

impl ScriptRng {
    fn new(parts: &[(u8, usize)]) -> ScriptRng {
        ScriptRng(
            parts
                .iter()
                .flat_map(|&(byte, count)| std::iter::repeat_n(byte, count))
                .collect(),
        )
    }
}

impl rand_core::RngCore for ScriptRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            *byte = self.0.pop_front().expect("the script has enough bytes");
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for ScriptRng {}

/// Alice's list in §15: device 1 `phone`, device 2 `laptop`, version 2.
fn alices_device_list() -> SignedDeviceList {
    let entry = |device, name: &str, linked_at_ms| DeviceEntry {
        device: DeviceId(device),
        name: name.into(),
        linked_at_ms,
    };
    DeviceList {
        account: alice().account_id(),
        version: 2,
        devices: vec![
            entry(1, "phone", 1_764_000_000_000),
            entry(2, "laptop", 1_764_000_100_000),
        ],
    }
    .sign(&alice())
    .unwrap()
}

/// The linking vectors of §15: code, rendezvous, join MAC, sealed secrets.
fn link_vectors() -> Vec<(&'static str, String)> {
    let hex = |b: &[u8]| parley_protocol::to_hex(b);
    let offer = LinkOffer::generate(&mut ScriptRng::new(&[(0x44, 16), (0x55, 32)]));
    let code = LinkCode::decode(&offer.code().encode()).unwrap();
    let join = LinkJoin::new(code, &mut ScriptRng::new(&[(0x66, 32)]));
    let secrets = LinkSecrets::new(
        &alice(),
        DeviceId(2),
        alices_device_list(),
        Handle::parse("alice").ok(),
    );
    let sealed = offer.seal(&join.public(), &join.mac(), &secrets).unwrap();
    let opened = join.open(&sealed).unwrap();
    assert_eq!(opened.device, DeviceId(2));
    vec![
        ("link-code", offer.code().encode()),
        ("link-rendezvous", hex(join.rendezvous().as_bytes())),
        ("link-join-mac", hex(join.mac().as_bytes())),
        ("link-sealed-secrets", hex(&sealed)),
    ]
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
    let devices = alices_device_list();
    let mut all = vec![
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
                    devices: Vec::new(),
                }),
            )),
        ),
        (
            "device-list-transcript",
            hex(devices.list.transcript().as_bytes()),
        ),
        ("device-list-signature", hex(devices.signature.as_bytes())),
        (
            "signed-device-list",
            hex(&rmp_serde::to_vec_named(&devices).unwrap()),
        ),
    ];
    all.extend(link_vectors());
    all
}

/// The code block following `<!-- vector: NAME -->` in the document (after its info
/// string, `hex` or `text`), without whitespace.
fn documented(doc: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- vector: {name} -->");
    let after = doc.split(&marker).nth(1)?;
    let block = after.split("```").nth(1)?;
    let (_info, body) = block.split_once('\n')?;
    Some(body.split_whitespace().collect())
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
            let info = if name == "link-code" { "text" } else { "hex" };
            println!(
                "<!-- vector: {name} -->\n```{info}\n{}\n```\n",
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
        match name {
            "auth" | "send" | "ack" => {
                let bytes = from_hex(&hex);
                let frame = wire::decode_client(&bytes).unwrap();
                assert_eq!(wire::encode_client(&frame).unwrap(), bytes);
            }
            "hello" | "accepted" | "deliver" | "drained" | "error" => {
                let bytes = from_hex(&hex);
                let frame = wire::decode_server(&bytes).unwrap();
                assert_eq!(wire::encode_server(&frame).unwrap(), bytes);
            }
            _ => {}
        }
    }
}
