//! Cluster mode with real processes: several `parley-server` nodes on one PostgreSQL and
//! one NATS of the test's own (`parley_tests::cluster`). Named after the cases of the
//! cluster test plan (research/scaleout.md §7): C1 chat across nodes, C2 `kill -9` of a
//! node mid-burst, C3 NATS restarted and a slow consumer, C4 PostgreSQL stopped, C5
//! displacement, C9 one-time prekeys served once. Consent, limits and quotas across
//! nodes (C6-C8) are in `cluster_business.rs`.
//!
//! Each test skips itself (one `SKIPPED:` line) where PostgreSQL or NATS is not installed,
//! and fails instead under `PARLEY_REQUIRE_SERVICES=1` (as `.ci/run` sets it).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_protocol::ids::Seq;
use parley_protocol::wire::client::{ClientBody, FetchBundle};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use parley_tests::burst::{self, message_id};
use parley_tests::cluster::TestCluster;
use parley_tests::history::Verdict;
use parley_tests::{long_tests, Client, History, TestAccount};
use tokio_util::sync::CancellationToken;

const CLEAN: Verdict = Verdict {
    lost: 0,
    duplicated: 0,
    reordered: 0,
    unconfirmed: 0,
};

fn account(name: &str, one_time: u32) -> Arc<TestAccount> {
    Arc::new(TestAccount::new(Some(name), one_time))
}

/// C1: people connected to different nodes chat, online and offline; every accepted
/// message arrives once, in order, and offline ones before `drained`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_users_on_different_nodes_chat() {
    let Some(cluster) = TestCluster::start(3).unwrap() else {
        return;
    };
    const ACCOUNTS: usize = 30;
    const PER_SENDER: usize = 20;
    let people: Vec<Arc<TestAccount>> = (0..ACCOUNTS)
        .map(|i| account(&format!("person{i}"), 2))
        .collect();
    for (i, p) in people.iter().enumerate() {
        drop(Client::register(&cluster.url(i % 3), p).await.unwrap());
    }
    // Online: everyone connected to node i % 3 writes to the next person, who is on the
    // next node.
    let mut clients = Vec::new();
    for (i, p) in people.iter().enumerate() {
        clients.push(Client::login(&cluster.url(i % 3), p).await.unwrap());
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let to = people[(i + 1) % ACCOUNTS].address();
        let replies = burst::send_pipelined(client, to, 0, PER_SENDER, 64, 8)
            .await
            .unwrap();
        assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut history = History::default();
        for n in 0..PER_SENDER {
            history.accepted(message_id(n));
        }
        let mut last = Seq(0);
        while history.check().lost > 0 {
            let d = tokio::time::timeout(Duration::from_secs(10), client.next_deliver())
                .await
                .unwrap_or_else(|_| panic!("person {i} waited 10 s for a delivery"))
                .unwrap();
            assert!(d.seq > last, "seqs increase");
            last = d.seq;
            history.delivered(d.id);
            latencies.push(started.elapsed());
        }
        client.ack(last).await.unwrap();
        assert_eq!(history.check(), CLEAN, "person {i}");
    }
    latencies.sort();
    eprintln!(
        "C1 online: {} cross-node messages, last delivered after {:?}",
        latencies.len(),
        latencies.last()
    );
    drop(clients);

    // Offline: messages to people who are away wait in PostgreSQL and arrive, before
    // `drained`, on whichever node they come back to.
    for (i, p) in people.iter().enumerate().take(ACCOUNTS / 2) {
        let mut sender = Client::login(&cluster.url(i % 3), p).await.unwrap();
        let to = people[i + ACCOUNTS / 2].address();
        let replies = burst::send_pipelined(&mut sender, to, 100, 5, 64, 5)
            .await
            .unwrap();
        assert!(replies.iter().all(Result::is_ok));
    }
    for (i, person) in people.iter().enumerate().skip(ACCOUNTS / 2) {
        let history = Mutex::new(History::default());
        for n in 100..105 {
            history.lock().unwrap().accepted(message_id(n));
        }
        let url = cluster.url((i + 1) % 3);
        burst::drain(&url, person, &history).await.unwrap();
        assert_eq!(history.lock().unwrap().check(), CLEAN, "person {i} offline");
    }
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

/// C2: nodes are SIGKILLed during a burst (the senders' and the recipients' nodes in
/// turn); clients go to the surviving nodes and retry with the same ids. Nothing
/// accepted is lost, duplicated to the application or reordered per sender. With
/// hold, then persist on (the default, 50 ms; ADR 0005 §3): recipients online ack each
/// delivery, so envelopes are held and many settled by the acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_kill_9_of_a_node_mid_burst_loses_nothing_accepted() {
    let held_by_ack = c2_kill_9_mid_burst(&[]).await;
    assert!(
        held_by_ack.is_none_or(|n| n > 0.0),
        "envelopes were held and settled by acks"
    );
}

/// C2 persisting every envelope first (`--hold-deadline 0s`); long tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_kill_9_mid_burst_persisting_first_loses_nothing_accepted() {
    if !long_tests() {
        eprintln!("SKIPPED: long tier (PARLEY_LONG_TESTS=1)");
        return;
    }
    let held_by_ack = c2_kill_9_mid_burst(&["--hold-deadline", "0s"]).await;
    assert!(held_by_ack.is_none_or(|n| n == 0.0), "nothing was held");
}

/// `parley_held_settled_total{by="ack"}` of node `node` (since it last started).
async fn held_by_ack_on(cluster: &TestCluster, node: usize) -> f64 {
    let (_, body) = parley_tests::admin::http_get(cluster.admin_addrs()[node], "/metrics")
        .await
        .unwrap();
    parley_tests::admin::parse_exposition(&body)
        .unwrap()
        .value("parley_held_settled_total", &[("by", "ack")])
        .unwrap_or(0.0)
}

/// Runs C2 on a cluster started with `extra`; the envelopes settled by acks while held,
/// summed over the nodes' lives (`None` if skipped).
async fn c2_kill_9_mid_burst(extra: &[&str]) -> Option<f64> {
    let mut cluster = TestCluster::start_with(3, extra).unwrap()?;
    let (pairs, per_pair, kills) = if long_tests() {
        (50, 400, 20)
    } else {
        (10, 200, 20)
    };
    let urls = cluster.urls();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut histories = Vec::new();
    let stop = CancellationToken::new();
    for i in 0..pairs {
        let from = account(&format!("sender{i}"), 1);
        let to = account(&format!("recipient{i}"), 1);
        drop(Client::register(&urls[i % 3], &from).await.unwrap());
        drop(Client::register(&urls[(i + 1) % 3], &to).await.unwrap());
        let history = Arc::new(Mutex::new(History::default()));
        // The sender starts on node i % 3, the recipient on the next one.
        let mut sender_urls = urls.clone();
        sender_urls.rotate_left(i % 3);
        let mut receiver_urls = urls.clone();
        receiver_urls.rotate_left((i + 1) % 3);
        let (progress, task) = burst::spawn_sender_across(
            sender_urls,
            from,
            to.address(),
            per_pair,
            32,
            history.clone(),
        );
        receivers.push((
            to.clone(),
            // Acking each delivery, as `parley-sdk` does once it stored it.
            burst::spawn_receiver_acking(receiver_urls, to, history.clone(), stop.clone(), 1),
        ));
        senders.push((progress, task));
        histories.push(history);
    }
    let total = pairs * per_pair;
    let accepted = |senders: &Vec<(burst::SenderProgress, _)>| -> usize {
        senders
            .iter()
            .map(|(p, _)| p.accepted.load(Ordering::Acquire))
            .sum()
    };
    let mut held_by_ack = 0.0;
    for k in 0..kills {
        let target = k * total / (kills + 1);
        let deadline = Instant::now() + Duration::from_secs(120);
        while accepted(&senders) < target {
            assert!(Instant::now() < deadline, "the burst stalled at kill {k}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let node = k % 3;
        held_by_ack += held_by_ack_on(&cluster, node).await;
        cluster.kill(node).unwrap();
        cluster.restart(node).unwrap();
    }
    let mut sender_reconnects = 0;
    for (progress, task) in senders {
        task.await.unwrap().unwrap();
        sender_reconnects += progress.reconnects.load(Ordering::Relaxed);
    }
    stop.cancel();
    let mut reconnects = 0;
    for ((to, receiver), history) in receivers.into_iter().zip(&histories) {
        reconnects += receiver.await.unwrap().unwrap();
        burst::drain(&cluster.url(0), &to, history).await.unwrap();
    }
    for (i, history) in histories.iter().enumerate() {
        let history = history.lock().unwrap();
        assert_eq!(history.accepted_count(), per_pair, "pair {i}");
        assert_eq!(history.check(), CLEAN, "pair {i}");
    }
    eprintln!(
        "C2: {total} messages, {kills} kills, {sender_reconnects} sender and {reconnects} \
         recipient reconnects"
    );
    assert!(sender_reconnects >= kills, "every kill interrupted senders");
    assert!(reconnects > 0, "kills interrupted the recipients too");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
    for node in 0..cluster.len() {
        held_by_ack += held_by_ack_on(&cluster, node).await;
    }
    eprintln!("C2: {held_by_ack} envelopes settled by acks while held");
    Some(held_by_ack)
}

/// C3: NATS is restarted during a burst between nodes; nothing is lost and delivery to
/// an online recipient resumes within 2 s of NATS's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c3_nats_restarted_mid_burst_loses_nothing_and_delivery_resumes() {
    let Some(cluster) = TestCluster::start(2).unwrap() else {
        return;
    };
    let alice = account("alice", 1);
    let bob = account("bob", 1);
    let mut a = Client::register(&cluster.url(0), &alice).await.unwrap();
    let mut b = Client::register(&cluster.url(1), &bob).await.unwrap();
    let mut history = History::default();
    let to = bob.address();
    let mut sent = 0;
    for phase in 0..3 {
        if phase == 1 {
            // Sends still commit while NATS is down.
            cluster.nats.stop().unwrap();
        }
        if phase == 2 {
            cluster.nats.start_again().unwrap();
        }
        for _ in 0..50 {
            let id = message_id(sent);
            sent += 1;
            a.send(to, id, b"x".to_vec()).await.unwrap();
            history.accepted(id);
        }
    }
    let back = Instant::now();
    let mut last = Seq(0);
    while history.check().lost > 0 {
        let d = tokio::time::timeout(Duration::from_secs(5), b.next_deliver())
            .await
            .expect("delivery resumed")
            .unwrap();
        assert!(d.seq > last);
        last = d.seq;
        history.delivered(d.id);
    }
    let resumed = back.elapsed();
    assert!(
        resumed <= Duration::from_secs(2),
        "delivery resumed {resumed:?} after NATS returned"
    );
    assert_eq!(history.check(), CLEAN);
    b.ack(last).await.unwrap();
}

/// C4: PostgreSQL stops for 3 s during a burst: every send in the gap is refused with
/// `storage_unavailable` (never a false `accepted`), and everything recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_postgres_stopped_refuses_sends_and_recovers() {
    let Some(cluster) = TestCluster::start(2).unwrap() else {
        return;
    };
    let alice = account("alice", 1);
    let bob = account("bob", 1);
    let mut a = Client::register(&cluster.url(0), &alice).await.unwrap();
    drop(Client::register(&cluster.url(1), &bob).await.unwrap());
    let mut accepted = History::default();
    let mut refused = 0;
    let mut n = 0;
    let to = bob.address();
    for _ in 0..20 {
        let (id, reply) = send_raw(&mut a, to, &mut n).await;
        assert!(matches!(reply, Ok(ServerBody::Accepted(_))), "{reply:?}");
        accepted.accepted(id);
    }
    cluster.postgres.stop().unwrap();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        let (id, reply) = send_raw(&mut a, to, &mut n).await;
        match reply {
            Ok(ServerBody::Accepted(_)) => panic!("accepted while PostgreSQL was down: {id:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    cluster.postgres.start_again().unwrap();
    // The pool reconnects: sends are accepted again within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (id, reply) = send_raw(&mut a, to, &mut n).await;
        if matches!(reply, Ok(ServerBody::Accepted(_))) {
            accepted.accepted(id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sends never recovered: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused > 0, "the outage refused sends");
    let accepted = Mutex::new(accepted);
    burst::drain(&cluster.url(1), &bob, &accepted)
        .await
        .unwrap();
    let verdict = accepted.lock().unwrap().check();
    assert_eq!(
        (
            verdict.lost,
            verdict.duplicated,
            verdict.reordered,
            verdict.unconfirmed
        ),
        (0, 0, 0, 0),
        "no false accepted (unconfirmed = delivered although refused)"
    );
}

/// Sends message `*n` (then counts on) and returns its id and the raw reply.
async fn send_raw(
    client: &mut Client,
    to: parley_protocol::ids::DeviceAddress,
    n: &mut usize,
) -> (parley_protocol::ids::MessageId, parley_tests::client::Reply) {
    let id = message_id(*n);
    *n += 1;
    let reply = client
        .request(ClientBody::Send(parley_protocol::wire::client::Send {
            to,
            id,
            ciphertext: b"y".to_vec(),
            category: None,
            receipt: false,
        }))
        .await
        .unwrap();
    (id, reply)
}

/// C5: a device that connects to another node closes its old connection there within
/// 1 s; racing double connects leave one survivor; a node paused while its device
/// moved closes the stale connection within 2 s of resuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c5_displacement_across_nodes() {
    let Some(cluster) = TestCluster::start(3).unwrap() else {
        return;
    };
    let dana = account("dana", 1);
    let mut old = Client::register(&cluster.url(0), &dana).await.unwrap();
    let started = Instant::now();
    let _new = Client::login(&cluster.url(2), &dana).await.unwrap();
    assert_eq!(old.closed().await.unwrap(), Some(4002));
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Racing double connects: exactly one survivor each.
    let races = if long_tests() { 100 } else { 20 };
    let racers: Vec<Arc<TestAccount>> = (0..races)
        .map(|i| account(&format!("race{i}"), 1))
        .collect();
    for r in &racers {
        drop(Client::register(&cluster.url(0), r).await.unwrap());
    }
    let mut pairs = Vec::new();
    for r in &racers {
        let (first, second) = (cluster.url(0), cluster.url(1));
        let (x, y) = tokio::join!(Client::login(&first, r), Client::login(&second, r));
        pairs.push((x.unwrap(), y.unwrap()));
    }
    for (i, (mut x, mut y)) in pairs.into_iter().enumerate() {
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::select! {
                code = x.closed() => (0, code),
                code = y.closed() => (1, code),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("race {i}: neither connection was closed within 2 s"));
        assert_eq!(closed.1.unwrap(), Some(4002), "race {i}");
        // The survivor stays: a ping round trip still works on it.
        let survivor = if closed.0 == 0 { &mut y } else { &mut x };
        let reply = survivor
            .request(ClientBody::FetchBundle(FetchBundle {
                address: racers[i].address(),
            }))
            .await;
        assert!(reply.is_ok(), "race {i}: the survivor answers");
    }

    // A paused node: its device moves meanwhile; after SIGCONT the stale connection
    // closes within 2 s.
    let erin = account("erin", 1);
    let mut stale = Client::register(&cluster.url(0), &erin).await.unwrap();
    cluster.signal(0, "STOP").unwrap();
    let _moved = Client::login(&cluster.url(1), &erin).await.unwrap();
    tokio::time::sleep(Duration::from_secs(if long_tests() { 15 } else { 3 })).await;
    cluster.signal(0, "CONT").unwrap();
    let resumed = Instant::now();
    assert_eq!(stale.closed().await.unwrap(), Some(4002));
    assert!(
        resumed.elapsed() <= Duration::from_secs(2),
        "{:?}",
        resumed.elapsed()
    );
}

/// C9: three nodes × 20 concurrent bundle fetches of one device hand out each one-time
/// prekey once, then bundles without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c9_one_time_prekeys_are_served_once_across_nodes() {
    let Some(cluster) = TestCluster::start(3).unwrap() else {
        return;
    };
    let target = account("target", 40);
    drop(Client::register(&cluster.url(0), &target).await.unwrap());
    let mut fetches = tokio::task::JoinSet::new();
    for i in 0..60 {
        let url = cluster.url(i % 3);
        let address = target.address();
        fetches.spawn(async move {
            let me = TestAccount::new(None, 0);
            let mut c = Client::register(&url, &me).await?;
            match c
                .request(ClientBody::FetchBundle(FetchBundle { address }))
                .await?
            {
                Ok(ServerBody::Bundle(b)) => Ok(b.one_time_prekey.map(|k| k.id.0)),
                other => anyhow::bail!("{other:?}"),
            }
        });
    }
    let mut served = Vec::new();
    let mut without = 0;
    while let Some(result) = fetches.join_next().await {
        match result.unwrap().unwrap() {
            Some(id) => served.push(id),
            None => without += 1,
        }
    }
    let mut distinct = served.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        served.len(),
        "a one-time prekey was served twice"
    );
    assert_eq!(served.len(), 40);
    assert_eq!(without, 20);
}

/// A node without a bus may not join a cluster's database (it could never wake the other
/// nodes' devices), nor may a node whose authority key is not the cluster's; each is
/// refused at start with a sentence saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_cannot_join_a_cluster_are_refused_at_start() {
    let Some(cluster) = TestCluster::start(1).unwrap() else {
        return;
    };
    let run = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(parley_tests::server::server_binary().unwrap())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "off",
                "--data-dir",
            ])
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "the node started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let store = cluster.postgres.url();
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(
        cluster.data_dir(0).unwrap().join("authority.key"),
        alone.path().join("authority.key"),
    )
    .unwrap();
    let err = run(alone.path(), &["--store", &store, "--bus", "local"]);
    assert!(err.contains("one node only"), "{err}");

    let stranger = tempfile::tempdir().unwrap();
    let mut args = cluster.node_arguments(7);
    args.retain(|a| a != "--node-id" && a != "n7");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = run(stranger.path(), &args);
    assert!(err.contains("authority.key"), "{err}");
    assert!(
        !err.contains(parley_tests::cluster::TEST_CLUSTER_KEY),
        "{err}"
    );

    // Nor does an operator command sign certificates with another key.
    let mut verify =
        parley_tests::business::verify_business_args("somebank", "Some Bank", "marketing");
    verify.extend(["--store".to_owned(), store.clone()]);
    let verify: Vec<&str> = verify.iter().map(String::as_str).collect();
    let err = parley_tests::business::admin(stranger.path(), &verify)
        .unwrap_err()
        .to_string();
    assert!(err.contains("authority.key"), "{err}");
}

/// C6: per-address and per-account limits hold across the cluster: registrations from
/// one address and bundle fetches of one target, spread over three nodes, are accepted
/// exactly up to the limit, the rest refused with a retry-after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_limits_hold_across_nodes() {
    let Some(cluster) = TestCluster::start_with(
        3,
        &[
            "--registrations-per-ip-per-hour",
            "5",
            "--bundle-fetches-per-target-per-minute",
            "3",
        ],
    )
    .unwrap() else {
        return;
    };
    let mut registered = 0;
    let mut limited = 0;
    let mut people = Vec::new();
    for i in 0..8 {
        let person = TestAccount::new(None, 4);
        let mut client = Client::connect(&cluster.url(i % 3)).await.unwrap();
        let hello = client.hello.clone();
        match client.request(person.register_body(&hello)).await.unwrap() {
            Ok(_) => {
                registered += 1;
                people.push(person);
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}");
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "{e:?}");
                limited += 1;
            }
        }
    }
    assert_eq!(
        (registered, limited),
        (5, 3),
        "registrations from one address"
    );

    let (asker, target) = (&people[0], people[1].address());
    let mut fetched = 0;
    for i in 0..6 {
        let mut client = Client::login(&cluster.url(i % 3), asker).await.unwrap();
        match client
            .request(ClientBody::FetchBundle(FetchBundle { address: target }))
            .await
            .unwrap()
        {
            Ok(ServerBody::Bundle(_)) => fetched += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fetched, 3, "bundle fetches of one target by one account");
}
