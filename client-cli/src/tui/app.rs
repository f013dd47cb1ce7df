//! The full-screen view's state and rules, with no terminal and no network: inputs go in
//! ([`Input`]: keys, messages, receipts, answers, the connection), the state changes, and
//! what the shell must do comes out ([`Action`]: send, answer, consent, block, mark read,
//! ring the bell). Everything the person sees is decided here, so it is tested here.

use crossterm::event::KeyEvent;
use parley_protocol::business::{Category, CategorySet};
use parley_protocol::e2e::content::MAX_TEXT_BYTES;
use parley_protocol::ids::{AccountId, Handle, MessageId};
use parley_sdk::store::{MessageState, SendStatus};

use super::keys::{intent, Intent};
use super::model::{Body, Conversation, Entry, PeerView};
use crate::commands::moderation;
use crate::line_edit::{Inserted, LineEdit};

/// How the view behaves (from the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Ring the terminal bell for a message in a conversation that is not open.
    pub bell: bool,
    /// Entries kept per conversation in the view (older ones stay in the store).
    pub keep: usize,
}

/// Something that happened.
#[derive(Clone, Debug)]
pub enum Input {
    /// A key press.
    Key(KeyEvent),
    /// Pasted text (line breaks become spaces: Enter alone sends).
    Paste(String),
    /// A message or card from a peer, as stored.
    Received {
        /// Who sent it.
        peer: PeerView,
        /// What it is.
        entry: Entry,
    },
    /// The relay stored one of my messages.
    Sent {
        /// To whom.
        to: AccountId,
        /// The message, with its state.
        entry: Entry,
    },
    /// A receipt moved one of my messages forward.
    Status {
        /// The message.
        id: MessageId,
        /// Its new state.
        status: SendStatus,
    },
    /// A card was answered (here, by the shell on my behalf).
    Answered {
        /// The card's message.
        id: MessageId,
        /// The action.
        action: String,
    },
    /// What a business may send now changed.
    ConsentChanged {
        /// The business.
        account: AccountId,
        /// The categories in force.
        in_force: CategorySet,
    },
    /// A conversation to show and open (after `/open HANDLE` found the account).
    Opened(Conversation),
    /// The connection to the server was lost (with why), or is back (`None`).
    Connection(Option<String>),
    /// A one-line result or error to show at the bottom.
    Notice(String),
    /// The terminal has a new size: this many rows (for paging; the drawing adapts by
    /// itself).
    Resize {
        /// Rows.
        rows: u16,
    },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a text.
    Send {
        /// The peer's handle.
        to: Handle,
        /// Their account (to file the sent message under).
        account: AccountId,
        /// The text.
        text: String,
    },
    /// Answer a card.
    Answer {
        /// The card's message.
        id: MessageId,
        /// The action id.
        action: String,
    },
    /// Grant (`true`) or withdraw consent for some categories.
    Consent {
        /// The business.
        business: Handle,
        /// Grant or withdraw.
        grant: bool,
        /// Which categories.
        categories: CategorySet,
    },
    /// Block, unblock or report.
    Moderate {
        /// The account.
        who: Handle,
        /// What to do.
        action: moderation::Action,
    },
    /// The person has seen this conversation: mark it read (and send read receipts).
    MarkRead(AccountId),
    /// Find this handle and open a conversation with it.
    Open(Handle),
    /// Ring the terminal bell.
    Bell,
    /// Leave.
    Quit,
}

/// A box over the conversation that takes the next key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// The keys.
    Help,
    /// Choose an action for the card in message `id`.
    Card(MessageId),
    /// Consent for the open conversation's business.
    Consent,
    /// Block, unblock or report the open conversation's account.
    Moderate,
}

/// The view's whole state.
#[derive(Debug)]
pub struct App {
    options: Options,
    /// Newest activity first.
    conversations: Vec<Conversation>,
    /// The open conversation's account (the one shown on the right).
    open: Option<AccountId>,
    editor: LineEdit,
    overlay: Option<Overlay>,
    notice: Option<String>,
    /// Why the connection is down, while it is.
    offline: Option<String>,
    /// Lines scrolled back from the newest, in the open conversation.
    scroll: u16,
    /// Terminal rows, for paging.
    rows: u16,
}

impl App {
    /// The view over `conversations`, with `open` (if any) open.
    pub fn new(mut conversations: Vec<Conversation>, options: Options) -> App {
        for c in &mut conversations {
            trim(&mut c.entries, options.keep);
        }
        let mut app = App {
            options,
            conversations,
            open: None,
            editor: LineEdit::new(MAX_TEXT_BYTES),
            overlay: None,
            notice: None,
            offline: None,
            scroll: 0,
            rows: 24,
        };
        app.sort();
        app
    }

    /// Opens the conversation with `account` (marking it read); returns what to do.
    pub fn open(&mut self, account: AccountId) -> Vec<Action> {
        self.open = Some(account);
        self.scroll = 0;
        self.overlay = None;
        match self.find_mut(&account) {
            Some(c) if c.unread > 0 => {
                c.unread = 0;
                for entry in &mut c.entries {
                    if entry.state == MessageState::Unread {
                        entry.state = MessageState::Seen;
                    }
                }
                vec![Action::MarkRead(account)]
            }
            _ => Vec::new(),
        }
    }

    /// Conversations, newest activity first.
    pub fn conversations(&self) -> &[Conversation] {
        &self.conversations
    }

    /// The open conversation.
    pub fn open_conversation(&self) -> Option<&Conversation> {
        let open = self.open?;
        self.conversations.iter().find(|c| c.peer.account == open)
    }

    /// The input line.
    pub fn editor(&self) -> &LineEdit {
        &self.editor
    }

    /// The overlay shown, if any.
    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    /// The last result or error.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Why the connection is down, while it is.
    pub fn offline(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    /// Lines scrolled back from the newest.
    pub fn scroll(&self) -> u16 {
        self.scroll
    }

    /// Applies one input; returns what the shell must do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Key(key) => match intent(key) {
                Some(intent) => self.on_intent(intent),
                None => Vec::new(),
            },
            Input::Paste(text) => {
                if self.editor.insert_str(&text) == Inserted::Full {
                    self.say_full();
                }
                Vec::new()
            }
            Input::Received { peer, entry } => self.received(peer, entry),
            Input::Sent { to, entry } => {
                let keep = self.options.keep;
                if let Some(c) = self.find_mut(&to) {
                    c.entries.push(entry);
                    trim(&mut c.entries, keep);
                }
                self.sort();
                Vec::new()
            }
            Input::Status { id, status } => {
                if let Some(entry) = self.entry_mut(&id).filter(|e| e.state.is_mine()) {
                    // The store moves states forward only, and says so with this event.
                    entry.state = MessageState::Sent(status);
                }
                Vec::new()
            }
            Input::Answered { id, action } => {
                if let Some(Entry {
                    body: Body::Card { answered, .. },
                    ..
                }) = self.entry_mut(&id)
                {
                    *answered = Some(action);
                }
                Vec::new()
            }
            Input::ConsentChanged { account, in_force } => {
                if let Some(c) = self.find_mut(&account) {
                    c.peer.consent = in_force;
                }
                Vec::new()
            }
            Input::Opened(conversation) => {
                let account = conversation.peer.account;
                if self.find_mut(&account).is_none() {
                    self.conversations.push(conversation);
                    self.sort();
                }
                self.open(account)
            }
            Input::Connection(None) if self.offline.is_none() => Vec::new(),
            Input::Connection(lost) => {
                self.notice = Some(match &lost {
                    Some(_) => "connection lost; reconnecting (messages you send wait)".into(),
                    None => "connection back".into(),
                });
                self.offline = lost;
                Vec::new()
            }
            Input::Notice(text) => {
                self.notice = Some(text);
                Vec::new()
            }
            Input::Resize { rows } => {
                self.rows = rows;
                Vec::new()
            }
        }
    }

    fn received(&mut self, peer: PeerView, entry: Entry) -> Vec<Action> {
        let account = peer.account;
        let is_open = self.open == Some(account);
        let keep = self.options.keep;
        match self.find_mut(&account) {
            Some(c) => {
                c.peer = PeerView {
                    consent: c.peer.consent,
                    ..peer
                };
                c.entries.push(entry);
                trim(&mut c.entries, keep);
                if !is_open {
                    c.unread += 1;
                }
            }
            None => {
                let mut c = Conversation::empty(peer);
                c.entries.push(entry);
                c.unread = usize::from(!is_open);
                self.conversations.push(c);
            }
        }
        self.sort();
        if is_open {
            vec![Action::MarkRead(account)]
        } else if self.options.bell {
            vec![Action::Bell]
        } else {
            Vec::new()
        }
    }

    fn on_intent(&mut self, intent: Intent) -> Vec<Action> {
        if let Some(overlay) = self.overlay.clone() {
            return self.in_overlay(overlay, intent);
        }
        match intent {
            Intent::Quit => vec![Action::Quit],
            Intent::Help => {
                self.overlay = Some(Overlay::Help);
                Vec::new()
            }
            Intent::Previous => self.step(-1),
            Intent::Next => self.step(1),
            Intent::ScrollBack => {
                self.scroll = self.scroll.saturating_add(self.page());
                Vec::new()
            }
            Intent::ScrollForward => {
                self.scroll = self.scroll.saturating_sub(self.page());
                Vec::new()
            }
            Intent::Enter => self.enter(),
            Intent::AnswerCard => {
                match self.open_conversation().and_then(Conversation::open_card) {
                    Some((entry, _)) => self.overlay = Some(Overlay::Card(entry.id)),
                    None => self.say("no card to answer in this conversation"),
                }
                Vec::new()
            }
            Intent::Consent => {
                match self.open_conversation().map(|c| c.peer.business.is_some()) {
                    Some(true) => self.overlay = Some(Overlay::Consent),
                    Some(false) => self.say("consent is only for verified businesses"),
                    None => self.say("open a conversation first"),
                }
                Vec::new()
            }
            Intent::Moderate => {
                if self.open.is_some() {
                    self.overlay = Some(Overlay::Moderate);
                } else {
                    self.say("open a conversation first");
                }
                Vec::new()
            }
            Intent::Close => {
                self.notice = None;
                Vec::new()
            }
            Intent::Char(c) => {
                if self.editor.insert(c) == Inserted::Full {
                    self.say_full();
                }
                Vec::new()
            }
            Intent::Edit(edit) => {
                self.editor.edit(edit);
                Vec::new()
            }
        }
    }

    fn in_overlay(&mut self, overlay: Overlay, intent: Intent) -> Vec<Action> {
        let choice = match intent {
            Intent::Quit => return vec![Action::Quit],
            Intent::Char(c) => c,
            Intent::Help if overlay == Overlay::Help => {
                self.overlay = None;
                return Vec::new();
            }
            Intent::Close | Intent::Enter => {
                self.overlay = None;
                return Vec::new();
            }
            _ => return Vec::new(),
        };
        let Some(peer) = self.open_conversation().map(|c| c.peer.clone()) else {
            self.overlay = None;
            return Vec::new();
        };
        let actions = match overlay {
            Overlay::Help => Vec::new(),
            Overlay::Card(id) => {
                let card = self
                    .open_conversation()
                    .and_then(Conversation::open_card)
                    .filter(|(entry, _)| entry.id == id)
                    .map(|(_, card)| card.clone());
                let index = choice.to_digit(10).and_then(|d| d.checked_sub(1));
                match (card, index) {
                    (Some(card), Some(index)) => match card.actions.get(index as usize) {
                        Some(action) => vec![Action::Answer {
                            id,
                            action: action.id.clone(),
                        }],
                        None => return Vec::new(),
                    },
                    _ => return Vec::new(),
                }
            }
            Overlay::Consent => {
                let Some(business) = peer.handle.clone() else {
                    self.say("this business has no handle to address it by");
                    return Vec::new();
                };
                match choice.to_digit(10) {
                    Some(0) => vec![Action::Consent {
                        business,
                        grant: false,
                        categories: CategorySet::ALL,
                    }],
                    Some(n @ 1..=4) => {
                        let category: Category = Category::GRANTABLE[n as usize - 1];
                        vec![Action::Consent {
                            business,
                            grant: !peer.consent.contains(category),
                            categories: CategorySet::of([category]),
                        }]
                    }
                    _ => return Vec::new(),
                }
            }
            Overlay::Moderate => {
                let action = match choice {
                    'b' => moderation::Action::Block,
                    'u' => moderation::Action::Unblock,
                    'r' => moderation::Action::Report,
                    _ => return Vec::new(),
                };
                match peer.handle.clone() {
                    Some(who) => vec![Action::Moderate { who, action }],
                    None => {
                        self.say("this account has no handle to address it by");
                        Vec::new()
                    }
                }
            }
        };
        self.overlay = None;
        actions
    }

    /// Enter: a `/command`, or the line sent to the open conversation.
    fn enter(&mut self) -> Vec<Action> {
        let line = self.editor.text().trim().to_owned();
        if line.is_empty() {
            return Vec::new();
        }
        if let Some(command) = line.strip_prefix('/') {
            let mut words = command.split_whitespace();
            let actions = match (words.next(), words.next()) {
                (Some("quit" | "exit"), None) => vec![Action::Quit],
                (Some("help"), None) => {
                    self.overlay = Some(Overlay::Help);
                    Vec::new()
                }
                (Some("open"), Some(handle)) => match Handle::parse(handle) {
                    Ok(handle) => vec![Action::Open(handle)],
                    Err(e) => {
                        self.say(&format!("invalid handle '{handle}': {e}"));
                        return Vec::new();
                    }
                },
                _ => {
                    self.say(&format!(
                        "unknown command /{command}: the commands are /open HANDLE, /help and \
                         /quit (F1 lists the keys); nothing was sent"
                    ));
                    return Vec::new();
                }
            };
            self.editor.take();
            return actions;
        }
        let Some(peer) = self.open_conversation().map(|c| c.peer.clone()) else {
            self.say("open a conversation first (Up/Down, or /open HANDLE)");
            return Vec::new();
        };
        let Some(to) = peer.handle else {
            self.say("this account has no handle to write to");
            return Vec::new();
        };
        self.scroll = 0;
        let text = self.editor.take();
        vec![Action::Send {
            to,
            account: peer.account,
            text,
        }]
    }

    /// Opens the conversation `delta` places down the list (wrapping).
    fn step(&mut self, delta: isize) -> Vec<Action> {
        let count = self.conversations.len();
        if count == 0 {
            return Vec::new();
        }
        let at = self
            .open
            .and_then(|open| {
                self.conversations
                    .iter()
                    .position(|c| c.peer.account == open)
            })
            .map_or(if delta > 0 { count - 1 } else { 0 }, |i| i);
        let next = (at as isize + delta).rem_euclid(count as isize) as usize;
        let account = self.conversations[next].peer.account;
        self.open(account)
    }

    fn page(&self) -> u16 {
        self.rows.saturating_sub(6).max(1)
    }

    fn say_full(&mut self) {
        self.say(&format!(
            "the line is at the limit of one message ({MAX_TEXT_BYTES} bytes); the rest was not taken"
        ));
    }

    fn say(&mut self, text: &str) {
        self.notice = Some(text.to_owned());
    }

    fn find_mut(&mut self, account: &AccountId) -> Option<&mut Conversation> {
        self.conversations
            .iter_mut()
            .find(|c| c.peer.account == *account)
    }

    fn entry_mut(&mut self, id: &MessageId) -> Option<&mut Entry> {
        self.conversations
            .iter_mut()
            .flat_map(|c| c.entries.iter_mut())
            .find(|e| e.id == *id)
    }

    fn sort(&mut self) {
        self.conversations
            .sort_by_key(|c| std::cmp::Reverse(c.last_at_ms()));
    }
}

/// Drops the oldest entries past `keep`.
fn trim(entries: &mut Vec<Entry>, keep: usize) {
    if entries.len() > keep {
        entries.drain(..entries.len() - keep);
    }
}
