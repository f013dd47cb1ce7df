//! `history`, `delete-history`, `settings read-receipts`, and the conversation lines
//! `chat` shows: a message with its time (and date), who wrote it, and for mine its
//! state (queued, sent, delivered, read, not sent).
//!
//! Viewing a conversation marks it read: through a running client, which sends the read
//! receipts at once; without a server, in the store, which keeps them owed until the
//! next connection.

use std::time::Duration;

use parley_protocol::ids::{AccountId, Handle, MessageId};
use parley_sdk::store::{Forget, HistoryEntry, MessageState, SendStatus};
use parley_sdk::{Client, Event, SdkError};
use serde_json::json;

use super::{on_event, parse_handle, start, Context};
use crate::output::name;
use crate::render;

/// Longest wait for the server's backlog (new messages, receipts) before showing.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How many messages `chat` shows of the conversation's recent past.
pub const CHAT_RECENT: usize = 20;

/// `parley history <handle> [--limit N]`.
pub async fn history(ctx: &Context, handle: &str, limit: usize) -> anyhow::Result<()> {
    parse_handle(handle)?;
    // What is waiting may start the conversation: fetched before looking it up.
    let client = fetch(ctx).await?;
    let (handle, account) = conversation(ctx, handle)?;
    let shown = show_recent(ctx, &account, &handle, limit)?;
    if shown == 0 && !ctx.out.json {
        println!("No messages with {handle} on this profile.");
    }
    viewed(ctx, client.as_ref(), &account).await?;
    if let Some(client) = client {
        client.stop().await;
    }
    Ok(())
}

/// Prints the latest `limit` messages with `account` (`handle`), oldest first; returns
/// how many.
pub fn show_recent(
    ctx: &Context,
    account: &AccountId,
    handle: &Handle,
    limit: usize,
) -> anyhow::Result<usize> {
    let entries = ctx.store.history(account, limit)?;
    for entry in &entries {
        show_entry(ctx, entry, handle);
    }
    Ok(entries.len())
}

/// The person viewed the conversation with `account`: mark it read, and send read
/// receipts through `client` when there is one.
pub async fn viewed(
    ctx: &Context,
    client: Option<&Client>,
    account: &AccountId,
) -> anyhow::Result<()> {
    let Some(client) = client else {
        ctx.store.mark_read(account)?;
        return Ok(());
    };
    match client.mark_read(account).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_connection_error() || matches!(e, SdkError::Stopped) => {
            eprintln!("note: read receipts not sent yet ({e}); they go with the next connection");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reacts to an event in the open chat with `peer`: as [`on_event`] does, and besides,
/// a message from `peer` is read as it is shown, and a receipt's new state is shown.
pub async fn on_chat_event(
    ctx: &Context,
    client: &Client,
    peer: &Handle,
    event: &Event,
) -> anyhow::Result<()> {
    on_event(ctx, event)?;
    match event {
        Event::Message { from, handle, .. } | Event::Card { from, handle, .. }
            if handle.as_ref() == Some(peer) =>
        {
            viewed(ctx, Some(client), &from.account).await?;
        }
        Event::Status { id, to, status } => show_status(ctx, id, to, *status),
        _ => {}
    }
    Ok(())
}

/// One line (or, for a card, a few) about a message of a conversation with `handle`.
pub fn show_entry(ctx: &Context, entry: &HistoryEntry, handle: &Handle) {
    let when = render::utc(entry.at_ms);
    let mine = entry.state.is_mine();
    let who = if mine {
        "me".to_owned()
    } else {
        handle.to_string()
    };
    let category = entry
        .category
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let body = match (&entry.card, &entry.answer) {
        (Some(_), Some(answer)) => format!("card: {} [answered {answer:?}]", entry.text),
        (Some(_), None) if !mine => format!(
            "card: {} [not answered: {} inbox shows it]",
            entry.text,
            ctx.out.parley()
        ),
        (Some(_), None) => format!("card: {}", entry.text),
        (None, _) => entry.text.clone(),
    };
    let state = if mine {
        format!("  ({})", entry.state)
    } else {
        String::new()
    };
    ctx.out.print(
        &format!("[{when}] {who}{category}: {body}{state}"),
        json!({
            "type": "history",
            "peer": handle.as_str(),
            "account": entry.peer.account.to_hex(),
            "id": entry.id.to_hex(),
            "at_ms": entry.at_ms,
            "mine": mine,
            "state": entry.state.as_str(),
            "text": entry.text,
            "category": entry.category.map(|c| c.as_str()),
            "card": entry.card.as_ref().map(render::card_json),
            "answer": entry.answer,
        }),
    );
}

/// A receipt moved a message of mine forward: one line saying so (in `chat`).
pub fn show_status(ctx: &Context, id: &MessageId, to: &AccountId, status: SendStatus) {
    let Ok(Some(entry)) = ctx.store.sent_entry(id) else {
        return;
    };
    let handle = ctx.store.contact(to).ok().flatten().and_then(|c| c.handle);
    let state = MessageState::Sent(status);
    let mut preview: String = entry.text.chars().take(40).collect();
    if preview.len() < entry.text.len() {
        preview.push('…');
    }
    ctx.out.print(
        &format!(
            "[{}] {state}: \"{preview}\" (to {})",
            render::utc(crate::output::now_ms()),
            name(handle.as_ref(), to)
        ),
        json!({"type": "status", "id": id.to_hex(), "to": handle.as_ref().map(Handle::as_str),
               "account": to.to_hex(), "state": state.as_str()}),
    );
}

/// `parley delete-history <handle>` or `--all` (`handle` is `None`).
pub fn delete_history(ctx: &Context, handle: Option<&str>) -> anyhow::Result<()> {
    let (deleted, whose) = match handle {
        Some(handle) => {
            let (handle, account) = conversation(ctx, handle)?;
            let deleted = ctx.store.delete_history(Forget::Conversation(&account))?;
            (deleted, format!("the conversation with {handle}"))
        }
        None => (
            ctx.store.delete_history(Forget::All)?,
            "every conversation".to_owned(),
        ),
    };
    let plural = if deleted == 1 { "" } else { "s" };
    ctx.out.print(
        &format!(
            "Deleted {deleted} message{plural} of {whose} from this profile (the other side \
             keeps its copy)."
        ),
        json!({"type": "history_deleted", "peer": handle, "messages": deleted}),
    );
    Ok(())
}

/// `parley settings read-receipts [on|off]`.
pub fn read_receipts(ctx: &Context, state: Option<&str>) -> anyhow::Result<()> {
    if let Some(state) = state {
        ctx.store.set_read_receipts(state == "on")?;
    }
    let on = ctx.store.read_receipts()?;
    let text = if on {
        "Read receipts are on: viewing a conversation tells the other person you read it."
    } else {
        "Read receipts are off: nobody is told when you read their messages (delivered \
         receipts are still sent)."
    };
    ctx.out
        .print(text, json!({"type": "settings", "read_receipts": on}));
    Ok(())
}

/// The contact a handle names here, and its account: only stored conversations have a
/// history.
fn conversation(ctx: &Context, handle: &str) -> anyhow::Result<(Handle, AccountId)> {
    let handle = parse_handle(handle)?;
    let contact = ctx.store.contact_by_handle(&handle)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no conversation with {handle} on this profile (`{} contacts` lists the people it \
             has talked to)",
            ctx.out.parley()
        )
    })?;
    Ok((handle, contact.account))
}

/// Connects and takes what the server holds (messages are stored, receipts move states);
/// `None` when no server answers: the history is then what the profile has stored.
async fn fetch(ctx: &Context) -> anyhow::Result<Option<Client>> {
    let mut client = match start(ctx).await {
        Ok(client) => client,
        Err(e) => match e.downcast_ref::<SdkError>() {
            Some(sdk) if sdk.is_connection_error() => {
                eprintln!("note: {e:#}; showing what this profile has stored");
                return Ok(None);
            }
            _ => return Err(e),
        },
    };
    take_backlog(ctx, &mut client).await?;
    Ok(Some(client))
}

/// Waits until the server's backlog is in (stored, receipts applied), so that the
/// history shown includes it; warnings are printed, messages are left for the history.
pub async fn take_backlog(ctx: &Context, client: &mut Client) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(Event::Drained)) => return Ok(()),
            Ok(Some(Event::Message { .. } | Event::Card { .. })) => {}
            Ok(Some(other)) => {
                on_event(ctx, &other)?;
            }
            Ok(None) => anyhow::bail!("the client stopped before the server's backlog was in"),
            Err(_) => {
                eprintln!(
                    "note: the server did not finish sending what it holds within {} s; \
                     showing what arrived",
                    FETCH_TIMEOUT.as_secs()
                );
                return Ok(());
            }
        }
    }
}
