//! Business accounts as the engine sees them: fetching and checking a certificate
//! (pinning the authority key on first contact), and screening every incoming message
//! that claims a business category against the local consent ledger.

use parley_protocol::business::{AuthorityKey, BusinessCertificate, Category};
use parley_protocol::e2e::content::Content;
use parley_protocol::ids::{AccountId, DeviceAddress, Handle};
use parley_protocol::wire::client::{ClientBody, FetchBusiness};
use parley_protocol::wire::server::ServerBody;

use super::send::now_ms;
use super::Engine;
use crate::business_info::{cached_verdict, check_certificate, BusinessInfo};
use crate::connection::Connection;
use crate::consent;
use crate::error::SdkError;
use crate::store::CachedBusiness;

/// How long a fetched certificate is reused when screening messages before asking the
/// relay again (a revoked certificate stops counting within this time).
pub const BUSINESS_CACHE_MS: u64 = 10 * 60 * 1000;

/// What to do with an incoming message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Screen {
    /// Show it; `Some` category when it comes from a verified business.
    Admit(Option<Category>),
    /// Drop it unseen: a business message the ledger does not cover.
    Drop(Category),
}

impl Engine {
    /// Asks the relay about `account` and checks the answer locally.
    pub(crate) async fn fetch_business(
        &self,
        conn: &mut Connection,
        account: AccountId,
        handle: Option<Handle>,
    ) -> Result<BusinessInfo, SdkError> {
        let reply = match conn
            .request(ClientBody::FetchBusiness(FetchBusiness { account }))
            .await?
        {
            ServerBody::Business(b) => b,
            other => return Err(SdkError::Protocol(format!("unexpected reply {other:?}"))),
        };
        let (authority, pinned_now) = self.trusted_authority(reply.authority).await?;
        let now = now_ms();
        let cached = CachedBusiness {
            certificate: reply.certificate.clone(),
            suspended: reply.suspended,
            fetched_at_ms: now,
        };
        self.stored(move |s| s.cache_business(&account, &cached))
            .await?;
        Ok(BusinessInfo {
            account,
            handle,
            authority_fingerprint: authority.fingerprint(),
            pinned_now,
            suspended: reply.suspended,
            status: check_certificate(reply.certificate.as_ref(), &authority, &account, now),
        })
    }

    /// The authority key to check certificates with: the configured one, or the pinned
    /// one, or (first contact) the presented one, pinned now. A different key is refused.
    async fn trusted_authority(
        &self,
        presented: AuthorityKey,
    ) -> Result<(AuthorityKey, bool), SdkError> {
        let mismatch = |trusted: AuthorityKey| SdkError::AuthorityMismatch {
            pinned: trusted.fingerprint(),
            presented: presented.fingerprint(),
        };
        if let Some(configured) = self.authority {
            return if configured == presented {
                Ok((configured, false))
            } else {
                Err(mismatch(configured))
            };
        }
        match self.stored(|s| s.pinned_authority()).await? {
            Some(pinned) if pinned == presented => Ok((pinned, false)),
            Some(pinned) => Err(mismatch(pinned)),
            None => {
                self.stored(move |s| s.pin_authority(&presented)).await?;
                Ok((presented, true))
            }
        }
    }

    /// The verified certificate of `account`, from a recent cache entry or the relay.
    /// An authority mismatch counts as unverified.
    async fn verified_business(
        &self,
        conn: &mut Connection,
        account: AccountId,
    ) -> Result<Option<BusinessCertificate>, SdkError> {
        let now = now_ms();
        let cached = self.stored(move |s| s.cached_business(&account)).await?;
        if cached.is_some_and(|c| now.saturating_sub(c.fetched_at_ms) < BUSINESS_CACHE_MS) {
            let configured = self.authority;
            return self
                .stored(move |s| cached_verdict(s, configured.as_ref(), &account, now))
                .await;
        }
        match self.fetch_business(conn, account, None).await {
            Ok(info) => Ok(info.verified().cloned()),
            Err(e @ SdkError::AuthorityMismatch { .. }) => {
                tracing::warn!(error = %e, "cannot verify a business");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The client's double check. A message that claims a category (inside the
    /// encryption, or on the wire) must come from a verified business and be covered by
    /// the ledger; so must a message from an account known to be a verified business
    /// (as `conversation`). Anything else is between people.
    pub(crate) async fn screen(
        &self,
        conn: &mut Connection,
        from: DeviceAddress,
        wire_category: Option<Category>,
        content: Option<&Content>,
    ) -> Result<Screen, SdkError> {
        let inner = match content {
            Some(Content::Text(t)) => t.category,
            Some(Content::Card(c)) => c.category,
            // Answers, receipts and consent records are not business messages to a person.
            Some(_) | None => return Ok(Screen::Admit(None)),
        };
        let account = from.account;
        let claimed = inner.or(wire_category);
        let now = now_ms();
        let business = match claimed {
            Some(_) => self.verified_business(conn, account).await?,
            None => {
                let configured = self.authority;
                self.stored(move |s| cached_verdict(s, configured.as_ref(), &account, now))
                    .await?
            }
        };
        let category = claimed.unwrap_or(Category::Conversation);
        if business.is_none() {
            return Ok(match claimed {
                Some(category) => Screen::Drop(category),
                None => Screen::Admit(None),
            });
        }
        if inner.is_some() && wire_category.is_some() && inner != wire_category {
            return Ok(Screen::Drop(category));
        }
        let me = self.me.account;
        let (records, last_sent) = self
            .stored(move |s| Ok((s.consent_between(&me, &account)?, s.last_sent_to(&account)?)))
            .await?;
        let granted = consent::in_force(&records, &me, &account, now);
        Ok(if consent::admits(category, granted, last_sent, now) {
            Screen::Admit(Some(category))
        } else {
            Screen::Drop(category)
        })
    }
}
