//! What the full-screen view shows, as plain data: the people and businesses this
//! profile talks to, each conversation's entries (texts and cards, mine with their
//! delivery state), and the unread counts. Filled from the profile's store by
//! [`super::load`] and kept current by [`super::app::App`].

use parley_protocol::business::{BusinessCertificate, Category, CategorySet};
use parley_protocol::e2e::content::Card;
use parley_protocol::ids::{AccountId, Handle, MessageId};
use parley_sdk::store::MessageState;

/// Who a conversation is with, and what this machine checked about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// Their account.
    pub account: AccountId,
    /// Their handle, when resolved (a peer without one cannot be written to).
    pub handle: Option<Handle>,
    /// The business certificate checked on this machine, for a verified business.
    pub business: Option<BusinessCertificate>,
    /// What the person allows this business to send now (only for businesses).
    pub consent: CategorySet,
    /// Whether the person compared safety numbers and marked the contact verified.
    pub safety_verified: bool,
}

impl PeerView {
    /// `@handle`, or the first 16 hex digits of the account.
    pub fn name(&self) -> String {
        crate::output::name(self.handle.as_ref(), &self.account)
    }
}

/// What an entry says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A text message.
    Text(String),
    /// A card from a business, with the action it was answered with, if any.
    Card {
        /// The card as received.
        card: Card,
        /// The category it was sent in.
        category: Option<Category>,
        /// The action id this profile answered with.
        answered: Option<String>,
    },
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its id (what a card answer and a receipt name).
    pub id: MessageId,
    /// When the server accepted it (received) or when it was sent (mine), ms since the epoch.
    pub at_ms: u64,
    /// What it says.
    pub body: Body,
    /// Unread or seen (theirs); queued, not sent, sent, delivered or read (mine).
    pub state: MessageState,
}

/// The entries with one peer, oldest first, and how many of theirs are unread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// Who it is with.
    pub peer: PeerView,
    /// Oldest first, at most the view's `keep` (older ones stay in the store).
    pub entries: Vec<Entry>,
    /// Their messages not yet seen in this view or another.
    pub unread: usize,
}

impl Conversation {
    /// A conversation with no entries yet.
    pub fn empty(peer: PeerView) -> Conversation {
        Conversation {
            peer,
            entries: Vec::new(),
            unread: 0,
        }
    }

    /// Time of the newest entry (0 when there is none), to order the list.
    pub fn last_at_ms(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.at_ms)
    }

    /// The newest card that is not answered yet, with actions to choose from.
    pub fn open_card(&self) -> Option<(&Entry, &Card)> {
        self.entries.iter().rev().find_map(|e| match &e.body {
            Body::Card {
                card,
                answered: None,
                ..
            } if !e.state.is_mine() && !card.actions.is_empty() => Some((e, card)),
            _ => None,
        })
    }
}
