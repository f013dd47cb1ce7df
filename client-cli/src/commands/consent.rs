//! `consent grant | revoke | list | export | verify`.

use parley_protocol::business::CategorySet;
use parley_sdk::consent::verify_ledger;
use parley_sdk::ConsentChange;
use serde_json::json;

use super::business::pin_notice;
use super::{parse_handle, start_quiet, Context};
use crate::output::{name, now_ms, Output};

/// Parses `--category` values (each may be a comma-separated list); none means all.
pub fn categories(values: &[String]) -> anyhow::Result<CategorySet> {
    if values.is_empty() {
        return Ok(CategorySet::ALL);
    }
    let mut set = CategorySet::EMPTY;
    for value in values {
        set = set.union(CategorySet::parse_list(value).map_err(anyhow::Error::msg)?);
    }
    if set.is_empty() {
        anyhow::bail!("name at least one category");
    }
    Ok(set)
}

/// `parley consent grant <handle> --category ...`.
pub async fn grant(
    ctx: &Context,
    handle: &str,
    values: &[String],
    expires_in_days: Option<u64>,
) -> anyhow::Result<()> {
    let handle = parse_handle(handle)?;
    let set = categories(values)?;
    let expiry =
        expires_in_days.map(|days| now_ms().saturating_add(days.saturating_mul(86_400_000)));
    let client = start_quiet(ctx).await?;
    let change = client.grant_consent(&handle, set, expiry).await;
    client.stop().await;
    let change = change?;
    report(ctx, "granted", &change, set);
    Ok(())
}

/// `parley consent revoke <handle> [--category ...]`.
pub async fn revoke(ctx: &Context, handle: &str, values: &[String]) -> anyhow::Result<()> {
    let handle = parse_handle(handle)?;
    let set = categories(values)?;
    let client = start_quiet(ctx).await?;
    let change = client.revoke_consent(&handle, set).await;
    client.stop().await;
    let change = change?;
    report(ctx, "revoked", &change, set);
    Ok(())
}

/// Prints what a grant or revocation did.
pub fn report(ctx: &Context, verb: &str, change: &ConsentChange, set: CategorySet) {
    if let Some(info) = &change.info {
        pin_notice(info);
    }
    let who = change.handle.to_string();
    let in_force = in_force_text(change.in_force);
    let mut text = format!("Consent {verb} for {who}: {set}. It may now send you: {in_force}.");
    if change.purged > 0 {
        text.push_str(&format!(
            " {} queued message(s) from it were deleted.",
            change.purged
        ));
    }
    if let Some(why) = &change.copy_not_sent {
        eprintln!("note: the business was not sent its signed copy yet ({why})");
    }
    ctx.out.print(
        &text,
        json!({
            "type": format!("consent_{verb}"),
            "business": change.handle.as_str(),
            "account": change.business.to_hex(),
            "categories": set.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "in_force": change.in_force.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "purged": change.purged,
        }),
    );
}

/// What a business may send now, in words.
pub fn in_force_text(in_force: CategorySet) -> String {
    if in_force.is_empty() {
        "nothing (replies within 24 h of your own messages only)".to_owned()
    } else {
        in_force.to_string()
    }
}

/// `parley consent list` (from the local ledger; no network).
pub fn list(ctx: &Context) -> anyhow::Result<()> {
    let me = ctx
        .store
        .identity()?
        .ok_or(parley_sdk::SdkError::NotRegistered)?
        .profile
        .account;
    let summaries = parley_sdk::person::consent_summaries(&ctx.store, me)?;
    if summaries.is_empty() && !ctx.out.json {
        println!("You have not given consent to any business.");
    }
    for s in summaries {
        let who = name(s.handle.as_ref(), &s.business);
        let now = if s.in_force.is_empty() {
            "nothing".to_owned()
        } else {
            s.in_force.to_string()
        };
        ctx.out.print(
            &format!(
                "{who:<24} may send: {now:<40} ({} signed records)",
                s.records
            ),
            json!({
                "type": "consent",
                "business": s.handle.as_ref().map(|h| h.as_str()),
                "account": s.business.to_hex(),
                "in_force": s.in_force.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "records": s.records,
            }),
        );
    }
    Ok(())
}

/// `parley consent export`: the ledger as JSON on standard output.
pub async fn export(ctx: &Context) -> anyhow::Result<()> {
    let records = ctx.store.consent_records()?;
    println!("{}", parley_sdk::consent::export(&records, now_ms())?);
    Ok(())
}

/// `parley consent verify <file>`.
pub fn verify(out: &Output, file: &std::path::Path) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file)?
    };
    let records = verify_ledger(&text)?;
    out.print(
        &format!(
            "All {} records verify: each is signed by the person it names.",
            records.len()
        ),
        json!({"type": "ledger_verified", "records": records.len()}),
    );
    Ok(())
}
