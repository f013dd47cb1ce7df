//! `chat <handle>`: an interactive conversation. With a verified business, typing `STOP`
//! does not send the word (the relay could not read it anyway): it signs a revocation of
//! every category, which the relay enforces before the business's next send.

use parley_protocol::business::CategorySet;
use parley_sdk::Peer;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::business::pin_notice;
use super::consent::report;
use super::history::{on_chat_event, show_recent, take_backlog, viewed, CHAT_RECENT};
use super::{parse_handle, start, Context};
use crate::render::badge;

/// `parley chat <handle>`.
pub async fn chat(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let peer = parse_handle(handle)?;
    let mut client = start(ctx).await?;
    // The recent past of the conversation (with what was waiting on the server) first,
    // then what else is new.
    take_backlog(ctx, &mut client).await?;
    if let Some(contact) = ctx.store.contact_by_handle(&peer)? {
        show_recent(ctx, &contact.account, &peer, CHAT_RECENT)?;
        viewed(ctx, Some(&client), &contact.account).await?;
    }
    ctx.out.show_unshown(&ctx.store)?;
    let business = match client.business_info(Peer::Handle(peer.clone())).await {
        Ok(info) => {
            pin_notice(&info);
            info.verified().cloned()
        }
        Err(e) => {
            eprintln!("note: could not check whether {peer} is a verified business: {e}");
            None
        }
    };
    eprintln!(
        "Chatting with {peer}{}. Type a message and press Enter; /quit to leave.",
        badge(business.as_ref())
    );
    if business.is_some() {
        eprintln!("This is a business: type STOP to withdraw all your consent to its messages.");
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                if line == "/quit" {
                    break;
                }
                if line.is_empty() {
                    continue;
                }
                if business.is_some() && line.eq_ignore_ascii_case("stop") {
                    match client.revoke_consent(&peer, CategorySet::ALL).await {
                        Ok(change) => report(ctx, "revoked", &change, CategorySet::ALL),
                        Err(e) => eprintln!("error: consent not revoked: {e}"),
                    }
                } else if let Err(e) = client.send_text(&peer, line).await {
                    let e = crate::explain::send_error(e, &peer, None, &ctx.out.parley());
                    let why = crate::explain::refusal(&e)
                        .unwrap_or_else(|| format!("not sent: {e:#}"));
                    eprintln!("error: {why}");
                }
                while let Some(event) = client.try_next_event() {
                    on_chat_event(ctx, &client, &peer, &event).await?;
                }
            }
            event = client.next_event() => match event {
                Some(event) => { on_chat_event(ctx, &client, &peer, &event).await?; }
                None => anyhow::bail!("the client stopped"),
            },
        }
    }
    client.stop().await;
    Ok(())
}
