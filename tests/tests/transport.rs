//! Hostile input at the transport layer, against a real `parley-server` process: broken
//! WebSocket frames of every RFC 6455 class, lying length fields, oversized and dribbled
//! HTTP upgrades, ping floods, compression offers, too many connections.
//!
//! Every case must end with the right close code (or a dropped TCP connection) within its
//! deadline, the server must never panic, and a canary client's round trips must stay
//! fast meanwhile ([`CANARY_P99`], [`CANARY_MAX`]).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use parley_protocol::limits::MAX_FRAME_BYTES;
use parley_tests::canary::{Canary, CanaryReport};
use parley_tests::raw_ws::{self, opcode, Ending, RawFrame, RawWs};
use parley_tests::{Client, ServerProcess, TestAccount};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

/// The canary's 99th-percentile round trip while an attack runs (loopback, debug build,
/// 2 cores shared with the attacker).
const CANARY_P99: Duration = Duration::from_millis(100);
/// The canary's slowest round trip while an attack runs.
const CANARY_MAX: Duration = Duration::from_millis(500);
/// How long a transport violation may take to be closed.
const CLOSE_DEADLINE: Duration = Duration::from_secs(1);
/// How long the oversized-frame and header attacks are repeated (so the canary
/// overlaps them).
const ATTACK_DURATION: Duration = Duration::from_millis(500);
/// Connections the malformed-frame test opens (the corpus, repeated).
const MALFORMED_CONNECTIONS: usize = 1_000;
/// The handshake deadline these tests configure (production default: 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// The auth deadline these tests configure (production default: 10 s).
const AUTH_TIMEOUT: Duration = Duration::from_secs(1);

/// A server process with short deadlines, and its data directory.
fn hostile_server(extra: &[&str]) -> (ServerProcess, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut args = vec!["--handshake-timeout", "1s", "--auth-timeout", "1s"];
    args.extend_from_slice(extra);
    let server = ServerProcess::start(dir.path(), any, &args).unwrap();
    (server, dir)
}

fn assert_canary_unaffected(report: &CanaryReport) {
    println!("canary: {report:?}");
    assert!(
        report.samples >= 10,
        "the canary must overlap the attack: {report:?}"
    );
    assert!(report.p99 < CANARY_P99, "canary p99 {report:?}");
    assert!(report.max < CANARY_MAX, "canary max {report:?}");
}

fn assert_no_panic(server: &ServerProcess) {
    let panics = server.panics();
    assert!(panics.is_empty(), "the server panicked: {panics:?}");
}

/// Connects, sends `frames`, and returns how the server ended the connection and how
/// long it took after the last frame.
async fn violation(addr: SocketAddr, frames: &[RawFrame]) -> (Ending, Duration) {
    let mut ws = RawWs::connect(addr).await.unwrap();
    for f in frames {
        // The server may close as soon as it sees the violation.
        let _ = ws.send(f).await;
    }
    ws.ending(CLOSE_DEADLINE).await.unwrap()
}

fn with(f: RawFrame, edit: impl FnOnce(&mut RawFrame)) -> RawFrame {
    let mut f = f;
    edit(&mut f);
    f
}

fn close_frame(code: u16, reason: &[u8]) -> RawFrame {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    RawFrame::new(opcode::CLOSE, payload)
}

/// The malformed-frame corpus: (what, frames, expected close code).
fn malformed_cases() -> Vec<(String, Vec<RawFrame>, u16)> {
    let binary = RawFrame::new(opcode::BINARY, vec![0x80]);
    let mut cases: Vec<(String, Vec<RawFrame>, u16)> = vec![
        (
            "unmasked client frame".into(),
            vec![with(binary.clone(), |f| f.masked = false)],
            1002,
        ),
        (
            "fragmented ping".into(),
            vec![with(RawFrame::new(opcode::PING, b"x".to_vec()), |f| {
                f.fin = false
            })],
            1002,
        ),
        (
            "ping payload of 126 bytes".into(),
            vec![RawFrame::new(opcode::PING, vec![0; 126])],
            1002,
        ),
        (
            "close payload of 126 bytes".into(),
            vec![close_frame(1000, &[b'a'; 124])],
            1002,
        ),
        (
            "continuation without a start".into(),
            vec![RawFrame::new(opcode::CONTINUATION, vec![1, 2, 3])],
            1002,
        ),
        (
            "a new data frame in the middle of a fragmented one".into(),
            vec![with(binary.clone(), |f| f.fin = false), binary.clone()],
            1002,
        ),
        (
            "text frame with invalid UTF-8".into(),
            vec![RawFrame::new(opcode::TEXT, vec![0xc3, 0x28])],
            1007,
        ),
        (
            "close reason with invalid UTF-8".into(),
            vec![close_frame(1000, &[0xff, 0xfe])],
            1007,
        ),
        (
            "close payload of one byte".into(),
            vec![RawFrame::new(opcode::CLOSE, vec![0x03])],
            1002,
        ),
    ];
    for rsv in [0b100, 0b010, 0b001] {
        cases.push((
            format!("RSV bits {rsv:03b}"),
            vec![with(binary.clone(), |f| f.rsv = rsv)],
            1002,
        ));
    }
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        cases.push((
            format!("reserved opcode {op:#x}"),
            vec![RawFrame::new(op, vec![0])],
            1002,
        ));
    }
    cases.push((
        "a valid close is answered with its code".into(),
        vec![close_frame(1000, b"bye")],
        1000,
    ));
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        cases.push((
            format!("close code {code}"),
            vec![close_frame(code, b"")],
            1002,
        ));
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_of_every_rfc_class_are_closed_with_their_code() {
    let (server, _dir) = hostile_server(&[]);
    let canary = Canary::start(&server.url()).await.unwrap();
    let mut slowest = Duration::ZERO;
    let mut wrong = Vec::new();
    let cases = malformed_cases();
    let mut connections = 0;
    // The corpus again and again, each frame on its own connection, ~1 000 in all.
    for _ in 0..MALFORMED_CONNECTIONS.div_ceil(cases.len()) {
        for (what, frames, expected) in &cases {
            let (ending, took) = violation(server.addr, frames).await;
            connections += 1;
            slowest = slowest.max(took);
            if ending != Ending::Close(*expected) {
                wrong.push(format!("{what}: expected {expected}, got {ending:?}"));
            }
        }
    }
    let report = canary.finish().await.unwrap();
    println!(
        "{} malformed-frame cases on {connections} connections, slowest close {slowest:?}",
        cases.len()
    );
    assert!(wrong.is_empty(), "wrong endings:\n{}", wrong.join("\n"));
    assert!(slowest < CLOSE_DEADLINE);
    assert_canary_unaffected(&report);
    // Still accepting and serving.
    let account = TestAccount::new(Some("after"), 0);
    Client::register(&server.url(), &account).await.unwrap();
    assert_no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_messages_and_a_2_pow_63_length_are_closed_with_1009() {
    let (server, _dir) = hostile_server(&[]);
    let canary = Canary::start(&server.url()).await.unwrap();
    let rss_before = server.rss_kib().unwrap();

    let (started, mut rounds) = (Instant::now(), 0);
    while started.elapsed() < ATTACK_DURATION {
        oversized_round(&server).await;
        rounds += 1;
    }
    let growth = server.rss_kib().unwrap().saturating_sub(rss_before);
    println!("RSS growth over {rounds} rounds of oversized cases: {growth} KiB");
    assert!(
        growth < 2 * (MAX_FRAME_BYTES as u64 / 1024) + 1024,
        "no allocation for announced sizes: grew {growth} KiB"
    );
    assert_canary_unaffected(&canary.finish().await.unwrap());
    assert_no_panic(&server);
}

/// Each oversized case once.
async fn oversized_round(server: &ServerProcess) {
    // One frame one byte over the limit.
    let big = RawFrame::new(opcode::BINARY, vec![0; MAX_FRAME_BYTES + 1]);
    let (ending, _) = violation(server.addr, &[big]).await;
    assert_eq!(ending, Ending::Close(1009), "frame over the limit");

    // A message over the limit in five fragments, each under it.
    let part = MAX_FRAME_BYTES / 5 + 1;
    let mut fragments = Vec::new();
    for i in 0..5 {
        let op = if i == 0 {
            opcode::BINARY
        } else {
            opcode::CONTINUATION
        };
        fragments.push(with(RawFrame::new(op, vec![0; part]), |f| f.fin = i == 4));
    }
    let (ending, _) = violation(server.addr, &fragments).await;
    assert_eq!(ending, Ending::Close(1009), "message over the limit");

    // Length fields that announce far more than is sent: 2^63 and 2^64 - 1.
    for len in [1u64 << 63, u64::MAX] {
        let liar = with(RawFrame::new(opcode::BINARY, vec![0; 16]), |f| {
            f.announced_len = Some(len)
        });
        let (ending, took) = violation(server.addr, &[liar]).await;
        assert!(
            matches!(ending, Ending::Close(1009 | 1002)),
            "length {len}: {ending:?}"
        );
        assert!(took < CLOSE_DEADLINE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_too_many_headers_never_get_an_upgrade() {
    let (server, _dir) = hostile_server(&[]);
    let canary = Canary::start(&server.url()).await.unwrap();
    let (started, mut rounds) = (Instant::now(), 0);
    while started.elapsed() < ATTACK_DURATION {
        header_round(server.addr).await;
        rounds += 1;
    }
    println!("{rounds} rounds of header attacks");
    assert_canary_unaffected(&canary.finish().await.unwrap());
    assert_no_panic(&server);
}

/// Each header attack once.
async fn header_round(addr: SocketAddr) {
    // (a) One 100 KiB header line.
    let long = format!("X-Long: {}\r\n", "a".repeat(100 * 1024));
    let (answer, took) = raw_ws::http_exchange(
        addr,
        raw_ws::upgrade_request(addr, &long).as_bytes(),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    assert!(
        !answer.starts_with("HTTP/1.1 101"),
        "100 KiB header upgraded"
    );
    assert!(took <= CLOSE_DEADLINE, "100 KiB header held {took:?}");

    // (b) 200 headers.
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (answer, took) = raw_ws::http_exchange(
        addr,
        raw_ws::upgrade_request(addr, &many).as_bytes(),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    assert!(!answer.starts_with("HTTP/1.1 101"), "200 headers upgraded");
    assert!(took <= CLOSE_DEADLINE, "200 headers held {took:?}");
}

/// Sends an upgrade request one byte every `every`, from `source`; returns when the
/// server dropped the connection and whether it ever answered.
async fn dribble(addr: SocketAddr, source: Option<IpAddr>, every: Duration) -> (Duration, bool) {
    let stream = RawWs::tcp_from(addr, source).await.unwrap();
    // The deadline runs from the server's accept, so measure from the connect.
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for byte in raw_ws::upgrade_request(addr, "").into_bytes() {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        write
    });
    // The reader sees the drop (end of stream or reset) as soon as it happens.
    let mut answer = Vec::new();
    let read_all = tokio::io::AsyncReadExt::read_to_end(&mut read, &mut answer);
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT * 5, read_all)
        .await
        .expect("a dribbled upgrade was never dropped");
    let held = started.elapsed();
    writer.abort();
    (held, !answer.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_upgrades_are_dropped_at_the_handshake_deadline() {
    const SOCKETS: usize = 200;
    let (server, _dir) = hostile_server(&["--max-connections-per-ip", "1000"]);
    let canary = Canary::start(&server.url()).await.unwrap();
    let addr = server.addr;
    let attackers: Vec<_> = (0..SOCKETS)
        .map(|_| tokio::spawn(dribble(addr, None, Duration::from_millis(200))))
        .collect();
    // During the attack, a legitimate client connects, authenticates and round-trips.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let alice = TestAccount::new(Some("alice"), 0);
    let mut c = Client::register(&server.url(), &alice).await.unwrap();
    c.send(
        alice.address(),
        parley_protocol::MessageId([1; 16]),
        vec![1],
    )
    .await
    .unwrap();
    c.next_deliver().await.unwrap();
    let legit = started.elapsed();
    println!("legitimate connect + register + echo during the attack: {legit:?}");
    assert!(legit < Duration::from_secs(1));

    let mut latest = Duration::ZERO;
    for attacker in attackers {
        let (held, answered) = attacker.await.unwrap();
        assert!(!answered, "a dribbled upgrade got an answer");
        latest = latest.max(held);
    }
    println!("{SOCKETS} slowloris sockets, the last dropped after {latest:?}");
    assert!(latest >= HANDSHAKE_TIMEOUT);
    assert!(latest < HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    assert_canary_unaffected(&canary.finish().await.unwrap());
    assert_no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_followed_by_silence_is_closed_with_4000_at_the_auth_deadline() {
    let (server, _dir) = hostile_server(&[]);
    let mut ws = RawWs::connect(server.addr).await.unwrap();
    let (ending, took) = ws.ending(AUTH_TIMEOUT * 3).await.unwrap();
    println!("silent client closed after {took:?}");
    assert_eq!(ending, Ending::Close(4000));
    assert!(took >= AUTH_TIMEOUT - Duration::from_millis(50));
    assert!(took < AUTH_TIMEOUT + Duration::from_millis(500));
    assert_no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permessage_deflate_offer_is_not_negotiated_and_rsv1_is_refused() {
    let (server, _dir) = hostile_server(&[]);
    let mut ws = RawWs::connect_with(
        server.addr,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .await
    .unwrap();
    assert!(
        !ws.response_head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "the server negotiated an extension: {}",
        ws.response_head
    );
    // A "compressed" frame anyway.
    ws.send(&with(RawFrame::new(opcode::BINARY, vec![0x80]), |f| {
        f.rsv = 0b100
    }))
    .await
    .unwrap();
    let (ending, _) = ws.ending(CLOSE_DEADLINE).await.unwrap();
    assert_eq!(ending, Ending::Close(1002));
    assert_no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_limit_are_dropped_and_other_addresses_are_not() {
    const LIMIT: usize = 8;
    let (server, _dir) = hostile_server(&["--max-connections-per-ip", "8"]);
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(RawWs::connect(server.addr).await.unwrap());
    }
    let started = Instant::now();
    let refused = RawWs::connect(server.addr).await;
    assert!(refused.is_err(), "connection {} accepted", LIMIT + 1);
    println!(
        "connection {} refused in {:?}",
        LIMIT + 1,
        started.elapsed()
    );
    assert!(started.elapsed() < CLOSE_DEADLINE);
    // Another client machine (another loopback address) is not affected.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    RawWs::connect_from(server.addr, Some(other), "")
        .await
        .expect("another address connects");
    assert_no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_closed_with_1008_and_a_steady_pinger_is_not() {
    let (server, _dir) = hostile_server(&[]);
    let canary = Canary::start(&server.url()).await.unwrap();
    let flooder = TestAccount::new(Some("flooder"), 0);
    drop(Client::register(&server.url(), &flooder).await.unwrap());
    let rss_before = server.rss_kib().unwrap();

    // A steady pinger, 45 per second for 3 s (past the 100-frame burst): under the rate.
    let steady = {
        let (addr, account) = (server.addr, TestAccount::new(Some("steady"), 0));
        drop(Client::register(&server.url(), &account).await.unwrap());
        tokio::spawn(async move {
            let mut ws = RawWs::connect(addr).await.unwrap();
            ws.login(&account).await.unwrap();
            let ping = RawFrame::new(opcode::PING, b"alive".to_vec());
            for _ in 0..135 {
                ws.send(&ping).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1000 / 45)).await;
            }
            ws
        })
    };

    // The flooder: 125-byte pings (the largest allowed) as fast as the socket takes
    // them, never reading the pongs.
    let mut ws = RawWs::connect(server.addr).await.unwrap();
    ws.login(&flooder).await.unwrap();
    let ping = RawFrame::new(opcode::PING, vec![0x55; 125]).encode();
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 100)
        .collect();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) {
        if ws.write(&burst).await.is_err() {
            break;
        }
        sent += 100;
    }
    let (ending, _) = ws.ending(Duration::from_secs(5)).await.unwrap();
    let cut_off = started.elapsed();
    let growth = server.rss_kib().unwrap().saturating_sub(rss_before);
    // The close frame may sit behind the pongs the flooder never read: the server's
    // own count says why it closed.
    let admin = server.admin_addr.unwrap();
    let (_, text) = parley_tests::admin::http_get(admin, "/metrics")
        .await
        .unwrap();
    let policy_closes = parley_tests::admin::parse_exposition(&text)
        .unwrap()
        .value(
            "parley_connections_closed_total",
            &[("reason", "policy_violation")],
        )
        .unwrap_or(0.0);
    println!(
        "ping flood: {sent} pings written, connection ended {ending:?} after {cut_off:?}; \
         policy closes {policy_closes}; server RSS growth {growth} KiB"
    );
    assert!(matches!(ending, Ending::Close(1008) | Ending::Dropped));
    assert_eq!(policy_closes, 1.0, "closed for the flood");
    assert!(
        cut_off < Duration::from_secs(3),
        "closed within the burst window"
    );
    assert!(growth < 5 * 1024, "memory grew by {growth} KiB");

    // The steady pinger is still served.
    let mut steady = steady.await.unwrap();
    let resolve = parley_protocol::wire::ClientFrame::new(
        parley_protocol::ids::RequestId(2),
        parley_protocol::wire::client::ClientBody::ResolveHandle(
            parley_protocol::wire::client::ResolveHandle {
                handle: parley_protocol::Handle::parse("steady").unwrap(),
            },
        ),
    );
    let bytes = parley_protocol::wire::encode_client(&resolve).unwrap();
    steady
        .send(&RawFrame::new(opcode::BINARY, bytes))
        .await
        .unwrap();
    // (skipping pushes such as `drained`)
    while steady.read_parley().await.unwrap().rid != Some(parley_protocol::ids::RequestId(2)) {}
    assert_canary_unaffected(&canary.finish().await.unwrap());
    assert_no_panic(&server);
}
