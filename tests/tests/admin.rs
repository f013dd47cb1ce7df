//! The admin listener of a real `parley-server` process: liveness, readiness, and a
//! `/metrics` scrape parsed as the Prometheus text format, checked against the traffic
//! the test made.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parley_protocol::ids::MessageId;
use parley_protocol::wire::ErrorCode;
use parley_tests::admin::{http_get, parse_exposition, Scrape};
use parley_tests::{Client, ServerProcess, TestAccount};

fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let (status, body) = http_get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    parse_exposition(&body).unwrap_or_else(|e| panic!("{e:#}\n{body}"))
}

/// Scrapes until `check` holds (acks are asynchronous), at most 10 s.
async fn scrape_until(admin: SocketAddr, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = scrape(admin).await;
        if check(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_follow_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let admin = server.admin_addr.expect("the admin listener is on");
    assert_eq!(
        http_get(admin, "/healthz").await.unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(
        http_get(admin, "/readyz").await.unwrap(),
        (200, "ready\n".into())
    );
    assert_eq!(http_get(admin, "/nope").await.unwrap().0, 404);

    let url = server.url();
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&url, &alice).await.unwrap();
    drop(Client::register(&url, &bob).await.unwrap());
    // Bob's registration connection is gone once the server has noticed it closed; until
    // then sends to Bob would be handed (and, holding, held) for that connection.
    scrape_until(admin, |m| m.value("parley_sessions", &[]) == Some(1.0)).await;
    for n in 1..=3 {
        a.send(bob.address(), id(n), vec![n; 100]).await.unwrap();
    }
    let stranger = TestAccount::new(None, 0);
    let reply = a
        .request(parley_protocol::wire::client::ClientBody::Send(
            parley_protocol::wire::client::Send {
                to: stranger.address(),
                id: id(9),
                ciphertext: vec![0; 10],
                category: None,
                receipt: false,
            },
        ))
        .await
        .unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::NotFound));

    let before_delivery =
        scrape_until(admin, |m| m.value("parley_sessions", &[]) == Some(1.0)).await;
    assert_eq!(before_delivery.value("parley_queue_depth", &[]), Some(3.0));
    assert_eq!(before_delivery.value("parley_sessions", &[]), Some(1.0));

    let mut b = Client::login(&url, &bob).await.unwrap();
    let mut last = None;
    for _ in 0..3 {
        last = Some(b.next_deliver().await.unwrap().seq);
    }
    b.ack(last.unwrap()).await.unwrap();

    // The queue is counted before the counters are read: wait for both to settle.
    let m = scrape_until(admin, |m| {
        m.value("parley_envelopes_acknowledged_total", &[]) == Some(3.0)
            && m.value("parley_queue_depth", &[]) == Some(0.0)
            && m.value("parley_sessions", &[]) == Some(2.0)
    })
    .await;
    let v = |name: &str, labels: &[(&str, &str)]| {
        m.value(name, labels)
            .unwrap_or_else(|| panic!("{name} {labels:?} missing"))
    };
    assert_eq!(v("parley_envelopes_accepted_total", &[]), 3.0);
    assert_eq!(v("parley_envelopes_acknowledged_total", &[]), 3.0);
    assert_eq!(v("parley_envelopes_delivered_total", &[]), 3.0);
    assert_eq!(v("parley_queue_depth", &[]), 0.0);
    assert_eq!(v("parley_frames_in_total", &[("type", "send")]), 4.0);
    assert_eq!(v("parley_frames_in_total", &[("type", "register")]), 2.0);
    assert_eq!(v("parley_frames_in_total", &[("type", "auth")]), 1.0);
    assert_eq!(v("parley_frames_out_total", &[("type", "deliver")]), 3.0);
    assert_eq!(v("parley_frames_out_total", &[("type", "accepted")]), 3.0);
    assert_eq!(v("parley_refusals_total", &[("code", "not_found")]), 1.0);
    assert_eq!(v("parley_sessions", &[]), 2.0);
    assert_eq!(v("parley_connections", &[]), 2.0);
    assert_eq!(v("parley_connections_accepted_total", &[]), 3.0);
    assert_eq!(
        v(
            "parley_connections_closed_total",
            &[("reason", "client_left")]
        ),
        1.0
    );
    assert_eq!(v("parley_slow_consumer_evictions_total", &[]), 0.0);
    // The first sweep runs at start.
    assert!(v("parley_sweeps_total", &[]) >= 1.0);
    assert!(v("parley_last_sweep_timestamp_seconds", &[]) > 1.7e9);
    assert!(v("parley_store_commit_seconds_count", &[]) >= 1.0);
    assert!(v("parley_store_committed_jobs_total", &[]) >= 6.0);
    assert_eq!(
        m.types.get("parley_store_commit_seconds").unwrap(),
        "histogram"
    );
    assert_eq!(
        m.value(
            "parley_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    drop((a, b));
    server.kill().unwrap();
}

fn admin_command(data_dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(parley_tests::server::server_binary().unwrap())
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn numbered(n: u32) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    MessageId(bytes)
}

/// `admin backup` while a sender keeps writing: the backup is one consistent moment (a
/// prefix of the sender's messages), and a server started on it delivers exactly that
/// prefix to the offline recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_the_queued_messages() {
    let live = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(live.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let url = server.url();
    let alice = TestAccount::new(Some("alice"), 1);
    let bob = TestAccount::new(Some("bob"), 1);
    let mut a = Client::register(&url, &alice).await.unwrap();
    drop(Client::register(&url, &bob).await.unwrap());
    let to = bob.address();
    for n in 1..=50 {
        a.send(to, numbered(n), n.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 51;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n <= 2_000 {
                a.send(to, numbered(n), n.to_be_bytes().to_vec())
                    .await
                    .unwrap();
                n += 1;
            }
            n - 1
        })
    };

    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("parley-backup.db");
    let live_dir = live.path().to_owned();
    let backup_path = backup.clone();
    let printed = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(100));
        admin_command(&live_dir, &["backup", backup_path.to_str().unwrap()])
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.await.unwrap();
    let in_backup: u32 = printed
        .split(" bytes, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {printed}"));
    assert!((50..=sent).contains(&in_backup), "{in_backup} of {sent}");

    let stats = admin_command(live.path(), &["stats"]);
    assert!(stats.contains("accounts: 2\n"), "{stats}");
    assert!(
        stats.contains(&format!("queued_envelopes: {sent}\n")),
        "{stats}"
    );
    server.kill().unwrap();

    // Restore as docs/operations.md says: the backup becomes parley.db of a data directory.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&backup, restored.path().join("parley.db")).unwrap();
    let server =
        ServerProcess::start(restored.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let mut b = Client::login(&server.url(), &bob).await.unwrap();
    let mut received = Vec::new();
    loop {
        match b.next_push().await.unwrap() {
            parley_protocol::wire::server::ServerBody::Deliver(d) => received.push(d.id),
            parley_protocol::wire::server::ServerBody::Drained(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<MessageId> = (1..=in_backup).map(numbered).collect();
    assert_eq!(
        received, expected,
        "exactly the prefix in the backup, in order"
    );
    server.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_verify_suspend_and_tier_businesses_while_the_server_runs() {
    use parley_protocol::business::{Category, CategorySet};
    use parley_tests::business::{admin, grant, send_grant, send_in, verify_business};

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &["--business-reach-tiers", "1,10"],
    )
    .unwrap();
    let bank = TestAccount::new(Some("acme"), 1);
    let people = [
        TestAccount::new(Some("ann"), 1),
        TestAccount::new(Some("ben"), 1),
    ];
    let mut b = Client::register(&server.url(), &bank).await.unwrap();
    let out = verify_business(dir.path(), "acme", "Acme Bank", "transactional").unwrap();
    assert!(out.contains("verified @acme"), "{out}");
    let t = Some(Category::Transactional);
    for person in &people {
        let mut c = Client::register(&server.url(), person).await.unwrap();
        let g = grant(
            person,
            bank.identity.account_id(),
            CategorySet::of([Category::Transactional]),
        );
        assert!(send_grant(&mut c, g).await.unwrap().is_ok());
    }

    assert!(send_in(&mut b, people[0].address(), t)
        .await
        .unwrap()
        .is_ok());
    let reply = send_in(&mut b, people[1].address(), t).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::ReachExhausted));
    admin(dir.path(), &["set-tier", "@acme", "1"]).unwrap();
    assert!(send_in(&mut b, people[1].address(), t)
        .await
        .unwrap()
        .is_ok());

    admin(dir.path(), &["suspend", "acme"]).unwrap();
    let reply = send_in(&mut b, people[0].address(), t).await.unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::Suspended));
    let listing = admin(dir.path(), &["list-businesses"]).unwrap();
    assert!(
        listing.contains("@acme  suspended (operator)  tier 1"),
        "{listing}"
    );
    admin(dir.path(), &["unsuspend", "acme"]).unwrap();
    assert!(send_in(&mut b, people[0].address(), t)
        .await
        .unwrap()
        .is_ok());

    let e = admin(dir.path(), &["suspend", "ann"]).unwrap_err();
    assert!(e.to_string().contains("not a verified business"), "{e}");
    let e = admin(dir.path(), &["set-tier", "nobody", "1"]).unwrap_err();
    assert!(
        e.to_string().contains("no account has the handle @nobody"),
        "{e}"
    );

    let metrics = scrape(server.admin_addr.unwrap()).await;
    let outcome = |o: &str| metrics.value("parley_business_sends_total", &[("outcome", o)]);
    assert_eq!(outcome("accepted"), Some(3.0));
    assert_eq!(outcome("reach_exhausted"), Some(1.0));
    assert_eq!(outcome("suspended"), Some(1.0));
    server.kill().unwrap();
}
