//! What the queue table may hold for a device, where the process knows it: lets an ack
//! whose envelopes were all held skip the queue's `DELETE` (`holds`; ADR 0005, step 6).
//!
//! For each device it tracks, the lowest seq the queue may hold for it (or that it holds
//! nothing). It is learnt by the writer after an ack's delete, and moved down by every
//! write to the queue, in the writer's order, before that write commits; an envelope is
//! handed to its recipient only after its commit, and an ack never passes what was
//! handed over, so an ack below the lowest queued seq has nothing to delete. A device
//! not tracked may hold anything. Forgetting is always safe (the next ack deletes and
//! learns again), so a failed batch forgets everything, and so does a full table.

use std::collections::HashMap;

use parley_protocol::ids::{DeviceAddress, Seq};

/// Most devices tracked; past it the table starts again empty (each device's next ack
/// then deletes as without holding, and learns its queue again). At about 50 bytes a
/// device, 256 Ki devices is 13 MiB at most, above the connections one process serves.
pub(super) const QUEUED_DEVICES_MAX: usize = 1 << 18;

/// The lowest seq the queue may hold, per device.
#[derive(Debug, Default)]
pub(super) struct QueuedSeqs {
    /// `None`: the queue holds nothing for the device.
    lowest: HashMap<DeviceAddress, Option<Seq>>,
}

impl QueuedSeqs {
    /// The writer wrote `seq` to `to`'s queue (in a batch not committed yet).
    pub(super) fn queued(&mut self, to: &DeviceAddress, seq: Seq) {
        if let Some(lowest) = self.lowest.get_mut(to) {
            *lowest = Some(lowest.map_or(seq, |l| l.min(seq)));
        }
    }

    /// The writer deleted `to`'s queue through some seq and read the lowest seq left.
    pub(super) fn learned(&mut self, to: DeviceAddress, lowest: Option<Seq>) {
        if self.lowest.len() >= QUEUED_DEVICES_MAX && !self.lowest.contains_key(&to) {
            self.lowest.clear();
        }
        self.lowest.insert(to, lowest);
    }

    /// Whether an ack of `to` through `through` may find rows to delete.
    pub(super) fn must_delete(&self, to: &DeviceAddress, through: Seq) -> bool {
        match self.lowest.get(to) {
            None => true,
            Some(lowest) => lowest.is_some_and(|l| l <= through),
        }
    }

    /// Forgets everything (a batch that learnt or wrote something failed).
    pub(super) fn clear(&mut self) {
        self.lowest.clear();
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::test_ids::device;

    #[test]
    fn an_untracked_device_always_deletes() {
        let mut q = QueuedSeqs::default();
        q.queued(&device(1), Seq(3));
        assert!(q.must_delete(&device(1), Seq(1)));
    }

    #[test]
    fn a_device_known_empty_deletes_only_once_something_is_queued_below_the_ack() {
        let mut q = QueuedSeqs::default();
        q.learned(device(1), None);
        assert!(!q.must_delete(&device(1), Seq(100)));
        q.queued(&device(1), Seq(7));
        q.queued(&device(1), Seq(9));
        assert!(!q.must_delete(&device(1), Seq(6)));
        assert!(q.must_delete(&device(1), Seq(7)));
        q.learned(device(1), Some(Seq(9)));
        assert!(!q.must_delete(&device(1), Seq(8)));
        assert!(q.must_delete(&device(1), Seq(9)));
        assert!(
            q.must_delete(&device(2), Seq(1)),
            "another device is not tracked"
        );
    }

    #[test]
    fn clearing_forgets_what_was_learnt() {
        let mut q = QueuedSeqs::default();
        q.learned(device(1), None);
        q.clear();
        assert!(q.must_delete(&device(1), Seq(1)));
    }
}
