//! Business accounts for tests: the operator's `parley-server admin` commands run as the
//! real binary on a data directory, signed consent records, and business sends.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use parley_protocol::business::{
    Category, CategorySet, ConsentGrant, ConsentNonce, ConsentRevocation, SignedGrant,
    SignedRevocation,
};
use parley_protocol::ids::{AccountId, DeviceAddress, MessageId};
use parley_protocol::wire::client::{ClientBody, GrantConsent, RevokeConsent, Send};
use rand_core::{OsRng, RngCore};

use crate::client::Reply;
use crate::server::server_binary;
use crate::{Client, TestAccount};

/// Runs `parley-server admin ARGS --data-dir DIR` and returns its standard output; fails
/// with its standard error if it exits unsuccessfully.
pub fn admin(data_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(server_binary()?)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("running parley-server admin")?;
    if !out.status.success() {
        bail!(
            "parley-server admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Verifies the account `handle` as a business allowed `categories` (e.g.
/// `security_alert,transactional`), with display name `display_name`.
pub fn verify_business(
    data_dir: &Path,
    handle: &str,
    display_name: &str,
    categories: &str,
) -> anyhow::Result<String> {
    let args = verify_business_args(handle, display_name, categories);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    admin(data_dir, &args)
}

/// The arguments of `admin verify-business` for [`verify_business`].
pub fn verify_business_args(handle: &str, display_name: &str, categories: &str) -> Vec<String> {
    vec![
        "verify-business".into(),
        handle.into(),
        "--legal-name".into(),
        format!("{display_name} Ltd"),
        "--display-name".into(),
        display_name.into(),
        "--domain".into(),
        format!("{handle}.example"),
        "--categories".into(),
        categories.into(),
    ]
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A fresh random nonce.
pub fn nonce() -> ConsentNonce {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    ConsentNonce(bytes)
}

/// `user`'s grant of `categories` to `business`, issued now, without expiry.
pub fn grant(user: &TestAccount, business: AccountId, categories: CategorySet) -> SignedGrant {
    ConsentGrant {
        user: user.identity.account_id(),
        business,
        categories,
        issued_at_ms: now_ms(),
        expires_at_ms: None,
        nonce: nonce(),
    }
    .sign(&user.identity)
    .expect("a well-formed grant signs")
}

/// `user`'s revocation of `categories` from `business`, issued now.
pub fn revocation(
    user: &TestAccount,
    business: AccountId,
    categories: CategorySet,
) -> SignedRevocation {
    ConsentRevocation {
        user: user.identity.account_id(),
        business,
        categories,
        issued_at_ms: now_ms(),
        nonce: nonce(),
    }
    .sign(&user.identity)
    .expect("a well-formed revocation signs")
}

/// Sends `grant_consent`.
pub async fn send_grant(client: &mut Client, grant: SignedGrant) -> anyhow::Result<Reply> {
    client
        .request(ClientBody::GrantConsent(GrantConsent { grant }))
        .await
}

/// Sends `revoke_consent`.
pub async fn send_revocation(
    client: &mut Client,
    revocation: SignedRevocation,
) -> anyhow::Result<Reply> {
    client
        .request(ClientBody::RevokeConsent(RevokeConsent { revocation }))
        .await
}

/// Sends an envelope in `category` (or none) with a random id.
pub async fn send_in(
    client: &mut Client,
    to: DeviceAddress,
    category: Option<Category>,
) -> anyhow::Result<Reply> {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    client
        .request(ClientBody::Send(Send {
            to,
            id: MessageId(id),
            ciphertext: b"opaque business envelope".to_vec(),
            category,
            receipt: false,
        }))
        .await
}
