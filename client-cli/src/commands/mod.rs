//! One function per command.

mod chat;
mod contacts;
mod messaging;
mod profile;

pub use chat::chat;
pub use contacts::{contacts, safety_number, verify};
pub use messaging::{inbox, send};
pub use profile::{delete_account, register, whoami};

use std::sync::Arc;

use parley_protocol::Handle;
use parley_sdk::store::ClientStore;
use parley_sdk::{Client, ClientConfig, Event};

use crate::output::Output;

/// What every command gets.
#[derive(Debug)]
pub struct Context {
    /// The profile's database.
    pub store: Arc<ClientStore>,
    /// Server to talk to.
    pub config: ClientConfig,
    /// How to print.
    pub out: Output,
}

/// Parses a handle typed by a person (`bob`, `@Bob`).
pub fn parse_handle(text: &str) -> anyhow::Result<Handle> {
    Handle::parse(text).map_err(|e| anyhow::anyhow!("invalid handle '{text}': {e}"))
}

/// Starts the client engine for the profile.
pub async fn start(ctx: &Context) -> anyhow::Result<Client> {
    Ok(Client::start(ctx.config.clone(), ctx.store.clone()).await?)
}

/// Reacts to one engine event: warnings now, messages from the store (so that each is
/// shown exactly once, even if it arrived while another command ran). Returns whether
/// the backlog is drained.
pub fn on_event(ctx: &Context, event: &Event) -> anyhow::Result<bool> {
    match event {
        Event::IdentityChanged { account, handle } => {
            ctx.out.identity_changed(account, handle.as_ref());
        }
        Event::Undecryptable { from, reason } => {
            eprintln!(
                "warning: a message from {} could not be decrypted: {reason}",
                from.account
            );
        }
        Event::Message { .. } => {
            ctx.out.show_unshown(&ctx.store)?;
        }
        Event::Drained => return Ok(true),
        _ => {}
    }
    Ok(false)
}
