//! `send` and `inbox`.

use std::time::Duration;

use parley_protocol::business::Category;
use parley_protocol::e2e::content::{Content, Text};
use parley_sdk::{Event, Outgoing, Peer};
use serde_json::json;

use super::{on_event, parse_handle, start, Context};

/// Longest wait for the server to accept a message.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the server's backlog after connecting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `parley send <handle> <text> [--category C]`.
pub async fn send(
    ctx: &Context,
    handle: &str,
    text: &str,
    category: Option<&str>,
) -> anyhow::Result<()> {
    let to = parse_handle(handle)?;
    parley_sdk::check_text(text)?;
    let category = category
        .map(|name| {
            Category::parse(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown category {name:?}; expected security_alert, transactional, \
                     authentication, marketing or conversation"
                )
            })
        })
        .transpose()?;
    let mut client = start(ctx).await?;
    let sending = async {
        match category {
            None => client.send_text(&to, text).await,
            Some(category) => {
                client
                    .send_content(Outgoing {
                        to: Peer::Handle(to.clone()),
                        content: Content::Text(Text {
                            body: text.to_owned(),
                            sender_handle: client.profile().handle.clone(),
                            category: Some(category),
                        }),
                        category: Some(category),
                        id: None,
                    })
                    .await
            }
        }
    };
    let sent = match tokio::time::timeout(SEND_TIMEOUT, sending).await {
        Ok(result) => {
            result.map_err(|e| crate::explain::send_error(e, &to, category, &ctx.out.parley()))
        }
        Err(_) => Err(anyhow::anyhow!(
            "no answer from the server within {} s; if the message was already encrypted it \
             stays queued and is resent on the next connection",
            SEND_TIMEOUT.as_secs()
        )),
    };
    while let Some(event) = client.try_next_event() {
        on_event(ctx, &event)?;
    }
    client.stop().await;
    let id = sent?;
    ctx.out.print(
        &format!("Sent to {to}."),
        json!({"type": "sent", "to": to.as_str(), "id": id.to_hex()}),
    );
    Ok(())
}

/// `parley inbox [--wait DURATION]`: everything that arrived, then more for `wait`.
pub async fn inbox(ctx: &Context, wait: Duration) -> anyhow::Result<()> {
    // Messages stored by an earlier command but not shown yet come first.
    let mut shown = ctx.out.show_unshown(&ctx.store)?;
    let mut client = start(ctx).await?;
    let drain_deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(drain_deadline, client.next_event()).await;
        match event {
            Ok(Some(event)) => {
                shown += usize::from(is_shown(&event));
                if on_event(ctx, &event)? {
                    break;
                }
            }
            Ok(None) => anyhow::bail!("the connection ended before the inbox was drained"),
            Err(_) => anyhow::bail!("the server did not finish sending the inbox in time"),
        }
    }
    let until = tokio::time::Instant::now() + wait;
    while let Ok(Some(event)) = tokio::time::timeout_at(until, client.next_event()).await {
        shown += usize::from(is_shown(&event));
        on_event(ctx, &event)?;
    }
    client.stop().await;
    shown += ctx.out.show_unshown(&ctx.store)?;
    if shown == 0 && !ctx.out.json {
        println!("No new messages.");
    }
    Ok(())
}

/// Whether [`on_event`] prints something the person reads for `event`: a message, a
/// card, or a warning about one.
fn is_shown(event: &Event) -> bool {
    matches!(
        event,
        Event::Message { .. }
            | Event::Card { .. }
            | Event::Undecryptable { .. }
            | Event::DroppedWithoutConsent { .. }
            | Event::IdentityChanged { .. }
            | Event::SentElsewhere { .. }
    )
}
