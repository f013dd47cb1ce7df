//! `parley-server admin` commands for business accounts: they act on the store the
//! configuration names (the SQLite database in the data directory, or the cluster's
//! PostgreSQL), safe while servers run on it, and print what they did for the operator.
//! The authority key is always the data directory's `authority.key`.

use std::path::{Path, PathBuf};

use parley_protocol::business::{CategorySet, SignedCertificate};
use parley_protocol::ids::Handle;

use crate::authority::Authority;
use crate::cli::AdminCommand;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::admin::{AdminError, BusinessListing, Verification};
use crate::store::{postgres, sqlite};
use crate::topology::{SecretUrl, StoreLocation};

/// Where the operator's business commands act.
#[derive(Debug)]
enum BusinessStore {
    /// The SQLite database in this directory.
    Sqlite(PathBuf),
    /// The cluster's PostgreSQL.
    Postgres(SecretUrl),
}

impl BusinessStore {
    fn of(config: &Config) -> BusinessStore {
        match &config.store {
            StoreLocation::Postgres(url) => BusinessStore::Postgres(url.clone()),
            StoreLocation::Sqlite(_) => BusinessStore::Sqlite(config.sqlite_dir().to_path_buf()),
        }
    }

    async fn verify(
        &self,
        authority: &Authority,
        handle: &Handle,
        what: Verification,
        now: u64,
    ) -> Result<SignedCertificate, AdminError> {
        match self {
            BusinessStore::Sqlite(dir) => {
                sqlite::verify_business(dir, authority, handle, what, now)
            }
            BusinessStore::Postgres(url) => {
                postgres::verify_business(url.expose(), authority, handle, what, now).await
            }
        }
    }

    /// Checks, before signing, that the data directory's authority key is the one the
    /// deployment's nodes serve (a PostgreSQL store records it).
    async fn check_authority(&self, authority: &Authority) -> anyhow::Result<()> {
        match self {
            BusinessStore::Sqlite(_) => Ok(()),
            BusinessStore::Postgres(url) => {
                postgres::migrate(url.expose()).await?;
                Ok(postgres::check_authority(url.expose(), &authority.public()).await?)
            }
        }
    }

    async fn revoke(&self, handle: &Handle, now: u64) -> Result<(), AdminError> {
        match self {
            BusinessStore::Sqlite(dir) => sqlite::revoke_business(dir, handle, now),
            BusinessStore::Postgres(url) => {
                postgres::revoke_business(url.expose(), handle, now).await
            }
        }
    }

    async fn suspend(&self, handle: &Handle, suspend: bool, now: u64) -> Result<(), AdminError> {
        match self {
            BusinessStore::Sqlite(dir) => sqlite::set_suspended(dir, handle, suspend, now),
            BusinessStore::Postgres(url) => {
                postgres::set_suspended(url.expose(), handle, suspend, now).await
            }
        }
    }

    async fn tier(&self, handle: &Handle, tier: u32) -> Result<(), AdminError> {
        match self {
            BusinessStore::Sqlite(dir) => sqlite::set_tier(dir, handle, tier),
            BusinessStore::Postgres(url) => postgres::set_tier(url.expose(), handle, tier).await,
        }
    }

    async fn list(&self) -> Result<Vec<BusinessListing>, AdminError> {
        match self {
            BusinessStore::Sqlite(dir) => sqlite::list_businesses(dir),
            BusinessStore::Postgres(url) => postgres::list_businesses(url.expose()).await,
        }
    }
}

/// Runs a business admin command; `Ok(None)` if `command` is not one.
pub async fn run(command: &AdminCommand, config: &Config) -> anyhow::Result<Option<String>> {
    let now = Clock::system().now_ms();
    let data_dir: &Path = &config.data_dir;
    let store = BusinessStore::of(config);
    let out = match command {
        AdminCommand::Authority => {
            let key = Authority::load(data_dir)?.public();
            format!(
                "verification authority\n  public key:  {}\n  fingerprint: {}\n",
                key.to_hex(),
                key.fingerprint()
            )
        }
        AdminCommand::VerifyBusiness {
            handle,
            legal_name,
            display_name,
            domain,
            categories,
            valid_for,
        } => {
            let authority = Authority::load(data_dir)?;
            let categories = CategorySet::parse_list(categories).map_err(anyhow::Error::msg)?;
            let what = Verification {
                legal_name: legal_name.clone(),
                display_name: display_name.clone(),
                domain: domain.clone(),
                categories,
                valid_for_ms: u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX),
            };
            let handle = handle_arg(handle)?;
            store.check_authority(&authority).await?;
            let signed = store.verify(&authority, &handle, what, now).await?;
            format!("verified @{}\n{}", handle.as_str(), describe(&signed, now))
        }
        AdminCommand::RevokeBusiness { handle } => {
            let handle = handle_arg(handle)?;
            store.revoke(&handle, now).await?;
            format!("revoked the certificate of @{}\n", handle.as_str())
        }
        AdminCommand::ListBusinesses => render_list(&store.list().await?, now),
        AdminCommand::Suspend { handle } => {
            let handle = handle_arg(handle)?;
            store.suspend(&handle, true, now).await?;
            format!("suspended @{}\n", handle.as_str())
        }
        AdminCommand::Unsuspend { handle } => {
            let handle = handle_arg(handle)?;
            store.suspend(&handle, false, now).await?;
            format!("lifted the suspension of @{}\n", handle.as_str())
        }
        AdminCommand::SetTier { handle, tier } => {
            let handle = handle_arg(handle)?;
            store.tier(&handle, *tier).await?;
            format!("@{} is now in tier {tier}\n", handle.as_str())
        }
        AdminCommand::Stats
        | AdminCommand::Backup { .. }
        | AdminCommand::Migrate
        | AdminCommand::SelfSignedCert { .. } => return Ok(None),
    };
    Ok(Some(out))
}

fn handle_arg(text: &str) -> anyhow::Result<Handle> {
    Handle::parse(text).map_err(|e| anyhow::anyhow!("invalid handle {text:?}: {e}"))
}

fn describe(signed: &SignedCertificate, now: u64) -> String {
    let c = &signed.certificate;
    let days_left = c.expires_at_ms.saturating_sub(now) / 86_400_000;
    format!(
        "  legal name:   {}\n  display name: {}\n  domain:       {}\n  categories:   {}\n  serial:       {}\n  expires in:   {days_left} days\n",
        c.legal_name, c.display_name, c.domain, c.categories, c.serial
    )
}

fn render_list(list: &[BusinessListing], now: u64) -> String {
    if list.is_empty() {
        return "no businesses\n".to_owned();
    }
    let mut out = String::new();
    for b in list {
        let c = &b.certificate.certificate;
        let status = match (&b.revoked_at_ms, &b.suspended) {
            (Some(_), _) => "revoked".to_owned(),
            (None, Some((_, reason))) => format!("suspended ({reason})"),
            (None, None) if c.expires_at_ms <= now => "expired".to_owned(),
            (None, None) => "verified".to_owned(),
        };
        let handle = b.handle.as_deref().unwrap_or("(no handle)");
        out.push_str(&format!(
            "@{handle}  {status}  tier {}  reports {}\n{}",
            b.tier,
            b.reports,
            describe(&b.certificate, now)
        ));
    }
    out
}
