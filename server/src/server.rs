//! The listener: accepts TCP connections within the connection limits and runs one task
//! per connection until shutdown.
//!
//! * A global semaphore permit is taken **before** `accept`, so at the limit the server
//!   stops accepting and clients wait in the kernel backlog.
//! * Connections per source IP are counted; one over the limit is dropped at once.
//! * An accept error (EMFILE, ENOBUFS...) never stops the loop: it backs off
//!   exponentially (1 ms to 1 s) and tries again.
//! * On shutdown the loop stops accepting, every connection is told to close (1001), the
//!   server waits up to `shutdown_grace` for them, then closes the store.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::context::{Limiters, Shared};
use crate::data_dir::DataDirLock;
use crate::housekeeping;
use crate::metrics::Metrics;
use crate::presence::{LocalPresence, NatsPresence, Presence};
use crate::store::postgres::{NodeLock, PostgresStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError, StoreHooks};
use crate::topology::{BusLocation, StoreLocation};
use crate::{admin, connection, ServerError};
use parley_protocol::business::AuthorityKey;
use parley_protocol::ids::ServerId;

/// Longest pause after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Opens the store in `config.data_dir` and serves `listener` until `shutdown` is
/// cancelled; then drains connections and closes the store. No admin listener: see
/// [`run_with_admin`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    run_with_admin(config, listener, None, shutdown).await
}

/// Like [`run`], and also serves the admin HTTP endpoints ([`crate::admin`]) on `admin`.
/// The caller binds both listeners (`main.rs` from `--listen` and `--admin-listen`;
/// tests on `127.0.0.1:0`).
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    config.validate()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    check_not_read_only(&config.data_dir)?;
    // Held until this function returns, after the store is closed.
    let _data_dir_lock = lock_data_dirs(&config)?;
    if !config.test_clock_offset.is_zero() {
        tracing::warn!(
            offset = ?config.test_clock_offset,
            "the server's clock is shifted (--test-clock-offset): for tests only"
        );
    }
    let clock = crate::clock::Clock::shifted(config.test_clock_offset);
    let authority = crate::authority::Authority::load_or_create(&config.data_dir)?.public();
    let metrics = Arc::new(Metrics::default());
    let mut server_id = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut server_id);
    let presence = open_presence(&config, &metrics).await?;
    let hooks = StoreHooks::new(config.send_policy())
        .with_listener(presence.clone())
        .with_metrics(metrics.store.clone())
        .with_clock(clock);
    let opened = open_store(&config, ServerId(server_id), hooks, &authority).await?;
    let (store, server_id) = (opened.store.clone(), opened.server_id);
    let admin_addr = admin
        .as_ref()
        .and_then(|a| a.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_addr,
        tls = tls.is_some(),
        database = %opened.described,
        bus = %config.bus_description(),
        node = %config.node_id(),
        server_id = %server_id,
        "{}",
        crate::ready::READY_MESSAGE
    );
    let shared = Arc::new(Shared {
        limiters: Limiters::new(&config),
        config,
        store: store.clone(),
        presence,
        server_id,
        metrics,
        tls,
        authority,
        clock,
    });
    let tracker = TaskTracker::new();
    tracker.spawn(housekeeping::run(shared.clone(), shutdown.clone()));
    if let Some(admin) = admin {
        tracker.spawn(admin::serve(
            admin,
            shared.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
    }
    accept_loop(&listener, &shared, &tracker, &shutdown).await;
    drop(listener);

    tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the shutdown grace period"
        );
    }
    match store.close().await {
        Ok(()) | Err(StoreError::Unavailable) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!("parley-server stopped");
    Ok(())
}

/// Takes the data directory (and a separate `--store sqlite:DIR`) for this server.
fn lock_data_dirs(config: &Config) -> Result<Vec<DataDirLock>, ServerError> {
    let mut locks = vec![DataDirLock::acquire(&config.data_dir)?];
    // The same directory written another way (`./d` and `d`) is not locked twice: a
    // second lock in this process would be refused by the first.
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if matches!(config.store, StoreLocation::Sqlite(_))
        && !same(config.sqlite_dir(), &config.data_dir)
    {
        check_not_read_only(config.sqlite_dir())?;
        locks.push(DataDirLock::acquire(config.sqlite_dir())?);
    }
    Ok(locks)
}

/// The presence of this node: the in-process registry, or NATS in a cluster.
async fn open_presence(
    config: &Config,
    metrics: &Metrics,
) -> Result<Arc<dyn Presence>, ServerError> {
    match (&config.bus, &config.cluster_key) {
        (BusLocation::Nats(url), Some(key)) => {
            let presence = NatsPresence::connect(
                url,
                key.clone(),
                config.node_id().to_owned(),
                config.bus_options(),
                metrics.bus.clone(),
            )
            .await?;
            Ok(Arc::new(presence))
        }
        _ => {
            metrics.bus.connected.set(1);
            Ok(Arc::new(LocalPresence::default()))
        }
    }
}

/// Opens the store the configuration names. A PostgreSQL store also checks that this
/// node's authority key is the deployment's and takes the node's hold on the database.
async fn open_store(
    config: &Config,
    new_server_id: ServerId,
    hooks: StoreHooks,
    authority: &AuthorityKey,
) -> Result<OpenStore, ServerError> {
    match &config.store {
        StoreLocation::Sqlite(_) => {
            let store = SqliteStore::open(
                config.sqlite_dir(),
                &config.sqlite_options(),
                new_server_id,
                hooks,
            )?;
            Ok(OpenStore {
                described: store.path().display().to_string(),
                server_id: store.server_id(),
                store: Arc::new(store),
                _node_lock: None,
            })
        }
        StoreLocation::Postgres(url) => {
            let store = PostgresStore::open(
                url.expose(),
                &config.postgres_options(),
                new_server_id,
                hooks,
            )
            .await?;
            store.claim_authority(authority).await?;
            let alone = matches!(config.bus, BusLocation::Local);
            let lock = store.hold_node_lock(alone).await?;
            let server_id = store.server_id();
            Ok(OpenStore {
                store: Arc::new(store),
                server_id,
                described: url.redacted(),
                _node_lock: Some(lock),
            })
        }
    }
}

/// An open store, and what must live as long as it.
struct OpenStore {
    store: Arc<dyn Store>,
    server_id: ServerId,
    /// Where it is, for the log (never with a password).
    described: String,
    /// A PostgreSQL store's hold on its database (see `store::postgres::NodeLock`).
    _node_lock: Option<NodeLock>,
}

/// Waits for a free slot of `limit`, then for a connection on `listener` (or its error):
/// the slot, held for as long as the connection is served, and what `accept` returned.
/// `None` once `shutdown` is cancelled.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(
    OwnedSemaphorePermit,
    std::io::Result<(TcpStream, SocketAddr)>,
)> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        permit = limit.clone().acquire_owned() => permit.ok()?,
    };
    tokio::select! {
        _ = shutdown.cancelled() => None,
        accepted = listener.accept() => Some((permit, accepted)),
    }
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let per_ip = Arc::new(IpCounts::default());
    let mut backoff = Duration::from_millis(1);
    loop {
        let Some((permit, accepted)) = next_connection(listener, &limit, shutdown).await else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(1);
                pair
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Some(ip_slot) = per_ip
            .clone()
            .enter(peer, shared.config.max_connections_per_ip)
        else {
            shared.metrics.connections_refused_per_ip.inc();
            tracing::debug!(%peer, "too many connections from this address");
            continue;
        };
        shared.metrics.connections_accepted.inc();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            connection::serve(stream, peer, shared, shutdown).await;
            drop(ip_slot);
            drop(permit);
        });
    }
}

/// Fails with [`ServerError::ReadOnly`] when the data directory exists on a read-only file
/// system, which SQLite would only report as "unable to open database file". Other
/// problems are left to the store, which reports them when it opens.
fn check_not_read_only(data_dir: &Path) -> Result<(), ServerError> {
    if !data_dir.is_dir() {
        return Ok(());
    }
    let probe = data_dir.join(".parley-write-probe");
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
            Err(ServerError::ReadOnly(data_dir.to_owned()))
        }
        Err(_) => Ok(()),
    }
}

/// Open connections per source IP address.
#[derive(Debug, Default)]
struct IpCounts(Mutex<HashMap<IpAddr, usize>>);

/// A counted connection; leaving decrements the count.
#[derive(Debug)]
struct IpSlot {
    counts: Arc<IpCounts>,
    ip: IpAddr,
}

impl IpCounts {
    fn enter(self: Arc<Self>, peer: SocketAddr, limit: usize) -> Option<IpSlot> {
        let ip = peer.ip();
        {
            let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry(ip).or_insert(0);
            if *count >= limit {
                return None;
            }
            *count += 1;
        }
        Some(IpSlot { counts: self, ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
