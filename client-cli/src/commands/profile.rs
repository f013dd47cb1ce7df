//! `register`, `whoami`, `delete-account`.

use serde_json::json;

use super::{parse_handle, start, Context};
use crate::output::name;

/// `parley register <handle>`.
pub async fn register(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let handle = parse_handle(handle)?;
    let profile =
        parley_sdk::Client::register(&ctx.config, ctx.store.clone(), Some(handle.clone())).await?;
    ctx.out.print(
        &format!("Registered {handle} (account {}).", profile.account),
        json!({"type": "registered", "handle": handle.as_str(),
               "account": profile.account.to_hex()}),
    );
    Ok(())
}

/// `parley whoami`.
pub fn whoami(ctx: &Context) -> anyhow::Result<()> {
    let stored = ctx
        .store
        .identity()?
        .ok_or(parley_sdk::SdkError::NotRegistered)?;
    let p = stored.profile;
    if stored.pending {
        // The identity is stored before the server confirms it (so a lost reply never
        // orphans an account), but it is not an account until then.
        let again = p
            .handle
            .as_ref()
            .map_or_else(|| "<handle>".to_owned(), |h| h.as_str().to_owned());
        anyhow::bail!(
            "not registered: the registration of {} was not confirmed by the server; run \
             `{} register {again}` again (it reuses the same key)",
            name(p.handle.as_ref(), &p.account),
            ctx.out.parley()
        );
    }
    ctx.out.print(
        &format!(
            "{} (account {}, device {})",
            name(p.handle.as_ref(), &p.account),
            p.account,
            p.device.0
        ),
        json!({"type": "whoami", "handle": p.handle.as_ref().map(|h| h.as_str()),
               "account": p.account.to_hex(), "device": p.device.0}),
    );
    Ok(())
}

/// `parley delete-account --yes`.
pub async fn delete_account(ctx: &Context, yes: bool) -> anyhow::Result<()> {
    if !yes {
        anyhow::bail!("this deletes your account and frees your handle; run again with --yes");
    }
    let client = start(ctx).await?;
    client.delete_account().await?;
    ctx.out.print(
        "Account deleted. This profile can register again.",
        json!({"type": "account_deleted"}),
    );
    Ok(())
}

/// `parley profile set-name <name> | --clear`.
pub async fn set_name(ctx: &Context, name: Option<String>) -> anyhow::Result<()> {
    let client = super::start_quiet(ctx).await?;
    let result = client.set_display_name(name.clone()).await;
    client.stop().await;
    result?;
    let text = match &name {
        Some(n) => format!("Display name set to \"{n}\"."),
        None => "Display name cleared.".to_owned(),
    };
    ctx.out
        .print(&text, json!({"type": "display_name", "display_name": name}));
    Ok(())
}
