//! A read of a device's queue (`held.rs`): it must never pass a seq that is held on some
//! node and may still be committed, or that envelope would land below what the device
//! was sent and acknowledged, and be lost. Every read is fenced, on a node that holds
//! nothing itself too: another node may hold for the device.
//!
//! In one transaction the read locks the device's `queue_head` row `FOR SHARE` (a commit
//! of a held seq takes it `FOR UPDATE`: a commit that checked its window before the lock
//! is visible to the read, one after it sees the window closed and writes nothing), reads
//! the database's time, the head's next seq and the device's highest ack
//! (`queue_acked`), and reads the page below that next seq. The page is used when it has
//! no hole above the ack (PostgreSQL's seqs are dense but for refused commits) or when
//! the commit deadline of the device's held decisions has passed (`held_until_ms`,
//! stamped by each deciding node with its own window, so that nodes with other
//! settings wait just as long); otherwise the read asks
//! the senders' nodes again to commit what was carried here ([`CommitListener::release_held`])
//! and looks again after [`FENCE_POLL`].

use std::time::Duration;

use deadpool_postgres::Pool;
use parley_protocol::ids::{DeviceAddress, Seq};

use super::errors::{pool_error, Failure};
use super::held::{self, HoldWindow};
use super::queue;
use crate::store::values::to_u64;
use crate::store::{CommitListener, StoreError, StoredEnvelope};

/// How long a fenced read waits between looks at a queue with a hole inside the window.
const FENCE_POLL: Duration = Duration::from_millis(5);

/// Up to `limit` envelopes of `device` after `after` that no held seq can still come
/// before (see the module documentation); asks `listener` first to have what was carried
/// to this node committed.
pub(super) async fn fenced_page(
    pool: &Pool,
    listener: &dyn CommitListener,
    window: HoldWindow,
    device: DeviceAddress,
    after: Seq,
    limit: usize,
) -> Result<Vec<StoredEnvelope>, StoreError> {
    loop {
        listener.release_held(&device);
        let (page, wait) = read_fenced(pool, window, &device, after, limit)
            .await
            .map_err(|f| f.error)?;
        match wait {
            None => return Ok(page),
            Some(left) => tokio::time::sleep(left.min(FENCE_POLL)).await,
        }
    }
}

/// One look: the page below the head's next seq, and how long the window still runs
/// when the page has a hole (`None`: the page can be used).
async fn read_fenced(
    pool: &Pool,
    window: HoldWindow,
    device: &DeviceAddress,
    after: Seq,
    limit: usize,
) -> Result<(Vec<StoredEnvelope>, Option<Duration>), Failure> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await?;
    let head = tx
        .prepare_cached(
            "SELECT h.next_seq, h.decided_at_ms, h.held_until_ms,
                    (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                    COALESCE((SELECT through FROM queue_acked WHERE recipient = h.recipient), 0)
             FROM devices d JOIN queue_head h ON h.recipient = d.id
             WHERE d.account = $1 AND d.device = $2
             FOR SHARE OF h",
        )
        .await?;
    let Some(head) = tx
        .query_opt(
            &head,
            &[
                &device.account.as_bytes().as_slice(),
                &i64::from(device.device.0),
            ],
        )
        .await?
    else {
        return Ok((Vec::new(), None));
    };
    let (below, decided_at_ms, held_until_ms, now_ms, acked): (i64, i64, i64, i64, i64) = (
        head.try_get(0)?,
        head.try_get(1)?,
        head.try_get(2)?,
        head.try_get(3)?,
        head.try_get(4)?,
    );
    let page = queue::page_below(&tx, device, after, Seq(to_u64(below)), limit).await?;
    tx.commit().await?;
    // Seqs the device acknowledged were delivered: no hole there. Once the last held
    // decision's commit deadline has passed, no held seq below `below` can be committed
    // any more (the rule the commit checks). The deadline is the deciding node's
    // (`held_until_ms`); for a decision that recorded none (a node from before
    // migration 6) the larger of this node's window and the defaults stands in.
    let floor = Seq(after.0.max(to_u64(acked)));
    let assumed = HoldWindow {
        deadline: window.deadline.max(HoldWindow::UNRECORDED.deadline),
        commit_grace: window.commit_grace.max(HoldWindow::UNRECORDED.commit_grace),
    };
    let until_ms = held_until_ms.max(held::commit_deadline_ms(assumed, decided_at_ms));
    if !held::may_still_commit(until_ms, now_ms) || has_no_hole(&page, floor, to_u64(below), limit)
    {
        return Ok((page, None));
    }
    let left = u64::try_from(until_ms.saturating_add(1).saturating_sub(now_ms)).unwrap_or(0);
    Ok((page, Some(Duration::from_millis(left))))
}

/// Whether `page` holds every seq above `floor` up to `below` (or up to its end, when
/// full); seqs at or below `floor` are skipped.
fn has_no_hole(page: &[StoredEnvelope], floor: Seq, below: u64, limit: usize) -> bool {
    let mut expected = floor.0.saturating_add(1);
    for envelope in page.iter().filter(|e| e.seq > floor) {
        if envelope.seq.0 != expected {
            return false;
        }
        expected = expected.saturating_add(1);
    }
    page.len() >= limit || expected >= below
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::ids::{AccountId, DeviceId, MessageId};

    fn at(seq: u64) -> StoredEnvelope {
        StoredEnvelope {
            seq: Seq(seq),
            from: DeviceAddress {
                account: AccountId([1; 32]),
                device: DeviceId(1),
            },
            id: MessageId([2; 16]),
            accepted_at_ms: 0,
            ciphertext: Vec::new(),
            category: None,
        }
    }

    #[test]
    fn a_page_without_a_hole_reaches_the_head_or_fills_up() {
        let page = |seqs: &[u64]| seqs.iter().copied().map(at).collect::<Vec<_>>();
        assert!(has_no_hole(&page(&[4, 5, 6]), Seq(3), 7, 10));
        assert!(has_no_hole(&page(&[]), Seq(3), 4, 10));
        assert!(has_no_hole(&page(&[4, 5]), Seq(3), 9, 2), "a full page");
        assert!(!has_no_hole(&page(&[4, 6]), Seq(3), 7, 10), "5 missing");
        assert!(!has_no_hole(&page(&[4, 5]), Seq(3), 7, 10), "6 missing");
        assert!(!has_no_hole(&page(&[]), Seq(0), 3, 10), "1 and 2 missing");
        // Acknowledged through 5: only what is above counts, a late row below is skipped.
        assert!(has_no_hole(&page(&[]), Seq(5), 6, 10));
        assert!(has_no_hole(&page(&[2, 6, 7]), Seq(5), 8, 10));
        assert!(!has_no_hole(&page(&[7]), Seq(5), 8, 10), "6 missing");
    }
}
