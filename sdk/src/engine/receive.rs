//! Receiving: decrypt, drop duplicates, screen business messages against the local
//! consent ledger ([`super::business`]), store, then acknowledge.
//!
//! The order is the guarantee. A message is acknowledged only after the advanced
//! session, the seen id and the message itself are committed together, so a client killed
//! at any point either has the message (and drops the redelivery as seen) or never
//! stored anything (and decrypts the redelivery from the unchanged session).

use parley_protocol::e2e::content::{Content, Sent, Sync};
use parley_protocol::e2e::message::E2eMessage;
use parley_protocol::e2e::{self, E2eError, HandshakeGuard, Session};
use parley_protocol::ids::{DeviceAddress, DeviceId, Handle, PrekeyId, Seq};
use parley_protocol::wire::client::{Ack, ClientBody, UploadPrekeys};
use parley_protocol::wire::server::{Deliver, ServerBody};
use rand_core::OsRng;
use tokio::time::Instant;

use super::business::Screen;
use super::send::now_ms;
use super::Engine;
use crate::client::PUSHES_PER_ACK_MAX;
use crate::connection::Connection;
use crate::error::SdkError;
use crate::events::Event;
use crate::keys::{one_time_batch, prekey_store};
use crate::store::{Contact, InboxEntry, PrekeyRecords, ReceiveCommit, SentMessage};

/// What decrypting one envelope produced.
struct Opened {
    session: Session,
    plaintext: Vec<u8>,
    guard: Option<HandshakeGuard>,
    used_one_time_prekey: Option<PrekeyId>,
    /// The session replaces the current one (which becomes the previous one).
    replaces_current: bool,
}

/// What a received message leaves in the history.
enum Kept {
    /// Nothing (a receipt, an answer, a dropped message).
    Nothing,
    /// A text or card received.
    Received(InboxEntry),
    /// A text or card this account sent from another device, to this address.
    SentElsewhere(DeviceAddress, SentMessage),
}

impl From<Option<InboxEntry>> for Kept {
    fn from(inbox: Option<InboxEntry>) -> Kept {
        inbox.map_or(Kept::Nothing, Kept::Received)
    }
}

/// How handling a burst of pushed frames ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Burst {
    /// Handled and acked; whether a `drained` was among the frames.
    Handled { drained: bool },
    /// The test hook halted the engine before an ack.
    Halted,
}

/// What handling one pushed frame leaves owed to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Nothing.
    Done,
    /// An ack through this seq: the delivery is stored, or dropped for good. The
    /// connection loop sends it once nothing more is ready to handle, so one ack covers
    /// what arrived together (acks are cumulative).
    Ack(Seq),
    /// Nothing: the test hook halts the engine before it would ack.
    Halt,
}

impl Engine {
    /// Handles `first` and the pushed frames already readable behind it (at most
    /// [`PUSHES_PER_ACK_MAX`], and no new one once [`crate::ClientConfig::ack_gather`]
    /// has passed), then acks through the last delivery stored: one ack per delivery at
    /// a moderate rate, one per burst under load or while a backlog drains. Every ack
    /// follows the commit of what it covers. What is owed is acked on every way out:
    /// before a halt (the halting delivery is not covered) and, as far as the connection
    /// still works, before an error.
    pub(crate) async fn on_pushes(
        &self,
        conn: &mut Connection,
        first: ServerBody,
    ) -> Result<Burst, SdkError> {
        let mut owed = None;
        let handled = self.handle_burst(conn, first, &mut owed).await;
        if let Some(seq) = owed {
            let acked = ack(conn, seq).await;
            if handled.is_ok() {
                acked?;
            }
        }
        handled
    }

    /// The body of [`Engine::on_pushes`]: handles the burst, leaving in `owed` the seq to
    /// ack through.
    async fn handle_burst(
        &self,
        conn: &mut Connection,
        first: ServerBody,
        owed: &mut Option<Seq>,
    ) -> Result<Burst, SdkError> {
        let started = Instant::now();
        let (mut drained, mut body) = (false, first);
        for handled in 1usize.. {
            drained |= matches!(body, ServerBody::Drained(_));
            match self.on_push(conn, body).await? {
                Handled::Done => {}
                Handled::Ack(seq) => *owed = Some(seq),
                Handled::Halt => return Ok(Burst::Halted),
            }
            if handled >= PUSHES_PER_ACK_MAX || started.elapsed() >= self.ack_gather {
                break;
            }
            match conn.ready_push() {
                Some(next) => body = next?,
                None => break,
            }
        }
        Ok(Burst::Handled { drained })
    }

    /// Handles one pushed frame; says what it leaves owed.
    pub(crate) async fn on_push(
        &self,
        conn: &mut Connection,
        body: ServerBody,
    ) -> Result<Handled, SdkError> {
        match body {
            ServerBody::Deliver(deliver) => self.on_deliver(conn, deliver).await,
            ServerBody::Drained(_) => {
                self.emit(Event::Drained).await;
                Ok(Handled::Done)
            }
            ServerBody::PrekeysLow(_) => {
                self.top_up_prekeys(conn).await?;
                Ok(Handled::Done)
            }
            other => {
                tracing::debug!(?other, "ignoring unexpected pushed frame");
                Ok(Handled::Done)
            }
        }
    }

    async fn on_deliver(&self, conn: &mut Connection, d: Deliver) -> Result<Handled, SdkError> {
        let (from, id, seq) = (d.from, d.id, d.seq);
        if self.stored(move |s| s.seen(&from, &id)).await? {
            return Ok(Handled::Ack(seq));
        }
        let opened = match self.open(&d).await {
            Ok(opened) => opened,
            Err(SdkError::Crypto(e)) => {
                if !e.is_replay() {
                    self.emit(Event::Undecryptable {
                        from,
                        reason: e.to_string(),
                    })
                    .await;
                }
                // Not recorded as seen: an authentic envelope with the same id (which a
                // relay could hold back behind a tampered copy) must still be opened.
                return Ok(Handled::Ack(seq));
            }
            Err(e) => return Err(e),
        };
        let content = match Content::decode(&opened.plaintext) {
            Ok(content) => Some(content),
            Err(e) => {
                self.emit(Event::Undecryptable {
                    from,
                    reason: e.to_string(),
                })
                .await;
                None
            }
        };
        match content {
            Some(Content::Sent(sent)) => {
                return self.on_sent_elsewhere(&d, opened, sent).await;
            }
            Some(Content::Sync(sync)) => return self.on_sync(&d, opened, sync).await,
            _ => {}
        }
        let screen = self
            .screen(conn, from, d.category, content.as_ref())
            .await?;
        let (content, category) = match screen {
            Screen::Admit(category) => (content, category),
            Screen::Drop(category) => {
                // The session still advanced: keep it, keep nothing else.
                self.commit_received(&d, opened, Kept::Nothing, None)
                    .await?;
                self.emit(Event::DroppedWithoutConsent { from, category })
                    .await;
                return self.finish(seq);
            }
        };
        let claimed = match &content {
            Some(Content::Text(t)) => t.sender_handle.clone(),
            _ => None,
        };
        let handle = self.verified_handle(conn, from, claimed).await?;
        let inbox = match &content {
            Some(Content::Text(t)) => Some(InboxEntry {
                n: 0,
                from,
                id,
                sent_at_ms: d.sent_at_ms,
                text: t.body.clone(),
                category,
                card: None,
            }),
            Some(Content::Card(c)) => Some(InboxEntry {
                n: 0,
                from,
                id,
                sent_at_ms: d.sent_at_ms,
                text: c.title.clone(),
                category,
                card: Some(c.clone()),
            }),
            _ => None,
        };
        let new = self
            .commit_received(&d, opened, Kept::from(inbox), Some(handle.clone()))
            .await?;
        if new {
            if let Some(content) = content {
                self.on_content(from, handle, &d, content, category).await?;
            }
        }
        self.finish(seq)
    }

    /// A text or card another device of this account sent: kept in the history as this
    /// account's own message, and told to the application. From anyone else it is
    /// dropped (a person cannot put words in this account's mouth).
    async fn on_sent_elsewhere(
        &self,
        d: &Deliver,
        opened: Opened,
        sent: Sent,
    ) -> Result<Handled, SdkError> {
        let from = d.from;
        let shown = (from.account == self.me.account)
            .then(|| super::send::shown(&sent.message, d.sent_at_ms))
            .flatten();
        let Some(message) = shown else {
            self.commit_received(d, opened, Kept::Nothing, None).await?;
            self.emit(Event::Undecryptable {
                from,
                reason: "a copy of a sent message from another account".into(),
            })
            .await;
            return self.finish(d.seq);
        };
        let to = DeviceAddress {
            account: sent.to,
            device: DeviceId::PRIMARY,
        };
        if let Some(card) = message.card.clone() {
            // So that this device checks answers to it like the device that sent it (a
            // standby bot instance, docs/bots.md): the person signs them to that device.
            // Kept again on a redelivery, unchanged.
            let (account, sender) = (sent.to, from.device);
            self.stored(move |s| s.save_sent_card(&card, &account, sender))
                .await?;
        }
        let text = message.text.clone();
        let new = self
            .commit_received(d, opened, Kept::SentElsewhere(to, message), None)
            .await?;
        if new {
            self.emit(Event::SentElsewhere {
                from,
                to: sent.to,
                to_handle: sent.to_handle,
                id: d.id,
                sent_at_ms: d.sent_at_ms,
                text,
            })
            .await;
        }
        self.finish(d.seq)
    }

    /// Account state another device of this account changed: taken before the message is
    /// recorded as seen (taking it twice changes nothing), so a crash in between only
    /// means it is taken again. From anyone else it is dropped.
    async fn on_sync(&self, d: &Deliver, opened: Opened, sync: Sync) -> Result<Handled, SdkError> {
        let me = self.me.account;
        let applied = match (d.from.account == me, sync) {
            (false, _) => false,
            (true, Sync::Consent(record)) if record.user() == me => {
                self.stored(move |s| s.add_consent(&record).map(|_| ()))
                    .await?;
                true
            }
            (true, Sync::Consent(_)) => false,
            (true, Sync::Verified(v)) => {
                self.stored(move |s| match s.contact(&v.account)? {
                    Some(mut c) if c.identity == v.identity => {
                        c.verified = v.verified;
                        s.save_contact(&c)
                    }
                    _ => Ok(()),
                })
                .await?;
                true
            }
        };
        self.commit_received(d, opened, Kept::Nothing, None).await?;
        if !applied {
            self.emit(Event::Undecryptable {
                from: d.from,
                reason: "account state from another account".into(),
            })
            .await;
        }
        self.finish(d.seq)
    }

    /// Stores the advanced session (and the message, and the contact) with the seen id.
    async fn commit_received(
        &self,
        d: &Deliver,
        opened: Opened,
        kept: Kept,
        handle: Option<Option<Handle>>,
    ) -> Result<bool, SdkError> {
        let (inbox, sent_elsewhere) = match kept {
            Kept::Nothing => (None, None),
            Kept::Received(entry) => (Some(entry), None),
            Kept::SentElsewhere(to, message) => (None, Some((to, message))),
        };
        let contact = match handle {
            Some(handle) => Some(self.updated_contact(&opened.session, handle).await?),
            None => None,
        };
        let (from, id) = (d.from, d.id);
        // A text or a card is owed a delivered receipt; nothing else is (a receipt
        // never triggers one).
        let owe_delivered_receipt = self.send_receipts && inbox.is_some();
        let record = opened.session.to_record();
        let guard = opened.guard.as_ref().map(HandshakeGuard::to_bytes);
        let used = opened.used_one_time_prekey;
        let replaces_current = opened.replaces_current;
        self.stored(move |s| {
            s.commit_receive(&ReceiveCommit {
                from,
                id,
                session: Some(&record),
                replaces_current,
                guard: guard.as_deref(),
                used_one_time_prekey: used,
                inbox,
                sent_elsewhere,
                owe_delivered_receipt,
                contact,
            })
        })
        .await
    }

    /// Owes the server an ack of `seq`, unless the test hook halts the engine first.
    fn finish(&self, seq: Seq) -> Result<Handled, SdkError> {
        if self.halt_before_ack {
            return Ok(Handled::Halt);
        }
        Ok(Handled::Ack(seq))
    }

    /// Tells the application about a newly stored message.
    async fn on_content(
        &self,
        from: DeviceAddress,
        handle: Option<Handle>,
        d: &Deliver,
        content: Content,
        category: Option<parley_protocol::business::Category>,
    ) -> Result<(), SdkError> {
        let event = match content {
            Content::Text(text) => Some(Event::Message {
                from,
                handle,
                id: d.id,
                sent_at_ms: d.sent_at_ms,
                text: text.body,
                category,
            }),
            Content::Card(card) => Some(Event::Card {
                from,
                handle,
                id: d.id,
                sent_at_ms: d.sent_at_ms,
                card,
                category,
            }),
            Content::CardAnswer(answer) => Some(self.on_card_answer(from, answer).await?),
            Content::Receipt(receipt) => {
                for event in self.on_receipt(from, receipt).await? {
                    self.emit(event).await;
                }
                None
            }
            Content::Consent(record) => self.on_consent(from, record).await?,
            // Handled before it is stored (`on_sent_elsewhere`, `on_sync`).
            Content::Sent(_) | Content::Sync(_) => None,
        };
        if let Some(event) = event {
            self.emit(event).await;
        }
        Ok(())
    }

    /// Decrypts with the stored session, or accepts a new session from a prekey message.
    async fn open(&self, d: &Deliver) -> Result<Opened, SdkError> {
        let from = d.from;
        let existing = self.stored(move |s| s.session(&from)).await?;
        let is_prekey = matches!(E2eMessage::decode(&d.ciphertext), Ok(E2eMessage::Prekey(_)));
        let had_session = existing.is_some();
        if let Some(record) = existing {
            let mut session = Session::from_record(&record).map_err(corrupt("session record"))?;
            if !is_prekey || session.belongs(&d.ciphertext) {
                let failure = match session.decrypt(&d.ciphertext, now_ms()) {
                    Ok(plaintext) => {
                        return Ok(Opened {
                            session,
                            plaintext,
                            guard: None,
                            used_one_time_prekey: None,
                            replaces_current: false,
                        })
                    }
                    Err(e) => e,
                };
                // When both sides started a session at once, each took the other's and
                // kept its own as the previous one: the peer may still write on that.
                if !is_prekey && !failure.is_replay() {
                    if let Some(opened) = self.open_with_previous(d).await? {
                        return Ok(opened);
                    }
                }
                return Err(failure.into());
            }
        }
        let records: PrekeyRecords = self.stored(|s| s.prekeys()).await?;
        let prekeys = prekey_store(&records).map_err(|e| match e {
            SdkError::Crypto(e) => SdkError::Storage(format!("prekey secrets: {e}")),
            other => other,
        })?;
        let mut guard = match self.stored(|s| s.guard()).await? {
            Some(bytes) => {
                HandshakeGuard::from_bytes(&bytes).map_err(corrupt("handshake guard"))?
            }
            None => HandshakeGuard::default(),
        };
        let accepted = e2e::accept(
            &self.identity,
            self.me,
            from,
            &d.ciphertext,
            &prekeys,
            &mut guard,
            now_ms(),
        )?;
        Ok(Opened {
            session: accepted.session,
            plaintext: accepted.plaintext,
            guard: Some(guard),
            used_one_time_prekey: accepted.used_one_time_prekey,
            replaces_current: had_session,
        })
    }

    /// Opens `d` with the previous session, if there is one and it can; that session
    /// becomes the current one again (both sides then write on it).
    async fn open_with_previous(&self, d: &Deliver) -> Result<Option<Opened>, SdkError> {
        let from = d.from;
        let Some(record) = self.stored(move |s| s.previous_session(&from)).await? else {
            return Ok(None);
        };
        let mut session = Session::from_record(&record).map_err(corrupt("session record"))?;
        Ok(session
            .decrypt(&d.ciphertext, now_ms())
            .ok()
            .map(|plaintext| Opened {
                session,
                plaintext,
                guard: None,
                used_one_time_prekey: None,
                replaces_current: true,
            }))
    }

    /// The sender's handle, if a stored contact or the sender's claim checks out.
    async fn verified_handle(
        &self,
        conn: &mut Connection,
        from: DeviceAddress,
        claimed: Option<Handle>,
    ) -> Result<Option<Handle>, SdkError> {
        let known = self.stored(move |s| s.contact(&from.account)).await?;
        if let Some(handle) = known.and_then(|c| c.handle) {
            if claimed.as_ref().is_none_or(|c| c == &handle) {
                return Ok(Some(handle));
            }
        }
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        match self.resolve_handle(conn, &claimed).await {
            Ok(account) if account == from.account => Ok(Some(claimed)),
            Ok(_) | Err(SdkError::NoSuchUser(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The contact for the session's peer, warning if its identity changed.
    async fn updated_contact(
        &self,
        session: &Session,
        handle: Option<Handle>,
    ) -> Result<Contact, SdkError> {
        let identity = session.remote_identity().clone();
        let account = identity.account;
        let known = self.stored(move |s| s.contact(&account)).await?;
        let verified = match &known {
            Some(c) if c.identity != identity => {
                self.emit(Event::IdentityChanged {
                    account,
                    handle: handle.clone().or_else(|| c.handle.clone()),
                })
                .await;
                false
            }
            Some(c) => c.verified,
            None => false,
        };
        if let (Some(h), None) = (&handle, &known) {
            let h = h.clone();
            if let Some(previous) = self.stored(move |s| s.contact_by_handle(&h)).await? {
                if previous.account != account {
                    self.emit(Event::IdentityChanged {
                        account,
                        handle: handle.clone(),
                    })
                    .await;
                }
            }
        }
        Ok(Contact {
            account,
            handle: handle.or_else(|| known.and_then(|c| c.handle)),
            identity,
            verified,
        })
    }

    /// Generates, stores, then uploads a batch of one-time prekeys.
    async fn top_up_prekeys(&self, conn: &mut Connection) -> Result<(), SdkError> {
        let first = self.stored(|s| s.max_prekey_id()).await?.saturating_add(1);
        let batch = one_time_batch(first, &mut OsRng);
        let publics = batch.publics;
        let records = PrekeyRecords {
            one_time: batch.secrets,
            ..PrekeyRecords::default()
        };
        self.stored(move |s| s.add_prekeys(&records)).await?;
        match conn
            .request(ClientBody::UploadPrekeys(UploadPrekeys {
                signed_prekey: None,
                kem_prekey: None,
                one_time_prekeys: publics,
            }))
            .await
        {
            Ok(_) | Err(SdkError::Refused { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A local record that does not decode is a storage failure, never an undecryptable
/// message: it must not make the engine acknowledge (and so drop) what it received.
fn corrupt(what: &'static str) -> impl Fn(E2eError) -> SdkError {
    move |e| SdkError::Storage(format!("{what}: {e}"))
}

/// Acknowledges every delivery through `seq` (acks are cumulative).
async fn ack(conn: &mut Connection, seq: Seq) -> Result<(), SdkError> {
    conn.send(ClientBody::Ack(Ack { through: seq }))
        .await
        .map(|_| ())
}
