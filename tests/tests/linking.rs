//! Linking a device through a real server (ADR 0007, protocol.md §15): the relay pairs the
//! existing device and the new one under the code's rendezvous, once, for a limited time,
//! and never sees the account secrets. Both clients are played with the protocol crate
//! (`parley_protocol::devices`) over raw frames. Through the [`Deployment`] switch the two
//! devices sit on different nodes of a cluster.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_protocol::devices::{LinkJoin, LinkOffer, LinkSecrets};
use parley_protocol::ids::DeviceId;
use parley_protocol::wire::client::{ClientBody, JoinLink, OpenLink, PublishDevices, SealLink};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use parley_tests::deployment::Deployment;
use parley_tests::store_contract::device_list;
use parley_tests::{Client, TestAccount};
use rand_core::OsRng;

/// The next `link_joined` pushed to `client`, past the backlog's `drained`.
async fn next_link_joined(client: &mut Client) -> parley_protocol::wire::server::LinkJoined {
    loop {
        match client.next_push().await.unwrap() {
            ServerBody::LinkJoined(joined) => return joined,
            ServerBody::Drained(_) | ServerBody::PrekeysLow(_) => continue,
            other => panic!("expected link_joined, got {other:?}"),
        }
    }
}

fn join_body(join: &LinkJoin) -> ClientBody {
    ClientBody::JoinLink(JoinLink {
        rendezvous: join.rendezvous(),
        public: join.public(),
        mac: join.mac(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_joins_with_the_code_and_logs_in_as_the_account() {
    let Some(server) = Deployment::start_temp(&[]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let mut phone = Client::register(&server.url_for(0), &alice).await.unwrap();

    // The phone shows a code.
    let offer = LinkOffer::generate(&mut OsRng);
    let opened = phone
        .request(ClientBody::OpenLink(OpenLink {
            rendezvous: offer.code().rendezvous(),
        }))
        .await
        .unwrap();
    assert!(
        matches!(opened, Ok(ServerBody::LinkOpened(_))),
        "{opened:?}"
    );
    let code = offer.code().encode();

    // The laptop (on the other node of a cluster) joins with the code it was shown.
    let mut laptop = Client::connect(&server.url_for(1)).await.unwrap();
    let join = LinkJoin::new(
        parley_protocol::devices::LinkCode::decode(&code).unwrap(),
        &mut OsRng,
    );
    let join_rid = laptop.send_frame(join_body(&join)).await.unwrap();

    // The phone is told, checks the MAC, lists the laptop and seals the secrets.
    let joined = next_link_joined(&mut phone).await;
    assert_eq!(joined.rendezvous, offer.code().rendezvous());
    let list = device_list(&alice, 1, &[1, 2]);
    let published = phone
        .request(ClientBody::PublishDevices(PublishDevices {
            list: list.clone(),
        }))
        .await
        .unwrap();
    assert!(
        matches!(published, Ok(ServerBody::Devices(_))),
        "{published:?}"
    );
    let secrets = LinkSecrets::new(&alice.identity, DeviceId(2), list, alice.handle.clone());
    let sealed = offer.seal(&joined.public, &joined.mac, &secrets).unwrap();
    let done = phone
        .request(ClientBody::SealLink(SealLink {
            rendezvous: joined.rendezvous,
            sealed: sealed.clone(),
        }))
        .await
        .unwrap();
    assert!(matches!(done, Ok(ServerBody::Done(_))), "{done:?}");

    // The laptop opens them and logs in as device 2 on the same connection.
    let Ok(ServerBody::LinkSealed(answer)) = laptop.reply_to(join_rid).await.unwrap() else {
        panic!("expected link_sealed");
    };
    assert_eq!(
        answer.sealed, sealed,
        "the relay forwards the bytes as sealed"
    );
    let received = join.open(&answer.sealed).unwrap();
    assert_eq!(received.device, DeviceId(2));
    let identity = received.identity();
    assert_eq!(identity.account_id(), alice.identity.account_id());
    let seed = alice.identity.to_secret_bytes();
    assert!(
        !answer
            .sealed
            .windows(32)
            .any(|w| w == &seed[..32] || w == &seed[32..]),
        "no identity secret in what the relay carried"
    );
    let as_laptop = TestAccount {
        identity,
        ..TestAccount::new(None, 0)
    };
    let login = laptop
        .request(as_laptop.auth_body_as(&laptop.hello, DeviceId(2)))
        .await
        .unwrap();
    assert!(matches!(login, Ok(ServerBody::Authenticated(a)) if a.address.device == DeviceId(2)));

    // Used once: the same code again finds nobody.
    let mut again = Client::connect(&server.url_for(0)).await.unwrap();
    let other = LinkJoin::new(offer.code().clone(), &mut OsRng);
    let refused = again.request(join_body(&other)).await.unwrap();
    assert_eq!(
        Client::error_code(&refused),
        Some(ErrorCode::LinkUnavailable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_expired_code_is_refused_and_a_connection_opens_one_at_a_time() {
    let Some(server) = Deployment::start_temp(&["--link-lifetime", "1s"]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let mut phone = Client::register(&server.url_for(0), &alice).await.unwrap();

    // Nobody waits on a code never shown.
    let mut stranger = Client::connect(&server.url_for(1)).await.unwrap();
    let unknown = LinkJoin::new(LinkOffer::generate(&mut OsRng).code().clone(), &mut OsRng);
    let refused = stranger.request(join_body(&unknown)).await.unwrap();
    assert_eq!(
        Client::error_code(&refused),
        Some(ErrorCode::LinkUnavailable)
    );

    // One open rendezvous per connection.
    let offer = LinkOffer::generate(&mut OsRng);
    let open = |offer: &LinkOffer| {
        ClientBody::OpenLink(OpenLink {
            rendezvous: offer.code().rendezvous(),
        })
    };
    assert!(phone.request(open(&offer)).await.unwrap().is_ok());
    let second = phone
        .request(open(&LinkOffer::generate(&mut OsRng)))
        .await
        .unwrap();
    assert_eq!(
        Client::error_code(&second),
        Some(ErrorCode::LinkUnavailable)
    );

    // A device joins, the phone never seals: after the lifetime the join is refused.
    let mut laptop = Client::connect(&server.url_for(1)).await.unwrap();
    let join = LinkJoin::new(offer.code().clone(), &mut OsRng);
    let rid = laptop.send_frame(join_body(&join)).await.unwrap();
    next_link_joined(&mut phone).await;
    let expired = laptop.reply_to(rid).await.unwrap();
    assert_eq!(
        Client::error_code(&expired),
        Some(ErrorCode::LinkUnavailable)
    );
    // Sealing after the expiry finds no device either.
    let late = phone
        .request(ClientBody::SealLink(SealLink {
            rendezvous: offer.code().rendezvous(),
            sealed: b"too late".to_vec(),
        }))
        .await
        .unwrap();
    assert_eq!(Client::error_code(&late), Some(ErrorCode::LinkUnavailable));
}
