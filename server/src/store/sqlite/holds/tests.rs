//! The registry alone: bounds, the two ways to settle, a failed batch, retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::ids::{DeviceAddress, MessageId, Seq};

use super::{DedupRow, HeldCopy, HoldLimits, Holds, Settlement};
use crate::metrics::StoreMetrics;
use crate::store::{StoreError, StoredEnvelope};

const DEADLINE: Duration = Duration::from_millis(50);

fn holds(max_per_device: usize, max_device_bytes: usize, max_total_bytes: usize) -> Holds {
    let limits = HoldLimits {
        deadline: DEADLINE,
        max_per_device,
        max_device_bytes,
        max_total_bytes,
    };
    Holds::new(limits, Arc::new(StoreMetrics::default()))
}

use crate::test_ids::device;

fn row(to: u8, seq: u64, bytes: usize) -> HeldCopy {
    HeldCopy {
        to: device(to),
        envelope: StoredEnvelope {
            seq: Seq(seq),
            from: device(9),
            id: MessageId([seq as u8; 16]),
            accepted_at_ms: 1,
            ciphertext: vec![0; bytes],
            category: None,
        },
    }
}

/// The dedup row of the send whose first copy is `copy`, sent by device row 9.
fn dedup(copy: &HeldCopy) -> DedupRow {
    let seq = copy.envelope.seq.0;
    DedupRow {
        sender: 9,
        id: copy.envelope.id,
        sealed_seq: seq as i64,
        digest: vec![seq as u8; 16],
        at_ms: 0,
    }
}

/// Holds a send of these copies if there is room, as the writer does.
fn try_hold_all(holds: &Holds, copies: Vec<HeldCopy>, now: Instant) -> Option<Settlement> {
    let sizes: Vec<(DeviceAddress, usize)> = copies
        .iter()
        .map(|c| (c.to, c.envelope.ciphertext.len()))
        .collect();
    let dedup = dedup(&copies[0]);
    holds.room(&sizes).then(|| holds.hold(copies, dedup, now))
}

/// Holds a send of one copy if there is room.
fn try_hold(holds: &Holds, row: HeldCopy, now: Instant) -> Option<Settlement> {
    try_hold_all(holds, vec![row], now)
}

fn settled(settlement: &mut Settlement) -> Option<Result<(), StoreError>> {
    settlement.try_recv().ok()
}

#[test]
fn past_the_per_device_count_the_send_is_persisted_first() {
    let h = holds(2, 1_000, 10_000);
    let now = Instant::now();
    assert!(try_hold(&h, row(1, 1, 10), now).is_some());
    assert!(try_hold(&h, row(1, 2, 10), now).is_some());
    assert!(
        try_hold(&h, row(1, 3, 10), now).is_none(),
        "a third for device 1"
    );
    assert!(
        try_hold(&h, row(2, 1, 10), now).is_some(),
        "another device has room"
    );
    assert_eq!(h.metrics.hold_refused.get("per_device"), 1);
    assert_eq!(h.metrics.held_envelopes.get(), 3);
}

#[test]
fn past_the_byte_bounds_the_send_is_persisted_first() {
    let h = holds(100, 100, 150);
    let now = Instant::now();
    assert!(
        try_hold(&h, row(1, 1, 101), now).is_none(),
        "larger than a device's bytes"
    );
    assert!(try_hold(&h, row(1, 2, 80), now).is_some());
    assert!(
        try_hold(&h, row(1, 3, 30), now).is_none(),
        "device 1 would hold 110 bytes"
    );
    assert!(try_hold(&h, row(2, 1, 60), now).is_some());
    assert!(
        try_hold(&h, row(3, 1, 20), now).is_none(),
        "160 bytes in all"
    );
    assert_eq!(h.metrics.hold_refused.get("per_device"), 2);
    assert_eq!(h.metrics.hold_refused.get("total"), 1);
    assert_eq!(h.metrics.held_bytes.get(), 140);
}

/// The seqs of the dedup rows waiting for the writer, sorted.
fn unrecorded_seqs(h: &Holds) -> Vec<u64> {
    let rows = h.take_unrecorded();
    let mut seqs: Vec<u64> = rows.iter().map(|r| r.sealed_seq as u64).collect();
    seqs.sort_unstable();
    h.recording(rows);
    seqs
}

#[test]
fn an_ack_settles_what_it_covers_and_keeps_their_dedup_rows_for_the_writer() {
    let h = holds(10, 1_000, 10_000);
    let now = Instant::now();
    let mut s: Vec<Settlement> = (1..=3)
        .map(|seq| try_hold(&h, row(1, seq, 10), now).unwrap())
        .collect();
    h.batch_committed();
    let (acked, _) = h.acked(&device(1), Seq(2), now);
    assert_eq!(settled(&mut s[0]), None, "answered by `settle`");
    acked.settle();
    assert_eq!(settled(&mut s[0]), Some(Ok(())));
    assert_eq!(settled(&mut s[1]), Some(Ok(())));
    assert_eq!(settled(&mut s[2]), None, "seq 3 is still held");
    assert!(h.holds_for(&device(1)));
    assert_eq!(h.metrics.held_settled.get("ack"), 2);
    assert_eq!(
        h.next_deadline(),
        Some(now + DEADLINE),
        "the dedup rows are written by a deadline too"
    );
    assert_eq!(unrecorded_seqs(&h), vec![1, 2]);
    h.acked(&device(2), Seq(9), now).0.settle();
    assert_eq!(
        h.metrics.held_settled.get("ack"),
        2,
        "nothing held for device 2"
    );
}

#[test]
fn the_dedup_rows_of_a_failed_batch_are_written_again() {
    let h = holds(10, 1_000, 10_000);
    let now = Instant::now();
    try_hold(&h, row(1, 1, 10), now).unwrap();
    h.batch_committed();
    h.acked(&device(1), Seq(1), now).0.settle();
    assert_eq!(unrecorded_seqs(&h), vec![1]);
    assert!(h.take_unrecorded().is_empty(), "taken by the running batch");
    h.batch_failed(&StoreError::Full, now);
    assert_eq!(unrecorded_seqs(&h), vec![1], "back to be written again");
    h.batch_committed();
    assert!(h.take_unrecorded().is_empty(), "written");
}

#[test]
fn an_ack_deletes_unless_the_queue_is_known_to_hold_nothing_it_covers() {
    let h = holds(10, 1_000, 10_000);
    let now = Instant::now();
    try_hold(&h, row(1, 1, 10), now).unwrap();
    h.batch_committed();
    let (acked, needs) = h.acked(&device(1), Seq(1), now);
    acked.settle();
    assert!(needs.delete, "nothing is known of the queue yet");
    h.learned(device(1), None);
    try_hold(&h, row(1, 2, 10), now).unwrap();
    try_hold(&h, row(1, 3, 10), now).unwrap();
    h.batch_committed();
    let (acked, needs) = h.acked(&device(1), Seq(2), now);
    acked.settle();
    assert!(!needs.delete, "all it covers was held");
    // Seq 3 reaches its deadline: it is written to the queue.
    let taken = h.take_expired(None);
    h.settle_taken(taken, &Ok(()));
    assert!(h.acked(&device(1), Seq(3), now).1.delete, "seq 3 is queued");
    h.learned(device(2), None);
    h.batch_failed(&StoreError::Full, now);
    assert!(
        h.acked(&device(2), Seq(1), now).1.delete,
        "a failed batch forgets what was learnt"
    );
}

#[test]
fn the_deadline_takes_only_what_expired_and_closing_takes_everything() {
    let h = holds(10, 1_000, 10_000);
    let start = Instant::now();
    let mut first = try_hold(&h, row(1, 1, 10), start).unwrap();
    let mut later = try_hold(&h, row(2, 1, 10), start + DEADLINE).unwrap();
    h.batch_committed();
    assert_eq!(h.next_deadline(), Some(start + DEADLINE));
    let taken = h.take_expired(Some(start + DEADLINE));
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].copy.to, device(1));
    assert_eq!(settled(&mut first), None, "settled only after the commit");
    h.settle_taken(taken, &Ok(()));
    assert_eq!(settled(&mut first), Some(Ok(())));
    assert_eq!(h.metrics.held_settled.get("commit"), 1);
    let rest = h.take_expired(None);
    assert_eq!(rest.len(), 1);
    h.settle_taken(rest, &Err(StoreError::Full));
    assert_eq!(settled(&mut later), Some(Err(StoreError::Full)));
    assert_eq!(h.next_deadline(), None);
    assert_eq!(h.metrics.held_envelopes.get(), 0);
}

#[test]
fn a_failed_batch_forgets_what_it_held_and_answers_the_error() {
    let h = holds(10, 1_000, 10_000);
    let now = Instant::now();
    let mut kept = try_hold(&h, row(1, 1, 10), now).unwrap();
    h.batch_committed();
    let mut lost = try_hold(&h, row(1, 2, 10), now).unwrap();
    h.batch_failed(&StoreError::Full, now);
    assert_eq!(settled(&mut lost), Some(Err(StoreError::Full)));
    assert_eq!(settled(&mut kept), None);
    h.acked(&device(1), Seq(5), now).0.settle();
    assert_eq!(
        h.metrics.held_settled.get("ack"),
        1,
        "only the committed batch's envelope was held"
    );
    assert_eq!(h.metrics.held_envelopes.get(), 0);
}

#[test]
fn a_retry_of_a_held_id_settles_with_the_original() {
    let h = holds(10, 1_000, 10_000);
    let original = row(1, 7, 10);
    let id = original.envelope.id;
    let now = Instant::now();
    let mut first = try_hold(&h, original, now).unwrap();
    let (digest, sealed, retry) = h.held_retry(9, id).unwrap();
    let mut retry = retry.expect("still held: the retry waits");
    assert_eq!((digest, sealed), (vec![7; 16], 7));
    assert!(h.held_retry(8, id).is_none(), "another sender's id");
    assert_eq!(settled(&mut retry), None);
    h.acked(&device(1), Seq(7), now).0.settle();
    assert_eq!(settled(&mut first), Some(Ok(())));
    assert_eq!(settled(&mut retry), Some(Ok(())));
    let (digest, sealed, waits) = h.held_retry(9, id).expect("its dedup row waits here");
    assert_eq!((digest, sealed, waits.is_none()), (vec![7; 16], 7, true));
    let rows = h.take_unrecorded();
    h.recording(rows);
    h.batch_committed();
    assert!(
        h.held_retry(9, id).is_none(),
        "written: the dedup row answers from the table"
    );
}

#[test]
fn taking_a_device_takes_all_of_it_and_nothing_else() {
    let h = holds(10, 1_000, 10_000);
    let now = Instant::now();
    for seq in 1..=3 {
        try_hold(&h, row(1, seq, 10), now).unwrap();
    }
    try_hold(&h, row(2, 1, 10), now).unwrap();
    let taken = h.take_device(&device(1));
    assert_eq!(taken.len(), 3);
    assert!(!h.holds_for(&device(1)));
    assert!(h.holds_for(&device(2)));
    assert_eq!(h.metrics.held_envelopes.get(), 1);
}

/// A registry holding one send with copies for device 1 (seq 4) and device 2 (seq 7),
/// committed: the registry, the time, the send's id and its settlement.
fn a_send_to_two_devices() -> (Holds, Instant, MessageId, Settlement) {
    let h = holds(10, 1_000, 10_000);
    let now = Instant::now();
    let first = row(1, 4, 10);
    let id = first.envelope.id;
    let s = try_hold_all(&h, vec![first, row(2, 7, 10)], now).unwrap();
    h.batch_committed();
    (h, now, id, s)
}

#[test]
fn a_send_to_every_device_settles_with_its_last_copy() {
    let (h, now, id, mut s) = a_send_to_two_devices();
    h.acked(&device(1), Seq(4), now).0.settle();
    assert_eq!(settled(&mut s), None, "the copy for device 2 is still held");
    let (_, _, retry) = h.held_retry(9, id).expect("a retry waits for the send");
    let mut retry = retry.expect("still held");
    assert!(
        h.take_unrecorded().is_empty(),
        "no dedup row before the last copy"
    );
    h.acked(&device(2), Seq(7), now).0.settle();
    assert_eq!(settled(&mut s), Some(Ok(())));
    assert_eq!(settled(&mut retry), Some(Ok(())));
    assert_eq!(
        unrecorded_seqs(&h),
        vec![4],
        "one dedup row, sealing the first seq"
    );
    assert_eq!(h.metrics.held_envelopes.get(), 0);
}

#[test]
fn a_copy_taken_for_a_commit_carries_the_dedup_row_only_as_the_last() {
    let (h, _, _, mut s) = a_send_to_two_devices();
    let taken = h.take_device(&device(1));
    assert_eq!(taken.len(), 1);
    assert!(taken[0].dedup.is_none(), "device 2's copy is still held");
    h.settle_taken(taken, &Ok(()));
    h.batch_committed();
    assert_eq!(settled(&mut s), None);
    let taken = h.take_device(&device(2));
    assert_eq!(taken[0].dedup.as_ref().map(|d| d.sealed_seq), Some(4));
    h.settle_taken(taken, &Ok(()));
    assert_eq!(
        settled(&mut s),
        Some(Ok(())),
        "answered after the last commit"
    );
}

#[test]
fn a_failed_batch_that_took_one_copy_fails_the_send_and_drops_the_others() {
    let (h, now, id, mut s) = a_send_to_two_devices();
    let taken = h.take_device(&device(1));
    drop(taken);
    h.batch_failed(&StoreError::Full, now);
    assert_eq!(settled(&mut s), Some(Err(StoreError::Full)));
    assert!(
        !h.holds_for(&device(2)),
        "its other copy is dropped with it"
    );
    assert!(h.held_retry(9, id).is_none(), "a retry is a new send");
    assert_eq!(h.metrics.held_envelopes.get(), 0);
}

#[test]
fn a_send_to_every_device_needs_room_on_every_device() {
    let h = holds(1, 1_000, 10_000);
    let now = Instant::now();
    try_hold(&h, row(2, 1, 10), now).unwrap();
    assert!(
        try_hold_all(&h, vec![row(1, 4, 10), row(2, 7, 10)], now).is_none(),
        "device 2 is at its bound"
    );
    assert!(!h.holds_for(&device(1)), "nothing of it is held");
}

#[test]
fn an_ack_of_the_last_copy_waits_for_the_commit_of_a_copy_taken_before_it() {
    let (h, now, id, mut s) = a_send_to_two_devices();
    // Device 2's copy is taken for the running batch's commit; device 1 acks its copy
    // before that batch commits (acks are not the writer's).
    let taken = h.take_device(&device(2));
    assert!(taken[0].dedup.is_none(), "device 1's copy was still held");
    h.acked(&device(1), Seq(4), now).0.settle();
    assert_eq!(
        settled(&mut s),
        None,
        "device 2's copy is not committed yet: no `accepted`"
    );
    assert!(h.take_unrecorded().is_empty(), "no dedup row yet");
    let (_, _, retry) = h
        .held_retry(9, id)
        .expect("a retry still waits for the send");
    let mut retry = retry.expect("not settled yet");
    h.batch_committed();
    h.settle_taken(taken, &Ok(()));
    assert_eq!(settled(&mut s), Some(Ok(())), "answered after the commit");
    assert_eq!(settled(&mut retry), Some(Ok(())));
    assert!(
        h.held_retry(9, id)
            .is_some_and(|(_, _, waits)| waits.is_none()),
        "a retry is answered from the dedup row at once"
    );
    assert_eq!(
        unrecorded_seqs(&h),
        vec![4],
        "its dedup row waits to be written"
    );
    assert_eq!(h.metrics.held_envelopes.get(), 0);
}

#[test]
fn an_ack_of_the_last_copy_does_not_save_a_send_whose_taken_copy_failed() {
    let (h, now, id, mut s) = a_send_to_two_devices();
    let taken = h.take_device(&device(2));
    h.acked(&device(1), Seq(4), now).0.settle();
    drop(taken);
    h.batch_failed(&StoreError::Full, now);
    assert_eq!(
        settled(&mut s),
        Some(Err(StoreError::Full)),
        "device 2's copy was never stored: the sender retries"
    );
    assert!(h.held_retry(9, id).is_none(), "a retry is a new send");
    assert!(h.take_unrecorded().is_empty(), "no dedup row for it");
}

#[test]
fn a_failed_batch_that_recorded_twice_writes_both_again() {
    let h = holds(10, 1_000, 10_000);
    let now = Instant::now();
    for seq in 1..=2 {
        try_hold(&h, row(1, seq, 10), now).unwrap();
    }
    h.batch_committed();
    h.acked(&device(1), Seq(2), now).0.settle();
    h.recording(h.take_unrecorded());
    // Within the same batch, another job records what was acked meanwhile.
    try_hold(&h, row(1, 3, 10), now).unwrap();
    h.acked(&device(1), Seq(3), now).0.settle();
    h.recording(h.take_unrecorded());
    h.batch_failed(&StoreError::Full, now);
    assert_eq!(unrecorded_seqs(&h), vec![1, 2, 3]);
}
