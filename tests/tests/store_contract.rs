//! The store contract (`parley_tests::store_contract`) run against every store.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use parley_protocol::business::CategorySet;
use parley_protocol::ids::{Handle, ServerId};
use parley_server::authority::Authority;
use parley_server::store::sqlite::{self, SqliteOptions, SqliteStore, Verification};
use parley_server::store::{SendPolicy, StoreHooks};
use parley_tests::business::now_ms;
use parley_tests::store_contract::{Commits, KitFuture, OpenStore, StoreAdmin, Subject};

/// The embedded store, in a temporary directory.
struct Sqlite;

impl OpenStore for Sqlite {
    fn open(&self, policy: SendPolicy, commits: Arc<Commits>) -> KitFuture<'_, Option<Subject>> {
        Box::pin(async move {
            let dir = tempfile::tempdir()?;
            let store = SqliteStore::open(
                dir.path(),
                &SqliteOptions::default(),
                ServerId([1; 32]),
                StoreHooks::new(policy).with_listener(commits.clone()),
            )?;
            let admin = SqliteAdmin {
                dir: dir.path().to_path_buf(),
                authority: Authority::load_or_create(dir.path())?,
            };
            Ok(Some(Subject {
                store: Arc::new(store),
                commits,
                admin: Box::new(admin),
                _keep: Box::new(dir),
            }))
        })
    }
}

#[derive(Debug)]
struct SqliteAdmin {
    dir: PathBuf,
    authority: Authority,
}

impl StoreAdmin for SqliteAdmin {
    fn verify_business(&self, handle: &Handle, categories: CategorySet) -> anyhow::Result<()> {
        let name = handle.as_str().to_owned();
        let what = Verification {
            legal_name: format!("{name} Ltd"),
            display_name: name.clone(),
            domain: format!("{name}.example"),
            categories,
            valid_for_ms: 365 * 24 * 3600 * 1000,
        };
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
    parley_tests::store_contract_cases!(super::Sqlite);
}
