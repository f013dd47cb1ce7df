//! `contacts`, `safety-number`, `verify`, `unverify`.

use serde_json::json;

use parley_protocol::ids::AccountId;
use parley_sdk::business_info::cached_verdict;

use super::{parse_handle, Context};
use crate::output::{name, now_ms};
use crate::render::{badge, said_name};

/// `parley contacts`.
pub fn contacts(ctx: &Context) -> anyhow::Result<()> {
    let contacts = ctx.store.contacts()?;
    if contacts.is_empty() && !ctx.out.json {
        println!("No contacts yet.");
    }
    for c in contacts {
        // Two different marks: the safety number compared by the person, and a business
        // certificate checked on this machine (shown as the same badge as on messages).
        let safety = if c.verified {
            "safety number verified"
        } else {
            "safety number not verified"
        };
        let business =
            cached_verdict(&ctx.store, ctx.out.authority.as_ref(), &c.account, now_ms())?;
        let display_name = ctx.store.display_name(&c.account)?;
        let who = format!(
            "{}{}{}",
            name(c.handle.as_ref(), &c.account),
            said_name(display_name.as_deref()),
            badge(business.as_ref())
        );
        ctx.out.print(
            &format!("{who:<24} {safety:<26} {}", c.account),
            json!({"type": "contact", "handle": c.handle.as_ref().map(|h| h.as_str()),
                   "display_name": display_name,
                   "account": c.account.to_hex(), "verified": c.verified,
                   "verified_business": business.map(|c| c.display_name)}),
        );
    }
    Ok(())
}

fn contact(ctx: &Context, handle: &str) -> anyhow::Result<parley_sdk::store::Contact> {
    let handle = parse_handle(handle)?;
    ctx.store.contact_by_handle(&handle)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no contact {handle} yet: exchange a message first ({} send {handle} ...)",
            ctx.out.parley()
        )
    })
}

/// `parley safety-number <handle>`.
pub fn safety_number(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let c = contact(ctx, handle)?;
    let number = parley_sdk::safety_number(&ctx.store, &c)?;
    let who = name(c.handle.as_ref(), &c.account);
    ctx.out.print(
        &format!(
            "Safety number with {who}:\n\n{}\n\nCompare it with theirs; if it matches, run: {} verify {who}",
            number.display(),
            ctx.out.parley()
        ),
        json!({"type": "safety_number", "handle": c.handle.as_ref().map(|h| h.as_str()),
               "digits": number.digits(), "verified": c.verified}),
    );
    Ok(())
}

/// `parley verify <handle>`.
pub async fn verify(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let mut c = contact(ctx, handle)?;
    c.verified = true;
    ctx.store.save_contact(&c)?;
    tell_other_devices(ctx, &[c.account], true).await;
    let who = name(c.handle.as_ref(), &c.account);
    ctx.out.print(
        &format!("{who} is now marked as verified."),
        json!({"type": "verified", "handle": c.handle.as_ref().map(|h| h.as_str())}),
    );
    Ok(())
}

/// `parley unverify <handle>`: every contact under the handle loses the verified mark, so
/// a send to the account the handle names now goes out (with a warning).
pub async fn unverify(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let handle = parse_handle(handle)?;
    let mut changed = Vec::new();
    for mut c in ctx.store.contacts()? {
        if c.handle.as_ref() == Some(&handle) {
            c.verified = false;
            ctx.store.save_contact(&c)?;
            changed.push(c.account);
        }
    }
    if changed.is_empty() {
        anyhow::bail!("no contact {handle}");
    }
    tell_other_devices(ctx, &changed, false).await;
    ctx.out.print(
        &format!("{handle} is no longer marked as verified."),
        json!({"type": "unverified", "handle": handle.as_str()}),
    );
    Ok(())
}

/// Tells this account's other devices (linked devices, ADR 0007) that these contacts are
/// verified, or no longer: the mark is already stored here, so a relay that cannot be
/// reached only delays them (a note says so), and an account with one device sends
/// nothing.
async fn tell_other_devices(ctx: &Context, accounts: &[AccountId], verified: bool) {
    let told = async {
        let client = super::start_quiet(ctx).await?;
        for account in accounts {
            client.set_verified(*account, verified).await?;
        }
        client.stop().await;
        anyhow::Ok(())
    };
    if let Err(e) = told.await {
        eprintln!(
            "note: this account's other devices were not told ({e}); they keep their own mark"
        );
    }
}
