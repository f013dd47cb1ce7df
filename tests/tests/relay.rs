//! The relay over real WebSockets: registration, authentication, prekeys, sending online
//! and offline, acknowledgements, retries and slow consumers. Against a real server
//! process or, through the [`Deployment`] switch, a two-node cluster with each party on
//! another node than the last.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use parley_protocol::ids::{MessageId, PrekeyId, Seq};
use parley_protocol::wire::client::{ClientBody, FetchBundle, ResolveHandle, UploadPrekeys};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use parley_protocol::Handle;
use parley_tests::deployment::Deployment;
use parley_tests::{Client, TestAccount};

/// A deployment with the kit's usual arguments plus `extra`; `None` (the test passes as
/// skipped, saying why) when the cluster's services are not installed.
fn deployment(extra: &[&str]) -> Option<Deployment> {
    Deployment::start_temp(extra).unwrap()
}

fn id(n: u32) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    MessageId(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_two_accounts_then_authenticate_and_resolve_handles() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 10);
    let bob = TestAccount::new(Some("@Bob"), 10);
    drop(Client::register(&server.url_for(0), &alice).await.unwrap());
    drop(Client::register(&server.url_for(1), &bob).await.unwrap());

    let mut a = Client::login(&server.url_for(0), &alice).await.unwrap();
    let _b = Client::login(&server.url_for(1), &bob).await.unwrap();
    let reply = a
        .request(ClientBody::ResolveHandle(ResolveHandle {
            handle: Handle::parse("bob").unwrap(),
        }))
        .await
        .unwrap();
    match reply {
        Ok(ServerBody::Resolved(r)) => assert_eq!(r.account, bob.identity.account_id()),
        other => panic!("unexpected {other:?}"),
    }
    let reply = a
        .request(ClientBody::ResolveHandle(ResolveHandle {
            handle: Handle::parse("nobody").unwrap(),
        }))
        .await
        .unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_handles_and_accounts_are_refused_and_the_connection_may_retry() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    drop(Client::register(&server.url_for(0), &alice).await.unwrap());

    let impostor = TestAccount::new(Some("ALICE"), 1);
    let mut c = Client::connect(&server.url_for(1)).await.unwrap();
    let reply = c.request(impostor.register_body(&c.hello)).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::HandleTaken));
    // Same connection, another handle: accepted.
    let renamed = TestAccount {
        handle: Some(Handle::parse("alice2").unwrap()),
        ..impostor
    };
    let reply = c.request(renamed.register_body(&c.hello)).await.unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::Authenticated(_))),
        "{reply:?}"
    );

    let mut c = Client::connect(&server.url_for(1)).await.unwrap();
    let reply = c.request(alice.register_body(&c.hello)).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::AccountExists));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_registration_is_refused() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let mut c = Client::connect(&server.url_for(0)).await.unwrap();
    let ClientBody::Register(mut register) = alice.register_body(&c.hello) else {
        unreachable!()
    };
    // Claim a different handle than the one signed.
    register.handle = Some(Handle::parse("mallory").unwrap());
    let reply = c.request(ClientBody::Register(register)).await.unwrap();
    assert_eq!(
        Client::error_code(&reply),
        Some(ErrorCode::InvalidSignature)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_one_time_prekey_is_served_once_then_the_signed_prekey_is_the_last_resort() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 3);
    let bob = TestAccount::new(Some("bob"), 0);
    drop(Client::register(&server.url_for(0), &alice).await.unwrap());
    let mut b = Client::register(&server.url_for(1), &bob).await.unwrap();

    let mut served = Vec::new();
    for _ in 0..5 {
        let reply = b
            .request(ClientBody::FetchBundle(FetchBundle {
                address: alice.address(),
            }))
            .await
            .unwrap();
        let Ok(ServerBody::Bundle(bundle)) = reply else {
            panic!("unexpected {reply:?}")
        };
        bundle.verify().expect("bundle signatures verify");
        assert_eq!(bundle.identity, alice.identity.public());
        served.push(bundle.one_time_prekey.map(|p| p.id));
    }
    assert_eq!(
        served,
        vec![
            Some(PrekeyId(1)),
            Some(PrekeyId(2)),
            Some(PrekeyId(3)),
            None,
            None
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bundle_fetches_never_share_a_one_time_prekey() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 40);
    drop(Client::register(&server.url_for(0), &alice).await.unwrap());
    let target = alice.address();

    let mut tasks = Vec::new();
    for n in 0..8 {
        let url = server.url_for(n + 1);
        tasks.push(tokio::spawn(async move {
            let fetcher = TestAccount::new(Some(&format!("fetcher{n}")), 0);
            let mut c = Client::register(&url, &fetcher).await.unwrap();
            let mut got = Vec::new();
            for _ in 0..8 {
                let reply = c
                    .request(ClientBody::FetchBundle(FetchBundle { address: target }))
                    .await
                    .unwrap();
                let Ok(ServerBody::Bundle(bundle)) = reply else {
                    panic!("unexpected {reply:?}")
                };
                got.push(bundle.one_time_prekey.map(|p| p.id));
            }
            got
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let handed_out: Vec<PrekeyId> = ids.iter().flatten().copied().collect();
    let distinct: HashSet<PrekeyId> = handed_out.iter().copied().collect();
    assert_eq!(handed_out.len(), 40, "64 fetches, 40 one-time prekeys");
    assert_eq!(distinct.len(), 40, "no one-time prekey handed out twice");
    assert_eq!(ids.iter().filter(|p| p.is_none()).count(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_is_told_when_one_time_prekeys_run_low_and_can_top_up() {
    let Some(server) = deployment(&["--prekeys-low-threshold", "2"]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 2);
    let bob = TestAccount::new(Some("bob"), 5);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    let mut b = Client::register(&server.url_for(1), &bob).await.unwrap();
    let reply = b
        .request(ClientBody::FetchBundle(FetchBundle {
            address: alice.address(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Ok(ServerBody::Bundle(_))));
    loop {
        match a.next_push().await.unwrap() {
            ServerBody::PrekeysLow(low) => {
                assert_eq!(low.remaining, 1);
                break;
            }
            ServerBody::Drained(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    let more: Vec<_> = (10..20)
        .map(|n| {
            parley_protocol::prekeys::PrekeySecret::generate(PrekeyId(n), &mut rand_core::OsRng)
                .one_time()
        })
        .collect();
    let reply = a
        .request(ClientBody::UploadPrekeys(UploadPrekeys {
            signed_prekey: None,
            kem_prekey: None,
            one_time_prekeys: more,
        }))
        .await
        .unwrap();
    match reply {
        Ok(ServerBody::PrekeysStored(s)) => assert_eq!(s.one_time_prekeys, 11),
        other => panic!("unexpected {other:?}"),
    }
    // A signed prekey signed by someone else is refused.
    let foreign = alice.signed_prekey.signed_by(&bob.identity);
    let reply = a
        .request(ClientBody::UploadPrekeys(UploadPrekeys {
            signed_prekey: Some(foreign),
            kem_prekey: None,
            one_time_prekeys: vec![],
        }))
        .await
        .unwrap();
    assert_eq!(
        Client::error_code(&reply),
        Some(ErrorCode::InvalidSignature)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_recipient_gets_the_envelope_at_once() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    let mut b = Client::register(&server.url_for(1), &bob).await.unwrap();
    assert!(matches!(b.next_push().await.unwrap(), ServerBody::Drained(d) if d.through == Seq(0)));

    let seq = a
        .send(bob.address(), id(1), b"opaque".to_vec())
        .await
        .unwrap();
    assert_eq!(seq, Seq(1));
    let d = b.next_deliver().await.unwrap();
    assert_eq!((d.seq, d.id, d.from), (Seq(1), id(1), alice.address()));
    assert_eq!(d.ciphertext, b"opaque");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_drains_its_queue_in_order_in_pages_on_reconnect() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    drop(Client::register(&server.url_for(1), &bob).await.unwrap());

    let total: u32 = 600; // more than two delivery pages
    let mut seqs = Vec::new();
    for n in 0..total {
        seqs.push(
            a.send(bob.address(), id(n), n.to_be_bytes().to_vec())
                .await
                .unwrap(),
        );
    }
    let mut b = Client::login(&server.url_for(1), &bob).await.unwrap();
    for (n, seq) in (0..total).zip(&seqs) {
        let d = b.next_deliver().await.unwrap();
        assert_eq!(d.seq, *seq, "the seq it was accepted at");
        assert_eq!(d.id, id(n));
        assert_eq!(d.ciphertext, n.to_be_bytes());
    }
    // `drained` comes right after the backlog.
    match b.next_push().await.unwrap() {
        ServerBody::Drained(d) => assert_eq!(Some(&d.through), seqs.last()),
        other => panic!("expected drained, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cumulative_ack_deletes_exactly_what_it_covers() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    drop(Client::register(&server.url_for(1), &bob).await.unwrap());
    let mut sent = Vec::new();
    for n in 1..=10 {
        sent.push(a.send(bob.address(), id(n), vec![1]).await.unwrap().0);
    }
    let mut b = Client::login(&server.url_for(1), &bob).await.unwrap();
    for _ in 1..=10 {
        b.next_deliver().await.unwrap();
    }
    b.ack(Seq(sent[5])).await.unwrap();
    // The ack has no reply; a request after it proves the server processed it.
    let _ = b
        .request(ClientBody::ResolveHandle(ResolveHandle {
            handle: Handle::parse("bob").unwrap(),
        }))
        .await
        .unwrap();
    drop(b);

    let mut b = Client::login(&server.url_for(1), &bob).await.unwrap();
    let mut seqs = Vec::new();
    loop {
        match b.next_push().await.unwrap() {
            ServerBody::Deliver(d) => seqs.push(d.seq.0),
            ServerBody::Drained(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, sent[6..], "the 7th to the 10th");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_message_id_returns_the_first_result_and_stores_nothing() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    drop(Client::register(&server.url_for(1), &bob).await.unwrap());
    let first = a.send(bob.address(), id(7), b"x".to_vec()).await.unwrap();
    let again = a.send(bob.address(), id(7), b"x".to_vec()).await.unwrap();
    let next = a.send(bob.address(), id(8), b"y".to_vec()).await.unwrap();
    assert_eq!(first, again);
    assert!(next > first);

    let mut b = Client::login(&server.url_for(1), &bob).await.unwrap();
    assert_eq!(b.next_deliver().await.unwrap().id, id(7));
    assert_eq!(b.next_deliver().await.unwrap().id, id(8));
    assert!(matches!(
        b.next_push().await.unwrap(),
        ServerBody::Drained(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_reused_for_another_recipient_or_other_bytes_is_refused() {
    let Some(server) = deployment(&[]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let carol = TestAccount::new(Some("carol"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    drop(Client::register(&server.url_for(1), &bob).await.unwrap());
    drop(Client::register(&server.url_for(1), &carol).await.unwrap());
    let send = |to, bytes: &[u8]| {
        ClientBody::Send(parley_protocol::wire::client::Send {
            to,
            id: id(7),
            ciphertext: bytes.to_vec(),
            category: None,
            receipt: false,
        })
    };
    let first = a.send(bob.address(), id(7), b"x".to_vec()).await.unwrap();
    let reply = a.request(send(carol.address(), b"x")).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::IdReused));
    let reply = a.request(send(bob.address(), b"other")).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::IdReused));
    // The genuine retry still gets the first result.
    assert_eq!(
        a.send(bob.address(), id(7), b"x".to_vec()).await.unwrap(),
        first
    );
    let mut c = Client::login(&server.url_for(1), &carol).await.unwrap();
    assert!(
        matches!(c.next_push().await.unwrap(), ServerBody::Drained(d) if d.through == Seq(0)),
        "nothing was queued for carol"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_an_unknown_device_or_too_much_is_refused() {
    let Some(server) = deployment(&["--max-envelope-bytes", "1000"]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let nobody = TestAccount::new(None, 0);
    let bob = TestAccount::new(None, 0);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    drop(Client::register(&server.url_for(1), &bob).await.unwrap());
    let reply = a
        .request(ClientBody::Send(parley_protocol::wire::client::Send {
            to: nobody.address(),
            id: id(1),
            ciphertext: vec![0; 10],
            category: None,
            receipt: false,
        }))
        .await
        .unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::NotFound));
    let reply = a
        .request(ClientBody::Send(parley_protocol::wire::client::Send {
            to: bob.address(),
            id: id(2),
            ciphertext: vec![0; 1001],
            category: None,
            receipt: false,
        }))
        .await
        .unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::TooLarge));
    assert_eq!(a.hello.max_envelope_bytes, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_loses_nothing() {
    let Some(server) = deployment(&["--write-timeout", "300ms", "--write-buffer-bytes", "131072"])
    else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    let mut stalled = Client::register(&server.url_for(1), &bob).await.unwrap();

    // Bob stops reading. 48 MiB of envelopes overflow every socket buffer on the way.
    let total: u32 = 800;
    let body = vec![0x5a; 60 * 1024];
    for n in 0..total {
        a.send(bob.address(), id(n), body.clone()).await.unwrap();
    }
    // Now read what Bob's socket still holds: the server has hung up before the end.
    let mut received = 0u32;
    let ended_early = loop {
        match stalled.next_deliver().await {
            Ok(_) => {
                received += 1;
                if received == total {
                    break false;
                }
            }
            Err(_) => break true,
        }
    };
    assert!(ended_early, "the stalled connection was not closed");
    assert!(received < total);

    // Nothing was lost: a new connection gets every envelope, in order.
    let mut b = Client::login(&server.url_for(1), &bob).await.unwrap();
    for n in 0..total {
        let d = b.next_deliver().await.unwrap();
        assert_eq!(d.id, id(n));
        b.ack(d.seq).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_frees_its_handle_and_can_no_longer_log_in() {
    use parley_protocol::wire::client::DeleteAccount;
    let Some(server) = deployment(&[]) else {
        return;
    };
    let old = TestAccount::new(Some("bob"), 1);
    let mut c = Client::register(&server.url_for(0), &old).await.unwrap();
    let reply = c
        .request(ClientBody::DeleteAccount(DeleteAccount {}))
        .await
        .unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::AccountDeleted(_))),
        "{reply:?}"
    );
    assert_eq!(c.closed().await.unwrap(), Some(1000));

    assert!(Client::login(&server.url_for(1), &old).await.is_err());
    let new = TestAccount::new(Some("bob"), 1);
    drop(Client::register(&server.url_for(1), &new).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_envelopes_expire_after_the_retention_period() {
    let Some(server) = deployment(&[
        "--retention",
        "300ms",
        "--dedup-window",
        "300ms",
        "--sweep-interval",
        "100ms",
    ]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    drop(Client::register(&server.url_for(1), &bob).await.unwrap());
    let first = a
        .send(bob.address(), id(1), b"too late".to_vec())
        .await
        .unwrap();
    // Whichever server sweeps, it says so in its metrics.
    for swept in [
        "parley_envelopes_expired_total",
        "parley_dedup_entries_expired_total",
    ] {
        server
            .wait_for_metric(swept, &[], 1.0, Duration::from_secs(10))
            .await
            .unwrap();
    }

    let mut b = Client::login(&server.url_for(1), &bob).await.unwrap();
    match b.next_push().await.unwrap() {
        ServerBody::Drained(d) => assert_eq!(d.through, Seq(0), "nothing left to deliver"),
        other => panic!("expected an empty queue, got {other:?}"),
    }
    // The retry dedup entry expired too: the same id is a new message now.
    let again = a
        .send(bob.address(), id(1), b"again".to_vec())
        .await
        .unwrap();
    assert!(again > first, "a new seq: {again:?} after {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_of_unknown_handles_are_rate_limited_per_account() {
    let Some(server) = deployment(&["--failed-handle-lookups-per-minute", "2"]) else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let mut a = Client::register(&server.url_for(0), &alice).await.unwrap();
    let lookup = |name: &str| {
        ClientBody::ResolveHandle(ResolveHandle {
            handle: Handle::parse(name).unwrap(),
        })
    };
    for name in ["nobody", "noone"] {
        let reply = a.request(lookup(name)).await.unwrap();
        assert_eq!(Client::error_code(&reply), Some(ErrorCode::NotFound));
    }
    let error = a.request(lookup("someone")).await.unwrap().unwrap_err();
    assert_eq!(error.code, ErrorCode::RateLimited);
    assert!(error.retry_after_ms.unwrap() > 0);
    // Existing handles still resolve.
    for _ in 0..5 {
        let reply = a.request(lookup("alice")).await.unwrap();
        assert!(matches!(reply, Ok(ServerBody::Resolved(_))), "{reply:?}");
    }
}
