//! `chat <handle>`: an interactive conversation. The handle is looked up before the
//! prompt (an unknown one fails at once); the chat opens on the recent past of the
//! conversation, and shows the states of my messages as receipts come back; typed lines are read by [`crate::chat`]
//! (`/help`, `/to`, `/quit` and the other local commands are never sent); messages from
//! third parties are shown too, with how to answer them; the connection's loss and
//! return are said. With a verified business, typing `STOP` does not send the word (the
//! relay could not read it anyway): it signs a revocation of every category, which the
//! relay enforces before the business's next send.

use std::collections::HashSet;

use parley_protocol::business::CategorySet;
use parley_protocol::ids::Handle;
use parley_sdk::{Client, ConnectionState, Event, Peer, SdkError};

use super::business::pin_notice;
use super::consent::report;
use super::history::{on_chat_event, show_recent, take_backlog, viewed, CHAT_RECENT};
use super::{parse_handle, start, Context};
use crate::chat::input::ChatInput;
use crate::chat::typed::{self, Typed};
use crate::render::{badge, said_name};

/// `parley chat <handle>`.
pub async fn chat(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let peer = parse_handle(handle)?;
    let mut client = start(ctx).await?;
    let account = match client.resolve(&peer).await {
        Ok(account) => account,
        Err(e) => {
            client.stop().await;
            return Err(e.into());
        }
    };
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
    let said = ctx.store.display_name(&account)?;
    eprintln!(
        "Chatting with {peer}{}{}. Type a message and press Enter; /help for commands, /quit \
         to leave.",
        said_name(said.as_deref()),
        badge(business.as_ref())
    );
    if business.is_some() {
        eprintln!("This is a business: type STOP to withdraw all your consent to its messages.");
    }
    let mut session = Session {
        ctx,
        peer,
        business: business.is_some(),
        connected: true,
        hinted: HashSet::new(),
    };
    let mut input = ChatInput::open(format!("to {}> ", session.peer))?;
    let result = session.run(&mut client, &mut input).await;
    drop(input);
    client.stop().await;
    result
}

/// The state of one open chat.
struct Session<'a> {
    ctx: &'a Context,
    /// The open conversation.
    peer: Handle,
    /// Whether the peer is a verified business (`STOP` revokes).
    business: bool,
    /// Whether the last connection state said connected (to say "lost" and "back" once).
    connected: bool,
    /// Third parties already told how to answer them.
    hinted: HashSet<Handle>,
}

impl Session<'_> {
    async fn run(&mut self, client: &mut Client, input: &mut ChatInput) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                line = input.next_line() => {
                    let Some(line) = line? else { return Ok(()) };
                    if !self.typed(client, input, &line).await? {
                        return Ok(());
                    }
                    while let Some(event) = client.try_next_event() {
                        self.event(client, input, &event).await?;
                    }
                }
                event = client.next_event() => match event {
                    Some(event) => self.event(client, input, &event).await?,
                    None => anyhow::bail!("the client stopped"),
                },
            }
        }
    }

    /// Acts on a typed line; `false` when the person leaves.
    async fn typed(&self, client: &Client, input: &ChatInput, line: &str) -> anyhow::Result<bool> {
        let help = || typed::help(self.peer.as_str(), self.business);
        match typed::parse(line) {
            Typed::Nothing => {}
            Typed::Leave => return Ok(false),
            Typed::Help => input.above(|| eprintln!("{}", help()))?,
            Typed::Unknown(what) => input
                .above(|| eprintln!("{what}: not a chat command; nothing was sent.\n{}", help()))?,
            Typed::Usage(usage) => input.above(|| eprintln!("usage: {usage}; nothing was sent"))?,
            Typed::To { handle, text } => match parse_handle(handle) {
                Ok(to) => {
                    if self.send(client, input, &to, text).await? {
                        input.above(|| eprintln!("(sent to {to})"))?;
                    }
                }
                Err(e) => input.above(|| eprintln!("error: {e}; nothing was sent"))?,
            },
            Typed::Text(text) if self.business && text.eq_ignore_ascii_case("stop") => {
                let change = client.revoke_consent(&self.peer, CategorySet::ALL).await;
                input.above(|| match change {
                    Ok(change) => report(self.ctx, "revoked", &change, CategorySet::ALL),
                    Err(e) => eprintln!("error: consent not revoked: {e}"),
                })?;
            }
            Typed::Text(text) => {
                self.send(client, input, &self.peer, text).await?;
            }
        }
        Ok(true)
    }

    /// Sends `text` to `to`; says why not when it was not sent. Returns whether it was.
    async fn send(
        &self,
        client: &Client,
        input: &ChatInput,
        to: &Handle,
        text: &str,
    ) -> anyhow::Result<bool> {
        let why = match client.send_text(to, text).await {
            Ok(_) => return Ok(true),
            // Empty, or over the limit: the sentence `parley send` gives.
            Err(e @ SdkError::InvalidInput(_)) => e.to_string(),
            Err(e) => {
                let e = crate::explain::send_error(e, to, None, &self.ctx.out.parley());
                crate::explain::refusal(&e).unwrap_or_else(|| format!("not sent: {e:#}"))
            }
        };
        input.above(|| eprintln!("error: {why}"))?;
        Ok(false)
    }

    /// Shows one engine event above the line being typed.
    async fn event(
        &mut self,
        client: &Client,
        input: &ChatInput,
        event: &Event,
    ) -> anyhow::Result<()> {
        input.hide()?;
        let shown = self.show(client, event).await;
        input.show()?;
        shown
    }

    async fn show(&mut self, client: &Client, event: &Event) -> anyhow::Result<()> {
        match event {
            Event::Connection(ConnectionState::Connected) => {
                if !self.connected {
                    self.connected = true;
                    eprintln!("--- connection back");
                }
            }
            Event::Connection(ConnectionState::Reconnecting { reason, .. })
            | Event::Connection(ConnectionState::Unreachable { reason }) => {
                if self.connected {
                    self.connected = false;
                    eprintln!("--- connection lost ({reason}); reconnecting");
                }
            }
            Event::Message { handle, .. } | Event::Card { handle, .. } => {
                on_chat_event(self.ctx, client, &self.peer, event).await?;
                if let Some(other) = handle.as_ref().filter(|h| **h != self.peer) {
                    if self.hinted.insert(other.clone()) {
                        eprintln!("(to answer {other} from this chat: /to {other} TEXT)");
                    }
                }
            }
            _ => on_chat_event(self.ctx, client, &self.peer, event).await?,
        }
        Ok(())
    }
}
