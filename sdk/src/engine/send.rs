//! Sending: resolve the recipient, find or start the session, encrypt, store the session
//! and the ciphertext together, send, and forget the ciphertext once the server accepted
//! it. A business send carries its category on the wire and inside the content; a send
//! with a caller-chosen id that was already accepted is not sent again.
//!
//! The outbox is the one retry mechanism: whatever it holds is sent again, the same
//! bytes under the same message id, before anything newer, on every connection (the
//! server answers a retry of an accepted send with its first `accepted`). A caller whose
//! send a connection error interrupted waits for that retry ([`super::waiting`]).

use parley_protocol::business::Category;
use parley_protocol::e2e::content::{Content, Sent};
use parley_protocol::e2e::{self, E2eError, Session};
use parley_protocol::ids::{AccountId, DeviceAddress, Handle, MessageId};
use parley_protocol::prekeys::PrekeyBundle;
use parley_protocol::wire::client::{
    ClientBody, DeviceCopy, FetchBundle, ResolveHandle, Send, SendToAll,
};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use rand_core::OsRng;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::waiting::WaitingSends;
use super::Engine;
use crate::connection::Connection;
use crate::error::SdkError;
use crate::events::Event;
use crate::store::{Contact, OutboxCopy, OutboxEntry, OutboxFanOut, SendStatus, SentMessage};

/// Who a message goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A handle, resolved by the relay.
    Handle(Handle),
    /// An account (a reply, a card answer, a consent record).
    Account(AccountId),
}

/// One message to send.
#[derive(Debug)]
pub struct Outgoing {
    /// The recipient.
    pub to: Peer,
    /// What to encrypt.
    pub content: Content,
    /// The category on the wire (business sends).
    pub category: Option<Category>,
    /// A caller-chosen id (idempotent business sends); random when `None`.
    pub id: Option<MessageId>,
}

/// What preparing a send came to.
pub(super) enum Prepared {
    /// Sent before under this idempotency key: the relay has it already.
    Sent(MessageId),
    /// Encrypted and stored in the outbox: from here a failure only delays it.
    Stored(OutboxEntry),
}

impl Engine {
    /// Sends `out` for a caller and answers `reply` once the server has it durably.
    /// A connection error leaves the caller waiting in `waiting` (the send is retried
    /// on the next connection, with the same message id once it has one) and is
    /// returned, to end this connection.
    pub(crate) async fn serve_send(
        &self,
        conn: &mut Connection,
        out: Outgoing,
        reply: oneshot::Sender<Result<MessageId, SdkError>>,
        waiting: &mut WaitingSends,
    ) -> Result<(), SdkError> {
        let entry = match self.prepare(conn, &out, waiting).await {
            Ok(Prepared::Stored(entry)) => entry,
            Ok(Prepared::Sent(id)) => {
                let _ = reply.send(Ok(id));
                return Ok(());
            }
            Err(e) if e.is_connection_error() => {
                tracing::debug!(error = %e, "send interrupted before it was stored: runs again");
                waiting.unstored(out, reply);
                return Err(e);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return Ok(());
            }
        };
        let id = entry.id;
        let result = match self.deliver_outbox_entry(conn, entry).await {
            Err(e) if e.is_connection_error() => {
                tracing::debug!(error = %e, "send interrupted unanswered: waits for its retry");
                waiting.stored(id, reply);
                return Err(e);
            }
            Err(e) if is_permanent(&e, out.category) => Err(e),
            Err(e) => Err(SdkError::Queued(e.to_string())),
            Ok(id) => Ok(id),
        };
        let _ = reply.send(result);
        Ok(())
    }

    /// Flushes older messages, then encrypts `out` and stores it in the outbox.
    pub(super) async fn prepare(
        &self,
        conn: &mut Connection,
        out: &Outgoing,
        waiting: &mut WaitingSends,
    ) -> Result<Prepared, SdkError> {
        // Older queued messages go first, so the recipient sees them in order.
        self.flush_outbox(conn, waiting).await?;
        if let Some(id) = out.id {
            // Sent before under this idempotency key: the relay has it already.
            if self.stored(move |s| s.send_status(&id)).await?.is_some() {
                return Ok(Prepared::Sent(id));
            }
        }
        let (account, handle) = match &out.to {
            Peer::Handle(handle) => (
                self.resolve_handle(conn, handle).await?,
                Some(handle.clone()),
            ),
            Peer::Account(account) => {
                let account = *account;
                let known = self.stored(move |s| s.contact(&account)).await?;
                (account, known.and_then(|c| c.handle))
            }
        };
        if let Content::Card(card) = &out.content {
            let (card, me) = (card.clone(), self.me.device);
            self.stored(move |s| s.save_sent_card(&card, &account, me))
                .await?;
        }
        let content = out.content.encode()?;
        let shown = shown(&out.content, now_ms());
        // This account's other devices get a copy of what a person sees (a text, a card).
        let own_content = match shown {
            Some(_) => Some(
                Content::Sent(Sent {
                    to: account,
                    to_handle: handle.clone(),
                    message: Box::new(out.content.clone()),
                })
                .encode()?,
            ),
            None => None,
        };
        let id = out
            .id
            .unwrap_or_else(|| MessageId::time_ordered(now_micros(), &mut OsRng));
        if account == self.me.account && self.alone(conn).await? {
            // A sync to this account's other devices: none, nothing to send.
            return Ok(Prepared::Sent(id));
        }
        let made = Vec::new();
        let (entry, sessions) = self
            .seal(
                conn,
                handle.as_ref(),
                id,
                account,
                content,
                own_content,
                made,
            )
            .await?;
        let entry = OutboxEntry {
            category: out.category,
            receipt: matches!(out.content, Content::Receipt(_)),
            ..entry
        };
        let stored = entry.clone();
        self.stored(move |s| s.commit_send(&sessions, &stored, shown.as_ref()))
            .await?;
        Ok(Prepared::Stored(entry))
    }

    /// Encrypts `content` for every device of `to`'s list and `own_content` for every
    /// other device of this account's, reusing the copies in `made` for devices still
    /// listed. Returns the entry `id` with its copies (its category and receipt flag left
    /// for the caller) and the advanced sessions to store with them.
    #[allow(clippy::too_many_arguments)]
    async fn seal(
        &self,
        conn: &mut Connection,
        handle: Option<&Handle>,
        id: MessageId,
        to: AccountId,
        content: Vec<u8>,
        own_content: Option<Vec<u8>>,
        made: Vec<OutboxCopy>,
    ) -> Result<(OutboxEntry, Vec<(DeviceAddress, Zeroizing<Vec<u8>>)>), SdkError> {
        let theirs = self.devices_of(conn, to).await?;
        let mine = match own_content {
            Some(_) => Some(self.devices_of(conn, self.me.account).await?),
            None => None,
        };
        // A sync (to this account) goes to its other devices only.
        let mut targets: Vec<(DeviceAddress, bool)> = theirs
            .device_ids()
            .filter(|device| to != self.me.account || *device != self.me.device)
            .map(|device| {
                (
                    DeviceAddress {
                        account: to,
                        device,
                    },
                    false,
                )
            })
            .collect();
        if let Some(mine) = &mine {
            targets.extend(
                mine.device_ids()
                    .filter(|device| *device != self.me.device)
                    .map(|device| {
                        let address = DeviceAddress {
                            account: self.me.account,
                            device,
                        };
                        (address, true)
                    }),
            );
        }
        let mut copies = Vec::with_capacity(targets.len());
        let mut sessions = Vec::new();
        for (peer, own) in targets {
            if let Some(copy) = made.iter().find(|c| c.to == peer) {
                copies.push(copy.clone());
                continue;
            }
            let plaintext = match (&own_content, own) {
                (Some(own_content), true) => own_content,
                _ => &content,
            };
            let mut session = match peer.account == self.me.account {
                true => self.own_session(conn, peer).await?,
                false => self.session_for(conn, handle, peer).await?,
            };
            let ciphertext = session.encrypt(plaintext, &mut OsRng, now_ms())?;
            sessions.push((peer, session.to_record()));
            copies.push(OutboxCopy {
                to: peer,
                ciphertext,
            });
        }
        let mut copies = copies.into_iter();
        let first = copies
            .next()
            .ok_or_else(|| SdkError::Protocol("a device list without devices".into()))?;
        let entry = OutboxEntry {
            id,
            to: first.to,
            ciphertext: first.ciphertext,
            category: None,
            receipt: false,
            fan_out: Some(OutboxFanOut {
                to_version: theirs.version,
                own_version: mine.as_ref().map_or(0, |m| m.version),
                copies: copies.collect(),
                content,
                own_content,
            }),
        };
        Ok((entry, sessions))
    }

    /// Whether this device is the only one on this account's list (a sync has nobody to
    /// go to).
    async fn alone(&self, conn: &mut Connection) -> Result<bool, SdkError> {
        let mine = self.devices_of(conn, self.me.account).await?;
        let alone = mine.device_ids().all(|device| device == self.me.device);
        Ok(alone)
    }

    /// Makes the copies of a queued message again for the lists the relay just sent
    /// (after `stale_devices`): copies for devices still listed are kept, devices new on a
    /// list get one, and copies for devices gone are dropped. Stored before it is sent.
    async fn reseal(
        &self,
        conn: &mut Connection,
        entry: OutboxEntry,
    ) -> Result<OutboxEntry, SdkError> {
        let Some(fan_out) = entry.fan_out.clone() else {
            return Ok(entry);
        };
        let to = entry.to.account;
        let handle = self
            .stored(move |s| s.contact(&to))
            .await?
            .and_then(|c| c.handle);
        let mut made = fan_out.copies;
        made.insert(
            0,
            OutboxCopy {
                to: entry.to,
                ciphertext: entry.ciphertext.clone(),
            },
        );
        let (sealed, sessions) = self
            .seal(
                conn,
                handle.as_ref(),
                entry.id,
                to,
                fan_out.content,
                fan_out.own_content,
                made,
            )
            .await?;
        let entry = OutboxEntry {
            to: sealed.to,
            ciphertext: sealed.ciphertext,
            fan_out: sealed.fan_out,
            ..entry
        };
        let stored = entry.clone();
        self.stored(move |s| s.reseal_outbox(&sessions, &stored))
            .await?;
        Ok(entry)
    }

    /// The session with one of this account's own other devices, or a new one from its
    /// bundle, which must carry this account's identity (the relay cannot hand this
    /// client someone else's device as its own).
    async fn own_session(
        &self,
        conn: &mut Connection,
        peer: DeviceAddress,
    ) -> Result<Session, SdkError> {
        if let Some(record) = self.stored(move |s| s.session(&peer)).await? {
            return Ok(Session::from_record(&record)?);
        }
        let bundle = fetch_bundle(conn, peer).await?;
        if bundle.identity != self.identity.public() {
            return Err(SdkError::Protocol(format!(
                "the relay served device {} of this account with another identity",
                peer.device.0
            )));
        }
        Ok(e2e::initiate(
            &self.identity,
            self.me,
            &bundle,
            peer,
            &mut OsRng,
        )?)
    }

    /// Resends everything still in the outbox, in order (after a reconnect or restart),
    /// and answers the callers in `waiting` as their messages are answered.
    pub(crate) async fn flush_outbox(
        &self,
        conn: &mut Connection,
        waiting: &mut WaitingSends,
    ) -> Result<(), SdkError> {
        let pending = self.stored(|s| s.outbox()).await?;
        for entry in pending {
            let (id, category) = (entry.id, entry.category);
            match self.deliver_outbox_entry(conn, entry).await {
                // Dropped from the outbox; whoever sent it hears about it (after a
                // restart, nobody is waiting): the next messages go on.
                Err(e) if is_permanent(&e, category) => {
                    tracing::debug!(error = %e, "queued message refused");
                    waiting.settle(&id, Err(e));
                }
                // Its caller waits on for the next connection.
                Err(e) if e.is_connection_error() => return Err(e),
                // The server answered, but not `accepted`: the caller hears so now, as
                // for any send, and the message stays first in the outbox.
                Err(e) => {
                    waiting.settle(&id, Err(SdkError::Queued(e.to_string())));
                    return Err(e);
                }
                Ok(id) => waiting.settle(&id, Ok(id)),
            }
        }
        Ok(())
    }

    pub(super) async fn deliver_outbox_entry(
        &self,
        conn: &mut Connection,
        mut entry: OutboxEntry,
    ) -> Result<MessageId, SdkError> {
        let mut resealed = false;
        let reply = loop {
            let reply = conn.request(send_frame(&entry)).await;
            match reply {
                // The lists changed since the copies were made: check the current ones,
                // make the copies again, and send once more (once: a relay that keeps
                // saying so is not believed forever).
                Err(SdkError::StaleDevices(lists)) if !resealed && entry.fan_out.is_some() => {
                    for served in lists {
                        self.take_list(served).await?;
                    }
                    if entry.to.account == self.me.account && self.alone(conn).await? {
                        // A sync whose devices were all removed since it was queued:
                        // nobody is left to tell, and it must not hold up the outbox.
                        let id = entry.id;
                        self.stored(move |s| s.sent(&id)).await?;
                        return Ok(id);
                    }
                    entry = self.reseal(conn, entry).await?;
                    resealed = true;
                }
                reply => break reply,
            }
        };
        let (id, to, category, receipt) = (entry.id, entry.to, entry.category, entry.receipt);
        let me = self.me.account;
        match reply {
            Ok(ServerBody::Accepted(a)) if a.id == id => {
                let at = now_ms();
                self.stored(move |s| {
                    s.sent(&id)?;
                    // A receipt is not the person writing: it opens no care window (here
                    // as on the relay) and has no status of its own; nor has a sync.
                    if receipt || to.account == me {
                        return Ok(false);
                    }
                    s.note_sent_to(&to.account, at)?;
                    s.advance_status(&id, &to.account, SendStatus::Accepted)
                })
                .await?;
                Ok(id)
            }
            Ok(other) => Err(SdkError::Protocol(format!("unexpected reply {other:?}"))),
            // Nothing will ever accept this message: drop it from the outbox.
            Err(e) if is_permanent(&e, category) => {
                self.stored(move |s| s.sent(&id)).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The stored session with `peer`, or a new one from its prekey bundle. Warns when the
    /// handle now names another account, or the account shows another identity; refuses
    /// (`IdentityChanged`) when the handle belonged to a verified contact with another
    /// account.
    async fn session_for(
        &self,
        conn: &mut Connection,
        handle: Option<&Handle>,
        peer: DeviceAddress,
    ) -> Result<Session, SdkError> {
        if let Some(handle) = handle {
            let h = handle.clone();
            let by_handle = self.stored(move |s| s.contact_by_handle(&h)).await?;
            if by_handle.is_some_and(|old| old.account != peer.account) {
                self.emit(Event::IdentityChanged {
                    account: peer.account,
                    handle: Some(handle.clone()),
                })
                .await;
            }
            // A contact the user verified is not replaced behind their back: nothing is
            // encrypted to the handle's new account until they take the mark away.
            let h = handle.clone();
            let verified = self
                .stored(move |s| {
                    Ok(s.contacts()?
                        .into_iter()
                        .find(|c| c.verified && c.handle.as_ref() == Some(&h)))
                })
                .await?;
            if let Some(old) = verified.filter(|old| old.account != peer.account) {
                return Err(SdkError::Crypto(E2eError::IdentityChanged {
                    previous: old.account,
                    presented: peer.account,
                }));
            }
            // Not verified (or no longer): the handle now belongs to the account it
            // names, also when that account is already a contact (it wrote first).
            let h = handle.clone();
            self.stored(move |s| match s.contact(&peer.account)? {
                Some(mut c) if c.handle.as_ref() != Some(&h) => {
                    c.handle = Some(h);
                    s.save_contact(&c)
                }
                _ => Ok(()),
            })
            .await?;
        }
        if let Some(record) = self.stored(move |s| s.session(&peer)).await? {
            return Ok(Session::from_record(&record)?);
        }
        let bundle = fetch_bundle(conn, peer).await?;
        let known = self.stored(move |s| s.contact(&peer.account)).await?;
        let verified = match &known {
            Some(contact) if contact.identity != bundle.identity => {
                self.emit(Event::IdentityChanged {
                    account: peer.account,
                    handle: handle.cloned(),
                })
                .await;
                false
            }
            Some(contact) => contact.verified,
            None => false,
        };
        let session = e2e::initiate(&self.identity, self.me, &bundle, peer, &mut OsRng)?;
        let contact = Contact {
            account: peer.account,
            handle: handle.cloned().or_else(|| known.and_then(|c| c.handle)),
            identity: bundle.identity,
            verified,
        };
        self.stored(move |s| s.save_contact(&contact)).await?;
        Ok(session)
    }
}

/// A prekey bundle of `peer` (the relay hands out one of its one-time prekeys).
async fn fetch_bundle(
    conn: &mut Connection,
    peer: DeviceAddress,
) -> Result<PrekeyBundle, SdkError> {
    match conn
        .request(ClientBody::FetchBundle(FetchBundle { address: peer }))
        .await?
    {
        ServerBody::Bundle(bundle) => Ok(bundle),
        other => Err(SdkError::Protocol(format!("unexpected reply {other:?}"))),
    }
}

/// The request that sends `entry`: `send_to_all` for a send to every device, `send` for
/// a message queued before linked devices (to device 1 alone).
fn send_frame(entry: &OutboxEntry) -> ClientBody {
    let Some(fan_out) = &entry.fan_out else {
        return ClientBody::Send(Send {
            to: entry.to,
            id: entry.id,
            ciphertext: entry.ciphertext.clone(),
            category: entry.category,
            receipt: entry.receipt,
        });
    };
    let to = entry.to.account;
    let copy = |c: &OutboxCopy| DeviceCopy {
        device: c.to.device,
        ciphertext: c.ciphertext.clone(),
    };
    let first = OutboxCopy {
        to: entry.to,
        ciphertext: entry.ciphertext.clone(),
    };
    ClientBody::SendToAll(SendToAll {
        to,
        to_version: fan_out.to_version,
        copies: std::iter::once(&first)
            .chain(fan_out.copies.iter().filter(|c| c.to.account == to))
            .map(copy)
            .collect(),
        own_version: fan_out.own_version,
        own_copies: fan_out
            .copies
            .iter()
            .filter(|c| c.to.account != to)
            .map(copy)
            .collect(),
        id: entry.id,
        category: entry.category,
        receipt: entry.receipt,
    })
}

/// What the history keeps of a message this client sends: texts and cards, which a
/// person sees; not receipts, card answers or consent records.
pub(super) fn shown(content: &Content, at_ms: u64) -> Option<SentMessage> {
    match content {
        Content::Text(text) => Some(SentMessage {
            at_ms,
            text: text.body.clone(),
            category: text.category,
            card: None,
        }),
        Content::Card(card) => Some(SentMessage {
            at_ms,
            text: card.title.clone(),
            category: card.category,
            card: Some(card.clone()),
        }),
        Content::CardAnswer(_)
        | Content::Receipt(_)
        | Content::Consent(_)
        | Content::Sent(_)
        | Content::Sync(_) => None,
    }
}

/// Whether the server refused a message for good (retrying the same envelope cannot
/// help). A business send that is refused, limited or suspended leaves the outbox too:
/// the caller decides whether to try again later (with the same idempotency key).
fn is_permanent(error: &SdkError, category: Option<Category>) -> bool {
    match error {
        SdkError::Refused { code, .. } => match code {
            ErrorCode::NotFound
            | ErrorCode::TooLarge
            | ErrorCode::Refused
            | ErrorCode::ReachExhausted
            | ErrorCode::Suspended
            | ErrorCode::CategoryNotAllowed
            | ErrorCode::NotABusiness => true,
            ErrorCode::RateLimited => category.is_some(),
            _ => false,
        },
        _ => false,
    }
}

impl Engine {
    /// The account `handle` names; the display name the relay reports for it is kept
    /// ([`crate::store::ClientStore::display_name`]).
    pub(crate) async fn resolve_handle(
        &self,
        conn: &mut Connection,
        handle: &Handle,
    ) -> Result<AccountId, SdkError> {
        let (account, name) = resolve(conn, handle).await?;
        self.stored(move |s| s.remember_display_name(&account, name.as_deref()))
            .await?;
        Ok(account)
    }
}

/// The account a handle names, and the display name the relay reports for it.
pub(crate) async fn resolve(
    conn: &mut Connection,
    handle: &Handle,
) -> Result<(AccountId, Option<String>), SdkError> {
    resolved(handle, conn.request(resolve_request(handle)).await)
}

/// The `resolve_handle` request for `handle`.
pub(crate) fn resolve_request(handle: &Handle) -> ClientBody {
    ClientBody::ResolveHandle(ResolveHandle {
        handle: handle.clone(),
    })
}

/// The account and display name in the reply to [`resolve_request`]; `not_found` is
/// [`SdkError::NoSuchUser`].
pub(crate) fn resolved(
    handle: &Handle,
    reply: Result<ServerBody, SdkError>,
) -> Result<(AccountId, Option<String>), SdkError> {
    match reply {
        Ok(ServerBody::Resolved(r)) => Ok((r.account, r.display_name)),
        Ok(other) => Err(SdkError::Protocol(format!("unexpected reply {other:?}"))),
        Err(SdkError::Refused {
            code: ErrorCode::NotFound,
            ..
        }) => Err(SdkError::NoSuchUser(handle.to_string())),
        Err(e) => Err(e),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    now_micros() / 1000
}

/// Microseconds since the Unix epoch (0 for a clock before it).
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
