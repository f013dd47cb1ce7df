//! Linking rendezvous (ADR 0007, protocol.md §15): an existing device waits under a
//! rendezvous id; the first new device to join it is handed to that device's connection,
//! which answers with the sealed account secrets. Nothing is stored: a rendezvous lives
//! in the memory of the node holding the waiting connection, for at most the link
//! lifetime, and is used once.
//!
//! [`Rendezvous`] is the registry of one process; in a cluster the bus carries joins and
//! answers between nodes (`presence::nats`). The relay sees only the rendezvous id (a
//! hash of the code's secret), the two ephemeral keys, the MAC and the sealed bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use parley_protocol::devices::link::{JoinMac, RendezvousId};
use parley_protocol::identity::X25519Public;
use tokio::sync::oneshot;

use super::attachment::lock;

/// Most rendezvous one process keeps open at once (one per connection at most, so this
/// bounds only a flood of connections that each open one).
pub const MAX_OPEN_RENDEZVOUS: usize = 4_096;

/// A new device's join, as the existing device's connection receives it.
#[derive(Debug)]
pub struct Joined {
    /// The new device's ephemeral key.
    pub public: X25519Public,
    /// Its proof that it read the code.
    pub mac: JoinMac,
    /// Where the sealed secrets go.
    pub answer: Answer,
}

/// The way back to the joining device.
#[derive(Debug)]
pub enum Answer {
    /// The joiner is connected to this process.
    Local(oneshot::Sender<Vec<u8>>),
    /// The joiner is on another node: publish the sealed bytes to this subject.
    Bus {
        /// The joiner's inbox.
        subject: String,
        /// The bus.
        client: async_nats::Client,
    },
}

impl Answer {
    /// Hands `sealed` to the joiner; a joiner that went away loses it (it can join again
    /// with a new code).
    pub async fn send(self, sealed: Vec<u8>) {
        match self {
            Answer::Local(reply) => {
                let _ = reply.send(sealed);
            }
            Answer::Bus { subject, client } => {
                if let Err(e) = client.publish(subject, sealed.into()).await {
                    tracing::debug!(error = %e, "could not answer a link join on the bus");
                }
            }
        }
    }
}

/// No device waits on that rendezvous (expired, used, or its connection is gone), or
/// (opening) it is already open, or too many are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no device is waiting on this linking code")]
pub struct LinkUnavailable;

/// Waiting connections by rendezvous id, each with the token of its [`OpenRendezvous`].
type Waiting = Arc<Mutex<HashMap<RendezvousId, (u64, oneshot::Sender<Joined>)>>>;

/// The open rendezvous of this process.
#[derive(Debug, Default)]
pub struct Rendezvous {
    open: Waiting,
    next_token: AtomicU64,
}

/// An open rendezvous, held by the connection that opened it; dropping it closes it.
#[derive(Debug)]
pub struct OpenRendezvous {
    /// Its id.
    pub id: RendezvousId,
    /// The one join, when it comes.
    pub joins: oneshot::Receiver<Joined>,
    token: u64,
    registry: Waiting,
    /// Closes the rendezvous on the bus too when dropped.
    pub(super) bus: Option<tokio::task::AbortHandle>,
}

impl Drop for OpenRendezvous {
    fn drop(&mut self) {
        let mut open = lock(&self.registry);
        if open
            .get(&self.id)
            .is_some_and(|(token, _)| *token == self.token)
        {
            open.remove(&self.id);
        }
        if let Some(bus) = &self.bus {
            bus.abort();
        }
    }
}

impl Rendezvous {
    /// Opens `id` here.
    pub fn open(&self, id: RendezvousId) -> Result<OpenRendezvous, LinkUnavailable> {
        let mut open = lock(&self.open);
        open.retain(|_, (_, waiting)| !waiting.is_closed());
        if open.contains_key(&id) || open.len() >= MAX_OPEN_RENDEZVOUS {
            return Err(LinkUnavailable);
        }
        let (sender, joins) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        open.insert(id, (token, sender));
        Ok(OpenRendezvous {
            id,
            joins,
            token,
            registry: self.open.clone(),
            bus: None,
        })
    }

    /// Whether `id` is open here.
    pub fn is_open(&self, id: &RendezvousId) -> bool {
        lock(&self.open)
            .get(id)
            .is_some_and(|(_, waiting)| !waiting.is_closed())
    }

    /// Hands a join to the connection waiting on `id` here, closing the rendezvous.
    pub fn join(&self, id: &RendezvousId, joined: Joined) -> Result<(), LinkUnavailable> {
        let (_, waiting) = lock(&self.open).remove(id).ok_or(LinkUnavailable)?;
        waiting.send(joined).map_err(|_| LinkUnavailable)
    }

    /// Joins `id` from a connection of this process: the receiver gets the sealed bytes.
    pub fn join_here(
        &self,
        id: &RendezvousId,
        public: X25519Public,
        mac: JoinMac,
    ) -> Result<oneshot::Receiver<Vec<u8>>, LinkUnavailable> {
        let (answer, sealed) = oneshot::channel();
        self.join(
            id,
            Joined {
                public,
                mac,
                answer: Answer::Local(answer),
            },
        )?;
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: RendezvousId = RendezvousId([7; 16]);

    #[tokio::test]
    async fn one_join_reaches_the_opener_and_its_answer_the_joiner() {
        let registry = Rendezvous::default();
        let mut opened = registry.open(ID).unwrap();
        assert_eq!(registry.open(ID).unwrap_err(), LinkUnavailable, "open once");
        let sealed = registry
            .join_here(&ID, X25519Public([1; 32]), JoinMac([2; 32]))
            .unwrap();
        assert_eq!(
            registry
                .join_here(&ID, X25519Public([3; 32]), JoinMac([4; 32]))
                .unwrap_err(),
            LinkUnavailable,
            "used once"
        );
        let joined = (&mut opened.joins).await.unwrap();
        assert_eq!(joined.public, X25519Public([1; 32]));
        joined.answer.send(b"sealed".to_vec()).await;
        assert_eq!(sealed.await.unwrap(), b"sealed");
    }

    #[test]
    fn a_closed_rendezvous_cannot_be_joined_and_can_be_opened_again() {
        let registry = Rendezvous::default();
        drop(registry.open(ID).unwrap());
        assert!(!registry.is_open(&ID));
        assert_eq!(
            registry
                .join_here(&ID, X25519Public([1; 32]), JoinMac([2; 32]))
                .unwrap_err(),
            LinkUnavailable
        );
        assert!(registry.open(ID).is_ok());
    }
}
