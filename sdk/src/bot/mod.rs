//! The business side: a [`BusinessBot`] on top of the client engine.
//!
//! Every send names its category (checked by the relay against the person's grants, and
//! by the person's client against its own ledger) and an idempotency key (which becomes
//! the message id, so a retry after a crash or a lost reply is deduplicated by the
//! relay). Results are typed ([`SendOutcome`]) after the relay's limits. Incoming events
//! come from [`BusinessBot::next_event`]: messages, [`Event::CardAnswered`] (checked
//! against the stored card), [`Event::ConsentChanged`], and [`Event::Status`] (which
//! only moves forward).
//!
//! * [`idempotency`]: key → message id and card id.
//! * [`outcome`]: what a send came to.
//! * [`broadcast`]: many recipients, paced within the per-second limit.

pub mod broadcast;
pub mod idempotency;
pub mod outcome;

use std::sync::Arc;

use parley_protocol::business::Category;
use parley_protocol::e2e::content::{Card, Content, Text};
use parley_protocol::ids::Handle;

pub use broadcast::{BroadcastReport, Pacing};
pub use outcome::SendOutcome;

use crate::client::{Client, ClientConfig};
use crate::engine::{Outgoing, Peer};
use crate::error::SdkError;
use crate::events::Event;
use crate::store::ClientStore;

/// What a business sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BotMessage {
    /// A text.
    Text(String),
    /// A card; its `id` and `category` are set by the bot from the idempotency key and
    /// the send's category.
    Card(Card),
}

/// A business account's client.
#[derive(Debug)]
pub struct BusinessBot {
    client: Client,
}

impl BusinessBot {
    /// Starts the engine for a registered (and, to send, verified) business profile.
    /// A business sends no receipts (its every envelope needs a category); it receives
    /// its customers' as [`crate::Event::Status`].
    pub async fn start(
        config: ClientConfig,
        store: Arc<ClientStore>,
    ) -> Result<BusinessBot, SdkError> {
        let config = ClientConfig {
            send_receipts: false,
            ..config
        };
        Ok(BusinessBot {
            client: Client::start(config, store).await?,
        })
    }

    /// Sends `text` to `user` in `category`. `key` identifies this message for retries:
    /// the same key is the same message.
    pub async fn send_text(
        &self,
        user: &Handle,
        text: &str,
        category: Category,
        key: &str,
    ) -> Result<SendOutcome, SdkError> {
        self.send(
            Peer::Handle(user.clone()),
            BotMessage::Text(text.to_owned()),
            category,
            key,
        )
        .await
    }

    /// Sends `card` to `user` in `category`; the card is kept so that the answer can be
    /// checked (see [`Event::CardAnswered`]).
    pub async fn send_card(
        &self,
        user: &Handle,
        card: Card,
        category: Category,
        key: &str,
    ) -> Result<SendOutcome, SdkError> {
        self.send(
            Peer::Handle(user.clone()),
            BotMessage::Card(card),
            category,
            key,
        )
        .await
    }

    /// Sends `message` to `to`. Errors are local failures and caller mistakes; every
    /// relay verdict on the send is a [`SendOutcome`].
    pub async fn send(
        &self,
        to: Peer,
        message: BotMessage,
        category: Category,
        key: &str,
    ) -> Result<SendOutcome, SdkError> {
        let content = match message {
            BotMessage::Text(body) => Content::Text(Text {
                body,
                sender_handle: self.client.profile().handle.clone(),
                category: Some(category),
            }),
            BotMessage::Card(mut card) => {
                card.id = idempotency::card_id(key);
                card.category = Some(category);
                Content::Card(card)
            }
        };
        let result = self
            .client
            .send_content(Outgoing {
                to,
                content,
                category: Some(category),
                id: Some(idempotency::message_id(key)),
            })
            .await;
        SendOutcome::from_result(result)
    }

    /// The next event; `None` once the engine stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.client.next_event().await
    }

    /// An event if one is ready, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.client.try_next_event()
    }

    /// The underlying client (display name, business info, low-level sends).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops the engine.
    pub async fn stop(self) {
        self.client.stop().await;
    }
}
