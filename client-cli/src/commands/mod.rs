//! One function per command.

pub mod business;
mod cards;
mod chat;
pub mod consent;
mod contacts;
pub mod devices;
mod history;
pub mod link;
mod messaging;
pub mod moderation;
mod profile;

pub use cards::answer;
pub use chat::chat;
pub use contacts::{contacts, safety_number, unverify, verify};
pub use history::{delete_history, history, read_receipts};
pub use messaging::{inbox, send};
pub use profile::{delete_account, register, set_name, whoami};

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

/// Starts the engine for a control command that takes no deliveries: the backlog stays
/// on the relay for `inbox` or `chat` (and a revocation purges it there).
pub async fn start_quiet(ctx: &Context) -> anyhow::Result<Client> {
    let mut config = ctx.config.clone();
    config.receive = false;
    Ok(Client::start(config, ctx.store.clone()).await?)
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
        Event::Message { .. } | Event::Card { .. } => {
            ctx.out.show_unshown(&ctx.store)?;
        }
        Event::DroppedWithoutConsent { from, category } => {
            if ctx.out.json {
                println!(
                    "{}",
                    serde_json::json!({"type": "dropped_without_consent",
                        "account": from.account.to_hex(), "category": category.as_str()})
                );
            }
            let who = ctx.store.contact(&from.account)?.and_then(|c| c.handle);
            eprintln!(
                "warning: dropped a message from business {} in category {category}: you have \
                 not consented to it (the server should have refused it)",
                crate::output::name(who.as_ref(), &from.account)
            );
        }
        Event::SentElsewhere {
            from,
            to,
            to_handle,
            sent_at_ms,
            text,
            ..
        } => {
            let handle = ctx.store.contact(to)?.and_then(|c| c.handle);
            let handle = handle.as_ref().or(to_handle.as_ref());
            ctx.out
                .sent_elsewhere(from.device, to, handle, *sent_at_ms, text);
        }
        Event::DevicesChanged {
            account,
            version,
            added,
            removed,
        } => {
            let mine = ctx.store.identity()?.map(|i| i.profile.account) == Some(*account);
            let whose = match ctx.store.contact(account)?.and_then(|c| c.handle) {
                _ if mine => "this account".to_owned(),
                handle => crate::output::name(handle.as_ref(), account),
            };
            ctx.out.devices_changed(&whose, *version, added, removed);
        }
        Event::DeviceListRefused { account, reason } => {
            eprintln!(
                "warning: refused the device list the server sent for {account}: {reason}; \
                 nothing was encrypted to the devices on it"
            );
        }
        Event::Drained => return Ok(true),
        _ => {}
    }
    Ok(false)
}
