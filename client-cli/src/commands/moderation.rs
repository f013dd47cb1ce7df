//! `block`, `unblock`, `report`.

use parley_protocol::ids::Handle;
use serde_json::json;

use super::{parse_handle, start_quiet, Context};

/// Which moderation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Refuse the account's messages.
    Block,
    /// Accept them again.
    Unblock,
    /// Tell the operator.
    Report,
}

/// `parley block|unblock|report <handle>`.
pub async fn moderate(ctx: &Context, handle: &str, action: Action) -> anyhow::Result<()> {
    let handle = parse_handle(handle)?;
    let client = start_quiet(ctx).await?;
    let result = match action {
        Action::Block => client.block(&handle).await,
        Action::Unblock => client.unblock(&handle).await,
        Action::Report => client.report(&handle).await,
    };
    client.stop().await;
    let account = result?;
    let (text, kind) = outcome(&handle, action);
    ctx.out.print(
        &text,
        json!({"type": kind, "handle": handle.as_str(), "account": account.to_hex()}),
    );
    Ok(())
}

/// What a done moderation request did, in a sentence and as its JSON type.
pub fn outcome(handle: &Handle, action: Action) -> (String, &'static str) {
    match action {
        Action::Block => (
            format!("Blocked {handle}: the server refuses its messages to you."),
            "blocked",
        ),
        Action::Unblock => (format!("Unblocked {handle}."), "unblocked"),
        Action::Report => (
            format!("Reported {handle} to the server's operator."),
            "reported",
        ),
    }
}
