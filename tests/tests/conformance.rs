//! Protocol v1 as a third party meets it: what a client written from `docs/protocol.md`
//! alone ran into (issue 19), each checked against a real server over real WebSockets.
//!
//! * an account nobody can write to is refused (`invalid_prekey`, §4);
//! * an envelope over `max_envelope_bytes` is `too_large` with the connection open (§8);
//! * every `error` carries the `rid` of the frame it answers, when it has one (§7);
//! * `prekeys_low` comes right after `authenticated`, before the backlog (§5);
//! * a client may close right after an `ack`; the acked envelopes are gone (§6);
//! * a fixed-size field of another length is `malformed_frame` + 1007, the 1184-byte KEM
//!   prekey like any other (§2); a frame over 81 920 bytes is closed with 1009 and no
//!   `error` (§2, §9); `delete_account` frees the identity key (§6); a revocation purges
//!   what was delivered but not acknowledged (§14);
//! * error messages name the problem once and are cut at a character boundary (§7).
//!
//! The rule for optional fields (§2) is a decoder rule: `protocol/tests/optional_fields.rs`.
//! The document's own consistency: `protocol/tests/document.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parley_protocol::business::{Category, CategorySet};
use parley_protocol::ids::{MessageId, PrekeyId, RequestId, Seq};
use parley_protocol::limits::{KEM_PUBLIC_KEY_BYTES, MAX_ERROR_MESSAGE_LEN, MAX_FRAME_BYTES};
use parley_protocol::prekeys::SignedKemPrekey;
use parley_protocol::wire::client::{
    Ack, ClientBody, DeleteAccount, FetchBundle, Send, UploadPrekeys,
};
use parley_protocol::wire::server::{ErrorBody, ServerBody};
use parley_protocol::wire::{self, ClientFrame, CloseCode, ErrorCode, ServerFrame};
use parley_tests::raw_ws::{opcode, RawFrame, RawWs};
use parley_tests::{Client, TestAccount, TestServer};
use tokio_tungstenite::tungstenite::{Bytes, Message};

fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

/// `public` as `account`'s signed KEM prekey: the signature is right, the key may not be.
fn signed_kem(account: &TestAccount, public: Vec<u8>) -> SignedKemPrekey {
    SignedKemPrekey {
        id: PrekeyId(3),
        signature: account
            .identity
            .sign(&SignedKemPrekey::transcript(PrekeyId(3), &public)),
        public,
    }
}

/// The next frame that is not `drained` (after a login, `drained` may come first).
async fn next_but_drained(client: &mut Client) -> ServerFrame {
    loop {
        let frame = client.next_frame().await.unwrap();
        if !matches!(frame.body, ServerBody::Drained(_)) {
            return frame;
        }
    }
}

/// The `error` in `frame`, or a failure.
fn error_of(frame: ServerFrame) -> (Option<RequestId>, ErrorBody) {
    match frame.body {
        ServerBody::Error(e) => (frame.rid, e),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_or_upload_nobody_could_write_to_is_refused_with_invalid_prekey() {
    let server = TestServer::start().await.unwrap();
    let alice = TestAccount::new(Some("alice"), 2);
    let mut c = Client::connect(&server.url()).await.unwrap();
    let ClientBody::Register(honest) = alice.register_body(&c.hello) else {
        unreachable!()
    };

    // No KEM prekey at all.
    let mut without = honest.clone();
    without.kem_prekey = None;
    let reply = c.request(ClientBody::Register(without)).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::InvalidPrekey));
    // A correctly signed 1184-byte key that is not an ML-KEM-768 encapsulation key: all
    // 0xff (every coefficient 4095 ≥ q), then one coefficient of exactly q = 3329.
    let mut all_ff = honest.clone();
    all_ff.kem_prekey = Some(signed_kem(&alice, vec![0xff; KEM_PUBLIC_KEY_BYTES]));
    let reply = c.request(ClientBody::Register(all_ff)).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::InvalidPrekey));
    let mut one_q = alice.kem_prekey.public().to_vec();
    one_q[0] = 0x01;
    one_q[1] = (one_q[1] & 0xf0) | 0x0d;
    let mut just_q = honest.clone();
    just_q.kem_prekey = Some(signed_kem(&alice, one_q.clone()));
    let reply = c.request(ClientBody::Register(just_q)).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::InvalidPrekey));

    // The connection stayed open and nothing was stored: the honest one is accepted.
    let reply = c.request(ClientBody::Register(honest)).await.unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::Authenticated(_))),
        "{reply:?}"
    );

    // The same for an upload replacing the KEM prekey.
    for public in [vec![0xff; KEM_PUBLIC_KEY_BYTES], one_q] {
        let reply = c
            .request(ClientBody::UploadPrekeys(UploadPrekeys {
                signed_prekey: None,
                kem_prekey: Some(signed_kem(&alice, public)),
                one_time_prekeys: Vec::new(),
            }))
            .await
            .unwrap();
        assert_eq!(Client::error_code(&reply), Some(ErrorCode::InvalidPrekey));
    }

    // Whoever fetches alice's bundle gets the key she registered, one they can use.
    let bob = TestAccount::new(Some("bob"), 1);
    let mut b = Client::register(&server.url(), &bob).await.unwrap();
    let reply = b
        .request(ClientBody::FetchBundle(FetchBundle {
            address: alice.address(),
        }))
        .await
        .unwrap();
    let Ok(ServerBody::Bundle(bundle)) = reply else {
        panic!("{reply:?}")
    };
    let kem = bundle.kem_prekey.expect("a KEM prekey");
    assert_eq!(kem.public, alice.kem_prekey.public());
    assert_eq!(kem.check_key(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_over_the_announced_limit_is_too_large_and_the_connection_stays_open() {
    for configured in [None, Some(1000)] {
        let server = TestServer::start_with(|c| {
            if let Some(limit) = configured {
                c.max_envelope_bytes = limit;
            }
        })
        .await
        .unwrap();
        let alice = TestAccount::new(Some("alice"), 1);
        let bob = TestAccount::new(Some("bob"), 1);
        let mut a = Client::register(&server.url(), &alice).await.unwrap();
        drop(Client::register(&server.url(), &bob).await.unwrap());
        let limit = usize::try_from(a.hello.max_envelope_bytes).unwrap();
        assert_eq!(limit, configured.unwrap_or(65_536));

        let over = ClientBody::Send(Send {
            to: bob.address(),
            id: id(1),
            ciphertext: vec![7; limit + 1],
            category: None,
            receipt: false,
        });
        let rid = a.send_frame(over).await.unwrap();
        let (error_rid, error) = error_of(next_but_drained(&mut a).await);
        assert_eq!((error_rid, error.code), (Some(rid), ErrorCode::TooLarge));
        // Still open, and the limit itself is fine.
        let seq = a.send(bob.address(), id(2), vec![7; limit]).await.unwrap();
        assert_eq!(seq, Seq(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_carries_the_rid_of_the_frame_it_answers_when_it_has_one() {
    let server = TestServer::start().await.unwrap();
    // (bytes, rid the error carries, code, close code)
    let unknown_kind = b"\x83\xa1v\x01\xa3rid\x07\xa4body\x81\xa4nope\x80".to_vec();
    let other_version = b"\x83\xa1v\x02\xa3rid\x05\xa4body\x81\xa8new_kind\x80".to_vec();
    let mut v9 = ClientFrame::new(RequestId(8), ClientBody::Ack(Ack { through: Seq(1) }));
    v9.v = 9;
    let cases = [
        (
            unknown_kind,
            Some(RequestId(7)),
            ErrorCode::MalformedFrame,
            CloseCode::InvalidPayload,
        ),
        (
            other_version,
            Some(RequestId(5)),
            ErrorCode::UnsupportedVersion,
            CloseCode::ProtocolError,
        ),
        (
            wire::encode_client(&v9).unwrap(),
            Some(RequestId(8)),
            ErrorCode::UnsupportedVersion,
            CloseCode::ProtocolError,
        ),
        (
            vec![0xc1],
            None,
            ErrorCode::MalformedFrame,
            CloseCode::InvalidPayload,
        ),
        (
            vec![0x93, 0x01, 0x02, 0x03],
            None,
            ErrorCode::MalformedFrame,
            CloseCode::InvalidPayload,
        ),
    ];
    for (n, (bytes, rid, code, close)) in cases.into_iter().enumerate() {
        for authenticated in [false, true] {
            let mut c = if authenticated {
                let account = TestAccount::new(Some(&format!("user{n}")), 1);
                Client::register(&server.url(), &account).await.unwrap()
            } else {
                Client::connect(&server.url()).await.unwrap()
            };
            c.send_raw(Message::Binary(Bytes::from(bytes.clone())))
                .await
                .unwrap();
            let (error_rid, error) = error_of(next_but_drained(&mut c).await);
            assert_eq!(
                (error_rid, error.code),
                (rid, code),
                "{bytes:02x?}, authenticated: {authenticated}"
            );
            assert_eq!(c.closed().await.unwrap(), Some(close.code()));
        }
    }

    // auth_failed, which closes too, carries the auth's rid.
    let stranger = TestAccount::new(None, 0);
    let mut c = Client::connect(&server.url()).await.unwrap();
    let rid = c.send_frame(stranger.auth_body(&c.hello)).await.unwrap();
    let (error_rid, error) = error_of(c.next_frame().await.unwrap());
    assert_eq!((error_rid, error.code), (Some(rid), ErrorCode::AuthFailed));
    assert_eq!(
        c.closed().await.unwrap(),
        Some(CloseCode::AuthFailed.code())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prekeys_low_comes_right_after_authenticated_before_the_backlog() {
    let server = TestServer::start_with(|c| c.prekeys_low_threshold = 5)
        .await
        .unwrap();
    let alice = TestAccount::new(Some("alice"), 10);
    let bob = TestAccount::new(Some("bob"), 2);
    let mut a = Client::register(&server.url(), &alice).await.unwrap();
    drop(Client::register(&server.url(), &bob).await.unwrap());
    let mut seqs = Vec::new();
    for n in 1..=2 {
        seqs.push(a.send(bob.address(), id(n), vec![n]).await.unwrap());
    }
    let mut b = Client::connect(&server.url()).await.unwrap();
    let rid = b.send_frame(bob.auth_body(&b.hello)).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let frame = b.next_frame().await.unwrap();
        let expected_rid = matches!(frame.body, ServerBody::Authenticated(_)).then_some(rid);
        assert_eq!(frame.rid, expected_rid, "{frame:?}");
        bodies.push(frame.body);
    }
    assert!(
        matches!(bodies[0], ServerBody::Authenticated(_)),
        "{bodies:?}"
    );
    assert!(
        matches!(bodies[1], ServerBody::PrekeysLow(l) if l.remaining == 2),
        "{bodies:?}"
    );
    assert!(
        matches!(&bodies[2], ServerBody::Deliver(d) if d.seq == seqs[0]),
        "{bodies:?}"
    );
    assert!(
        matches!(&bodies[3], ServerBody::Deliver(d) if d.seq == seqs[1]),
        "{bodies:?}"
    );
    assert!(
        matches!(bodies[4], ServerBody::Drained(d) if d.through == seqs[1]),
        "{bodies:?}"
    );

    // And again, pushed, when a bundle fetch leaves fewer than the threshold.
    let reply = a
        .request(ClientBody::FetchBundle(FetchBundle {
            address: bob.address(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Ok(ServerBody::Bundle(_))), "{reply:?}");
    let pushed = b.next_frame().await.unwrap();
    assert_eq!(pushed.rid, None);
    assert!(
        matches!(pushed.body, ServerBody::PrekeysLow(l) if l.remaining == 1),
        "{pushed:?}"
    );
}

/// Polls the server's metric `name` until it is `value` (or fails after 10 s).
async fn metric_reaches(admin: SocketAddr, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = parley_tests::admin::http_get(admin, "/metrics")
            .await
            .unwrap();
        let scrape = parley_tests::admin::parse_exposition(&text).unwrap();
        let now = scrape.value(name, &[]);
        if now == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {now:?}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_close_right_after_an_ack_and_the_acked_envelopes_are_gone() {
    let server = TestServer::start().await.unwrap();
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url(), &alice).await.unwrap();
    drop(Client::register(&server.url(), &bob).await.unwrap());
    let mut seqs = Vec::new();
    for n in 1..=3 {
        seqs.push(a.send(bob.address(), id(n), vec![n]).await.unwrap());
    }
    metric_reaches(server.admin_addr, "parley_queue_depth", 3.0).await;

    let mut b = Client::login(&server.url(), &bob).await.unwrap();
    for seq in &seqs {
        assert_eq!(b.next_deliver().await.unwrap().seq, *seq);
    }
    b.ack(seqs[2]).await.unwrap();
    b.close().await.unwrap();

    metric_reaches(server.admin_addr, "parley_queue_depth", 0.0).await;
    // Counted too, although the connection was gone before the commit.
    metric_reaches(
        server.admin_addr,
        "parley_envelopes_acknowledged_total",
        3.0,
    )
    .await;
    let mut b = Client::login(&server.url(), &bob).await.unwrap();
    assert!(
        matches!(b.next_push().await.unwrap(), ServerBody::Drained(d) if d.through == Seq(0)),
        "nothing is delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kem_prekey_of_another_length_is_malformed_like_any_fixed_size_field() {
    let server = TestServer::start().await.unwrap();
    let alice = TestAccount::new(Some("alice"), 1);
    for len in [KEM_PUBLIC_KEY_BYTES - 1, KEM_PUBLIC_KEY_BYTES + 1] {
        let mut c = Client::connect(&server.url()).await.unwrap();
        let ClientBody::Register(mut register) = alice.register_body(&c.hello) else {
            unreachable!()
        };
        let mut public = alice.kem_prekey.public().to_vec();
        public.resize(len, 0);
        register.kem_prekey = Some(signed_kem(&alice, public));
        let rid = c.send_frame(ClientBody::Register(register)).await.unwrap();
        let (error_rid, error) = error_of(c.next_frame().await.unwrap());
        assert_eq!(
            (error_rid, error.code),
            (Some(rid), ErrorCode::MalformedFrame),
            "{len} bytes"
        );
        assert_eq!(
            c.closed().await.unwrap(),
            Some(CloseCode::InvalidPayload.code())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_frame_size_is_closed_with_1009_and_no_error_frame() {
    let server = TestServer::start().await.unwrap();
    let alice = TestAccount::new(Some("alice"), 1);
    drop(Client::register(&server.url(), &alice).await.unwrap());
    let mut ws = RawWs::connect(server.addr).await.unwrap();
    ws.login(&alice).await.unwrap();
    assert!(matches!(
        ws.read_parley().await.unwrap().body,
        ServerBody::Drained(_)
    ));
    ws.send(&RawFrame::new(
        opcode::BINARY,
        vec![0x80; MAX_FRAME_BYTES + 1],
    ))
    .await
    .unwrap();
    loop {
        match ws.read_frame().await.unwrap() {
            Some((opcode::PING | opcode::PONG, _)) => continue,
            Some((opcode::CLOSE, payload)) => {
                assert_eq!(payload[..2], CloseCode::MessageTooBig.code().to_be_bytes());
                break;
            }
            other => panic!("expected the close, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_accounts_identity_key_and_handle_may_register_again() {
    let server = TestServer::start().await.unwrap();
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut b = Client::register(&server.url(), &bob).await.unwrap();
    let mut a = Client::register(&server.url(), &alice).await.unwrap();
    b.send(alice.address(), id(1), b"before".to_vec())
        .await
        .unwrap();
    let reply = a
        .request(ClientBody::DeleteAccount(DeleteAccount {}))
        .await
        .unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::AccountDeleted(_))),
        "{reply:?}"
    );
    assert_eq!(a.closed().await.unwrap(), Some(CloseCode::Normal.code()));

    // The same key and handle: a new, empty account.
    let mut a = Client::register(&server.url(), &alice).await.unwrap();
    assert!(
        matches!(a.next_push().await.unwrap(), ServerBody::Drained(d) if d.through == Seq(0)),
        "the old queue is gone"
    );
    let seq = b
        .send(alice.address(), id(2), b"after".to_vec())
        .await
        .unwrap();
    assert_eq!(seq, Seq(1), "seq starts again from 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_purges_what_was_delivered_but_not_acknowledged() {
    use parley_tests::business::{grant, revocation, send_grant, send_in, send_revocation};
    let server = TestServer::start().await.unwrap();
    let bank = TestAccount::new(Some("acme"), 5);
    let mut bank_client = Client::register(&server.url(), &bank).await.unwrap();
    parley_tests::business::verify_business(
        server.dir.path(),
        "acme",
        "Acme Bank",
        "security_alert",
    )
    .unwrap();
    let person = TestAccount::new(Some("person"), 5);
    let mut p = Client::register(&server.url(), &person).await.unwrap();
    let security = CategorySet::of([Category::SecurityAlert]);
    let business = bank.identity.account_id();
    let reply = send_grant(&mut p, grant(&person, business, security))
        .await
        .unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::ConsentUpdated(_))),
        "{reply:?}"
    );
    let reply = send_in(
        &mut bank_client,
        person.address(),
        Some(Category::SecurityAlert),
    )
    .await
    .unwrap();
    assert!(matches!(reply, Ok(ServerBody::Accepted(_))), "{reply:?}");
    // Delivered, not acknowledged.
    assert_eq!(
        p.next_deliver().await.unwrap().category,
        Some(Category::SecurityAlert)
    );
    let reply = send_revocation(&mut p, revocation(&person, business, security))
        .await
        .unwrap();
    match reply {
        Ok(ServerBody::ConsentUpdated(u)) => assert_eq!(u.purged, 1),
        other => panic!("unexpected {other:?}"),
    }
    // It is not delivered again.
    p.close().await.unwrap();
    let mut p = Client::login(&server.url(), &person).await.unwrap();
    assert!(
        matches!(p.next_push().await.unwrap(), ServerBody::Drained(d) if d.through == Seq(0)),
        "the purged envelope is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_name_the_problem_once_and_are_cut_at_a_character_boundary() {
    let server = TestServer::start().await.unwrap();
    // A frame whose kind is 240 bytes of two-byte characters: the decoder's message
    // quotes it (and lists the known kinds), far over 256 bytes.
    let kind = "é".repeat(120);
    let mut bytes = b"\x83\xa1v\x01\xa3rid\x02\xa4body\x81\xd9".to_vec();
    bytes.push(u8::try_from(kind.len()).unwrap());
    bytes.extend_from_slice(kind.as_bytes());
    bytes.push(0x80);
    for prefix in ["", "x"] {
        // With and without one ASCII byte first, so the cut falls inside a character
        // one way or the other.
        let mut bytes = bytes.clone();
        if !prefix.is_empty() {
            let at = bytes.len() - kind.len() - 2;
            bytes[at] += 1;
            bytes.insert(at + 1, b'x');
        }
        let mut c = Client::connect(&server.url()).await.unwrap();
        c.send_raw(Message::Binary(Bytes::from(bytes)))
            .await
            .unwrap();
        let (rid, error) = error_of(c.next_frame().await.unwrap());
        assert_eq!(
            (rid, error.code),
            (Some(RequestId(2)), ErrorCode::MalformedFrame)
        );
        assert!(
            error.message.len() <= MAX_ERROR_MESSAGE_LEN,
            "{}",
            error.message
        );
        assert!(error.message.ends_with('…'), "{}", error.message);
        assert_eq!(
            error.message.matches("malformed frame").count(),
            1,
            "{}",
            error.message
        );
        assert_eq!(
            c.closed().await.unwrap(),
            Some(CloseCode::InvalidPayload.code())
        );
    }
}

/// §10 lists every limit a client can meet with its default, as `parley-server
/// print-config` shows them: each key that is a rate, a timeout, a maximum or a threshold
/// is in the table (the business limits are in §14), with the same default.
#[test]
fn every_server_limit_is_in_section_10_with_its_default() {
    let document = include_str!("../../docs/protocol.md");
    let section = |n: u32| {
        let start = document.find(&format!("\n## {n}. ")).unwrap();
        let rest = &document[start + 1..];
        &rest[..rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3)]
    };
    let limits = section(10);
    let business = section(14);
    let printed = std::process::Command::new(parley_tests::server::server_binary().unwrap())
        .arg("print-config")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8(printed.stdout).unwrap();
    let normalized = |v: &str| {
        v.trim_matches('"')
            .replace(' ', "")
            .replace("days", "d")
            .replace(',', "")
    };
    let mut checked = 0;
    for line in printed.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, rest)) = line.split_once(" = ") else {
            continue;
        };
        let value = rest.split("  #").next().unwrap_or_default();
        let is_limit = key.contains("_per_")
            || key.ends_with("_timeout")
            || key.starts_with("max_")
            || key.ends_with("_threshold")
            || key == "keepalive_interval"
            || key == "retention"
            || key == "dedup_window";
        if !is_limit {
            continue;
        }
        if key.starts_with("business_") {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(business.contains(&flag), "§14 names {flag}");
            continue;
        }
        let row = limits
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}`")))
            .unwrap_or_else(|| panic!("§10 has no row for `{key}`"));
        let default = row.split('|').nth(2).unwrap_or_default();
        assert_eq!(
            normalized(default),
            normalized(value),
            "§10's default for `{key}`"
        );
        checked += 1;
    }
    assert!(checked >= 14, "checked {checked} limits");
}
