//! `parley tui`: the full-screen client. Conversations on the left, the open one on the
//! right, an input line at the bottom.
//!
//! The parts: [`app`] is the state and every rule (pure: inputs in, actions out),
//! [`view`] draws that state into a ratatui frame, [`keys`] maps keys to intents, the
//! input line is a [`crate::line_edit::LineEdit`] bounded by one message's limit,
//! [`model`] the data shown, [`load`] reads it from the store, [`terminal`] takes the
//! terminal over and gives it back. This file is the thin
//! shell around them: it runs the SDK client and crossterm's event stream together,
//! turns what happens into [`Input`]s, and performs the [`Action`]s that come out
//! (sending through the client in background tasks, so a slow server never freezes
//! the screen).

pub mod app;
mod clock;
pub mod keys;
pub mod load;
pub mod model;
mod terminal;
pub mod view;

use std::sync::Arc;

use crossterm::event::{Event as TermEvent, EventStream as KeyStream};
use futures_util::StreamExt;
use parley_protocol::ids::MessageId;
use parley_sdk::store::{MessageState, SendStatus};
use parley_sdk::{Client, ConnectionState, Event, EventStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::app::{Action, App, Input, Options};
use self::load::Loader;
use self::model::{Body, Entry};
use self::terminal::Screen;
use crate::commands::{parse_handle, start, Context};
use crate::output::now_ms;

/// Actions in flight at once (sends, answers, consent, moderation): past this, a new one
/// is refused with a notice rather than queued without end.
pub const MAX_IN_FLIGHT: usize = 16;

/// `parley tui [HANDLE]`.
pub async fn tui(ctx: &Context, handle: Option<&str>, options: Options) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "parley tui needs a terminal for its input and output; in a script, use `{0} chat \
             HANDLE`, `{0} send` or `{0} history`",
            ctx.out.parley()
        );
    }
    let first = handle.map(parse_handle).transpose()?;
    let mut client = start(ctx).await?;
    let me = client.profile().account;
    let shown_as = crate::output::name(client.profile().handle.as_ref(), &me);
    let loader = Loader {
        store: &ctx.store,
        authority: ctx.out.authority.as_ref(),
        me,
        keep: options.keep,
    };
    // An unknown handle fails here, before the screen is taken over.
    let first = match first {
        Some(handle) => match client.resolve(&handle).await {
            Ok(account) => Some((handle, account)),
            Err(e) => {
                client.stop().await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let mut app = App::new(loader.conversations()?, options);
    let events = client.take_events();
    let client = Arc::new(client);
    let mut shell = Shell {
        ctx,
        loader,
        client: client.clone(),
        tasks: JoinSet::new(),
        done: mpsc::channel(MAX_IN_FLIGHT),
    };
    if let Some((handle, account)) = first {
        let conversation = loader.conversation_with(handle, account)?;
        let actions = app.handle(Input::Opened(conversation));
        shell.perform_all(actions, None);
    }
    let result = shell.run(&mut app, events, &shown_as).await;
    shell.tasks.shutdown().await;
    drop(shell);
    if let Ok(client) = Arc::try_unwrap(client) {
        client.stop().await;
    }
    result
}

/// What woke the loop.
enum Woke {
    /// A key, a paste, a resize (`None`: the terminal closed).
    Terminal(Option<std::io::Result<TermEvent>>),
    /// The engine (`None`: it stopped).
    Engine(Option<Event>),
    /// A background action finished.
    Done(Input),
}

/// The loop's state beside the app.
struct Shell<'a> {
    ctx: &'a Context,
    loader: Loader<'a>,
    client: Arc<Client>,
    /// Actions running in the background.
    tasks: JoinSet<()>,
    /// What they report back, as inputs.
    done: (mpsc::Sender<Input>, mpsc::Receiver<Input>),
}

impl Shell<'_> {
    async fn run(
        &mut self,
        app: &mut App,
        mut events: EventStream,
        me: &str,
    ) -> anyhow::Result<()> {
        let mut screen = Screen::enter()?;
        let mut keys = KeyStream::new();
        let clock = crate::local_time::system();
        if let Ok((_, rows)) = crossterm::terminal::size() {
            app.handle(Input::Resize { rows });
        }
        loop {
            screen.draw(|frame| view::draw(frame, app, me, clock))?;
            let woke = tokio::select! {
                key = keys.next() => Woke::Terminal(key),
                event = events.next() => Woke::Engine(event),
                Some(input) = self.done.1.recv() => Woke::Done(input),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => continue,
            };
            let inputs = match woke {
                Woke::Terminal(Some(Ok(TermEvent::Key(key)))) => vec![Input::Key(key)],
                Woke::Terminal(Some(Ok(TermEvent::Paste(text)))) => vec![Input::Paste(text)],
                Woke::Terminal(Some(Ok(TermEvent::Resize(_, rows)))) => {
                    vec![Input::Resize { rows }]
                }
                Woke::Terminal(Some(Ok(_))) => continue,
                Woke::Terminal(Some(Err(e))) => return Err(e.into()),
                Woke::Terminal(None) => return Ok(()),
                Woke::Engine(Some(event)) => self.inputs(event)?,
                Woke::Engine(None) => anyhow::bail!("the client stopped"),
                Woke::Done(input) => vec![input],
            };
            for input in inputs {
                let actions = app.handle(input);
                if self.perform_all(actions, Some(&mut screen)) {
                    return Ok(());
                }
            }
        }
    }

    /// What an engine event means for the view.
    fn inputs(&self, event: Event) -> anyhow::Result<Vec<Input>> {
        let store = &self.ctx.store;
        Ok(match event {
            Event::Message { .. } | Event::Card { .. } => {
                // From the store, so each is shown once even if it arrived while another
                // command ran (as `inbox` and `chat` do).
                let unshown = store.unshown()?;
                let mut inputs = Vec::with_capacity(unshown.len());
                for m in &unshown {
                    let body = match &m.card {
                        Some(card) => Body::Card {
                            card: card.clone(),
                            category: m.category,
                            answered: None,
                        },
                        None => Body::Text(m.text.clone()),
                    };
                    inputs.push(Input::Received {
                        peer: self.loader.peer(m.from.account)?,
                        entry: Entry {
                            id: m.id,
                            at_ms: m.sent_at_ms,
                            body,
                            state: MessageState::Unread,
                        },
                    });
                }
                if let Some(last) = unshown.last() {
                    store.mark_shown(last.n)?;
                }
                inputs
            }
            Event::Status { id, status, .. } => vec![Input::Status { id, status }],
            Event::Connection(ConnectionState::Connected) => vec![Input::Connection(None)],
            Event::Connection(
                ConnectionState::Reconnecting { reason, .. }
                | ConnectionState::Unreachable { reason },
            ) => vec![Input::Connection(Some(reason))],
            Event::IdentityChanged { account, handle } => {
                let who = crate::output::name(handle.as_ref(), &account);
                vec![Input::Notice(format!(
                    "WARNING: the identity key of {who} CHANGED: compare safety numbers ({} \
                     safety-number {who})",
                    self.ctx.out.parley()
                ))]
            }
            Event::Undecryptable { from, reason } => vec![Input::Notice(format!(
                "a message from {} could not be decrypted: {reason}",
                from.account
            ))],
            Event::DroppedWithoutConsent { from, category } => vec![Input::Notice(format!(
                "dropped a message in category {category} from business {}: you have not \
                 consented to it",
                from.account
            ))],
            // Linked devices: what another device of mine sent is mine here too.
            Event::SentElsewhere {
                to,
                id,
                sent_at_ms,
                text,
                ..
            } => vec![Input::Sent {
                to,
                entry: Entry {
                    at_ms: sent_at_ms,
                    ..sent_entry(id, text)
                },
            }],
            Event::DevicesChanged {
                account,
                version,
                added,
                removed,
            } => {
                let who = match store.contact(&account)? {
                    _ if account == self.loader.me => "this account".to_owned(),
                    contact => {
                        crate::output::name(contact.and_then(|c| c.handle).as_ref(), &account)
                    }
                };
                let ids = |d: &[parley_protocol::ids::DeviceId]| {
                    d.iter()
                        .map(|d| d.0.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![Input::Notice(format!(
                    "WARNING: the devices of {who} changed (list version {version}; added: \
                     [{}], removed: [{}]): if you did not expect it, someone may be reading along",
                    ids(&added),
                    ids(&removed)
                ))]
            }
            Event::DeviceListRefused { account, reason } => vec![Input::Notice(format!(
                "refused the device list the server sent for {account}: {reason}"
            ))],
            _ => Vec::new(),
        })
    }

    /// Performs actions in order; returns whether to quit.
    fn perform_all(&mut self, actions: Vec<Action>, mut screen: Option<&mut Screen>) -> bool {
        for action in actions {
            match action {
                Action::Quit => return true,
                Action::Bell => {
                    if let Some(screen) = screen.as_deref_mut() {
                        // A terminal that cannot ring is no reason to stop.
                        let _ = screen.bell();
                    }
                }
                other => self.spawn(other),
            }
        }
        false
    }

    /// Runs an action that talks to the server in the background; its outcome comes back
    /// as an input.
    fn spawn(&mut self, action: Action) {
        let done = self.done.0.clone();
        if self.tasks.len() >= MAX_IN_FLIGHT {
            // The loop drains `done` between inputs, so there is room for this one.
            let _ = done.try_send(Input::Notice(format!(
                "{MAX_IN_FLIGHT} actions are still waiting for the server; try again shortly"
            )));
            return;
        }
        let client = self.client.clone();
        let parley = self.ctx.out.parley();
        let loader_store = self.ctx.store.clone();
        let authority = self.ctx.out.authority;
        let (me, keep) = (self.loader.me, self.loader.keep);
        self.tasks.spawn(async move {
            let loader = Loader {
                store: &loader_store,
                authority: authority.as_ref(),
                me,
                keep,
            };
            let inputs = perform(&client, &loader, &parley, action).await;
            for input in inputs {
                if done.send(input).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Does one action through the client; what it did, as inputs for the app.
async fn perform(client: &Client, loader: &Loader<'_>, parley: &str, action: Action) -> Vec<Input> {
    match action {
        Action::Send { to, account, text } => match client.send_text(&to, &text).await {
            Ok(id) => vec![Input::Sent {
                to: account,
                entry: sent_entry(id, text),
            }],
            Err(e) => {
                let e = crate::explain::send_error(e, &to, None, parley);
                let why = crate::explain::refusal(&e).unwrap_or_else(|| format!("not sent: {e:#}"));
                vec![Input::Notice(why)]
            }
        },
        Action::Answer { id, action } => match client.answer_card(&id, &action).await {
            Ok(_) => vec![
                Input::Answered {
                    id,
                    action: action.clone(),
                },
                Input::Notice(format!("answered \"{action}\" (signed by you)")),
            ],
            Err(e) => vec![Input::Notice(format!("not answered: {e}"))],
        },
        Action::Consent {
            business,
            grant,
            categories,
        } => {
            let change = if grant {
                client.grant_consent(&business, categories, None).await
            } else {
                client.revoke_consent(&business, categories).await
            };
            match change {
                Ok(change) => {
                    let in_force = crate::commands::consent::in_force_text(change.in_force);
                    let verb = if grant { "granted" } else { "withdrawn" };
                    vec![
                        Input::ConsentChanged {
                            account: change.business,
                            in_force: change.in_force,
                        },
                        Input::Notice(format!(
                            "consent {verb} for {business}: it may now send you {in_force}"
                        )),
                    ]
                }
                Err(e) => vec![Input::Notice(format!("consent not changed: {e}"))],
            }
        }
        Action::Moderate { who, action } => {
            let done = match action {
                crate::commands::moderation::Action::Block => client.block(&who).await,
                crate::commands::moderation::Action::Unblock => client.unblock(&who).await,
                crate::commands::moderation::Action::Report => client.report(&who).await,
            };
            vec![Input::Notice(match done {
                Ok(_) => crate::commands::moderation::outcome(&who, action).0,
                Err(e) => format!("failed: {e}"),
            })]
        }
        Action::MarkRead(account) => match client.mark_read(&account).await {
            Ok(_) => Vec::new(),
            Err(e) => vec![Input::Notice(format!("could not mark as read: {e}"))],
        },
        Action::Open(handle) => {
            let opened = match client.resolve(&handle).await {
                Ok(account) => loader
                    .conversation_with(handle.clone(), account)
                    .map(Input::Opened),
                Err(e) => Err(e.into()),
            };
            vec![opened.unwrap_or_else(|e| Input::Notice(format!("cannot open {handle}: {e:#}")))]
        }
        Action::Bell | Action::Quit => Vec::new(),
    }
}

/// One of mine, as the relay just stored it.
fn sent_entry(id: MessageId, text: String) -> Entry {
    Entry {
        id,
        at_ms: now_ms(),
        body: Body::Text(text),
        state: MessageState::Sent(SendStatus::Accepted),
    }
}

#[cfg(test)]
mod tests;
