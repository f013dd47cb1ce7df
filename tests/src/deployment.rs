//! One switch for end-to-end tests: the same test runs against one server process or
//! against a two-node cluster (PostgreSQL and NATS of its own, [`TestCluster`]).
//!
//! A test starts a [`Deployment`] instead of a [`ServerProcess`] and gives each party the
//! URL of [`Deployment::url_for`] its index: on one server every party gets the same URL;
//! on a cluster consecutive parties land on different nodes, so every conversation
//! crosses nodes. Operator commands go through [`Deployment::admin`], metrics through
//! [`Deployment::metric_total`] (summed over the nodes), and a server with other flags
//! from some point on (a clock offset) through [`Deployment::later_with`].
//!
//! The switch ([`on_cluster`]): `PARLEY_TEST_CLUSTER=1`, or a test binary whose name
//! ends in `_on_cluster` (a target in `tests/Cargo.toml` that includes a test file
//! with `#[path]`, so the default run covers both without a copy of any test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::cluster::TestCluster;
use crate::server::ServerProcess;

/// Nodes of the cluster a switched test runs against.
pub const CLUSTER_NODES: usize = 2;

/// Whether end-to-end tests run against a cluster (see the module documentation).
pub fn on_cluster() -> bool {
    if std::env::var_os("PARLEY_TEST_CLUSTER").is_some_and(|v| v == "1") {
        return true;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .is_some_and(|name| {
            // Cargo names test binaries `<target>-<hash>`.
            name.rsplit_once('-')
                .map_or(name.as_str(), |(target, _)| target)
                .ends_with("_on_cluster")
        })
}

/// One server, or a cluster of [`CLUSTER_NODES`].
#[derive(Debug)]
pub enum Deployment {
    /// A single `parley-server` process on a SQLite data directory.
    Single {
        /// The process.
        server: ServerProcess,
        /// Its data directory.
        data_dir: PathBuf,
        /// The arguments it was started with, beyond the kit's usual ones.
        extra: Vec<String>,
        /// The data directory, when the deployment owns it ([`Deployment::start_temp`]).
        owned_dir: Option<TempDir>,
    },
    /// Nodes on PostgreSQL and NATS.
    Cluster(TestCluster),
}

impl Deployment {
    /// Starts what the switch says, each server with the kit's usual arguments plus
    /// `extra`; a single server uses `data_dir`. `Ok(None)` when the cluster's services
    /// are not installed (the test then passes as skipped, saying so).
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Option<Deployment>> {
        if on_cluster() {
            return Ok(TestCluster::start_with(CLUSTER_NODES, extra)?.map(Deployment::Cluster));
        }
        let any: SocketAddr = "127.0.0.1:0".parse()?;
        let server = ServerProcess::start(data_dir, any, extra)?;
        Ok(Some(Deployment::Single {
            server,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            owned_dir: None,
        }))
    }

    /// [`Deployment::start`] with a single server's data directory of its own, deleted
    /// with the deployment.
    pub fn start_temp(extra: &[&str]) -> anyhow::Result<Option<Deployment>> {
        let dir = tempfile::tempdir()?;
        Ok(
            Deployment::start(dir.path(), extra)?.map(|deployment| match deployment {
                Deployment::Single {
                    server,
                    data_dir,
                    extra,
                    ..
                } => Deployment::Single {
                    server,
                    data_dir,
                    extra,
                    owned_dir: Some(dir),
                },
                cluster => cluster,
            }),
        )
    }

    /// The same deployment with `flags` added for whoever connects to the returned URL
    /// from now on: the single server is SIGKILLed and started again on its data
    /// directory with them (every party's URL changes to the new one); on a cluster a
    /// node with them joins (the other nodes keep serving, [`Deployment::url_for`] never
    /// names the new node).
    pub fn later_with(self, flags: &[&str]) -> anyhow::Result<(Deployment, String)> {
        match self {
            Deployment::Single {
                server,
                data_dir,
                mut extra,
                owned_dir,
            } => {
                server.kill()?;
                let all: Vec<&str> = extra
                    .iter()
                    .map(String::as_str)
                    .chain(flags.iter().copied())
                    .collect();
                let server = ServerProcess::start(&data_dir, "127.0.0.1:0".parse()?, &all)?;
                extra.extend(flags.iter().map(|f| (*f).to_owned()));
                let url = server.url();
                let deployment = Deployment::Single {
                    server,
                    data_dir,
                    extra,
                    owned_dir,
                };
                Ok((deployment, url))
            }
            Deployment::Cluster(mut cluster) => {
                let index = cluster.join(flags)?;
                let url = cluster.url(index);
                Ok((Deployment::Cluster(cluster), url))
            }
        }
    }

    /// The first server's URL.
    pub fn url(&self) -> String {
        self.url_for(0)
    }

    /// The URL party `index` connects to: on a cluster, node `index % CLUSTER_NODES`.
    pub fn url_for(&self, index: usize) -> String {
        match self {
            Deployment::Single { server, .. } => server.url(),
            Deployment::Cluster(cluster) => cluster.url(index % CLUSTER_NODES),
        }
    }

    /// The listening address of party `index`'s server (see [`Deployment::url_for`]).
    pub fn addr_for(&self, index: usize) -> anyhow::Result<SocketAddr> {
        match self {
            Deployment::Single { server, .. } => Ok(server.addr),
            Deployment::Cluster(cluster) => cluster
                .addr(index % CLUSTER_NODES)
                .with_context(|| format!("no node for party {index}")),
        }
    }

    /// The admin listener of party `index`'s server.
    pub fn admin_addr_for(&self, index: usize) -> anyhow::Result<SocketAddr> {
        let node = match self {
            Deployment::Single { server, .. } => server,
            Deployment::Cluster(cluster) => cluster.node(index % CLUSTER_NODES)?,
        };
        node.admin_addr.context("no admin listener")
    }

    /// The admin listeners of every running server.
    pub fn admin_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Deployment::Single { server, .. } => server.admin_addr.into_iter().collect(),
            Deployment::Cluster(cluster) => cluster.admin_addrs(),
        }
    }

    /// The sum over every server of the metric `name` with exactly `labels` (a server
    /// without that sample counts 0): for what any node may do, such as a sweep.
    pub async fn metric_total(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for addr in self.admin_addrs() {
            let (_, body) = crate::admin::http_get(addr, "/metrics").await?;
            let scrape = crate::admin::parse_exposition(&body)?;
            total += scrape.value(name, labels).unwrap_or(0.0);
        }
        Ok(total)
    }

    /// Waits, up to `limit`, until [`Deployment::metric_total`] reaches `at_least`.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        at_least: f64,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let total = self.metric_total(name, labels).await?;
            if total >= at_least {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{name} is {total}, not {at_least} or more within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every server's URL.
    pub fn urls(&self) -> Vec<String> {
        match self {
            Deployment::Single { server, .. } => vec![server.url()],
            Deployment::Cluster(cluster) => cluster.urls(),
        }
    }

    /// The data directory operator commands use (on a cluster, node 0's: it holds the
    /// authority key every node shares).
    pub fn data_dir(&self) -> anyhow::Result<&Path> {
        match self {
            Deployment::Single { data_dir, .. } => Ok(data_dir),
            Deployment::Cluster(cluster) => cluster.data_dir(0),
        }
    }

    /// The directory holding the deployment's database files: the single server's data
    /// directory (SQLite), or the cluster's PostgreSQL data directory (tables and WAL),
    /// for tests that look for what must never be stored.
    pub fn database_dir(&self) -> PathBuf {
        match self {
            Deployment::Single { data_dir, .. } => data_dir.clone(),
            Deployment::Cluster(cluster) => cluster.postgres.data_dir(),
        }
    }

    /// Runs `parley-server admin ARGS` on this deployment's store.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        match self {
            Deployment::Single { data_dir, .. } => crate::business::admin(data_dir, args),
            Deployment::Cluster(cluster) => cluster.admin(args),
        }
    }

    /// Verifies the account `handle` as a business (see
    /// [`crate::business::verify_business`]).
    pub fn verify_business(
        &self,
        handle: &str,
        display_name: &str,
        categories: &str,
    ) -> anyhow::Result<String> {
        let args = crate::business::verify_business_args(handle, display_name, categories);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.admin(&args)
            .with_context(|| format!("verify-business {handle}"))
    }

    /// Log lines of every server that report a panic.
    pub fn panics(&self) -> Vec<String> {
        match self {
            Deployment::Single { server, .. } => server.panics(),
            Deployment::Cluster(cluster) => cluster.panics(),
        }
    }
}
