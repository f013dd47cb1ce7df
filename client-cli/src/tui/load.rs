//! From the profile's store to the view's model: the conversations with their recent
//! history and unread counts, and what this machine checked about each peer (the
//! business certificate, the safety number mark, the consent in force). Local only: no
//! network.

use parley_protocol::business::{AuthorityKey, CategorySet};
use parley_protocol::ids::{AccountId, Handle};
use parley_sdk::business_info::cached_verdict;
use parley_sdk::consent::in_force;
use parley_sdk::store::{ClientStore, HistoryEntry};

use super::model::{Body, Conversation, Entry, PeerView};
use crate::output::now_ms;

/// What the loader needs to know about this profile.
#[derive(Clone, Copy, Debug)]
pub struct Loader<'a> {
    /// The profile's store.
    pub store: &'a ClientStore,
    /// The configured verification authority (else the pinned one) for badges.
    pub authority: Option<&'a AuthorityKey>,
    /// This profile's account (the user side of consent records).
    pub me: AccountId,
    /// Entries per conversation.
    pub keep: usize,
}

impl Loader<'_> {
    /// Every conversation in the store, the latest first.
    pub fn conversations(&self) -> anyhow::Result<Vec<Conversation>> {
        self.store
            .conversations()?
            .into_iter()
            .map(|c| {
                let mut conversation = self.conversation(c.peer)?;
                conversation.unread = usize::try_from(c.unread).unwrap_or(usize::MAX);
                Ok(conversation)
            })
            .collect()
    }

    /// The conversation with `account` (empty when nothing was exchanged yet); its
    /// unread count is that of the entries loaded.
    pub fn conversation(&self, account: AccountId) -> anyhow::Result<Conversation> {
        let entries: Vec<Entry> = self
            .store
            .history(&account, self.keep)?
            .into_iter()
            .map(entry)
            .collect();
        let unread = entries
            .iter()
            .filter(|e| e.state == parley_sdk::store::MessageState::Unread)
            .count();
        Ok(Conversation {
            peer: self.peer(account)?,
            entries,
            unread,
        })
    }

    /// The conversation with `handle`, just looked up as `account` (a first conversation
    /// has no contact yet to take the handle from).
    pub fn conversation_with(
        &self,
        handle: Handle,
        account: AccountId,
    ) -> anyhow::Result<Conversation> {
        let mut conversation = self.conversation(account)?;
        conversation.peer.handle.get_or_insert(handle);
        Ok(conversation)
    }

    /// What this machine knows about `account`.
    pub fn peer(&self, account: AccountId) -> anyhow::Result<PeerView> {
        let contact = self.store.contact(&account)?;
        let business = cached_verdict(self.store, self.authority, &account, now_ms())?;
        let consent = if business.is_some() {
            in_force(&self.store.consent_records()?, &self.me, &account, now_ms())
        } else {
            CategorySet::EMPTY
        };
        Ok(PeerView {
            account,
            handle: contact.as_ref().and_then(|c| c.handle.clone()),
            business,
            consent,
            safety_verified: contact.is_some_and(|c| c.verified),
        })
    }
}

/// One stored message as the view shows it.
pub fn entry(stored: HistoryEntry) -> Entry {
    let body = match stored.card {
        Some(card) => Body::Card {
            card,
            category: stored.category,
            answered: stored.answer,
        },
        None => Body::Text(stored.text),
    };
    Entry {
        id: stored.id,
        at_ms: stored.at_ms,
        body,
        state: stored.state,
    }
}
