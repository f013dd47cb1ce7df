//! Storage faults on a real file system: the data directory on a small tmpfs that fills
//! up, or that is read-only. A full disk is answered with `storage_full`, never with a
//! false `accepted`; what was accepted is still delivered; sends work again once space
//! returns. A read-only database stops the server at startup with a clear message (the
//! runtime case cannot be staged: Linux refuses to remount a file system read-only
//! while the server holds its database open for writing).
//!
//! These tests need to mount a tmpfs (root with CAP_SYS_ADMIN); elsewhere they print
//! "SKIPPED" with the reason and pass.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use parley_tests::burst::message_id;
use parley_tests::history::Verdict;
use parley_tests::server::server_binary;
use parley_tests::tmpfs::Tmpfs;
use parley_tests::{Client, History, ServerProcess, TestAccount};

/// Size of the file system under the database.
const FS_KIB: u64 = 4 * 1024;
/// Free space left when the ballast is in place.
const HEADROOM: u64 = 256 * 1024;
/// Envelope size for the fill.
const ENVELOPE: usize = 1024;

/// Fills `dir`'s file system with a ballast file, then gives `headroom` bytes back.
fn fill(dir: &std::path::Path, headroom: u64) -> std::path::PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = file.flush();
    file.set_len(written.saturating_sub(headroom)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_answered_with_storage_full_never_a_false_accept_and_recovers() {
    let Some(fs) = Tmpfs::mount(FS_KIB) else {
        return;
    };
    let data = fs.path.join("data");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(&data, any, &[]).unwrap();
    let url = server.url();
    let alice = TestAccount::new(Some("alice"), 0);
    let bob = TestAccount::new(Some("bob"), 0);
    let mut a = Client::register(&url, &alice).await.unwrap();
    drop(Client::register(&url, &bob).await.unwrap());
    let ballast = fill(&fs.path, HEADROOM);

    // Send until the store refuses 20 times in a row.
    let mut history = History::default();
    let (mut full_in_a_row, mut full_total, mut n) = (0, 0, 0);
    while full_in_a_row < 20 {
        assert!(n < 5_000, "the disk never filled");
        let reply = a
            .request(parley_protocol::wire::client::ClientBody::Send(
                parley_protocol::wire::client::Send {
                    to: bob.address(),
                    id: message_id(n),
                    ciphertext: vec![0x42; ENVELOPE],
                    category: None,
                    receipt: false,
                },
            ))
            .await
            .unwrap();
        match reply {
            Ok(ServerBody::Accepted(acc)) => {
                assert_eq!(acc.id, message_id(n));
                history.accepted(acc.id);
                full_in_a_row = 0;
            }
            Err(e) if e.code == ErrorCode::StorageFull => {
                full_in_a_row += 1;
                full_total += 1;
            }
            other => panic!("message {n}: expected accepted or storage_full, got {other:?}"),
        }
        n += 1;
    }
    let accepted_while_filling = history.accepted_count();
    println!(
        "disk full after {accepted_while_filling} accepted envelopes of {ENVELOPE} B; \
         {full_total} storage_full answers"
    );
    assert!(
        accepted_while_filling > 0,
        "the headroom took some envelopes"
    );

    // Reads keep working while the disk is full: everything accepted is delivered.
    let mut b = Client::login(&url, &bob).await.unwrap();
    loop {
        match b.next_push().await.unwrap() {
            ServerBody::Deliver(d) => {
                history.delivered(d.id);
            }
            ServerBody::Drained(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(history.check().lost, 0, "accepted envelopes are readable");
    drop(b);

    // Space returns: sends succeed again within a second.
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let id = message_id(n);
    let recovered = loop {
        let reply = a
            .request(parley_protocol::wire::client::ClientBody::Send(
                parley_protocol::wire::client::Send {
                    to: bob.address(),
                    id,
                    ciphertext: vec![0x42; ENVELOPE],
                    category: None,
                    receipt: false,
                },
            ))
            .await
            .unwrap();
        match reply {
            Ok(ServerBody::Accepted(_)) => break freed.elapsed(),
            Err(e)
                if e.code == ErrorCode::StorageFull && freed.elapsed() < Duration::from_secs(1) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("after freeing space: {other:?}"),
        }
    };
    history.accepted(id);
    println!("sends accepted again {recovered:?} after space returned");

    // Everything drains once, in order; acks work again.
    let history = std::sync::Mutex::new(history);
    parley_tests::burst::drain(&url, &bob, &history)
        .await
        .unwrap();
    let history = history.into_inner().unwrap();
    assert_eq!(
        history.check(),
        Verdict {
            lost: 0,
            duplicated: 0,
            reordered: 0,
            unconfirmed: 0
        }
    );
    assert!(server.panics().is_empty(), "{:?}", server.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_stops_the_server_at_startup_with_a_clear_message() {
    let Some(fs) = Tmpfs::mount(FS_KIB) else {
        return;
    };
    let data = fs.path.join("data");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(&data, any, &[]).unwrap();
    server.signal("TERM").unwrap();
    assert!(server.wait_exit(Duration::from_secs(10)).unwrap());
    fs.remount_read_only().unwrap();

    let started = Instant::now();
    let mut child = Command::new(server_binary().unwrap())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("the server kept running on a read-only database");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    println!(
        "read-only startup: {status} after {took:?}: {}",
        stderr.trim()
    );
    assert!(!status.success());
    assert!(took < Duration::from_secs(2));
    assert!(
        stderr.to_ascii_lowercase().contains("read-only")
            || stderr.to_ascii_lowercase().contains("readonly"),
        "the message names the problem: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
    fs.remount_read_write().unwrap();
}
