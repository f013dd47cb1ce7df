//! `answer <message> <action>`: a signed answer to a card.

use parley_protocol::ids::MessageId;
use serde_json::json;

use super::{start_quiet, Context};

/// Shortest message id prefix accepted.
const MIN_PREFIX: usize = 4;

/// `parley answer <message> <action>`.
pub async fn answer(ctx: &Context, message: &str, action: &str) -> anyhow::Result<()> {
    let id = find_card(ctx, message)?;
    let client = start_quiet(ctx).await?;
    let sent = client.answer_card(&id, action).await;
    client.stop().await;
    sent?;
    ctx.out.print(
        &format!(
            "Answered \"{action}\" (signed by you) to card {}.",
            id.to_hex()
        ),
        json!({"type": "answered", "message": id.to_hex(), "action": action}),
    );
    Ok(())
}

/// The card message whose id starts with `prefix` (hex).
fn find_card(ctx: &Context, prefix: &str) -> anyhow::Result<MessageId> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.len() < MIN_PREFIX || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        anyhow::bail!(
            "'{prefix}' is not a message id: give at least {MIN_PREFIX} hex digits as `{} inbox` \
             shows them",
            ctx.out.parley()
        );
    }
    let matches: Vec<MessageId> = ctx
        .store
        .inbox()?
        .into_iter()
        .filter(|m| m.card.is_some() && m.id.to_hex().starts_with(&prefix))
        .map(|m| m.id)
        .collect();
    match matches.as_slice() {
        [id] => Ok(*id),
        [] => anyhow::bail!(
            "no card with id {prefix} in this profile's inbox (run `{} inbox` first)",
            ctx.out.parley()
        ),
        _ => anyhow::bail!("{prefix} matches several cards: give more digits"),
    }
}
