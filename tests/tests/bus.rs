//! The bus between nodes (`NatsPresence`) against a real `nats-server` of the test's own:
//! wakes cross nodes, the newer connection of a device wins across nodes, and lost hints
//! (a NATS restart, a slow consumer) end in a resync of every local device.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId, Seq};
use parley_server::metrics::BusMetrics;
use parley_server::presence::nats::BusOptions;
use parley_server::presence::{Attachment, NatsPresence, Presence};
use parley_server::store::{CommitListener, StoredEnvelope};
use parley_server::topology::SecretUrl;
use parley_tests::nats::TestNats;
use tokio::time::{timeout, Instant};

const KEY: &str = "a-test-cluster-key-of-some-length";

/// A node of a test cluster: its presence and its bus metrics.
struct Node {
    presence: NatsPresence,
    metrics: Arc<BusMetrics>,
}

async fn node(nats: &TestNats, name: &str, key: &str, options: BusOptions) -> anyhow::Result<Node> {
    let metrics = Arc::new(BusMetrics::default());
    let url: SecretUrl = parse_url(&nats.url())?;
    let presence = NatsPresence::connect(
        &url,
        key.parse().map_err(anyhow::Error::msg)?,
        name.into(),
        options,
        metrics.clone(),
    )
    .await?;
    wait_until("connected to NATS", Duration::from_secs(5), || {
        presence.is_connected()
    })
    .await?;
    Ok(Node { presence, metrics })
}

fn parse_url(url: &str) -> anyhow::Result<SecretUrl> {
    match url.parse::<parley_server::topology::BusLocation>() {
        Ok(parley_server::topology::BusLocation::Nats(url)) => Ok(url),
        other => bail!("not a NATS url: {other:?}"),
    }
}

fn device(n: u8) -> DeviceAddress {
    DeviceAddress {
        account: AccountId([n; 32]),
        device: DeviceId::PRIMARY,
    }
}

fn envelope(seq: u64, size: usize) -> StoredEnvelope {
    StoredEnvelope {
        seq: Seq(seq),
        from: device(99),
        id: MessageId([seq as u8; 16]),
        accepted_at_ms: 1,
        ciphertext: vec![7; size],
        category: None,
    }
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() >= deadline {
            bail!("not within {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until the attachment is woken with something to take (an envelope, or "read
/// the store") and returns it; a wake that finds nothing (one left over from attaching)
/// is waited past.
async fn woken(
    attachment: &Attachment,
    limit: Duration,
) -> anyhow::Result<parley_server::presence::Taken> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        timeout(left, attachment.wake.notified())
            .await
            .context("the attachment was not woken")?;
        let taken = attachment.take_fresh();
        if taken.stale || !taken.envelopes.is_empty() {
            return Ok(taken);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_node_reaches_the_device_on_another() -> anyhow::Result<()> {
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    let a = node(&nats, "a", KEY, BusOptions::default()).await?;
    let b = node(&nats, "b", KEY, BusOptions::default()).await?;
    let attachment = a.presence.attach(device(1), 100).await;
    b.presence.committed(device(1), envelope(1, 200));
    let taken = woken(&attachment, Duration::from_secs(2)).await?;
    assert!(!taken.stale);
    assert_eq!(
        taken.envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![Seq(1)]
    );
    assert_eq!(
        taken.envelopes[0],
        envelope(1, 200),
        "the envelope rides with its wake"
    );

    // Too big to ride along: the wake says "read the store".
    b.presence.committed(device(1), envelope(2, 9 * 1024));
    let taken = woken(&attachment, Duration::from_secs(2)).await?;
    assert!(taken.stale && taken.envelopes.is_empty());

    // Prekeys low crosses too.
    b.presence.prekeys_low(&device(1), 2);
    wait_until("prekeys low", Duration::from_secs(2), || {
        attachment.take_prekeys_low() == Some(2)
    })
    .await?;
    assert!(a.metrics.wakes_received.get() >= 2);
    assert!(b.metrics.wakes_sent.get() >= 2);

    // After detach, the node no longer hears the device.
    a.presence.detach(&device(1), &attachment);
    assert_eq!(a.presence.len(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_connection_wins_across_nodes() -> anyhow::Result<()> {
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    let a = node(&nats, "a", KEY, BusOptions::default()).await?;
    let b = node(&nats, "b", KEY, BusOptions::default()).await?;
    let older = a.presence.attach(device(1), 100).await;
    let newer = b.presence.attach(device(1), 200).await;
    timeout(Duration::from_secs(1), older.displaced.cancelled())
        .await
        .context("the older connection was not displaced within 1 s")?;
    assert!(!newer.displaced.is_cancelled());
    assert_eq!(a.metrics.displacements.get(), 1);

    // A late announcement of an older connection (a node paused meanwhile) loses too:
    // the newer one answers, and the older one closes.
    let stale = a.presence.attach(device(2), 100).await;
    let fresh = b.presence.attach(device(2), 300).await;
    timeout(Duration::from_secs(1), stale.displaced.cancelled())
        .await
        .context("displaced")?;
    let late = a.presence.attach(device(2), 250).await;
    timeout(Duration::from_secs(1), late.displaced.cancelled())
        .await
        .context("an older connection attaching later is displaced by the answer")?;
    assert!(!fresh.displaced.is_cancelled());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_with_other_keys_do_not_hear_each_other() -> anyhow::Result<()> {
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    let a = node(&nats, "a", KEY, BusOptions::default()).await?;
    let other = node(
        &nats,
        "x",
        "another-cluster-key-entirely",
        BusOptions::default(),
    )
    .await?;
    let attachment = a.presence.attach(device(1), 100).await;
    let _theirs = other.presence.attach(device(1), 200).await;
    other.presence.committed(device(1), envelope(1, 10));
    assert!(
        timeout(Duration::from_millis(500), attachment.wake.notified())
            .await
            .is_err(),
        "a wake crossed clusters"
    );
    assert!(!attachment.displaced.is_cancelled());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_nats_restarts_every_device_reads_its_queue_and_wakes_flow_again(
) -> anyhow::Result<()> {
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    let a = node(&nats, "a", KEY, BusOptions::default()).await?;
    let b = node(&nats, "b", KEY, BusOptions::default()).await?;
    let attachment = a.presence.attach(device(1), 100).await;
    let resyncs = a.metrics.resyncs.get();
    nats.stop()?;
    wait_until("a saw NATS go", Duration::from_secs(5), || {
        !a.presence.is_connected()
    })
    .await?;
    nats.start_again()?;
    wait_until("a reconnected", Duration::from_secs(10), || {
        a.presence.is_connected()
    })
    .await?;
    wait_until("b reconnected", Duration::from_secs(10), || {
        b.presence.is_connected()
    })
    .await?;
    wait_until("a resynced its devices", Duration::from_secs(2), || {
        a.metrics.resyncs.get() > resyncs
    })
    .await?;
    assert!(
        attachment.take_fresh().stale,
        "the device reads its queue again"
    );
    // The subscription came back with the connection.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seq = 10;
    loop {
        b.presence.committed(device(1), envelope(seq, 10));
        if let Ok(()) = timeout(Duration::from_millis(200), attachment.wake.notified()).await {
            break;
        }
        if Instant::now() >= deadline {
            bail!("no wake crossed within 2 s after NATS came back");
        }
        seq += 1;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_resyncs_its_devices() -> anyhow::Result<()> {
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    let tiny = BusOptions {
        subscription_capacity: 1,
        ..BusOptions::default()
    };
    let a = node(&nats, "a", KEY, tiny).await?;
    let b = node(&nats, "b", KEY, BusOptions::default()).await?;
    let attachment = a.presence.attach(device(1), 100).await;
    let resyncs = a.metrics.resyncs.get();
    // A burst larger than the subscription's buffer: NATS's client drops some and
    // reports a slow consumer.
    for seq in 1..=5_000 {
        b.presence.committed(device(1), envelope(seq, 100));
    }
    wait_until(
        "a slow consumer was reported",
        Duration::from_secs(5),
        || a.metrics.slow_consumer_events.get() > 0,
    )
    .await?;
    wait_until("a resynced after it", Duration::from_secs(2), || {
        a.metrics.resyncs.get() > resyncs
    })
    .await?;
    assert!(attachment.take_fresh().stale, "the device reads its queue");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_with_a_password_takes_the_credentials_of_its_url() -> anyhow::Result<()> {
    let Some(nats) = TestNats::start_with_auth("parley", "s3cret-pass")? else {
        return Ok(());
    };
    let a = node(&nats, "a", KEY, BusOptions::default()).await?;
    let b = node(&nats, "b", KEY, BusOptions::default()).await?;
    let attachment = a.presence.attach(device(1), 100).await;
    b.presence.committed(device(1), envelope(1, 10));
    woken(&attachment, Duration::from_secs(2)).await?;
    let wrong = nats.url().replace("s3cret-pass", "wrong");
    let presence = NatsPresence::connect(
        &parse_url(&wrong)?,
        KEY.parse().map_err(anyhow::Error::msg)?,
        "c".into(),
        BusOptions::default(),
        Arc::new(BusMetrics::default()),
    )
    .await?;
    // The server's refusal is the event to wait for; after it, the node is not connected.
    wait_until(
        "NATS refused the wrong password",
        Duration::from_secs(5),
        || {
            nats.log()
                .lines()
                .any(|l| l.contains("parley-server c\"") && l.contains("authentication error"))
        },
    )
    .await?;
    assert!(!presence.is_connected(), "a wrong password is refused");
    Ok(())
}

/// Hold, then persist across nodes (ADR 0005 §3): a held envelope carried to the node
/// holding its device is answered by that device's ack; every other end of it (a read of
/// the device's queue, its disconnect, no node holding it) asks the sender's node to
/// commit it, and so does a word that never comes (the store's deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_envelope_is_answered_by_the_ack_or_sent_back_to_be_committed() -> anyhow::Result<()>
{
    use parley_server::store::HeldWord;
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    let a = node(&nats, "a", KEY, BusOptions::default()).await?;
    let b = node(&nats, "b", KEY, BusOptions::default()).await?;
    let word = |rx: tokio::sync::oneshot::Receiver<HeldWord>| async move {
        timeout(Duration::from_secs(5), rx)
            .await
            .context("no word within 5 s")?
            .context("the carrier dropped the waiter")
    };

    // Nobody holds device 1: NATS answers "no responders", and the device is then
    // taken as offline for a while (its envelopes are persisted first).
    assert!(a.presence.can_carry(&device(1), 200));
    let rx = a
        .presence
        .carry(device(1), envelope(1, 200))
        .context("carried")?;
    assert_eq!(word(rx).await?, HeldWord::Commit);
    assert!(!a.presence.can_carry(&device(1), 200));
    assert!(
        !a.presence.can_carry(&device(2), 9 * 1024),
        "too big to ride a wake"
    );

    // Device 2 on node b: the envelope arrives with its wake; the ack answers it.
    let attachment = b.presence.attach(device(2), 100).await;
    let rx = a
        .presence
        .carry(device(2), envelope(1, 200))
        .context("carried")?;
    let taken = woken(&attachment, Duration::from_secs(2)).await?;
    assert_eq!(taken.envelopes, vec![envelope(1, 200)]);
    b.presence.acked(&device(2), Seq(1));
    assert_eq!(word(rx).await?, HeldWord::Acked);

    // An ack answers only what it covers; a read of the queue sends the rest back.
    let first = a
        .presence
        .carry(device(2), envelope(2, 200))
        .context("carried")?;
    let second = a
        .presence
        .carry(device(2), envelope(3, 200))
        .context("carried")?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(woken(&attachment, Duration::from_secs(2)).await?.envelopes);
    }
    b.presence.acked(&device(2), Seq(2));
    assert_eq!(word(first).await?, HeldWord::Acked);
    b.presence.release_held(&device(2));
    assert_eq!(word(second).await?, HeldWord::Commit);

    // A disconnect sends back what its connection was given and did not ack.
    let rx = a
        .presence
        .carry(device(2), envelope(4, 200))
        .context("carried")?;
    woken(&attachment, Duration::from_secs(2)).await?;
    b.presence.detach(&device(2), &attachment);
    assert_eq!(word(rx).await?, HeldWord::Commit);

    // A device connected to the sender's own node is held there, answered the same way.
    let here = a.presence.attach(device(3), 100).await;
    let rx = a
        .presence
        .carry(device(3), envelope(1, 200))
        .context("carried")?;
    assert_eq!(
        woken(&here, Duration::from_secs(2)).await?.envelopes.len(),
        1
    );
    a.presence.acked(&device(3), Seq(1));
    assert_eq!(word(rx).await?, HeldWord::Acked);

    // A word lost on the way (NATS stopped): no answer; the store commits at its deadline.
    let attachment = b.presence.attach(device(4), 100).await;
    let rx = a
        .presence
        .carry(device(4), envelope(1, 200))
        .context("carried")?;
    woken(&attachment, Duration::from_secs(2)).await?;
    nats.stop()?;
    b.presence.acked(&device(4), Seq(1));
    assert!(
        timeout(Duration::from_millis(300), rx).await.is_err(),
        "no word crosses a stopped bus"
    );
    Ok(())
}
