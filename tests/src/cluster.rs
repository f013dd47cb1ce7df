//! A Parley cluster of the test's own: `parley-server` *processes* on one throwaway
//! PostgreSQL ([`TestPostgres`]) and one throwaway `nats-server` ([`TestNats`]), so a
//! test can SIGKILL, pause and restart any node, PostgreSQL or NATS.
//!
//! Node `i` is started with `--node-id n<i>`, its own data directory (holding a copy of
//! the deployment's `authority.key`, which every node must share), `--store` on the
//! cluster's database, `--bus` on its NATS and one cluster key. A restarted node keeps
//! its port, so clients given every node's URL find it again.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::nats::TestNats;
use crate::postgres::TestPostgres;
use crate::server::ServerProcess;
use crate::services;

/// The cluster key of test clusters (any secret of 16 characters or more).
pub const TEST_CLUSTER_KEY: &str = "parley-test-cluster-key-0123456789";

/// One node: its process while it runs, its data directory, its address and the
/// arguments it alone was started with ([`TestCluster::join`]).
#[derive(Debug)]
struct Node {
    process: Option<ServerProcess>,
    dir: TempDir,
    addr: SocketAddr,
    own: Vec<String>,
}

/// PostgreSQL, NATS and `n` nodes.
#[derive(Debug)]
pub struct TestCluster {
    /// The cluster's PostgreSQL.
    pub postgres: TestPostgres,
    /// The cluster's NATS.
    pub nats: TestNats,
    nodes: Vec<Node>,
    extra: Vec<String>,
}

impl TestCluster {
    /// [`TestCluster::start_with`] no extra arguments.
    pub fn start(nodes: usize) -> anyhow::Result<Option<TestCluster>> {
        TestCluster::start_with(nodes, &[])
    }

    /// Starts PostgreSQL, NATS and `nodes` nodes, each with the test kit's usual server
    /// arguments plus `extra`. `Ok(None)` when PostgreSQL or NATS is not installed (the
    /// test then passes as skipped, with one line saying so; see [`services`]).
    pub fn start_with(nodes: usize, extra: &[&str]) -> anyhow::Result<Option<TestCluster>> {
        let test = services::current_test_name();
        let Some(postgres) = TestPostgres::start_for(&test)? else {
            return Ok(None);
        };
        let Some(nats) = TestNats::start_for(&test)? else {
            return Ok(None);
        };
        let mut cluster = TestCluster {
            postgres,
            nats,
            nodes: Vec::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for _ in 0..nodes {
            cluster.join(&[])?;
        }
        Ok(Some(cluster))
    }

    /// Starts one more node, with the cluster's arguments plus `own` (e.g. a clock
    /// offset), on a data directory holding the cluster's authority key; returns its
    /// index.
    pub fn join(&mut self, own: &[&str]) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let dir = tempfile::tempdir()?;
        if let Some(first) = self.nodes.first() {
            std::fs::copy(
                first.dir.path().join("authority.key"),
                dir.path().join("authority.key"),
            )
            .context("sharing the authority key")?;
        }
        let own: Vec<String> = own.iter().map(|s| (*s).to_owned()).collect();
        let process = self.spawn(index, &own, dir.path(), "127.0.0.1:0".parse()?)?;
        self.nodes.push(Node {
            addr: process.addr,
            process: Some(process),
            dir,
            own,
        });
        Ok(index)
    }

    /// The arguments that make a process node `index` of this cluster.
    pub fn node_arguments(&self, index: usize) -> Vec<String> {
        let mut args = vec![
            "--store".to_owned(),
            self.postgres.url(),
            "--bus".to_owned(),
            self.nats.url(),
            "--cluster-key".to_owned(),
            TEST_CLUSTER_KEY.to_owned(),
            "--node-id".to_owned(),
            format!("n{index}"),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn(
        &self,
        index: usize,
        own: &[String],
        dir: &Path,
        listen: SocketAddr,
    ) -> anyhow::Result<ServerProcess> {
        let mut args = self.node_arguments(index);
        args.extend(own.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServerProcess::start(dir, listen, &args).with_context(|| format!("starting node n{index}"))
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`'s process; an error if it is not running.
    pub fn node(&self, index: usize) -> anyhow::Result<&ServerProcess> {
        self.nodes
            .get(index)
            .and_then(|n| n.process.as_ref())
            .with_context(|| format!("node n{index} is not running"))
    }

    /// `ws://` URL of node `index` (also while it is down: it comes back on that port).
    pub fn url(&self, index: usize) -> String {
        self.addr(index)
            .map(|addr| format!("ws://{addr}"))
            .unwrap_or_default()
    }

    /// Node `index`'s listening address (also while it is down).
    pub fn addr(&self, index: usize) -> Option<SocketAddr> {
        self.nodes.get(index).map(|n| n.addr)
    }

    /// The admin listeners of the running nodes.
    pub fn admin_addrs(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter_map(|n| n.process.as_ref()?.admin_addr)
            .collect()
    }

    /// Every node's URL, node 0 first.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// Node `index`'s data directory (its `authority.key`).
    pub fn data_dir(&self, index: usize) -> anyhow::Result<&Path> {
        self.nodes
            .get(index)
            .map(|n| n.dir.path())
            .with_context(|| format!("no node n{index}"))
    }

    /// SIGKILLs node `index` and waits until it is gone.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(index).context("no such node")?;
        match node.process.take() {
            Some(process) => process.kill(),
            None => bail!("node n{index} is not running"),
        }
    }

    /// Starts node `index` again on its port and data directory.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let (dir, addr, own) = {
            let node = self.nodes.get(index).context("no such node")?;
            if node.process.is_some() {
                bail!("node n{index} is running");
            }
            (node.dir.path().to_path_buf(), node.addr, node.own.clone())
        };
        let process = self.spawn(index, &own, &dir, addr)?;
        if let Some(node) = self.nodes.get_mut(index) {
            node.process = Some(process);
        }
        Ok(())
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to node `index`.
    pub fn signal(&self, index: usize, signal: &str) -> anyhow::Result<()> {
        self.node(index)?.signal(signal)
    }

    /// Log lines of every running node that report a panic.
    pub fn panics(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.process.as_ref())
            .flat_map(ServerProcess::panics)
            .collect()
    }

    /// Runs `parley-server admin ARGS` against the cluster's database (with node 0's
    /// data directory and authority key); returns its standard output.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let dir = self.data_dir(0)?;
        let store = self.postgres.url();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--store", store.as_str()]);
        crate::business::admin(dir, &all)
    }
}
