//! Sending: resolve the handle, find or start the session, encrypt, store the session and
//! the ciphertext together, send, and forget the ciphertext once the server accepted it.

use parley_protocol::e2e::content::{Content, Text};
use parley_protocol::e2e::{self, Session};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, MessageId};
use parley_protocol::wire::client::{ClientBody, FetchBundle, ResolveHandle, Send};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ErrorCode;
use rand_core::{OsRng, RngCore};

use super::Engine;
use crate::connection::Connection;
use crate::error::SdkError;
use crate::events::Event;
use crate::store::{Contact, OutboxEntry};

impl Engine {
    /// Sends a text to `to`; returns once the server has it durably.
    pub(crate) async fn send_text(
        &self,
        conn: &mut Connection,
        to: &Handle,
        text: &str,
    ) -> Result<MessageId, SdkError> {
        // Older queued messages go first, so the recipient sees them in order.
        self.flush_outbox(conn).await?;
        let account = resolve(conn, to).await?;
        let peer = DeviceAddress {
            account,
            device: DeviceId::PRIMARY,
        };
        let mut session = self.session_for(conn, to, peer).await?;
        let content = Content::Text(Text {
            body: text.to_owned(),
            sender_handle: self.my_handle.clone(),
            category: None,
        });
        let plaintext = content.encode()?;
        let ciphertext = session.encrypt(&plaintext, &mut OsRng, now_ms())?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let entry = OutboxEntry {
            id: MessageId(id),
            to: peer,
            ciphertext,
        };
        let record = session.to_record();
        let stored = entry.clone();
        self.stored(move |s| s.commit_send(&record, &stored))
            .await?;
        // From here the message is safe in the outbox: a failure only delays it.
        match self.deliver_outbox_entry(conn, entry).await {
            Err(e) if is_permanent(&e) => Err(e),
            Err(e) => Err(SdkError::Queued(e.to_string())),
            Ok(id) => Ok(id),
        }
    }

    /// Resends everything still in the outbox, in order (after a reconnect or restart).
    pub(crate) async fn flush_outbox(&self, conn: &mut Connection) -> Result<(), SdkError> {
        let pending = self.stored(|s| s.outbox()).await?;
        for entry in pending {
            self.deliver_outbox_entry(conn, entry).await?;
        }
        Ok(())
    }

    async fn deliver_outbox_entry(
        &self,
        conn: &mut Connection,
        entry: OutboxEntry,
    ) -> Result<MessageId, SdkError> {
        let id = entry.id;
        let reply = conn
            .request(ClientBody::Send(Send {
                to: entry.to,
                id,
                ciphertext: entry.ciphertext,
                category: None,
            }))
            .await;
        match reply {
            Ok(ServerBody::Accepted(a)) if a.id == id => {
                self.stored(move |s| s.sent(&id)).await?;
                Ok(id)
            }
            Ok(other) => Err(SdkError::Protocol(format!("unexpected reply {other:?}"))),
            // Nothing will ever accept this message: drop it from the outbox.
            Err(e) if is_permanent(&e) => {
                self.stored(move |s| s.sent(&id)).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The stored session with `peer`, or a new one from its prekey bundle. Warns when the
    /// handle now names another account, or the account shows another identity.
    async fn session_for(
        &self,
        conn: &mut Connection,
        handle: &Handle,
        peer: DeviceAddress,
    ) -> Result<Session, SdkError> {
        let by_handle = {
            let handle = handle.clone();
            self.stored(move |s| s.contact_by_handle(&handle)).await?
        };
        if let Some(old) = &by_handle {
            if old.account != peer.account {
                self.emit(Event::IdentityChanged {
                    account: peer.account,
                    handle: Some(handle.clone()),
                })
                .await;
            }
        }
        if let Some(record) = self.stored(move |s| s.session(&peer)).await? {
            return Ok(Session::from_record(&record)?);
        }
        let bundle = match conn
            .request(ClientBody::FetchBundle(FetchBundle { address: peer }))
            .await?
        {
            ServerBody::Bundle(bundle) => bundle,
            other => return Err(SdkError::Protocol(format!("unexpected reply {other:?}"))),
        };
        let known = self.stored(move |s| s.contact(&peer.account)).await?;
        let verified = match &known {
            Some(contact) if contact.identity != bundle.identity => {
                self.emit(Event::IdentityChanged {
                    account: peer.account,
                    handle: Some(handle.clone()),
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
            handle: Some(handle.clone()),
            identity: bundle.identity,
            verified,
        };
        self.stored(move |s| s.save_contact(&contact)).await?;
        Ok(session)
    }
}

/// Whether the server refused a message for good (retrying cannot help).
fn is_permanent(error: &SdkError) -> bool {
    matches!(
        error,
        SdkError::Refused {
            code: ErrorCode::NotFound | ErrorCode::TooLarge,
            ..
        }
    )
}

/// The account a handle names.
pub(crate) async fn resolve(conn: &mut Connection, handle: &Handle) -> Result<AccountId, SdkError> {
    match conn
        .request(ClientBody::ResolveHandle(ResolveHandle {
            handle: handle.clone(),
        }))
        .await
    {
        Ok(ServerBody::Resolved(r)) => Ok(r.account),
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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
