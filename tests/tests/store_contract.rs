//! The store contract (`parley_tests::store_contract`) run against every store.
//!
//! The PostgreSQL cases need a server: [`postgres_url`] says where (for now the
//! `PARLEY_TEST_POSTGRES_URL` variable; without it they pass as skipped). Each case gets
//! a schema of its own on it (`t_<random>`, reached through the URL's `search_path`), so
//! cases run in parallel on one server and leave nothing behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_protocol::business::CategorySet;
use parley_protocol::ids::{DeviceAddress, Handle, ServerId};
use parley_server::authority::Authority;
use parley_server::store::postgres::{self, HoldWindow, PostgresOptions, PostgresStore};
use parley_server::store::sqlite::{self, HoldLimits, SqliteOptions, SqliteStore};
use parley_server::store::{
    CommitListener, HeldWord, SendPolicy, Store, StoreHooks, StoredEnvelope, Verification,
};
use parley_tests::business::now_ms;
use parley_tests::postgres::TestPostgres;
use parley_tests::store_contract::{
    Commits, KitFuture, OpenStore, ReopenStore, StoreAdmin, Subject,
};
use rand_core::{OsRng, RngCore};

/// The embedded store, in a temporary directory: persisting every envelope first, or
/// (`holding`) holding each person's envelope as for a recipient connected to this
/// process, with a deadline of [`HOLDING_DEADLINE`].
struct Sqlite {
    holding: bool,
}

/// The deadline of the holding subject: short, since a case that never acks waits for
/// it on each send.
const HOLDING_DEADLINE: Duration = Duration::from_millis(20);

/// The contract's listener, telling the store that every device is connected here, so
/// that every person's single send is held.
#[derive(Debug)]
struct EveryDeviceHere(Arc<Commits>);

impl CommitListener for EveryDeviceHere {
    fn committed(&self, to: DeviceAddress, envelope: StoredEnvelope) {
        self.0.committed(to, envelope);
    }

    fn connected_here(&self, _to: &DeviceAddress) -> bool {
        true
    }
}

impl OpenStore for Sqlite {
    fn open(&self, policy: SendPolicy, commits: Arc<Commits>) -> KitFuture<'_, Option<Subject>> {
        let holding = self.holding;
        Box::pin(async move {
            let dir = tempfile::tempdir()?;
            let hooks = match holding {
                false => StoreHooks::new(policy).with_listener(commits.clone()),
                true => StoreHooks::new(policy)
                    .with_listener(Arc::new(EveryDeviceHere(commits.clone()))),
            };
            let mut options = SqliteOptions::default();
            if holding {
                options.hold = HoldLimits {
                    deadline: HOLDING_DEADLINE,
                    max_per_device: 256,
                    max_device_bytes: 64 * 1024,
                    max_total_bytes: 64 * 1024 * 1024,
                };
            }
            let reopen = SqliteReopen {
                dir: dir.path().to_path_buf(),
                options,
                hooks,
            };
            let store = reopen.open()?;
            let admin = SqliteAdmin {
                dir: dir.path().to_path_buf(),
                authority: Authority::load_or_create(dir.path())?,
            };
            Ok(Some(Subject {
                store: Arc::new(store),
                commits,
                admin: Box::new(admin),
                reopen: Box::new(reopen),
                _keep: Box::new(dir),
            }))
        })
    }
}

/// Opens the embedded store in one directory, again and again.
#[derive(Debug)]
struct SqliteReopen {
    dir: PathBuf,
    options: SqliteOptions,
    hooks: StoreHooks,
}

impl SqliteReopen {
    fn open(&self) -> anyhow::Result<SqliteStore> {
        Ok(SqliteStore::open(
            &self.dir,
            &self.options,
            ServerId([1; 32]),
            self.hooks.clone(),
        )?)
    }
}

impl ReopenStore for SqliteReopen {
    fn reopen(&self) -> KitFuture<'_, Arc<dyn Store>> {
        Box::pin(async move { Ok(Arc::new(self.open()?) as Arc<dyn Store>) })
    }
}

/// What `verify-business` certifies for a test business named after its handle.
fn verification(handle: &Handle, categories: CategorySet) -> Verification {
    let name = handle.as_str().to_owned();
    Verification {
        legal_name: format!("{name} Ltd"),
        display_name: name.clone(),
        domain: format!("{name}.example"),
        categories,
        valid_for_ms: 365 * 24 * 3600 * 1000,
    }
}

#[derive(Debug)]
struct SqliteAdmin {
    dir: PathBuf,
    authority: Authority,
}

impl StoreAdmin for SqliteAdmin {
    fn verify_business(&self, handle: &Handle, categories: CategorySet) -> anyhow::Result<()> {
        let what = verification(handle, categories);
        sqlite::verify_business(&self.dir, &self.authority, handle, what, now_ms())
            .context("verify-business")?;
        Ok(())
    }

    fn set_suspended(&self, handle: &Handle, suspended: bool) -> anyhow::Result<()> {
        Ok(sqlite::set_suspended(
            &self.dir,
            handle,
            suspended,
            now_ms(),
        )?)
    }

    fn set_tier(&self, handle: &Handle, tier: u32) -> anyhow::Result<()> {
        Ok(sqlite::set_tier(&self.dir, handle, tier)?)
    }
}

mod sqlite_store {
    parley_tests::store_contract_cases!(super::Sqlite { holding: false });
}

/// The same contract with hold, then persist on, every recipient connected.
mod sqlite_store_holding {
    parley_tests::store_contract_cases!(super::Sqlite { holding: true });
}

/// The PostgreSQL server for one case: `PARLEY_TEST_POSTGRES_URL` when set (a server of
/// your own; each case works in a schema of its own on it), else a throwaway instance of
/// the case's own. `None` (after saying so) when PostgreSQL is not installed: then the
/// case passes as skipped.
fn postgres_server() -> anyhow::Result<Option<(String, Option<TestPostgres>)>> {
    if let Ok(url) = std::env::var("PARLEY_TEST_POSTGRES_URL") {
        if !url.trim().is_empty() {
            return Ok(Some((url, None)));
        }
    }
    Ok(TestPostgres::start()?.map(|pg| (pg.url(), Some(pg))))
}

/// The contract's listener for the clustered store holding: every envelope can be
/// carried (the listener hears of it then, as a recipient's node would get it), and the
/// recipient's node (nobody acks in the contract) asks for its commit at once, so every
/// person's send takes the held path (a decision without rows, then the commit of its
/// settlement) and is read back after that commit.
#[derive(Debug)]
struct CarriedThenCommitted(Arc<Commits>);

impl CommitListener for CarriedThenCommitted {
    fn committed(&self, to: DeviceAddress, envelope: StoredEnvelope) {
        self.0.committed(to, envelope);
    }

    fn can_carry(&self, _to: &DeviceAddress, _size: usize) -> bool {
        true
    }

    fn carry(
        &self,
        to: DeviceAddress,
        envelope: StoredEnvelope,
    ) -> Option<tokio::sync::oneshot::Receiver<HeldWord>> {
        // Handed off (as the bus hands it to the recipient's node), then committed.
        self.0.committed(to, envelope);
        let (word, heard) = tokio::sync::oneshot::channel();
        let _ = word.send(HeldWord::Commit);
        Some(heard)
    }
}

/// The clustered store, in a fresh schema on the server of [`postgres_server`]:
/// persisting every envelope first, or (`holding`) holding each person's envelope as for
/// a recipient on another node ([`CarriedThenCommitted`]).
struct Postgres {
    holding: bool,
}

impl OpenStore for Postgres {
    fn open(&self, policy: SendPolicy, commits: Arc<Commits>) -> KitFuture<'_, Option<Subject>> {
        let holding = self.holding;
        Box::pin(async move {
            let Some((server, instance)) = postgres_server()? else {
                return Ok(None);
            };
            let schema = Schema::create(&server).await?;
            let mut options = PostgresOptions::default();
            let hooks = match holding {
                false => StoreHooks::new(policy).with_listener(commits.clone()),
                true => {
                    options.hold = HoldWindow {
                        deadline: HOLDING_DEADLINE,
                        commit_grace: Duration::from_millis(250),
                    };
                    StoreHooks::new(policy)
                        .with_listener(Arc::new(CarriedThenCommitted(commits.clone())))
                }
            };
            let reopen = PostgresReopen {
                url: schema.url.clone(),
                options,
                hooks,
            };
            let store = reopen.open().await?;
            let dir = tempfile::tempdir()?;
            let admin = PostgresAdmin {
                url: schema.url.clone(),
                authority: Authority::load_or_create(dir.path())?,
            };
            Ok(Some(Subject {
                store: Arc::new(store),
                commits,
                admin: Box::new(admin),
                reopen: Box::new(reopen),
                _keep: Box::new((schema, dir, instance)),
            }))
        })
    }
}

/// Opens the clustered store in one schema, again and again.
#[derive(Debug)]
struct PostgresReopen {
    url: String,
    options: PostgresOptions,
    hooks: StoreHooks,
}

impl PostgresReopen {
    async fn open(&self) -> anyhow::Result<PostgresStore> {
        Ok(PostgresStore::open(
            &self.url,
            &self.options,
            ServerId([1; 32]),
            self.hooks.clone(),
        )
        .await?)
    }
}

impl ReopenStore for PostgresReopen {
    fn reopen(&self) -> KitFuture<'_, Arc<dyn Store>> {
        Box::pin(async move { Ok(Arc::new(self.open().await?) as Arc<dyn Store>) })
    }
}

/// A schema of one case, dropped with everything in it when the case ends.
#[derive(Debug)]
struct Schema {
    server: String,
    name: String,
    /// `server` working in this schema.
    url: String,
}

impl Schema {
    async fn create(server: &str) -> anyhow::Result<Schema> {
        let name = format!("t_{:016x}", OsRng.next_u64());
        execute(server, &format!("CREATE SCHEMA {name}")).await?;
        let separator = if server.contains('?') { '&' } else { '?' };
        Ok(Schema {
            server: server.to_owned(),
            url: format!("{server}{separator}options=-csearch_path%3D{name}"),
            name,
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (server, sql) = (
            self.server.clone(),
            format!("DROP SCHEMA {} CASCADE", self.name),
        );
        // Drop runs inside the case's runtime; the statement runs on one of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(execute(&server, &sql)))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}: {dropped:?}", self.name);
        }
    }
}

/// Runs one statement on its own connection.
async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {}", postgres::redact_url(url)))?;
    let connection = tokio::spawn(connection);
    client.batch_execute(sql).await.context(sql.to_owned())?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

#[derive(Debug)]
struct PostgresAdmin {
    url: String,
    authority: Authority,
}

impl PostgresAdmin {
    /// Runs an admin command (async) from the synchronous [`StoreAdmin`] methods.
    fn run<T>(&self, command: impl std::future::Future<Output = T>) -> T {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(command))
    }
}

impl StoreAdmin for PostgresAdmin {
    fn verify_business(&self, handle: &Handle, categories: CategorySet) -> anyhow::Result<()> {
        let what = verification(handle, categories);
        self.run(postgres::verify_business(
            &self.url,
            &self.authority,
            handle,
            what,
            now_ms(),
        ))
        .context("verify-business")?;
        Ok(())
    }

    fn set_suspended(&self, handle: &Handle, suspended: bool) -> anyhow::Result<()> {
        Ok(self.run(postgres::set_suspended(
            &self.url,
            handle,
            suspended,
            now_ms(),
        ))?)
    }

    fn set_tier(&self, handle: &Handle, tier: u32) -> anyhow::Result<()> {
        Ok(self.run(postgres::set_tier(&self.url, handle, tier))?)
    }
}

mod postgres_store {
    parley_tests::store_contract_cases!(super::Postgres { holding: false });
}

mod postgres_store_holding {
    parley_tests::store_contract_cases!(super::Postgres { holding: true });
}

/// The listener of a node that carries every held envelope and never hears a word back
/// (the recipient neither acks nor reads): each held send waits for its deadline, then
/// is committed. Says when it carried one.
#[derive(Debug, Default)]
struct CarriedUnanswered {
    carried: tokio::sync::Notify,
    words: std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<HeldWord>>>,
}

impl CommitListener for CarriedUnanswered {
    fn committed(&self, _to: DeviceAddress, _envelope: StoredEnvelope) {}

    fn can_carry(&self, _to: &DeviceAddress, _size: usize) -> bool {
        true
    }

    fn carry(
        &self,
        _to: DeviceAddress,
        _envelope: StoredEnvelope,
    ) -> Option<tokio::sync::oneshot::Receiver<HeldWord>> {
        let (word, heard) = tokio::sync::oneshot::channel();
        self.words
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(word);
        self.carried.notify_one();
        Some(heard)
    }
}

/// A node holding every person's send for 600 ms (then 250 ms of grace), carrying it
/// with `carrier`.
async fn holding_unanswered(
    url: &str,
    carrier: Arc<CarriedUnanswered>,
) -> anyhow::Result<PostgresStore> {
    let options = PostgresOptions {
        hold: HoldWindow {
            deadline: Duration::from_millis(600),
            commit_grace: Duration::from_millis(250),
        },
        ..PostgresOptions::default()
    };
    let hooks = StoreHooks::new(SendPolicy::default()).with_listener(carrier);
    Ok(PostgresStore::open(url, &options, ServerId([1; 32]), hooks).await?)
}

/// Two nodes on one database, one holding and one not (their settings need not match,
/// as during a change of them): a read of the queue on the node that does not hold
/// waits for the seq the other holds below a committed one, instead of passing it (the
/// device would ack past it, and the held envelope, committed at its deadline, would
/// never be read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_node_that_does_not_hold_waits_for_a_seq_held_on_another() -> anyhow::Result<()>
{
    use parley_protocol::ids::{MessageId, Seq};
    use parley_server::store::{EnqueueOutcome, NewEnvelope};
    use parley_tests::store_contract::register;
    use parley_tests::TestAccount;

    let Some((server, _instance)) = postgres_server()? else {
        return Ok(());
    };
    let schema = Schema::create(&server).await?;
    let carrier = Arc::new(CarriedUnanswered::default());
    let holding = holding_unanswered(&schema.url, carrier.clone()).await?;
    let persisting = PostgresStore::open(
        &schema.url,
        &PostgresOptions::default(),
        ServerId([1; 32]),
        StoreHooks::new(SendPolicy::default()),
    )
    .await?;
    let alice = register(&holding, &TestAccount::new(None, 0)).await?;
    let carol = register(&holding, &TestAccount::new(None, 0)).await?;
    let bob = register(&holding, &TestAccount::new(None, 0)).await?;
    let envelope = |from, id: u8| NewEnvelope {
        from,
        to: bob,
        id: MessageId([id; 16]),
        ciphertext: vec![id],
        now_ms: now_ms(),
        category: None,
        receipt: false,
        fan_out: None,
    };

    let held = holding.submit_enqueue(envelope(alice, 1)).await?;
    tokio::time::timeout(Duration::from_secs(5), carrier.carried.notified())
        .await
        .context("the held send is decided and carried")?;
    let committed = persisting.enqueue(envelope(carol, 2)).await?;
    let EnqueueOutcome::Accepted { seq: above, .. } = committed else {
        anyhow::bail!("carol's send: {committed:?}");
    };
    let page = persisting.page(bob, Seq(0), 10).await?;
    let seqs: Vec<u64> = page.iter().map(|e| e.seq.0).collect();
    let held = held.await?;
    let EnqueueOutcome::Accepted { seq: below, .. } = held else {
        anyhow::bail!("alice's send: {held:?}");
    };
    assert!(below < above, "the held seq is the lower one");
    assert_eq!(
        seqs,
        vec![below.0, above.0],
        "the read waited for the held seq, committed at its deadline"
    );
    Ok(())
}

/// Alice with her phone and laptop listed, and Bob's send to the laptop submitted (held,
/// on a store that holds it): who is who, and the send's pending outcome.
async fn held_for_the_laptop(
    store: &dyn Store,
) -> anyhow::Result<(
    parley_tests::store_contract::Registered,
    parley_server::store::Pending<parley_server::store::EnqueueOutcome>,
)> {
    use parley_protocol::ids::MessageId;
    use parley_server::store::PublishOutcome;
    use parley_tests::store_contract::{alice_and_bob, envelope, publish_list};

    let registered = alice_and_bob(store).await?;
    anyhow::ensure!(matches!(
        publish_list(store, &registered.alice, 1, &[1, 2]).await?,
        PublishOutcome::Stored { .. }
    ));
    let to_laptop = envelope(
        registered.bob,
        registered.laptop,
        MessageId([5; 16]),
        b"for the laptop",
        None,
    );
    let held = store.submit_enqueue(to_laptop).await?;
    Ok((registered, held))
}

/// The embedded store holding with a deadline far longer than the test: a device list
/// that removes a device settles what is held for it at once (the envelope goes with the
/// device, as its queue does, and its sender is answered), so nothing of it waits for a
/// deadline, or lands in the queue of a device that later gets the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_device_settles_what_is_held_for_it() -> anyhow::Result<()> {
    use parley_protocol::ids::{DeviceId, Seq};
    use parley_server::store::{EnqueueOutcome, PublishOutcome};
    use parley_tests::store_contract::{publish_list, Registered};

    let dir = tempfile::tempdir()?;
    let commits = Arc::new(Commits::default());
    let store = SqliteStore::open(
        dir.path(),
        &SqliteOptions {
            hold: HoldLimits {
                deadline: Duration::from_secs(30),
                max_per_device: 256,
                max_device_bytes: 64 * 1024,
                max_total_bytes: 64 * 1024 * 1024,
            },
            ..SqliteOptions::default()
        },
        ServerId([1; 32]),
        StoreHooks::new(SendPolicy::default()).with_listener(Arc::new(EveryDeviceHere(commits))),
    )?;
    let (Registered { alice, laptop, .. }, held) = held_for_the_laptop(&store).await?;
    assert_eq!(
        publish_list(&store, &alice, 2, &[1]).await?,
        PublishOutcome::Stored {
            added: vec![],
            removed: vec![DeviceId(2)]
        }
    );
    let settled = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .context("settled with the removal, not at the 30 s deadline")??;
    assert!(
        matches!(settled, EnqueueOutcome::Accepted { .. }),
        "{settled:?}"
    );
    // A new device with the same id gets nothing of the old one's.
    anyhow::ensure!(matches!(
        publish_list(&store, &alice, 3, &[1, 2]).await?,
        PublishOutcome::Stored { .. }
    ));
    assert_eq!(store.page(laptop, Seq(0), 10).await?, Vec::new());
    Ok(())
}

/// A held send whose device is removed and linked again (the same id, a new device row)
/// before the held copy is committed: the copy goes with the old device's queue, neither
/// to the new device nor left behind as a row nobody reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_copy_for_a_device_linked_again_is_not_committed() -> anyhow::Result<()> {
    use parley_protocol::ids::Seq;
    use parley_server::store::{EnqueueOutcome, PublishOutcome};
    use parley_tests::store_contract::{publish_list, Registered};

    let Some((server, _instance)) = postgres_server()? else {
        return Ok(());
    };
    let schema = Schema::create(&server).await?;
    let carrier = Arc::new(CarriedUnanswered::default());
    let store = holding_unanswered(&schema.url, carrier.clone()).await?;
    let (Registered { alice, laptop, .. }, held) = held_for_the_laptop(&store).await?;
    tokio::time::timeout(Duration::from_secs(5), carrier.carried.notified())
        .await
        .context("the held send is decided and carried")?;
    for (version, devices) in [(2, &[1][..]), (3, &[1, 2][..])] {
        anyhow::ensure!(matches!(
            publish_list(&store, &alice, version, devices).await?,
            PublishOutcome::Stored { .. }
        ));
    }
    let settled = held.await?;
    assert!(
        matches!(settled, EnqueueOutcome::Accepted { .. }),
        "{settled:?}"
    );
    assert_eq!(store.page(laptop, Seq(0), 10).await?, Vec::new());
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let queued: i64 = client
        .query_one("SELECT count(*) FROM queue", &[])
        .await?
        .get(0);
    assert_eq!(queued, 0, "no queue row for a device row that is gone");
    drop(client);
    let _ = connection.await;
    Ok(())
}
