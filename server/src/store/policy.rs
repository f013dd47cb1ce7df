//! The send policy: what a person or a business may send, decided once for every store.
//!
//! A store reads the [`SendFacts`] of an envelope inside the transaction that will store
//! it (block, the sender's standing as a business, consent or care window, its rate and
//! reach counters) and calls [`decide`]. The decision is a pure function of the facts, the
//! envelope's claimed category, the time and the configured [`SendPolicy`]; it returns the
//! outcome and the [`Effects`] the store then writes in the same transaction (open a care
//! window, take a rate token, count a recipient in the daily reach). So a revocation,
//! block or suspension committed before a send is in force for it on every store, and the
//! rules are written here once (docs/protocol.md §14, "What a business may send").
//!
//! An account with a row of business standing is a business, whatever the state of its
//! certificate: while the certificate is revoked or expired it may still answer people in
//! `conversation`, but nothing else. An account without that row is a person, and a
//! person's send carries no category ([`EnqueueOutcome::NotABusiness`]). Refusals that would tell a business whether a person
//! uses Parley, opted in, or blocked it all return [`EnqueueOutcome::Refused`].

use parley_protocol::business::{Category, CategorySet};

use super::EnqueueOutcome;

/// The rolling window of the daily reach.
pub const REACH_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// The rules a send is checked against, from the configuration. Given to a store once,
/// when it opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendPolicy {
    /// How long after a person's message the business may reply in `conversation`.
    pub care_window_ms: u64,
    /// Daily reach per tier.
    pub reach_tiers: ReachTiers,
    /// Messages per second per business (a token bucket with this burst).
    pub business_sends_per_second: u32,
}

impl Default for SendPolicy {
    /// The server's defaults: a 24 h care window, the default tiers, 80 per second.
    fn default() -> SendPolicy {
        SendPolicy {
            care_window_ms: 24 * 60 * 60 * 1000,
            reach_tiers: ReachTiers::default(),
            business_sends_per_second: 80,
        }
    }
}

/// The daily reach of each business tier: `250,2000,10000,100000`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReachTiers(pub Vec<u32>);

impl ReachTiers {
    /// Unique recipients per 24 h for `tier`; `None` when unlimited (a tier beyond the
    /// list).
    pub fn reach(&self, tier: u32) -> Option<u32> {
        usize::try_from(tier)
            .ok()
            .and_then(|t| self.0.get(t))
            .copied()
    }
}

impl Default for ReachTiers {
    fn default() -> ReachTiers {
        ReachTiers(vec![250, 2_000, 10_000, 100_000])
    }
}

impl std::str::FromStr for ReachTiers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let tiers = text
            .split(',')
            .map(|t| t.trim().parse::<u32>())
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| {
                format!("'{text}' is not a list of recipient counts (e.g. 250,2000,10000)")
            })?;
        if tiers.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("'{text}': tiers must not decrease"));
        }
        Ok(ReachTiers(tiers))
    }
}

impl std::fmt::Display for ReachTiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// What the relay knows of a sending business.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Categories its certificate allows; empty while it is revoked or expired.
    pub categories: CategorySet,
    /// Its reach tier.
    pub tier: u32,
    /// Whether it is suspended.
    pub suspended: bool,
}

impl Standing {
    /// A business's standing as a store keeps it: the category bits of its certificate,
    /// whether that certificate is in force (neither revoked nor expired), its tier and
    /// whether it is suspended. A certificate out of force allows no category.
    pub fn from_stored(
        category_bits: i64,
        certificate_in_force: bool,
        tier: i64,
        suspended: bool,
    ) -> Standing {
        let categories = u8::try_from(category_bits)
            .ok()
            .and_then(CategorySet::from_bits)
            .filter(|_| certificate_in_force)
            .unwrap_or(CategorySet::EMPTY);
        Standing {
            categories,
            tier: u32::try_from(tier).unwrap_or(0),
            suspended,
        }
    }
}

/// A person's consent to a business in one category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// No grant in force for the category.
    Absent,
    /// Granted, until this time (ms since the epoch) or until revoked.
    Granted {
        /// When the grant lapses; `None` until revoked.
        expires_at_ms: Option<u64>,
    },
}

/// The business's daily reach, as it stands before this send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// The recipient was already counted within the window (sending again is free).
    pub already_counted: bool,
    /// Recipients counted within the window.
    pub recipients: u32,
    /// When the oldest of them was counted (ms since the epoch).
    pub oldest_ms: Option<u64>,
}

/// What a store reads about one envelope before [`decide`]. Facts that only a business's
/// send needs (consent, care window, rate, reach) may be left at their defaults when the
/// sender is not a business: [`decide`] does not look at them then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendFacts {
    /// The recipient device is registered.
    pub recipient_exists: bool,
    /// The sender's standing, if it is a business.
    pub sender_business: Option<Standing>,
    /// The recipient account is a business.
    pub recipient_is_business: bool,
    /// The recipient blocks the sender.
    pub blocked: bool,
    /// The recipient's consent to the sender in the claimed category (not read for
    /// `conversation` or no category).
    pub consent: Consent,
    /// When the recipient last wrote to the sender (the care window), if ever.
    pub care_window_last_ms: Option<u64>,
    /// The business is over its messages per second: a token frees in this many ms.
    pub rate_limited_for_ms: Option<u64>,
    /// The business's daily reach (not read for `conversation`).
    pub reach: Reach,
    /// The sender marked the envelope as a receipt (the `receipt` field of `send`): a
    /// person's receipt to a business does not open the care window, only the person's
    /// messages do. Not a fact the store reads: it copies it from the envelope.
    pub receipt: bool,
}

impl SendFacts {
    /// Facts of a send between people to an existing device, nothing blocked: the base a
    /// store fills in.
    pub fn between_people() -> SendFacts {
        SendFacts {
            recipient_exists: true,
            sender_business: None,
            recipient_is_business: false,
            blocked: false,
            consent: Consent::Absent,
            care_window_last_ms: None,
            rate_limited_for_ms: None,
            reach: Reach::default(),
            receipt: false,
        }
    }
}

/// What the store writes, in the same transaction, for an accepted send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// A person wrote to a business (a message, not a receipt): (re)open the care
    /// window of (sender, recipient) at the send's time.
    pub open_care_window: bool,
    /// Take one token of the business's messages-per-second bucket.
    pub take_rate_token: bool,
    /// Count the recipient in the business's daily reach at the send's time.
    pub count_reach: bool,
}

/// The policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store nothing and answer this.
    Refuse(EnqueueOutcome),
    /// Store it (with its category when from a business) and write the effects.
    Accept {
        /// The sender is a business: the envelope keeps its category.
        from_business: bool,
        /// What else to write.
        effects: Effects,
    },
}

/// Decides a send of `category` (as claimed by the sender) at `now_ms`, given its facts.
pub fn decide(
    facts: &SendFacts,
    category: Option<Category>,
    now_ms: u64,
    policy: &SendPolicy,
) -> Decision {
    let refuse = Decision::Refuse;
    let Some(business) = facts.sender_business else {
        // A person. Categories are a business's: a person's category would make the
        // recipient's client drop the message as a business message without consent.
        if category.is_some() {
            return refuse(EnqueueOutcome::NotABusiness);
        }
        if !facts.recipient_exists {
            return refuse(EnqueueOutcome::UnknownRecipient);
        }
        if facts.blocked {
            return refuse(EnqueueOutcome::Blocked);
        }
        return Decision::Accept {
            from_business: false,
            effects: Effects {
                open_care_window: facts.recipient_is_business && !facts.receipt,
                ..Effects::default()
            },
        };
    };
    if business.suspended {
        return refuse(EnqueueOutcome::Suspended);
    }
    let Some(category) = category else {
        return refuse(EnqueueOutcome::CategoryNotAllowed);
    };
    let conversation = category == Category::Conversation;
    if !conversation && !business.categories.contains(category) {
        return refuse(EnqueueOutcome::CategoryNotAllowed);
    }
    if !facts.recipient_exists || facts.blocked {
        return refuse(EnqueueOutcome::Refused);
    }
    let allowed = if conversation {
        facts
            .care_window_last_ms
            .is_some_and(|last| last > now_ms.saturating_sub(policy.care_window_ms))
    } else {
        match facts.consent {
            Consent::Absent => false,
            Consent::Granted { expires_at_ms } => expires_at_ms.is_none_or(|at| at > now_ms),
        }
    };
    if !allowed {
        return refuse(EnqueueOutcome::Refused);
    }
    if let Some(ms) = facts.rate_limited_for_ms {
        return refuse(EnqueueOutcome::RateLimited(ms.max(1)));
    }
    let mut count_reach = false;
    if !conversation && !facts.reach.already_counted {
        if let Some(limit) = policy.reach_tiers.reach(business.tier) {
            if facts.reach.recipients >= limit {
                let frees_at = facts
                    .reach
                    .oldest_ms
                    .unwrap_or(0)
                    .saturating_add(REACH_WINDOW_MS);
                return refuse(EnqueueOutcome::ReachExhausted(
                    frees_at.saturating_sub(now_ms).max(1),
                ));
            }
            count_reach = true;
        }
    }
    Decision::Accept {
        from_business: true,
        effects: Effects {
            open_care_window: false,
            take_rate_token: true,
            count_reach,
        },
    }
}

/// Where the daily reach window of a send at `now_ms` starts: recipients counted after
/// it count.
pub fn reach_window_start(now_ms: u64) -> u64 {
    now_ms.saturating_sub(REACH_WINDOW_MS)
}

/// Code of `conversation` in a stored category (grantable categories use their bit).
const CONVERSATION_CODE: i64 = 16;

/// How a category is stored (in a queue row or a consent row): its [`CategorySet`] bit,
/// or 16 for `conversation`.
pub fn category_code(category: Category) -> i64 {
    match category {
        Category::Conversation => CONVERSATION_CODE,
        c => i64::from(CategorySet::of([c]).bits()),
    }
}

/// The category a stored code names.
pub fn category_from_code(code: i64) -> Option<Category> {
    if code == CONVERSATION_CODE {
        return Some(Category::Conversation);
    }
    let bits = u8::try_from(code).ok()?;
    let set = CategorySet::from_bits(bits)?;
    let mut one = set.iter();
    match (one.next(), one.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 10 * REACH_WINDOW_MS;

    fn business(categories: &[Category]) -> Standing {
        Standing {
            categories: CategorySet::of(categories.iter().copied()),
            tier: 0,
            suspended: false,
        }
    }

    fn from_business(categories: &[Category]) -> SendFacts {
        SendFacts {
            sender_business: Some(business(categories)),
            ..SendFacts::between_people()
        }
    }

    fn policy() -> SendPolicy {
        SendPolicy {
            reach_tiers: ReachTiers(vec![2]),
            ..SendPolicy::default()
        }
    }

    fn refused(d: Decision) -> Option<EnqueueOutcome> {
        match d {
            Decision::Refuse(o) => Some(o),
            Decision::Accept { .. } => None,
        }
    }

    #[test]
    fn people_reach_existing_devices_unless_blocked() {
        let mut facts = SendFacts::between_people();
        assert_eq!(
            decide(&facts, None, NOW, &policy()),
            Decision::Accept {
                from_business: false,
                effects: Effects::default()
            }
        );
        facts.recipient_is_business = true;
        let Decision::Accept { effects, .. } = decide(&facts, None, NOW, &policy()) else {
            panic!("a person may write to a business");
        };
        assert!(effects.open_care_window);
        let receipt = SendFacts {
            receipt: true,
            ..facts
        };
        let Decision::Accept { effects, .. } = decide(&receipt, None, NOW, &policy()) else {
            panic!("a person may send a business a receipt");
        };
        assert!(!effects.open_care_window, "a receipt opens no care window");
        facts.blocked = true;
        assert_eq!(
            refused(decide(&facts, None, NOW, &policy())),
            Some(EnqueueOutcome::Blocked)
        );
        facts.recipient_exists = false;
        assert_eq!(
            refused(decide(&facts, None, NOW, &policy())),
            Some(EnqueueOutcome::UnknownRecipient)
        );
    }

    #[test]
    fn a_person_may_not_claim_a_category() {
        let mut facts = SendFacts::between_people();
        for category in [Category::Marketing, Category::Conversation] {
            assert_eq!(
                refused(decide(&facts, Some(category), NOW, &policy())),
                Some(EnqueueOutcome::NotABusiness)
            );
        }
        facts.recipient_exists = false;
        assert_eq!(
            refused(decide(
                &facts,
                Some(Category::SecurityAlert),
                NOW,
                &policy()
            )),
            Some(EnqueueOutcome::NotABusiness),
            "the sender's own standing is checked first"
        );
    }

    #[test]
    fn a_business_needs_consent_for_its_category() {
        let alert = Some(Category::SecurityAlert);
        let mut facts = from_business(&[Category::SecurityAlert]);
        assert_eq!(
            refused(decide(&facts, alert, NOW, &policy())),
            Some(EnqueueOutcome::Refused)
        );
        facts.consent = Consent::Granted {
            expires_at_ms: None,
        };
        assert!(refused(decide(&facts, alert, NOW, &policy())).is_none());
        facts.consent = Consent::Granted {
            expires_at_ms: Some(NOW),
        };
        assert_eq!(
            refused(decide(&facts, alert, NOW, &policy())),
            Some(EnqueueOutcome::Refused),
            "a grant expiring now has lapsed"
        );
        assert_eq!(
            refused(decide(&facts, Some(Category::Marketing), NOW, &policy())),
            Some(EnqueueOutcome::CategoryNotAllowed)
        );
        assert_eq!(
            refused(decide(&facts, None, NOW, &policy())),
            Some(EnqueueOutcome::CategoryNotAllowed)
        );
    }

    #[test]
    fn unknown_blocked_and_not_opted_in_look_the_same_to_a_business() {
        let alert = Some(Category::SecurityAlert);
        let granted = Consent::Granted {
            expires_at_ms: None,
        };
        let mut unknown = from_business(&[Category::SecurityAlert]);
        unknown.recipient_exists = false;
        let mut blocked = from_business(&[Category::SecurityAlert]);
        blocked.consent = granted;
        blocked.blocked = true;
        let not_opted_in = from_business(&[Category::SecurityAlert]);
        for facts in [unknown, blocked, not_opted_in] {
            assert_eq!(
                refused(decide(&facts, alert, NOW, &policy())),
                Some(EnqueueOutcome::Refused)
            );
        }
    }

    #[test]
    fn conversation_only_within_the_care_window() {
        let conversation = Some(Category::Conversation);
        let mut facts = from_business(&[]);
        let window = policy().care_window_ms;
        assert_eq!(
            refused(decide(&facts, conversation, NOW, &policy())),
            Some(EnqueueOutcome::Refused)
        );
        facts.care_window_last_ms = Some(NOW - window + 1);
        let Decision::Accept { effects, .. } = decide(&facts, conversation, NOW, &policy()) else {
            panic!("inside the window");
        };
        assert!(
            !effects.count_reach,
            "conversations do not count in the reach"
        );
        facts.care_window_last_ms = Some(NOW - window);
        assert_eq!(
            refused(decide(&facts, conversation, NOW, &policy())),
            Some(EnqueueOutcome::Refused)
        );
    }

    #[test]
    fn suspension_and_rate_refuse_before_anything_is_counted() {
        let alert = Some(Category::SecurityAlert);
        let mut facts = from_business(&[Category::SecurityAlert]);
        facts.consent = Consent::Granted {
            expires_at_ms: None,
        };
        facts.rate_limited_for_ms = Some(0);
        assert_eq!(
            refused(decide(&facts, alert, NOW, &policy())),
            Some(EnqueueOutcome::RateLimited(1))
        );
        facts.sender_business = facts.sender_business.map(|s| Standing {
            suspended: true,
            ..s
        });
        assert_eq!(
            refused(decide(&facts, alert, NOW, &policy())),
            Some(EnqueueOutcome::Suspended)
        );
    }

    #[test]
    fn the_daily_reach_counts_new_recipients_up_to_the_tier() {
        let alert = Some(Category::SecurityAlert);
        let mut facts = from_business(&[Category::SecurityAlert]);
        facts.consent = Consent::Granted {
            expires_at_ms: None,
        };
        facts.reach = Reach {
            already_counted: false,
            recipients: 1,
            oldest_ms: Some(NOW - 1000),
        };
        let Decision::Accept { effects, .. } = decide(&facts, alert, NOW, &policy()) else {
            panic!("one slot left");
        };
        assert!(effects.count_reach && effects.take_rate_token);
        facts.reach.recipients = 2;
        assert_eq!(
            refused(decide(&facts, alert, NOW, &policy())),
            Some(EnqueueOutcome::ReachExhausted(REACH_WINDOW_MS - 1000))
        );
        facts.reach.already_counted = true;
        let Decision::Accept { effects, .. } = decide(&facts, alert, NOW, &policy()) else {
            panic!("a recipient already counted costs nothing");
        };
        assert!(!effects.count_reach);
    }

    #[test]
    fn category_codes_round_trip() {
        for c in [
            Category::SecurityAlert,
            Category::Transactional,
            Category::Authentication,
            Category::Marketing,
            Category::Conversation,
        ] {
            assert_eq!(category_from_code(category_code(c)), Some(c));
        }
        assert_eq!(category_from_code(3), None);
        assert_eq!(category_from_code(-1), None);
    }
}
