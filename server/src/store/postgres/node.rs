//! What nodes of one database agree on at start: the verification authority's key (every
//! node must sign and serve the same one) and whether the database is shared by a
//! cluster or held by one node without a bus.
//!
//! A node with the in-process bus cannot wake another node's devices, so it must be the
//! only node on its database: it holds an exclusive session advisory lock for its whole
//! life; cluster nodes hold the same lock shared. Either kind is refused while the other
//! holds it.

use deadpool_postgres::{ClientWrapper, Object};
use parley_protocol::business::AuthorityKey;

use super::errors::{pg_error, pool_error};
use super::PostgresStore;
use crate::store::StoreError;

/// The advisory lock key of "nodes on this database" (an arbitrary constant: "parley" in
/// ASCII).
const NODES_LOCK: i64 = 0x7061_726c_6579;

/// A node's hold on the database, released when dropped (its connection goes back to
/// nobody: it is closed).
#[derive(Debug)]
pub struct NodeLock {
    _connection: ClientWrapper,
}

/// Why a node may not start on this database.
#[derive(Debug, thiserror::Error)]
pub enum NodeRefused {
    /// The lock is held the other way.
    #[error(
        "another node holds this database {0}: a PostgreSQL store with --bus local is one \
         node only, and cluster nodes (--bus nats://…) cannot join it; give every node the \
         same --bus nats://… and --cluster-key"
    )]
    Held(&'static str),
    /// The database records another authority key.
    #[error(
        "this node's authority.key ({mine}) is not the cluster's ({theirs}): copy \
         authority.key from a node of the cluster into this node's data directory"
    )]
    OtherAuthority {
        /// This node's key's fingerprint.
        mine: String,
        /// The fingerprint recorded in the database.
        theirs: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PostgresStore {
    /// Takes this node's hold on the database: exclusive for a node without a bus
    /// (`alone`), shared for a cluster node.
    pub async fn hold_node_lock(&self, alone: bool) -> Result<NodeLock, NodeRefused> {
        let connection = self.pool.get().await.map_err(pool_error)?;
        let (sql, held) = if alone {
            (
                "SELECT pg_try_advisory_lock($1)",
                "(cluster nodes or another single node run on it)",
            )
        } else {
            (
                "SELECT pg_try_advisory_lock_shared($1)",
                "(a node without a bus runs on it)",
            )
        };
        let taken: bool = connection
            .query_one(sql, &[&NODES_LOCK])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| pg_error(&e))?;
        if !taken {
            return Err(NodeRefused::Held(held));
        }
        // The lock lives with this session: the connection must never serve anyone else.
        let connection = Object::take(connection);
        Ok(NodeLock {
            _connection: connection,
        })
    }

    /// Records `key` as the deployment's authority if none is recorded; refuses a node
    /// whose key differs from the recorded one.
    pub async fn claim_authority(&self, key: &AuthorityKey) -> Result<(), NodeRefused> {
        claim(&self.pool, key).await
    }
}

/// [`PostgresStore::claim_authority`] for an operator command on `url` (which signs with
/// the data directory's key: it must be the deployment's).
pub async fn check_authority(url: &str, key: &AuthorityKey) -> Result<(), NodeRefused> {
    let pool = super::pool::build(url, 1, super::PostgresOptions::default().pool_wait)?;
    claim(&pool, key).await
}

async fn claim(pool: &deadpool_postgres::Pool, key: &AuthorityKey) -> Result<(), NodeRefused> {
    let connection = pool.get().await.map_err(pool_error)?;
    let mine = key.fingerprint();
    connection
        .execute(
            "INSERT INTO meta (key, value) VALUES ('authority', $1) ON CONFLICT (key) DO NOTHING",
            &[&key.as_bytes().as_slice()],
        )
        .await
        .map_err(|e| pg_error(&e))?;
    let recorded: Vec<u8> = connection
        .query_one("SELECT value FROM meta WHERE key = 'authority'", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| pg_error(&e))?;
    if recorded.as_slice() == key.as_bytes().as_slice() {
        return Ok(());
    }
    let theirs = AuthorityKey::from_slice(&recorded)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|| "unreadable".to_owned());
    Err(NodeRefused::OtherAuthority { mine, theirs })
}
