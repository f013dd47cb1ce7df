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
            },
        ))
        .await
        .unwrap();
    assert_eq!(Client::error_code(&reply), Some(ErrorCode::NotFound));

    let before_delivery = scrape(admin).await;
    assert_eq!(before_delivery.value("parley_queue_depth", &[]), Some(3.0));
    assert_eq!(before_delivery.value("parley_sessions", &[]), Some(1.0));

    let mut b = Client::login(&url, &bob).await.unwrap();
    let mut last = None;
    for _ in 0..3 {
        last = Some(b.next_deliver().await.unwrap().seq);
    }
    b.ack(last.unwrap()).await.unwrap();

    let m = scrape_until(admin, |m| {
        m.value("parley_envelopes_acknowledged_total", &[]) == Some(3.0)
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
