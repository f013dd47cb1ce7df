//! Where a server keeps its state and finds its peers: the store (`--store`), the bus
//! between nodes (`--bus`), this node's id (`--node-id`) and the cluster key
//! (`--cluster-key`).
//!
//! The embedded default is SQLite in the data directory with the in-process bus: one
//! node. Cluster mode is PostgreSQL for all durable state and NATS core to wake the node
//! that holds a device. URLs may carry passwords: [`SecretUrl`] never shows one (its
//! `Debug` and `Display` print the URL with the password replaced), and the cluster key is
//! never shown at all.

use std::path::PathBuf;
use std::str::FromStr;

use zeroize::Zeroizing;

/// A URL that may hold a password. Shown only redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Zeroizing<String>);

impl SecretUrl {
    /// The URL with its password, for the client library that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `url` with any password replaced (see the store's rule, which also covers the
/// `key=value` connection strings PostgreSQL accepts).
pub use crate::store::postgres::redact_url;

/// Where durable state lives (`--store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite: `parley.db` in this directory, or in `--data-dir` when `None`.
    Sqlite(Option<PathBuf>),
    /// PostgreSQL at this URL (`postgres://user:password@host:port/database`).
    Postgres(SecretUrl),
}

impl StoreLocation {
    /// Whether this is PostgreSQL (cluster-capable).
    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<StoreLocation, String> {
        if text == "sqlite" {
            return Ok(StoreLocation::Sqlite(None));
        }
        if let Some(dir) = text.strip_prefix("sqlite:") {
            if dir.is_empty() {
                return Err("sqlite: needs a directory (sqlite:/var/lib/parley)".into());
            }
            return Ok(StoreLocation::Sqlite(Some(PathBuf::from(dir))));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(SecretUrl(Zeroizing::new(
                text.to_owned(),
            ))));
        }
        Err(format!(
            "'{}' is not a store: use sqlite (the data directory), sqlite:DIR or \
             postgres://user@host:port/database",
            redact_url(text)
        ))
    }
}

/// How nodes reach each other (`--bus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusLocation {
    /// No other node: the in-process registry.
    Local,
    /// NATS core at this URL (`nats://user:password@host:4222`; several servers of one
    /// NATS cluster separated by commas).
    Nats(SecretUrl),
}

impl FromStr for BusLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<BusLocation, String> {
        if text == "local" {
            return Ok(BusLocation::Local);
        }
        if text
            .split(',')
            .all(|url| url.trim().starts_with("nats://") || url.trim().starts_with("tls://"))
        {
            return Ok(BusLocation::Nats(SecretUrl(Zeroizing::new(
                text.to_owned(),
            ))));
        }
        Err(format!(
            "'{}' is not a bus: use local (one node) or nats://host:4222",
            redact_url(text)
        ))
    }
}

/// The secret every node of a cluster shares; names the bus subjects (an HMAC of each
/// device id under it), so that the bus never carries a raw device id and two clusters on
/// one NATS never hear each other.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Zeroizing<Vec<u8>>);

/// Fewest bytes of a cluster key.
pub const CLUSTER_KEY_MIN_BYTES: usize = 16;

impl ClusterKey {
    /// The key's bytes (for the HMAC).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

impl FromStr for ClusterKey {
    type Err = String;

    fn from_str(text: &str) -> Result<ClusterKey, String> {
        if text.len() < CLUSTER_KEY_MIN_BYTES {
            return Err(format!(
                "a cluster key needs at least {CLUSTER_KEY_MIN_BYTES} characters \
                 (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(ClusterKey(Zeroizing::new(text.as_bytes().to_vec())))
    }
}

/// A fresh node id for a node started without `--node-id`: `node-` and 8 random hex
/// digits.
pub fn random_node_id() -> String {
    let mut bytes = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    format!("node-{}", hex::encode(bytes))
}

/// Checks a node id given with `--node-id`: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn parse_node_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("a node id is 1 to 64 letters, digits, '-' or '_'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_never_shown() {
        for (url, shown) in [
            (
                "postgres://parley:hunter2@db:5432/parley",
                "postgres://parley:***@db:5432/parley",
            ),
            (
                "postgres://db/parley?user=p&password=hunter2",
                "postgres://db/parley?user=p&password=***",
            ),
            ("nats://u:hunter2@n1:4222", "nats://u:***@n1:4222"),
            ("nats://n1:4222", "nats://n1:4222"),
            ("postgres://parley@db/x", "postgres://parley@db/x"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        let store: StoreLocation = "postgres://parley:hunter2@db/parley".parse().unwrap();
        assert!(!format!("{store:?}").contains("hunter2"));
        let bus: BusLocation = "nats://u:hunter2@n1:4222".parse().unwrap();
        assert!(!format!("{bus:?}").contains("hunter2"));
        let wrong = "mysql://u:hunter2@db".parse::<StoreLocation>().unwrap_err();
        assert!(!wrong.contains("hunter2"), "{wrong}");
    }

    #[test]
    fn stores_and_buses_parse() {
        assert_eq!("sqlite".parse(), Ok(StoreLocation::Sqlite(None)));
        assert_eq!(
            "sqlite:/var/lib/parley".parse(),
            Ok(StoreLocation::Sqlite(Some("/var/lib/parley".into())))
        );
        assert!("sqlite:".parse::<StoreLocation>().is_err());
        assert!("postgresql://db/p"
            .parse::<StoreLocation>()
            .unwrap()
            .is_postgres());
        assert_eq!("local".parse(), Ok(BusLocation::Local));
        assert!(matches!(
            "nats://a:4222,nats://b:4222".parse(),
            Ok(BusLocation::Nats(_))
        ));
        assert!("redis://x".parse::<BusLocation>().is_err());
        assert!("short".parse::<ClusterKey>().is_err());
        assert!(format!(
            "{:?}",
            "0123456789abcdef0123".parse::<ClusterKey>().unwrap()
        )
        .contains("***"));
        assert!(parse_node_id("n1").is_ok());
        assert!(parse_node_id("n 1").is_err());
        assert!(random_node_id().starts_with("node-"));
    }
}
