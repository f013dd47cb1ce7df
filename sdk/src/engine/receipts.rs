//! Sending the receipts this client owes ([`crate::store::history`]): one encrypted
//! `receipt` per peer and kind, with up to [`MAX_RECEIPT_MESSAGES`] message ids, marked
//! as a receipt on the wire so that a receipt to a business opens no care window.
//!
//! A receipt goes through the ordinary send path (session, outbox, retries). The owed
//! rows are forgotten once the receipt is in the outbox, which from then on is the one
//! retry mechanism; a receipt that cannot be encrypted or that the relay refuses for good
//! (the peer blocks this account, or deleted its own) is dropped: receipts are a
//! courtesy, never worth stopping for.
//!
//! [`MAX_RECEIPT_MESSAGES`]: parley_protocol::e2e::content::MAX_RECEIPT_MESSAGES

use parley_protocol::e2e::content::{Content, Receipt};

use super::send::Prepared;
use super::waiting::WaitingSends;
use super::{Engine, Outgoing, Peer};
use crate::connection::Connection;
use crate::error::SdkError;

impl Engine {
    /// Sends every receipt owed, if this client sends receipts. Fails only on a broken
    /// connection or a storage failure.
    pub(crate) async fn flush_receipts(
        &self,
        conn: &mut Connection,
        waiting: &mut WaitingSends,
    ) -> Result<(), SdkError> {
        if !self.send_receipts {
            return Ok(());
        }
        let due = self.stored(|s| s.receipts_due()).await?;
        for batch in due {
            let out = Outgoing {
                to: Peer::Account(batch.to.account),
                content: Content::Receipt(Receipt {
                    kind: batch.kind,
                    messages: batch.messages.clone(),
                }),
                category: None,
                id: None,
            };
            let prepared = self.prepare(conn, &out, waiting).await;
            let forget = batch;
            match prepared {
                Err(e) if e.is_connection_error() || matches!(e, SdkError::Storage(_)) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a receipt could not be prepared: dropped");
                    self.stored(move |s| s.receipts_sent(&forget)).await?;
                }
                Ok(Prepared::Sent(_)) => self.stored(move |s| s.receipts_sent(&forget)).await?,
                Ok(Prepared::Stored(entry)) => {
                    self.stored(move |s| s.receipts_sent(&forget)).await?;
                    match self.deliver_outbox_entry(conn, entry).await {
                        Err(e) if e.is_connection_error() => return Err(e),
                        // Refused for good (dropped from the outbox), or left there for
                        // the next connection.
                        Err(e) => tracing::debug!(error = %e, "a receipt was not accepted"),
                        Ok(_) => {}
                    }
                }
            }
        }
        Ok(())
    }
}
