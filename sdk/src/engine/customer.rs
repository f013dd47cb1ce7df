//! What a business receives from its customers besides text: answers to its cards
//! (checked against the card it stored when sending), receipts (moving statuses
//! forward only), and signed consent records (kept in its ledger).

use parley_protocol::business::ConsentRecord;
use parley_protocol::e2e::content::{CardAnswer, Receipt, ReceiptKind};
use parley_protocol::ids::DeviceAddress;

use super::send::now_ms;
use super::Engine;
use crate::consent;
use crate::error::SdkError;
use crate::events::Event;
use crate::store::SendStatus;

impl Engine {
    /// Checks a card answer against the card this account sent to `from`, from this
    /// device or another one (whose `sent` copy this one kept): the answer is signed to
    /// the device that sent the card.
    pub(crate) async fn on_card_answer(
        &self,
        from: DeviceAddress,
        answer: CardAnswer,
    ) -> Result<Event, SdkError> {
        let card_id = answer.card;
        let invalid = |reason: &str| Event::InvalidCardAnswer {
            from,
            reason: reason.to_owned(),
        };
        let Some(sent) = self.stored(move |s| s.sent_card(&card_id)).await? else {
            return Ok(invalid("no card with this id was sent"));
        };
        if sent.to != from.account {
            return Ok(invalid("the card was sent to someone else"));
        }
        let sender = DeviceAddress {
            account: self.me.account,
            device: sent.sender.unwrap_or(self.me.device),
        };
        let card = sent.card;
        if let Err(e) = answer.verify(&from, &sender, &card) {
            return Ok(invalid(&e.to_string()));
        }
        if !self.stored(move |s| s.mark_card_answered(&card_id)).await? {
            return Ok(invalid("the card was already answered"));
        }
        Ok(Event::CardAnswered { from, card, answer })
    }

    /// Moves the statuses of the receipted messages forward; one event per change.
    pub(crate) async fn on_receipt(
        &self,
        from: DeviceAddress,
        receipt: Receipt,
    ) -> Result<Vec<Event>, SdkError> {
        let status = match receipt.kind {
            ReceiptKind::Delivered => SendStatus::Delivered,
            ReceiptKind::Read => SendStatus::Read,
        };
        let account = from.account;
        let advanced = self
            .stored(move |s| {
                let mut advanced = Vec::new();
                for id in receipt.messages {
                    if s.advance_status(&id, &account, status)? {
                        advanced.push(id);
                    }
                }
                Ok(advanced)
            })
            .await?;
        Ok(advanced
            .into_iter()
            .map(|id| Event::Status {
                id,
                to: account,
                status,
            })
            .collect())
    }

    /// Keeps a customer's signed consent record: its signature was checked when the
    /// content decoded; here, that the customer signed it about us.
    pub(crate) async fn on_consent(
        &self,
        from: DeviceAddress,
        record: ConsentRecord,
    ) -> Result<Option<Event>, SdkError> {
        if record.user() != from.account || record.business() != self.me.account {
            tracing::debug!("dropping a consent record about other accounts");
            return Ok(None);
        }
        let (user, me) = (from.account, self.me.account);
        let kept = record.clone();
        let records = self
            .stored(move |s| {
                s.add_consent(&kept)?;
                s.consent_between(&user, &me)
            })
            .await?;
        let in_force = consent::in_force(&records, &user, &me, now_ms());
        Ok(Some(Event::ConsentChanged {
            user,
            record,
            in_force,
        }))
    }
}
