//! `parley-server admin` commands for business accounts: they act on the data directory
//! (safe while a server runs on it) and print what they did for the operator.

use std::path::Path;

use parley_protocol::business::{CategorySet, SignedCertificate};
use parley_protocol::ids::Handle;

use crate::authority::Authority;
use crate::cli::AdminCommand;
use crate::context::now_ms;
use crate::store::sqlite::{self, BusinessListing, Verification};

/// Runs a business admin command; `Ok(None)` if `command` is not one.
pub fn run(command: &AdminCommand, data_dir: &Path) -> anyhow::Result<Option<String>> {
    let now = now_ms();
    let out = match command {
        AdminCommand::Authority => {
            let key = Authority::load_or_create(data_dir)?.public();
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
            let authority = Authority::load_or_create(data_dir)?;
            let categories = CategorySet::parse_list(categories).map_err(anyhow::Error::msg)?;
            let signed = sqlite::verify_business(
                data_dir,
                &authority,
                &handle_arg(handle)?,
                Verification {
                    legal_name: legal_name.clone(),
                    display_name: display_name.clone(),
                    domain: domain.clone(),
                    categories,
                    valid_for_ms: u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX),
                },
                now,
            )?;
            format!(
                "verified @{}\n{}",
                handle_arg(handle)?.as_str(),
                describe(&signed, now)
            )
        }
        AdminCommand::RevokeBusiness { handle } => {
            let handle = handle_arg(handle)?;
            sqlite::revoke_business(data_dir, &handle, now)?;
            format!("revoked the certificate of @{}\n", handle.as_str())
        }
        AdminCommand::ListBusinesses => render_list(&sqlite::list_businesses(data_dir)?, now),
        AdminCommand::Suspend { handle } => {
            let handle = handle_arg(handle)?;
            sqlite::set_suspended(data_dir, &handle, true, now)?;
            format!("suspended @{}\n", handle.as_str())
        }
        AdminCommand::Unsuspend { handle } => {
            let handle = handle_arg(handle)?;
            sqlite::set_suspended(data_dir, &handle, false, now)?;
            format!("lifted the suspension of @{}\n", handle.as_str())
        }
        AdminCommand::SetTier { handle, tier } => {
            let handle = handle_arg(handle)?;
            sqlite::set_tier(data_dir, &handle, *tier)?;
            format!("@{} is now in tier {tier}\n", handle.as_str())
        }
        AdminCommand::Stats | AdminCommand::Backup { .. } => return Ok(None),
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
