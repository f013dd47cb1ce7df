//! The person's side of business accounts, on [`Client`]: consent (grant, revoke, list,
//! export), block, unblock, report, display name, and answering cards.
//!
//! A consent change is signed here with the identity key, given to the relay (which
//! enforces it), kept in the local ledger (which the engine's double check reads), then
//! sent end-to-end to the business so that it holds the signed record too.

use parley_protocol::business::{
    CategorySet, ConsentGrant, ConsentNonce, ConsentRecord, ConsentRevocation,
};
use parley_protocol::e2e::content::{CardAnswer, Content, Sync, VerifiedContact};
use parley_protocol::ids::{AccountId, Handle, MessageId};
use parley_protocol::wire::client::{
    Block, ClientBody, GrantConsent, Report, RevokeConsent, SetDisplayName, Unblock,
};
use parley_protocol::wire::server::ServerBody;
use rand_core::{OsRng, RngCore};

use crate::business_info::BusinessInfo;
use crate::client::Client;
use crate::consent;
use crate::engine::{blocking, now_ms, resolve_request, resolved, Outgoing, Peer};
use crate::error::SdkError;
use crate::store::ClientStore;

/// The outcome of a grant or revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentChange {
    /// The business's account.
    pub business: AccountId,
    /// Its handle.
    pub handle: Handle,
    /// Its certificate as checked for this change (always for a grant; for a
    /// revocation only when it could be checked: withdrawing consent never depends on it).
    pub info: Option<BusinessInfo>,
    /// What the relay now lets it send (its answer).
    pub in_force: CategorySet,
    /// Queued envelopes the relay deleted (a revocation).
    pub purged: u32,
    /// The signed record, as kept in the ledger.
    pub record: ConsentRecord,
    /// Why the business could not be sent its copy of the record, if it could not (the
    /// relay and the local ledger have it regardless).
    pub copy_not_sent: Option<String>,
}

/// One business in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentSummary {
    /// The business's account.
    pub business: AccountId,
    /// Its handle, if this client knows it.
    pub handle: Option<Handle>,
    /// The categories in force now, by the local ledger.
    pub in_force: CategorySet,
    /// How many records (grants and revocations) the ledger holds for it.
    pub records: usize,
}

impl Client {
    /// Grants `business` the right to send in `categories` (until `expires_at_ms`, if
    /// given). Refused locally unless the business's certificate verifies.
    pub async fn grant_consent(
        &self,
        business: &Handle,
        categories: CategorySet,
        expires_at_ms: Option<u64>,
    ) -> Result<ConsentChange, SdkError> {
        let info = self.verified_business(business).await?;
        let identity = self.identity().await?;
        let signed = ConsentGrant {
            user: identity.account_id(),
            business: info.account,
            categories,
            issued_at_ms: now_ms(),
            expires_at_ms,
            nonce: nonce(),
        }
        .sign(&identity)
        .map_err(|e| SdkError::InvalidInput(e.to_string()))?;
        let record = ConsentRecord::Grant(signed.clone());
        let reply = self
            .request(ClientBody::GrantConsent(GrantConsent { grant: signed }))
            .await?;
        // Kept only once the relay took it: a refused grant is not consent.
        self.keep(&record).await?;
        self.sync_devices(Sync::Consent(record.clone())).await;
        self.finish_change(business, Some(info), reply, record)
            .await
    }

    /// Withdraws `categories` (use [`CategorySet::ALL`] for everything) from `business`.
    /// The local ledger stops admitting them at once, whatever the relay answers. Works
    /// whatever the business's certificate (revoked, expired, unverifiable) says.
    pub async fn revoke_consent(
        &self,
        business: &Handle,
        categories: CategorySet,
    ) -> Result<ConsentChange, SdkError> {
        let account = self.resolve(business).await?;
        let info = self.business_info(Peer::Account(account)).await.ok();
        let identity = self.identity().await?;
        let signed = ConsentRevocation {
            user: identity.account_id(),
            business: account,
            categories,
            issued_at_ms: now_ms(),
            nonce: nonce(),
        }
        .sign(&identity)
        .map_err(|e| SdkError::InvalidInput(e.to_string()))?;
        let record = ConsentRecord::Revocation(signed.clone());
        self.keep(&record).await?;
        let reply = self
            .request(ClientBody::RevokeConsent(RevokeConsent {
                revocation: signed,
            }))
            .await?;
        self.sync_devices(Sync::Consent(record.clone())).await;
        self.finish_change(business, info, reply, record).await
    }

    /// Marks `account` verified (or not) after the person compared safety numbers, here
    /// and on this account's other devices. Fails if `account` is not a contact.
    pub async fn set_verified(&self, account: AccountId, verified: bool) -> Result<(), SdkError> {
        let contact = blocking(self.store(), move |s| {
            let mut c = s
                .contact(&account)?
                .ok_or_else(|| SdkError::InvalidInput(format!("no contact {account}")))?;
            c.verified = verified;
            s.save_contact(&c)?;
            Ok(c)
        })
        .await?;
        self.sync_devices(Sync::Verified(VerifiedContact {
            account,
            identity: contact.identity,
            verified,
        }))
        .await;
        Ok(())
    }

    /// Tells this account's other devices about account state changed here (queued for
    /// them while the relay cannot be reached). Never undoes the change it reports.
    async fn sync_devices(&self, sync: Sync) {
        let outgoing = Outgoing {
            to: Peer::Account(self.profile().account),
            content: Content::Sync(sync),
            category: None,
            id: None,
        };
        match self.send_content(outgoing).await {
            Ok(_) | Err(SdkError::Queued(_)) => {}
            Err(e) => tracing::warn!(error = %e, "could not tell this account's other devices"),
        }
    }

    /// The businesses in the ledger and what each may send now.
    pub async fn consent_list(&self) -> Result<Vec<ConsentSummary>, SdkError> {
        let me = self.profile().account;
        blocking(self.store(), move |s| consent_summaries(s, me)).await
    }

    /// The whole ledger as JSON (see [`consent::export`]); check it with
    /// [`consent::verify_ledger`].
    pub async fn consent_export(&self) -> Result<String, SdkError> {
        let records = blocking(self.store(), |s| s.consent_records()).await?;
        consent::export(&records, now_ms())
    }

    /// Blocks `who`: the relay refuses its envelopes to this account.
    pub async fn block(&self, who: &Handle) -> Result<AccountId, SdkError> {
        let account = self.resolve(who).await?;
        self.request(ClientBody::Block(Block { account })).await?;
        Ok(account)
    }

    /// Lifts a block.
    pub async fn unblock(&self, who: &Handle) -> Result<AccountId, SdkError> {
        let account = self.resolve(who).await?;
        self.request(ClientBody::Unblock(Unblock { account }))
            .await?;
        Ok(account)
    }

    /// Reports `who` to the operator (reports count against a business).
    pub async fn report(&self, who: &Handle) -> Result<AccountId, SdkError> {
        let account = self.resolve(who).await?;
        self.request(ClientBody::Report(Report { account })).await?;
        Ok(account)
    }

    /// Sets (or with `None` clears) the display name others see.
    pub async fn set_display_name(&self, name: Option<String>) -> Result<(), SdkError> {
        self.request(ClientBody::SetDisplayName(SetDisplayName {
            display_name: name,
        }))
        .await
        .map(|_| ())
    }

    /// Answers the card received as message `message` with `action`: signs the answer
    /// over the card as stored here and sends it to the card's sender.
    pub async fn answer_card(
        &self,
        message: &MessageId,
        action: &str,
    ) -> Result<MessageId, SdkError> {
        let id = *message;
        let entry = blocking(self.store(), move |s| s.inbox_message(&id))
            .await?
            .ok_or_else(|| SdkError::InvalidInput(format!("no message {id} here")))?;
        let card = entry
            .card
            .ok_or_else(|| SdkError::InvalidInput(format!("message {id} is not a card")))?;
        let identity = self.identity().await?;
        let me = self.address();
        let answer = CardAnswer::sign(&identity, &me, &entry.from, &card, action, now_ms())
            .map_err(|e| {
                let offered: Vec<&str> = card.actions.iter().map(|a| a.id.as_str()).collect();
                SdkError::InvalidInput(format!(
                    "cannot answer this card with {action:?} ({e}); its actions are: {}",
                    offered.join(", ")
                ))
            })?;
        let n = entry.n;
        if let Some(first) = blocking(self.store(), move |s| s.card_answer(n)).await? {
            return Err(SdkError::InvalidInput(format!(
                "this card was already answered with {first:?}, and an answer cannot be \
                 changed; nothing was sent"
            )));
        }
        let sent = self
            .send_content(Outgoing {
                to: Peer::Account(entry.from.account),
                content: Content::CardAnswer(answer),
                category: None,
                id: None,
            })
            .await;
        // A queued answer goes out on the next connection: it is an answer too.
        if matches!(sent, Ok(_) | Err(SdkError::Queued(_))) {
            let action = action.to_owned();
            blocking(self.store(), move |s| s.set_card_answer(n, &action)).await?;
        }
        sent
    }

    /// The account behind a handle.
    /// Keeps the display name the relay reports for it ([`ClientStore::display_name`]).
    pub async fn resolve(&self, handle: &Handle) -> Result<AccountId, SdkError> {
        let (account, name) = resolved(handle, self.request(resolve_request(handle)).await)?;
        blocking(self.store(), move |s| {
            s.remember_display_name(&account, name.as_deref())
        })
        .await?;
        Ok(account)
    }

    async fn verified_business(&self, business: &Handle) -> Result<BusinessInfo, SdkError> {
        let info = self.business_info(Peer::Handle(business.clone())).await?;
        if info.verified().is_none() {
            return Err(SdkError::InvalidInput(format!(
                "{business} is not a verified business; consent is only for verified businesses"
            )));
        }
        Ok(info)
    }

    async fn keep(&self, record: &ConsentRecord) -> Result<(), SdkError> {
        let record = record.clone();
        blocking(self.store(), move |s| s.add_consent(&record).map(|_| ())).await
    }

    async fn finish_change(
        &self,
        handle: &Handle,
        info: Option<BusinessInfo>,
        reply: ServerBody,
        record: ConsentRecord,
    ) -> Result<ConsentChange, SdkError> {
        let ServerBody::ConsentUpdated(updated) = reply else {
            return Err(SdkError::Protocol(format!("unexpected reply {reply:?}")));
        };
        let copy = self
            .send_content(Outgoing {
                to: Peer::Handle(handle.clone()),
                content: Content::Consent(record.clone()),
                category: None,
                id: None,
            })
            .await;
        Ok(ConsentChange {
            business: record.business(),
            handle: handle.clone(),
            info,
            in_force: updated.categories,
            purged: updated.purged,
            record,
            copy_not_sent: copy.err().map(|e| e.to_string()),
        })
    }
}

/// The businesses `me` gave consent to, from the local ledger alone (no network).
pub fn consent_summaries(
    store: &ClientStore,
    me: AccountId,
) -> Result<Vec<ConsentSummary>, SdkError> {
    let records = store.consent_records()?;
    let mut businesses: Vec<AccountId> = Vec::new();
    for r in records.iter().filter(|r| r.user() == me) {
        if !businesses.contains(&r.business()) {
            businesses.push(r.business());
        }
    }
    let now = now_ms();
    businesses
        .into_iter()
        .map(|business| {
            Ok(ConsentSummary {
                business,
                handle: store.contact(&business)?.and_then(|c| c.handle),
                in_force: consent::in_force(&records, &me, &business, now),
                records: records
                    .iter()
                    .filter(|r| r.user() == me && r.business() == business)
                    .count(),
            })
        })
        .collect()
}

fn nonce() -> ConsentNonce {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    ConsentNonce(bytes)
}
