//! The relay's business rules, seen from the wire: consent per category, revocation and
//! purging, uniform refusals, forged and replayed consent, the care window, reach and
//! rate limits, blocks, reports and suspension, confusable names, certificates. The
//! operator's commands run as the real `parley-server admin` binary on the live data
//! directory. (End-to-end tests with the SDK and the CLI are in `business.rs`.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_protocol::business::{Category, CategorySet, ConsentGrant};
use parley_protocol::ids::AccountId;
use parley_protocol::wire::client::{
    Block, ClientBody, FetchBusiness, Report, RevokeConsent, SetDisplayName,
};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use parley_tests::business::{
    admin, grant, nonce, now_ms, revocation, send_grant, send_in, send_revocation, verify_business,
};
use parley_tests::client::Reply;
use parley_tests::{Client, ServerProcess, TestAccount, TestServer};

const SECURITY: Option<Category> = Some(Category::SecurityAlert);

fn set(categories: &[Category]) -> CategorySet {
    CategorySet::of(categories.iter().copied())
}

fn accepted(reply: &Reply) -> bool {
    matches!(reply, Ok(ServerBody::Accepted(_)))
}

fn code(reply: &Reply) -> Option<ErrorCode> {
    Client::error_code(reply)
}

/// A server with the business `acme` ("Acme Bank", security_alert, transactional and
/// marketing) and connected clients for it and for each person in `people`.
struct World {
    server: TestServer,
    bank: TestAccount,
    bank_client: Client,
    people: Vec<(TestAccount, Client)>,
}

impl World {
    async fn new(people: usize, adjust: impl FnOnce(&mut parley_server::config::Config)) -> World {
        let server = TestServer::start_with(adjust).await.unwrap();
        let bank = TestAccount::new(Some("acme"), 5);
        let bank_client = Client::register(&server.url(), &bank).await.unwrap();
        verify_business(
            server.dir.path(),
            "acme",
            "Acme Bank",
            "security_alert,transactional,marketing",
        )
        .unwrap();
        let mut list = Vec::new();
        for i in 0..people {
            let person = TestAccount::new(Some(&format!("person{i}")), 5);
            let client = Client::register(&server.url(), &person).await.unwrap();
            list.push((person, client));
        }
        World {
            server,
            bank,
            bank_client,
            people: list,
        }
    }

    fn bank_id(&self) -> AccountId {
        self.bank.identity.account_id()
    }

    async fn grant(&mut self, person: usize, categories: &[Category]) -> Reply {
        let g = grant(&self.people[person].0, self.bank_id(), set(categories));
        send_grant(&mut self.people[person].1, g).await.unwrap()
    }

    async fn bank_sends(&mut self, person: usize, category: Option<Category>) -> Reply {
        let to = self.people[person].0.address();
        send_in(&mut self.bank_client, to, category).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_reaches_a_person_only_in_the_categories_granted() {
    let mut w = World::new(1, |_| {}).await;
    let before = w.bank_sends(0, SECURITY).await;
    assert_eq!(code(&before), Some(ErrorCode::Refused), "{before:?}");

    let reply = w.grant(0, &[Category::SecurityAlert]).await;
    match reply {
        Ok(ServerBody::ConsentUpdated(u)) => {
            assert_eq!(u.categories, set(&[Category::SecurityAlert]));
            assert_eq!(u.purged, 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(accepted(&w.bank_sends(0, SECURITY).await));
    let deliver = w.people[0].1.next_deliver().await.unwrap();
    assert_eq!(deliver.category, SECURITY);
    assert_eq!(deliver.from, w.bank.address());

    let marketing = w.bank_sends(0, Some(Category::Marketing)).await;
    assert_eq!(code(&marketing), Some(ErrorCode::Refused));
    // Not in the certificate, or no category at all.
    let auth = w.bank_sends(0, Some(Category::Authentication)).await;
    assert_eq!(code(&auth), Some(ErrorCode::CategoryNotAllowed));
    let none = w.bank_sends(0, None).await;
    assert_eq!(code(&none), Some(ErrorCode::CategoryNotAllowed));

    let scrape = parley_tests::admin::http_get(w.server.admin_addr, "/metrics")
        .await
        .unwrap()
        .1;
    let metrics = parley_tests::admin::parse_exposition(&scrape).unwrap();
    let outcome = |o: &str| metrics.value("parley_business_sends_total", &[("outcome", o)]);
    assert_eq!(outcome("accepted"), Some(1.0));
    assert_eq!(outcome("refused"), Some(2.0));
    assert_eq!(outcome("category_not_allowed"), Some(2.0));
}

/// Issue 18, point 6: a person's envelope with a category is refused with
/// `not_a_business` (to a person or to a business, in any category), and nothing of it
/// is delivered: the next delivery is the envelope sent without a category.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_person_may_not_send_with_a_category() {
    let mut w = World::new(2, |_| {}).await;
    let bank = w.bank.address();
    let to = w.people[1].0.address();
    for (target, category) in [
        (to, Category::Marketing),
        (to, Category::SecurityAlert),
        (to, Category::Conversation),
        (bank, Category::Transactional),
    ] {
        let reply = send_in(&mut w.people[0].1, target, Some(category))
            .await
            .unwrap();
        assert_eq!(
            code(&reply),
            Some(ErrorCode::NotABusiness),
            "{category:?}: {reply:?}"
        );
    }
    assert!(accepted(
        &send_in(&mut w.people[0].1, to, None).await.unwrap()
    ));
    let deliver = w.people[1].1.next_deliver().await.unwrap();
    assert_eq!(deliver.category, None);
    assert_eq!(deliver.from, w.people[0].0.address());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_unconsenting_and_blocking_people_are_refused_alike() {
    let mut w = World::new(2, |_| {}).await;
    // person0 never opted in; person1 opted in, then blocked the bank.
    w.grant(1, &[Category::SecurityAlert]).await.unwrap();
    let bank = w.bank_id();
    let reply = w.people[1]
        .1
        .request(ClientBody::Block(Block { account: bank }))
        .await
        .unwrap();
    assert!(matches!(reply, Ok(ServerBody::Done(_))), "{reply:?}");
    let stranger = TestAccount::new(None, 0);

    let not_opted_in = w.bank_sends(0, SECURITY).await.unwrap_err();
    let blocked = w.bank_sends(1, SECURITY).await.unwrap_err();
    let unknown = send_in(&mut w.bank_client, stranger.address(), SECURITY)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(not_opted_in.code, ErrorCode::Refused);
    assert_eq!(not_opted_in, blocked);
    assert_eq!(not_opted_in, unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_stops_the_next_send_and_purges_what_is_queued() {
    let mut w = World::new(1, |_| {}).await;
    w.grant(0, &[Category::SecurityAlert, Category::Transactional])
        .await
        .unwrap();
    // The person goes offline; the bank queues two alerts and a receipt.
    let (person, client) = w.people.pop().unwrap();
    drop(client);
    let t = Some(Category::Transactional);
    for category in [SECURITY, SECURITY, t] {
        let reply = send_in(&mut w.bank_client, person.address(), category)
            .await
            .unwrap();
        assert!(accepted(&reply), "{reply:?}");
    }
    // The person logs in and revokes security alerts in the same breath: the revocation
    // frame follows `auth` before any reply is read.
    let r = revocation(&person, w.bank_id(), set(&[Category::SecurityAlert]));
    let mut c = Client::connect(&w.server.url()).await.unwrap();
    let rid_auth = c.send_frame(person.auth_body(&c.hello)).await.unwrap();
    let rid_revoke = c
        .send_frame(ClientBody::RevokeConsent(RevokeConsent { revocation: r }))
        .await
        .unwrap();
    assert!(c.reply_to(rid_auth).await.unwrap().is_ok());
    let purged = match c.reply_to(rid_revoke).await.unwrap() {
        Ok(ServerBody::ConsentUpdated(u)) => {
            assert_eq!(u.categories, set(&[Category::Transactional]));
            u.purged
        }
        other => panic!("unexpected {other:?}"),
    };
    // Effective before the business's next send.
    let reply = send_in(&mut w.bank_client, person.address(), SECURITY)
        .await
        .unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::Refused));
    let reply = send_in(&mut w.bank_client, person.address(), t)
        .await
        .unwrap();
    assert!(accepted(&reply));
    // Both unacknowledged alerts left the queue (a page read before the revocation
    // committed may still have carried them: the person's client drops business
    // messages it no longer consents to). Nothing in the revoked category follows.
    assert_eq!(purged, 2);
    let mut seen = Vec::new();
    while seen.iter().filter(|c| **c == t).count() < 2 {
        seen.push(c.next_deliver().await.unwrap().category);
    }
    assert_eq!(seen.last(), Some(&t), "{seen:?}");
    assert!(seen.len() <= 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_replayed_stale_and_expired_consent_is_refused() {
    let mut w = World::new(2, |_| {}).await;
    let bank = w.bank_id();
    let (bob, _bob_client) = w.people.pop().unwrap();
    let (alice, mut a) = w.people.pop().unwrap();
    let (alice, bob) = (&alice, &bob);

    // Foreign: bob's genuine grant uploaded by alice.
    let foreign = grant(bob, bank, set(&[Category::Marketing]));
    let reply = send_grant(&mut a, foreign).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::InvalidConsent));

    // Forged: alice's name, the bank's signature.
    let mut forged = grant(alice, bank, set(&[Category::Marketing]));
    forged.signature = w.bank.identity.sign(&forged.grant.transcript());
    let reply = send_grant(&mut a, forged).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::InvalidConsent));

    // Widened after signing.
    let mut widened = grant(alice, bank, set(&[Category::SecurityAlert]));
    widened.grant.categories = CategorySet::ALL;
    let reply = send_grant(&mut a, widened).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::InvalidConsent));

    // Expired.
    let expired = ConsentGrant {
        user: alice.identity.account_id(),
        business: bank,
        categories: set(&[Category::Marketing]),
        issued_at_ms: now_ms() - 10_000,
        expires_at_ms: Some(now_ms() - 5_000),
        nonce: nonce(),
    }
    .sign(&alice.identity)
    .unwrap();
    let reply = send_grant(&mut a, expired).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::InvalidConsent));

    // To an account that is not a business.
    let to_person = grant(
        alice,
        bob.identity.account_id(),
        set(&[Category::Marketing]),
    );
    let reply = send_grant(&mut a, to_person).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::InvalidConsent));

    // Replayed: a genuine grant, then revoked, then sent again.
    let genuine = grant(alice, bank, set(&[Category::Marketing]));
    assert!(send_grant(&mut a, genuine.clone()).await.unwrap().is_ok());
    let r = revocation(alice, bank, set(&[Category::Marketing]));
    assert!(send_revocation(&mut a, r).await.unwrap().is_ok());
    let reply = send_grant(&mut a, genuine.clone()).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::InvalidConsent));
    // A fresh grant signed before the revocation is stale too.
    let mut stale = genuine.grant.clone();
    stale.nonce = nonce();
    let stale = stale.sign(&alice.identity).unwrap();
    let reply = send_grant(&mut a, stale).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::InvalidConsent));
    let reply = send_in(
        &mut w.bank_client,
        alice.address(),
        Some(Category::Marketing),
    )
    .await
    .unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::Refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_reach_is_limited_by_tier_and_the_operator_raises_it() {
    let mut w = World::new(3, |c| {
        c.business_reach_tiers = "2,5".parse().unwrap();
    })
    .await;
    for i in 0..3 {
        w.grant(i, &[Category::Transactional]).await.unwrap();
    }
    let t = Some(Category::Transactional);
    assert!(accepted(&w.bank_sends(0, t).await));
    assert!(accepted(&w.bank_sends(1, t).await));
    let third = w.bank_sends(2, t).await.unwrap_err();
    assert_eq!(third.code, ErrorCode::ReachExhausted);
    let retry = third.retry_after_ms.unwrap();
    assert!(retry > 23 * 3_600_000 && retry <= 24 * 3_600_000, "{retry}");
    // Recipients already reached today stay reachable.
    assert!(accepted(&w.bank_sends(0, t).await));
    admin(w.server.dir.path(), &["set-tier", "acme", "1"]).unwrap();
    assert!(accepted(&w.bank_sends(2, t).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_over_its_messages_per_second_is_told_when_to_retry() {
    let mut w = World::new(1, |c| c.business_sends_per_second = 2).await;
    w.grant(0, &[Category::Transactional]).await.unwrap();
    let t = Some(Category::Transactional);
    assert!(accepted(&w.bank_sends(0, t).await));
    assert!(accepted(&w.bank_sends(0, t).await));
    let limited = w.bank_sends(0, t).await.unwrap_err();
    assert_eq!(limited.code, ErrorCode::RateLimited);
    assert!(limited.retry_after_ms.unwrap() <= 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_can_block_anyone_and_unblock() {
    let server = TestServer::start().await.unwrap();
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&server.url(), &alice).await.unwrap();
    let mut b = Client::register(&server.url(), &bob).await.unwrap();
    let block = ClientBody::Block(Block {
        account: bob.identity.account_id(),
    });
    assert!(a.request(block).await.unwrap().is_ok());
    let reply = send_in(&mut b, alice.address(), None).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::Refused));
    let unblock = ClientBody::Unblock(parley_protocol::wire::client::Unblock {
        account: bob.identity.account_id(),
    });
    assert!(a.request(unblock).await.unwrap().is_ok());
    assert!(accepted(
        &send_in(&mut b, alice.address(), None).await.unwrap()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_suspend_a_business_until_the_operator_lifts_it() {
    let mut w = World::new(3, |c| c.suspend_after_reports = 2).await;
    w.grant(2, &[Category::Transactional]).await.unwrap();
    let bank = w.bank_id();
    for i in 0..2 {
        let report = ClientBody::Report(Report { account: bank });
        let reply = w.people[i].1.request(report.clone()).await.unwrap();
        assert!(matches!(reply, Ok(ServerBody::Done(_))));
        // A second report from the same person does not count twice.
        w.people[i].1.request(report).await.unwrap().unwrap();
        if i == 0 {
            assert!(accepted(
                &w.bank_sends(2, Some(Category::Transactional)).await
            ));
        }
    }
    let reply = w.bank_sends(2, Some(Category::Transactional)).await;
    assert_eq!(code(&reply), Some(ErrorCode::Suspended));
    let listing = admin(w.server.dir.path(), &["list-businesses"]).unwrap();
    assert!(listing.contains("suspended (reports)"), "{listing}");
    admin(w.server.dir.path(), &["unsuspend", "acme"]).unwrap();
    assert!(accepted(
        &w.bank_sends(2, Some(Category::Transactional)).await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_confusable_with_a_verified_business_are_reserved() {
    let mut w = World::new(1, |_| {}).await;
    let set_name = |name: &str| {
        ClientBody::SetDisplayName(SetDisplayName {
            display_name: Some(name.to_owned()),
        })
    };
    let client = &mut w.people[0].1;
    for fake in [
        "Acme Bank",
        "ACME-BANK",
        "Acme B\u{0430}nk",
        "Acme\u{200B}Bank",
        "Acrne Bank",
        "Alice \u{2714}",
    ] {
        let reply = client.request(set_name(fake)).await.unwrap();
        assert_eq!(code(&reply), Some(ErrorCode::NameReserved), "{fake:?}");
    }
    assert!(client.request(set_name("Alice")).await.unwrap().is_ok());
    // Handles are names too.
    let impostor = TestAccount::new(Some("acme_bank"), 1);
    let mut c = Client::connect(&w.server.url()).await.unwrap();
    let reply = c.request(impostor.register_body(&c.hello)).await.unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::NameReserved));
    // And another business may not be verified under a confusable name.
    let other = TestAccount::new(Some("other"), 1);
    drop(Client::register(&w.server.url(), &other).await.unwrap());
    let e = verify_business(w.server.dir.path(), "other", "AcmeBank", "marketing").unwrap_err();
    assert!(e.to_string().contains("confusable"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_verify_the_certificate_against_the_authority_the_operator_prints() {
    let mut w = World::new(1, |_| {}).await;
    let printed = admin(w.server.dir.path(), &["authority"]).unwrap();
    let fetch = ClientBody::FetchBusiness(FetchBusiness {
        account: w.bank_id(),
    });
    let business = match w.people[0].1.request(fetch.clone()).await.unwrap() {
        Ok(ServerBody::Business(b)) => b,
        other => panic!("unexpected {other:?}"),
    };
    assert!(
        printed.contains(&business.authority.fingerprint()),
        "{printed}"
    );
    assert!(printed.contains(&business.authority.to_hex()));
    let cert = business.certificate.unwrap();
    cert.verify(&business.authority, &w.bank_id(), now_ms())
        .unwrap();
    assert_eq!(cert.certificate.display_name, "Acme Bank");
    assert!(!business.suspended);

    admin(w.server.dir.path(), &["revoke-business", "acme"]).unwrap();
    match w.people[0].1.request(fetch).await.unwrap() {
        Ok(ServerBody::Business(b)) => assert_eq!(b.certificate, None),
        other => panic!("unexpected {other:?}"),
    }
    w.grant(0, &[Category::SecurityAlert]).await.unwrap_err();
    let reply = w.bank_sends(0, SECURITY).await;
    assert_eq!(code(&reply), Some(ErrorCode::CategoryNotAllowed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_care_window_lets_a_business_reply_for_24_hours_and_not_after() {
    let dir = tempfile::tempdir().unwrap();
    let listen = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(dir.path(), listen, &[]).unwrap();
    let bank = TestAccount::new(Some("acme"), 2);
    let alice = TestAccount::new(Some("alice"), 2);
    let carol = TestAccount::new(Some("carol"), 2);
    let mut b = Client::register(&server.url(), &bank).await.unwrap();
    let mut a = Client::register(&server.url(), &alice).await.unwrap();
    drop(Client::register(&server.url(), &carol).await.unwrap());
    verify_business(dir.path(), "acme", "Acme Bank", "transactional").unwrap();
    let conversation = Some(Category::Conversation);

    // Nobody wrote to the bank: no reply possible.
    let reply = send_in(&mut b, alice.address(), conversation)
        .await
        .unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::Refused));
    // Alice writes; the bank may answer her, not carol.
    assert!(accepted(
        &send_in(&mut a, bank.address(), None).await.unwrap()
    ));
    assert!(accepted(
        &send_in(&mut b, alice.address(), conversation)
            .await
            .unwrap()
    ));
    let reply = send_in(&mut b, carol.address(), conversation)
        .await
        .unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::Refused));
    drop((a, b));
    server.kill().unwrap();

    // 25 hours later by the server's clock.
    let server = ServerProcess::start(dir.path(), listen, &["--test-clock-offset", "25h"]).unwrap();
    let mut b = Client::login(&server.url(), &bank).await.unwrap();
    let reply = send_in(&mut b, alice.address(), conversation)
        .await
        .unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::Refused));
    server.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_care_windows_are_swept_by_housekeeping() {
    let mut w = World::new(1, |c| {
        c.care_window = std::time::Duration::from_millis(300);
        c.sweep_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let bank = w.bank.address();
    assert!(accepted(
        &send_in(&mut w.people[0].1, bank, None).await.unwrap()
    ));
    let conversation = Some(Category::Conversation);
    assert!(accepted(&w.bank_sends(0, conversation).await));
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        code(&w.bank_sends(0, conversation).await),
        Some(ErrorCode::Refused)
    );
    let scrape = parley_tests::admin::http_get(w.server.admin_addr, "/metrics")
        .await
        .unwrap()
        .1;
    let metrics = parley_tests::admin::parse_exposition(&scrape).unwrap();
    let swept = metrics
        .value("parley_business_rows_expired_total", &[])
        .unwrap();
    assert!(swept >= 1.0, "{swept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uniform_refusals_take_the_same_time() {
    let mut w = World::new(2, |_| {}).await;
    w.grant(1, &[Category::SecurityAlert]).await.unwrap();
    let bank = w.bank_id();
    w.people[1]
        .1
        .request(ClientBody::Block(Block { account: bank }))
        .await
        .unwrap()
        .unwrap();
    let stranger = TestAccount::new(None, 0).address();
    let targets = [stranger, w.people[0].0.address(), w.people[1].0.address()];
    let mut times: [Vec<std::time::Duration>; 3] = Default::default();
    for round in 0..40 {
        for (i, to) in targets.iter().enumerate() {
            let started = std::time::Instant::now();
            let reply = send_in(&mut w.bank_client, *to, SECURITY).await.unwrap();
            let took = started.elapsed();
            assert_eq!(code(&reply), Some(ErrorCode::Refused));
            if round >= 5 {
                times[i].push(took);
            }
        }
    }
    let medians: Vec<std::time::Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    let spread = medians
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*medians.iter().min().unwrap());
    assert!(
        spread < std::time::Duration::from_millis(5),
        "medians unknown / not opted in / blocked: {medians:?}"
    );
}
