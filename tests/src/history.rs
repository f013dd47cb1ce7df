//! A history recorder and checker for delivery guarantees.
//!
//! The sender records each message id when the server accepted it; the receiver records
//! each id as its application layer would see it (after dropping wire duplicates by
//! id, as a real client does). The checker counts what was accepted but never seen
//! (lost), seen twice by the application (duplicated), and seen out of acceptance order
//! (reordered).

use std::collections::{HashMap, HashSet};

use parley_protocol::ids::MessageId;

/// What one run accepted and delivered.
#[derive(Debug, Default)]
pub struct History {
    accepted: Vec<MessageId>,
    accepted_set: HashSet<MessageId>,
    delivered_to_app: Vec<MessageId>,
    seen: HashSet<MessageId>,
    wire_duplicates: u64,
}

/// The verdict of [`History::check`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Accepted, never delivered.
    pub lost: usize,
    /// Delivered to the application more than once.
    pub duplicated: usize,
    /// Delivered after a message accepted later.
    pub reordered: usize,
    /// Delivered but never accepted (allowed: the accept reply may have been lost).
    pub unconfirmed: usize,
}

impl Verdict {
    /// Nothing lost, duplicated, reordered or unconfirmed.
    pub const CLEAN: Verdict = Verdict {
        lost: 0,
        duplicated: 0,
        reordered: 0,
        unconfirmed: 0,
    };
}

impl History {
    /// The server answered `accepted` for `id` (a retry's duplicate answer is ignored).
    pub fn accepted(&mut self, id: MessageId) {
        if self.accepted_set.insert(id) {
            self.accepted.push(id);
        }
    }

    /// The wire delivered `id`; returns whether the application sees it (first time).
    pub fn delivered(&mut self, id: MessageId) -> bool {
        if self.seen.insert(id) {
            self.delivered_to_app.push(id);
            true
        } else {
            self.wire_duplicates += 1;
            false
        }
    }

    /// Deliveries the client dropped as duplicates (at-least-once on the wire).
    pub fn wire_duplicates(&self) -> u64 {
        self.wire_duplicates
    }

    /// Number of accepted messages.
    pub fn accepted_count(&self) -> usize {
        self.accepted.len()
    }

    /// Counts lost, duplicated and reordered messages.
    pub fn check(&self) -> Verdict {
        let position: HashMap<MessageId, usize> = self
            .accepted
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let mut verdict = Verdict {
            lost: self
                .accepted
                .iter()
                .filter(|id| !self.seen.contains(id))
                .count(),
            ..Verdict::default()
        };
        let mut counts: HashMap<MessageId, usize> = HashMap::new();
        for id in &self.delivered_to_app {
            *counts.entry(*id).or_default() += 1;
        }
        verdict.duplicated = counts.values().filter(|&&n| n > 1).count();
        let mut highest: Option<usize> = None;
        for id in &self.delivered_to_app {
            match position.get(id) {
                Some(&p) => {
                    if highest.is_some_and(|h| p < h) {
                        verdict.reordered += 1;
                    }
                    highest = Some(highest.map_or(p, |h| h.max(p)));
                }
                None => verdict.unconfirmed += 1,
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId([n; 16])
    }

    #[test]
    fn the_checker_finds_loss_duplication_and_reordering() {
        let mut h = History::default();
        for n in 1..=4 {
            h.accepted(id(n));
        }
        assert!(h.delivered(id(2)));
        assert!(h.delivered(id(1))); // reordered
        assert!(!h.delivered(id(1))); // wire duplicate, not shown
        assert!(h.delivered(id(4)));
        let v = h.check();
        assert_eq!(v.lost, 1, "3 was never delivered");
        assert_eq!(v.reordered, 1);
        assert_eq!(v.duplicated, 0);
        assert_eq!(h.wire_duplicates(), 1);
    }
}
