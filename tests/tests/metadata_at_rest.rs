//! Metadata at rest (issue 14): after a conversation between two people is delivered and
//! acknowledged, the server's database holds no row that names both of them, directly
//! (account, handle) or through a device id; the same after a restart and after the
//! sweeps. A business's bookkeeping (care window, reach, reports) is gone after its
//! window. Its log at `info` and `debug` has no line naming both, and its metrics carry
//! neither. A real `parley-server` process on SQLite; the database is read read-only,
//! every row of every table.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use parley_protocol::business::{Category, CategorySet};
use parley_protocol::ids::{DeviceAddress, MessageId, Seq};
use parley_protocol::wire::client::{ClientBody, Report};
use parley_protocol::wire::server::ServerBody;
use parley_server::store::sqlite::DATABASE_FILE;
use parley_tests::admin::http_get;
use parley_tests::business::{grant, send_grant, send_in, verify_business};
use parley_tests::client::Reply;
use parley_tests::{Client, ServerProcess, TestAccount};
use rand_core::{OsRng, RngCore};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

/// Columns that hold a `devices.id` (schema.rs: `-- devices.id`): an integer there names
/// the device's account.
const DEVICE_KEY_COLUMNS: &[&str] = &["recipient", "sender", "device_key"];

/// How one person can appear in a row.
#[derive(Debug)]
struct Person {
    account: Vec<u8>,
    hex: String,
    handle: String,
    device_keys: Vec<i64>,
}

impl Person {
    fn new(db: &Connection, account: &TestAccount) -> Person {
        let id = account.identity.account_id();
        let device_keys = db
            .prepare("SELECT id FROM devices WHERE account = ?1")
            .unwrap()
            .query_map([id.as_bytes().as_slice()], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<i64>, _>>()
            .unwrap();
        assert!(!device_keys.is_empty(), "registered");
        Person {
            account: id.as_bytes().to_vec(),
            hex: id.to_hex(),
            handle: account.handle.as_ref().unwrap().as_str().to_owned(),
            device_keys,
        }
    }

    fn named_by(&self, column: &str, value: ValueRef<'_>) -> bool {
        match value {
            ValueRef::Blob(b) => contains(b, &self.account) || contains(b, self.hex.as_bytes()),
            ValueRef::Text(t) => contains(t, self.hex.as_bytes()) || t == self.handle.as_bytes(),
            ValueRef::Integer(i) => {
                DEVICE_KEY_COLUMNS.contains(&column) && self.device_keys.contains(&i)
            }
            ValueRef::Null | ValueRef::Real(_) => false,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn open_read_only(dir: &Path) -> Connection {
    Connection::open_with_flags(
        dir.join(DATABASE_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap()
}

/// Every row, of every table, that names both people: `table: row`.
fn rows_naming_both(db: &Connection, a: &Person, b: &Person) -> Vec<String> {
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.iter().any(|t| t == "sent"), "{tables:?}");
    let mut found = Vec::new();
    for table in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let names = |p: &Person| {
                columns
                    .iter()
                    .enumerate()
                    .any(|(i, c)| p.named_by(c, row.get_ref(i).unwrap()))
            };
            if names(a) && names(b) {
                let values: Vec<String> = (0..columns.len())
                    .map(|i| format!("{}={}", columns[i], short(row.get_ref(i).unwrap())))
                    .collect();
                found.push(format!("{table}: {}", values.join(", ")));
            }
        }
    }
    found
}

/// A value for a failure message: blobs as their first 8 bytes in hex.
fn short(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Blob(b) => format!("x'{}..'", hex::encode(&b[..b.len().min(8)])),
        other => format!("{other:?}"),
    }
}

fn count(db: &Connection, table: &str) -> i64 {
    db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Polls `condition` on a fresh read-only connection until it holds; fails after 30 s.
async fn wait_until(dir: &Path, what: &str, condition: impl Fn(&Connection) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition(&open_read_only(dir)) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn message_id() -> MessageId {
    MessageId::time_ordered(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros(),
        )
        .unwrap(),
        &mut OsRng,
    )
}

fn ciphertext() -> Vec<u8> {
    let mut bytes = vec![0u8; 200];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Sends a new message, then again as a retry (same id and bytes: the lost-reply case),
/// which must get the same seq. Returns the seq.
async fn send_with_retry(sender: &mut Client, to: DeviceAddress) -> (MessageId, Seq) {
    let (id, bytes) = (message_id(), ciphertext());
    let seq = sender.send(to, id, bytes.clone()).await.unwrap();
    assert_eq!(sender.send(to, id, bytes).await.unwrap(), seq, "a retry");
    (id, seq)
}

/// Receives the envelopes `expected` (in order) and acknowledges them.
async fn receive_and_ack(receiver: &mut Client, expected: &[(MessageId, Seq)]) {
    for (id, seq) in expected {
        let d = receiver.next_deliver().await.unwrap();
        assert_eq!((d.id, d.seq), (*id, *seq));
    }
    receiver.ack(expected.last().unwrap().1).await.unwrap();
}

fn stop(server: ServerProcess) {
    server.signal("TERM").unwrap();
    assert!(server.wait_exit(Duration::from_secs(15)).unwrap());
}

/// Stops `server` and starts it again on `dir`, `offset` later by its clock
/// (`--test-clock-offset`), sweeping every 100 ms.
fn restart_later(server: ServerProcess, dir: &Path, offset: &str) -> ServerProcess {
    stop(server);
    let listen = "127.0.0.1:0".parse().unwrap();
    let args = ["--test-clock-offset", offset, "--sweep-interval", "100ms"];
    ServerProcess::start(dir, listen, &args).unwrap()
}

/// The conversation: Alice and Bob online, then each offline in turn, both ways; every
/// send retried once, everything delivered and acknowledged. `while_bob_is_offline` runs
/// while two envelopes wait for Bob. Returns once the clients are gone (their acks may
/// still be committing).
async fn converse(
    url: &str,
    alice: &TestAccount,
    bob: &TestAccount,
    while_bob_is_offline: impl FnOnce(),
) {
    let mut a = Client::register(url, alice).await.unwrap();
    let mut b = Client::register(url, bob).await.unwrap();
    let sent = send_with_retry(&mut a, bob.address()).await;
    receive_and_ack(&mut b, &[sent]).await;
    let sent = send_with_retry(&mut b, alice.address()).await;
    receive_and_ack(&mut a, &[sent]).await;

    drop(b);
    let for_bob = [
        send_with_retry(&mut a, bob.address()).await,
        send_with_retry(&mut a, bob.address()).await,
    ];
    while_bob_is_offline();
    drop(a);
    let mut b = Client::login(url, bob).await.unwrap();
    receive_and_ack(&mut b, &for_bob).await;
    let for_alice = [send_with_retry(&mut b, alice.address()).await];
    let mut a = Client::login(url, alice).await.unwrap();
    receive_and_ack(&mut a, &for_alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_delivery_no_row_names_both_people_also_after_a_restart_and_a_sweep() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let listen = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(dir, listen, &[]).unwrap();
    let alice = TestAccount::new(Some("alice"), 5);
    let bob = TestAccount::new(Some("bob"), 5);
    converse(&server.url(), &alice, &bob, || {
        // The envelopes wait in the queue, which names both (as it must until delivery;
        // this also shows that the check finds such a row).
        let db = open_read_only(dir);
        let (pa, pb) = (Person::new(&db, &alice), Person::new(&db, &bob));
        let waiting = rows_naming_both(&db, &pa, &pb);
        assert!(
            waiting.len() == 2 && waiting.iter().all(|r| r.starts_with("queue:")),
            "{waiting:?}"
        );
    })
    .await;
    let db = open_read_only(dir);
    let (pa, pb) = (Person::new(&db, &alice), Person::new(&db, &bob));

    // Every ack committed: the queue is empty, the dedup entries are there.
    wait_until(dir, "every envelope is acknowledged", |db| {
        count(db, "queue") == 0
    })
    .await;
    assert_eq!(count(&db, "sent"), 5, "one dedup entry per message");
    // Times are kept only as precisely as a rule needs: the dedup window's sweep to the
    // minute, account and device creation (no rule reads them) to the day.
    for (table, column, unit) in [
        ("sent", "accepted_at_ms", 60_000),
        ("accounts", "created_at_ms", 86_400_000),
        ("devices", "created_at_ms", 86_400_000),
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} % {unit} != 0");
        let finer: i64 = db.query_row(&sql, [], |r| r.get(0)).unwrap();
        assert_eq!(finer, 0, "{table}.{column} to {unit} ms");
    }
    assert_eq!(rows_naming_both(&db, &pa, &pb), Vec::<String>::new());
    drop(db);

    // After a restart.
    stop(server);
    let server = ServerProcess::start(dir, listen, &[]).unwrap();
    let db = open_read_only(dir);
    assert_eq!(count(&db, "sent"), 5);
    assert_eq!(rows_naming_both(&db, &pa, &pb), Vec::<String>::new());
    drop(db);

    // After the sweeps: two hours later the dedup entries (1 h) are gone.
    let _server = restart_later(server, dir, "2h");
    wait_until(dir, "the dedup entries are swept", |db| {
        count(db, "sent") == 0
    })
    .await;
    let db = open_read_only(dir);
    assert_eq!(rows_naming_both(&db, &pa, &pb), Vec::<String>::new());
    assert_eq!(count(&db, "devices"), 2, "the accounts stay");
}

/// How a log line or a metric could name an account: its id in hex (the first 16
/// characters also catch an abbreviated id) or its handle.
fn identifiers(account: &TestAccount) -> [String; 2] {
    [
        account.identity.account_id().to_hex()[..16].to_owned(),
        account.handle.as_ref().unwrap().as_str().to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_info_and_debug_and_metrics_name_no_pair_of_accounts() {
    for level in ["info", "debug"] {
        let data = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(
            data.path(),
            "127.0.0.1:0".parse().unwrap(),
            &["--log", level],
        )
        .unwrap();
        let alice = TestAccount::new(Some("alice4q7z"), 5);
        let bob = TestAccount::new(Some("bob8w3k"), 5);
        converse(&server.url(), &alice, &bob, || {}).await;
        let (_, metrics) = http_get(server.admin_addr.unwrap(), "/metrics")
            .await
            .unwrap();
        let (ia, ib) = (identifiers(&alice), identifiers(&bob));
        for id in ia.iter().chain(&ib) {
            assert!(!metrics.contains(id.as_str()), "{id} in the metrics");
        }

        // The whole log: up to the line of a clean stop.
        server.signal("TERM").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server
            .logs()
            .iter()
            .any(|l| l.contains("parley-server stopped"))
        {
            assert!(Instant::now() < deadline, "the server did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let logs = server.logs();
        let names = |line: &str, ids: &[String; 2]| ids.iter().any(|id| line.contains(id.as_str()));
        let pairs: Vec<&String> = logs
            .iter()
            .filter(|l| names(l, &ia) && names(l, &ib))
            .collect();
        assert!(pairs.is_empty(), "at {level}: {pairs:#?}");
        // The log did see the chat (so a pair could have shown).
        assert!(logs.iter().any(|l| names(l, &ia)), "at {level}: {logs:#?}");
        if level == "debug" {
            assert!(logs.iter().any(|l| l.contains("DEBUG")), "{logs:#?}");
        }
    }
}

/// Whether a reply is `accepted`.
fn accepted(reply: &Reply) -> bool {
    matches!(reply, Ok(ServerBody::Accepted(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_bookkeeping_is_gone_after_its_window() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let listen = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(dir, listen, &[]).unwrap();
    let url = server.url();
    let bank = TestAccount::new(Some("acme"), 2);
    let alice = TestAccount::new(Some("alice"), 2);
    let bob = TestAccount::new(Some("bob"), 2);
    let mut k = Client::register(&url, &bank).await.unwrap();
    let mut a = Client::register(&url, &alice).await.unwrap();
    let mut b = Client::register(&url, &bob).await.unwrap();
    verify_business(dir, "acme", "Acme Bank", "transactional").unwrap();
    let bank_id = bank.identity.account_id();

    // Alice consents to transactional messages and gets one (reach); she writes to the
    // bank, which answers within the care window; Bob reports the bank, and Alice.
    let transactional = CategorySet::of([Category::Transactional]);
    send_grant(&mut a, grant(&alice, bank_id, transactional))
        .await
        .unwrap()
        .unwrap();
    let reply = send_in(&mut k, alice.address(), Some(Category::Transactional));
    assert!(accepted(&reply.await.unwrap()));
    assert!(accepted(
        &send_in(&mut a, bank.address(), None).await.unwrap()
    ));
    let reply = send_in(&mut k, alice.address(), Some(Category::Conversation));
    assert!(accepted(&reply.await.unwrap()));
    for account in [bank_id, alice.identity.account_id()] {
        let report = ClientBody::Report(Report { account });
        b.request(report).await.unwrap().unwrap();
    }
    for (client, expected) in [(&mut a, 2u64), (&mut k, 1)] {
        let mut last = Seq(0);
        for _ in 0..expected {
            last = client.next_deliver().await.unwrap().seq;
        }
        client.ack(last).await.unwrap();
    }
    drop((a, b, k));
    wait_until(dir, "every envelope is acknowledged", |db| {
        count(db, "queue") == 0
    })
    .await;
    let db = open_read_only(dir);
    for table in ["consents", "care_windows", "reach"] {
        assert_eq!(count(&db, table), 1, "{table}");
    }
    assert_eq!(count(&db, "reports"), 2);
    drop(db);

    // 25 hours later: the care window (24 h), the daily reach and the report window
    // (24 h) have passed; the standing consent is still in force.
    let _server = restart_later(server, dir, "25h");
    wait_until(dir, "the business bookkeeping is swept", |db| {
        ["care_windows", "reach", "reports", "sent"]
            .iter()
            .all(|table| count(db, table) == 0)
    })
    .await;
    assert_eq!(count(&open_read_only(dir), "consents"), 1);
}
