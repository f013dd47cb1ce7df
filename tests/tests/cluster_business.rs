//! Business rules across the nodes of a cluster, with real processes (`parley_tests::
//! cluster`) and the raw test client: C7 consent granted, used and revoked on different
//! nodes, and revocation racing sends; C8 the daily reach counted exactly across nodes.
//! (C1-C5 and C9 are in `cluster.rs`.)
//!
//! Each test skips itself (one `SKIPPED:` line) where PostgreSQL or NATS is not installed,
//! and fails instead under `PARLEY_REQUIRE_SERVICES=1` (as `.ci/run` sets it).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::business::{Category, CategorySet};
use parley_protocol::ids::{AccountId, MessageId};
use parley_protocol::wire::client::{ClientBody, RevokeConsent};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use parley_tests::business::{
    grant, revocation, send_grant, send_in, send_revocation, verify_business_args,
};
use parley_tests::client::Reply;
use parley_tests::cluster::TestCluster;
use parley_tests::{long_tests, Client, TestAccount};

const SECURITY: Option<Category> = Some(Category::SecurityAlert);
/// Longest wait for the end of a drain.
const WAIT: Duration = Duration::from_secs(20);

fn security() -> CategorySet {
    CategorySet::of([Category::SecurityAlert])
}

/// Verifies `handle` as a business allowed `categories`, through the cluster's database.
fn verify(cluster: &TestCluster, handle: &str, categories: &str) {
    let args = verify_business_args(handle, "Acme Bank", categories);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.admin(&args).unwrap();
}

fn accepted_id(reply: &Reply) -> Option<MessageId> {
    match reply {
        Ok(ServerBody::Accepted(a)) => Some(a.id),
        _ => None,
    }
}

/// Grants `categories` to `business` on `client` (logged in as `person`); must succeed.
async fn grants(client: &mut Client, person: &TestAccount, business: AccountId) {
    let reply = send_grant(client, grant(person, business, security()))
        .await
        .unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::ConsentUpdated(_))),
        "{reply:?}"
    );
}

/// Revokes security_alert from `business`; must succeed.
async fn revokes(client: &mut Client, person: &TestAccount, business: AccountId) {
    let reply = send_revocation(client, revocation(person, business, security()))
        .await
        .unwrap();
    assert!(
        matches!(reply, Ok(ServerBody::ConsentUpdated(_))),
        "{reply:?}"
    );
}

/// Logs `person` in at `url` and reads until `drained`: every business envelope queued
/// for it (acknowledged as it goes).
async fn drain_business(url: &str, person: &TestAccount) -> Vec<MessageId> {
    let mut client = Client::login(url, person).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let push = tokio::time::timeout_at(deadline, client.next_push())
            .await
            .expect("drained in time")
            .unwrap();
        match push {
            ServerBody::Deliver(d) => {
                if d.category.is_some() {
                    seen.push(d.id);
                }
                client.ack(d.seq).await.unwrap();
            }
            ServerBody::Drained(_) => return seen,
            ServerBody::PrekeysLow(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// One send of the business's stream: when its request was written, when its reply was
/// read, and the reply.
struct Sent {
    issued: Instant,
    answered: Instant,
    reply: Reply,
}

/// C7: consent granted on node 0 is honoured by node 1, and a revocation on node 0 stops
/// node 1's next send. Then the race: the business streams sends from node 1 while the
/// person revokes on node 0. Every send written after the revocation's reply is refused;
/// nothing is left queued (the revocation purged all that was accepted before it, and
/// nothing was accepted after it); every envelope pushed after the reply was sent before
/// it. Such pushes do happen: a node's wake carries a small envelope to the recipient's
/// node, which pushes it without reading the store, so an envelope the revocation has
/// just purged can still reach the person's client (which drops it: see
/// `misbehaving_relay.rs`). The count is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_consent_across_nodes() {
    // The race is about consent, not the business's rate limit.
    let Some(cluster) =
        TestCluster::start_with(2, &["--business-sends-per-second", "100000"]).unwrap()
    else {
        return;
    };
    let bank = TestAccount::new(Some("acme"), 5);
    let bank_id = bank.identity.account_id();
    let mut bank_client = Client::register(&cluster.url(1), &bank).await.unwrap();
    verify(&cluster, "acme", "security_alert");

    let person = TestAccount::new(Some("person"), 5);
    let mut on_0 = Client::register(&cluster.url(0), &person).await.unwrap();
    let before = send_in(&mut bank_client, person.address(), SECURITY)
        .await
        .unwrap();
    assert_eq!(Client::error_code(&before), Some(ErrorCode::Refused));
    grants(&mut on_0, &person, bank_id).await;
    let first = send_in(&mut bank_client, person.address(), SECURITY)
        .await
        .unwrap();
    let first = accepted_id(&first).unwrap_or_else(|| panic!("{first:?}"));
    let delivered = on_0.next_deliver().await.unwrap();
    assert_eq!((delivered.id, delivered.category), (first, SECURITY));
    on_0.ack(delivered.seq).await.unwrap();
    revokes(&mut on_0, &person, bank_id).await;
    let after = send_in(&mut bank_client, person.address(), SECURITY)
        .await
        .unwrap();
    assert_eq!(
        Client::error_code(&after),
        Some(ErrorCode::Refused),
        "{after:?}"
    );
    drop(on_0);

    // The race, with a fresh person each round (so each grant is the first).
    let rounds = if long_tests() { 100 } else { 20 };
    let mut raced_after = 0;
    let mut pushed_live = 0;
    for round in 0..rounds {
        let person = Arc::new(TestAccount::new(Some(&format!("racer{round}")), 5));
        let mut on_0 = Client::register(&cluster.url(0), &person).await.unwrap();
        grants(&mut on_0, &person, bank_id).await;

        let revoked = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stream = {
            let (revoked, accepted, to) = (revoked.clone(), accepted.clone(), person.address());
            let mut bank_client = bank_client;
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut after_revoke = 0;
                // Until two sends were written after the revocation's reply.
                while after_revoke < 2 {
                    if revoked.load(Ordering::Acquire) {
                        after_revoke += 1;
                    }
                    let issued = Instant::now();
                    let reply = send_in(&mut bank_client, to, SECURITY).await.unwrap();
                    if accepted_id(&reply).is_some() {
                        accepted.fetch_add(1, Ordering::Release);
                    }
                    sent.push(Sent {
                        issued,
                        answered: Instant::now(),
                        reply,
                    });
                }
                (bank_client, sent)
            })
        };
        // Revoke mid-stream, after a varying number of accepted sends.
        let wanted = 1 + round % 5;
        let deadline = Instant::now() + WAIT;
        while accepted.load(Ordering::Acquire) < wanted {
            assert!(
                Instant::now() < deadline,
                "round {round}: the stream stalled"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The revocation, telling the pushes read before its reply from those after.
        let rid = on_0
            .send_frame(ClientBody::RevokeConsent(RevokeConsent {
                revocation: revocation(&person, bank_id, security()),
            }))
            .await
            .unwrap();
        let mut pushed_before = 0;
        let revoke_reply = loop {
            let frame = on_0.next_frame().await.unwrap();
            if frame.rid == Some(rid) {
                assert!(
                    matches!(frame.body, ServerBody::ConsentUpdated(_)),
                    "{:?}",
                    frame.body
                );
                break Instant::now();
            }
            if matches!(frame.body, ServerBody::Deliver(_)) {
                pushed_before += 1;
            }
        };
        revoked.store(true, Ordering::Release);
        // Envelopes pushed on the person's connection after the revocation's reply.
        let mut pushed_after = Vec::new();
        let (client, sent) = {
            let mut stream = stream;
            loop {
                tokio::select! {
                    done = &mut stream => break done.unwrap(),
                    push = on_0.next_push() => {
                        if let ServerBody::Deliver(d) = push.unwrap() {
                            pushed_after.push(d.id);
                        }
                    }
                }
            }
        };
        bank_client = client;
        drop(on_0);

        // Sends written before the reply may have been accepted before the revocation
        // committed; nothing written after it may be accepted.
        let may_precede: HashMap<MessageId, &Sent> = sent
            .iter()
            .filter_map(|s| accepted_id(&s.reply).map(|id| (id, s)))
            .filter(|(_, s)| s.issued < revoke_reply)
            .collect();
        for s in sent.iter().filter(|s| s.issued > revoke_reply) {
            assert_eq!(
                Client::error_code(&s.reply),
                Some(ErrorCode::Refused),
                "round {round}: a send written after the revocation's reply: {:?}",
                s.reply
            );
        }
        let in_flight = sent
            .iter()
            .filter(|s| s.issued <= revoke_reply && s.answered >= revoke_reply)
            .map(|s| format!("{:?}", s.reply.as_ref().map(|_| "accepted")))
            .collect::<Vec<_>>();
        // The revocation purged them from the queue and from what the node had been
        // handed for this connection: nothing of that category arrives after the reply.
        assert!(
            pushed_after.is_empty(),
            "round {round}: {} business envelopes pushed after the revocation's reply \
             (in flight at the reply: {in_flight:?})",
            pushed_after.len()
        );
        for id in &pushed_after {
            assert!(
                may_precede.contains_key(id),
                "round {round}: business envelope {id:?} pushed after the revocation's reply \
                 was not sent before it (in flight at the reply: {in_flight:?})"
            );
        }
        // The revocation purged what was queued, and nothing was queued after it.
        let drained = drain_business(&cluster.url(0), &person).await;
        assert!(
            drained.is_empty(),
            "round {round}: business envelopes queued after the revocation's reply: \
             {drained:?} (sent before it: {}; in flight at the reply: {in_flight:?})",
            drained
                .iter()
                .filter(|id| may_precede.contains_key(*id))
                .count()
        );
        pushed_live += pushed_before + pushed_after.len();
        raced_after += pushed_after.len();
    }
    eprintln!(
        "C7: {rounds} races, {pushed_live} envelopes pushed live during them, \
         {raced_after} of them after the revocation's reply (sent before it)"
    );
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

/// C8: a business of daily reach 5 (`--business-reach-tiers 5,...`) reconnects to node
/// 0, 1, 2 in turn and sends to 8 consenting people (on all three nodes): exactly 5
/// distinct recipients are accepted, the other 3 `reach_exhausted`, never a 6th; the 5
/// stay reachable from any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_daily_quota_exact_across_nodes() {
    let Some(cluster) = TestCluster::start_with(3, &["--business-reach-tiers", "5,100"]).unwrap()
    else {
        return;
    };
    let bank = TestAccount::new(Some("acme"), 10);
    let bank_id = bank.identity.account_id();
    drop(Client::register(&cluster.url(0), &bank).await.unwrap());
    verify(&cluster, "acme", "security_alert");
    let mut people = Vec::new();
    for i in 0..8 {
        let person = TestAccount::new(Some(&format!("person{i}")), 5);
        let mut client = Client::register(&cluster.url(i % 3), &person)
            .await
            .unwrap();
        grants(&mut client, &person, bank_id).await;
        people.push(person);
    }

    let mut reached = Vec::new();
    let mut exhausted = Vec::new();
    for (i, person) in people.iter().enumerate() {
        let mut bot = Client::login(&cluster.url(i % 3), &bank).await.unwrap();
        let reply = send_in(&mut bot, person.address(), SECURITY).await.unwrap();
        match &reply {
            Ok(ServerBody::Accepted(_)) => reached.push(i),
            Err(e) if e.code == ErrorCode::ReachExhausted => {
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "{e:?}");
                exhausted.push(i);
            }
            other => panic!("person {i} from node {}: {other:?}", i % 3),
        }
    }
    assert_eq!(reached, [0, 1, 2, 3, 4], "exhausted: {exhausted:?}");
    assert_eq!(exhausted, [5, 6, 7]);

    // Reached today stays reachable, from every node; the others stay out of reach.
    for node in 0..3 {
        let mut bot = Client::login(&cluster.url(node), &bank).await.unwrap();
        for &i in &reached {
            let reply = send_in(&mut bot, people[i].address(), SECURITY)
                .await
                .unwrap();
            assert!(
                accepted_id(&reply).is_some(),
                "node {node}, person {i}: {reply:?}"
            );
        }
        for &i in &exhausted {
            let reply = send_in(&mut bot, people[i].address(), SECURITY)
                .await
                .unwrap();
            assert_eq!(
                Client::error_code(&reply),
                Some(ErrorCode::ReachExhausted),
                "node {node}, person {i}: a 6th recipient"
            );
        }
    }
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
