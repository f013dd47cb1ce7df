//! The rule for optional fields (`docs/protocol.md` §2), in both directions: a decoder
//! takes a missing key and `nil` alike. Each frame with optional fields is written here
//! by hand both ways (the encoder only ever writes one of them) and must decode to the
//! same value.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId, PrekeyId, Seq};
use parley_protocol::prekeys::{OneTimePrekey, PrekeySecret, SignedPrekey};
use parley_protocol::wire::{self, ClientFrame, ServerFrame};
use rand_core::OsRng;
use serde::Serialize;

/// `{v: 1, rid, body: {kind: body}}`, with `rid` written as nil or left out.
fn frame<B: Serialize>(rid: Rid, kind: &str, body: B) -> Vec<u8> {
    #[derive(Serialize)]
    struct WithRid<'a, B> {
        v: u8,
        rid: Option<u32>,
        body: BTreeMap<&'a str, B>,
    }
    #[derive(Serialize)]
    struct WithoutRid<'a, B> {
        v: u8,
        body: BTreeMap<&'a str, B>,
    }
    let body = BTreeMap::from([(kind, body)]);
    match rid {
        Rid::Some(rid) => rmp_serde::to_vec_named(&WithRid {
            v: 1,
            rid: Some(rid),
            body,
        }),
        Rid::Nil => rmp_serde::to_vec_named(&WithRid {
            v: 1,
            rid: None,
            body,
        }),
        Rid::Absent => rmp_serde::to_vec_named(&WithoutRid { v: 1, body }),
    }
    .unwrap()
}

#[derive(Clone, Copy)]
enum Rid {
    Some(u32),
    Nil,
    Absent,
}

fn client(bytes: &[u8]) -> ClientFrame {
    wire::decode_client(bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn server(bytes: &[u8]) -> ServerFrame {
    wire::decode_server(bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn address() -> DeviceAddress {
    DeviceAddress {
        account: AccountId([7; 32]),
        device: DeviceId(1),
    }
}

#[test]
fn send_without_category_or_with_category_nil_is_the_same_frame() {
    #[derive(Serialize)]
    struct SendNil {
        to: DeviceAddress,
        id: MessageId,
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
        category: Option<()>,
        receipt: Option<bool>,
    }
    #[derive(Serialize)]
    struct SendAbsent {
        to: DeviceAddress,
        id: MessageId,
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
    }
    let nil = SendNil {
        to: address(),
        id: MessageId([3; 16]),
        ciphertext: b"opaque".to_vec(),
        category: None,
        receipt: None,
    };
    let absent = SendAbsent {
        to: address(),
        id: MessageId([3; 16]),
        ciphertext: b"opaque".to_vec(),
    };
    let nil = client(&frame(Rid::Some(2), "send", nil));
    assert_eq!(nil, client(&frame(Rid::Some(2), "send", absent)));
    // What the encoder writes is the absent form, and it decodes the same.
    assert_eq!(client(&wire::encode_client(&nil).unwrap()), nil);

    // `receipt`: nil and absent are false; true is written and read back.
    let wire::ClientBody::Send(mut send) = nil.body.clone() else {
        panic!("a send")
    };
    assert!(!send.receipt);
    send.receipt = true;
    let marked = ClientFrame::new(nil.rid, wire::ClientBody::Send(send));
    let bytes = wire::encode_client(&marked).unwrap();
    assert!(bytes.windows(7).any(|w| w == b"receipt"));
    assert_eq!(client(&bytes), marked);
    assert!(!wire::encode_client(&nil)
        .unwrap()
        .windows(7)
        .any(|w| w == b"receipt"));
}

#[test]
fn upload_prekeys_and_register_take_absent_keys_as_nil() {
    #[derive(Serialize)]
    struct UploadNil {
        signed_prekey: Option<SignedPrekey>,
        kem_prekey: Option<()>,
        one_time_prekeys: Vec<OneTimePrekey>,
    }
    #[derive(Serialize)]
    struct UploadAbsent {
        one_time_prekeys: Vec<OneTimePrekey>,
    }
    let one_time = vec![PrekeySecret::generate(PrekeyId(4), &mut OsRng).one_time()];
    let nil = UploadNil {
        signed_prekey: None,
        kem_prekey: None,
        one_time_prekeys: one_time.clone(),
    };
    let absent = UploadAbsent {
        one_time_prekeys: one_time,
    };
    assert_eq!(
        client(&frame(Rid::Some(3), "upload_prekeys", nil)),
        client(&frame(Rid::Some(3), "upload_prekeys", absent))
    );

    #[derive(Serialize)]
    struct SetNameNil {
        display_name: Option<String>,
    }
    #[derive(Serialize)]
    struct Empty {}
    assert_eq!(
        client(&frame(
            Rid::Some(4),
            "set_display_name",
            SetNameNil { display_name: None }
        )),
        client(&frame(Rid::Some(4), "set_display_name", Empty {}))
    );
}

#[test]
fn server_frames_take_absent_keys_as_nil_too() {
    // A pushed frame's rid.
    #[derive(Serialize)]
    struct Drained {
        through: Seq,
    }
    let nil = server(&frame(Rid::Nil, "drained", Drained { through: Seq(4) }));
    assert_eq!(nil.rid, None);
    assert_eq!(
        nil,
        server(&frame(Rid::Absent, "drained", Drained { through: Seq(4) }))
    );

    // An error without retry_after_ms.
    #[derive(Serialize)]
    struct ErrorNil {
        code: &'static str,
        message: &'static str,
        retry_after_ms: Option<u64>,
    }
    #[derive(Serialize)]
    struct ErrorAbsent {
        code: &'static str,
        message: &'static str,
    }
    let nil = ErrorNil {
        code: "not_found",
        message: "device not found",
        retry_after_ms: None,
    };
    let absent = ErrorAbsent {
        code: "not_found",
        message: "device not found",
    };
    assert_eq!(
        server(&frame(Rid::Some(5), "error", nil)),
        server(&frame(Rid::Some(5), "error", absent))
    );

    // A bundle without a one-time prekey, and `resolved` without a display name.
    let alice = IdentityKeyPair::generate(&mut OsRng);
    let spk = PrekeySecret::generate(PrekeyId(1), &mut OsRng).signed_by(&alice);
    #[derive(Serialize)]
    struct BundleNil {
        identity: parley_protocol::identity::IdentityPublic,
        device: DeviceId,
        signed_prekey: SignedPrekey,
        kem_prekey: Option<()>,
        one_time_prekey: Option<()>,
    }
    #[derive(Serialize)]
    struct BundleAbsent {
        identity: parley_protocol::identity::IdentityPublic,
        device: DeviceId,
        signed_prekey: SignedPrekey,
    }
    let nil = BundleNil {
        identity: alice.public(),
        device: DeviceId(1),
        signed_prekey: spk.clone(),
        kem_prekey: None,
        one_time_prekey: None,
    };
    let absent = BundleAbsent {
        identity: alice.public(),
        device: DeviceId(1),
        signed_prekey: spk,
    };
    assert_eq!(
        server(&frame(Rid::Some(6), "bundle", nil)),
        server(&frame(Rid::Some(6), "bundle", absent))
    );

    #[derive(Serialize)]
    struct ResolvedNil {
        handle: &'static str,
        account: AccountId,
        display_name: Option<String>,
    }
    #[derive(Serialize)]
    struct ResolvedAbsent {
        handle: &'static str,
        account: AccountId,
    }
    let resolved = server(&frame(
        Rid::Some(7),
        "resolved",
        ResolvedAbsent {
            handle: "bob",
            account: AccountId([9; 32]),
        },
    ));
    assert_eq!(
        resolved,
        server(&frame(
            Rid::Some(7),
            "resolved",
            ResolvedNil {
                handle: "bob",
                account: AccountId([9; 32]),
                display_name: None,
            }
        ))
    );
    // The server omits `display_name` when absent (§7), and that decodes the same.
    assert_eq!(server(&wire::encode_server(&resolved).unwrap()), resolved);
}
