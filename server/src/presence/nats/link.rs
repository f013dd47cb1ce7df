//! Linking rendezvous across nodes (`presence::link` has the rules).
//!
//! The node of the waiting connection subscribes to the rendezvous's subject
//! ([`Subjects::link`](super::Subjects::link)); a joining node sends a NATS request there
//! (`public ‖ mac`, 64 bytes) and waits for the reply, which is the sealed secrets. A
//! request nobody subscribes to fails at once (NATS "no responders"), so an unknown or
//! used code is refused without waiting. The rendezvous takes one join, then unsubscribes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parley_protocol::devices::link::{JoinMac, RendezvousId};
use parley_protocol::identity::X25519Public;
use tokio::sync::oneshot;

use super::Inner;
use crate::presence::link::{Answer, Joined, LinkUnavailable, OpenRendezvous};

/// Opens `id` on this node and on the bus.
pub(super) async fn open(
    inner: &Arc<Inner>,
    id: RendezvousId,
) -> Result<OpenRendezvous, LinkUnavailable> {
    let mut opened = inner.local.rendezvous.open(id)?;
    let mut subscriber = inner
        .client
        .subscribe(inner.subjects.link(&id))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot open a link rendezvous on the bus");
            LinkUnavailable
        })?;
    // The interest must be at the NATS server before the code is shown.
    if !inner.interest_confirmed().await {
        tracing::debug!("the bus did not confirm a rendezvous subscription in time");
    }
    let node = inner.clone();
    let task = tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            let (Some(reply), Some((public, mac))) = (message.reply, decode(&message.payload))
            else {
                continue;
            };
            let joined = Joined {
                public,
                mac,
                answer: Answer::Bus {
                    subject: reply.to_string(),
                    client: node.client.clone(),
                },
            };
            if node.local.rendezvous.join(&id, joined).is_ok() {
                // Used once: dropping the subscriber unsubscribes.
                return;
            }
        }
    });
    opened.bus = Some(task.abort_handle());
    Ok(opened)
}

/// Joins `id` on this node if it is open here, else over the bus.
pub(super) fn join(
    inner: &Arc<Inner>,
    id: RendezvousId,
    public: X25519Public,
    mac: JoinMac,
    wait: Duration,
) -> Result<oneshot::Receiver<Vec<u8>>, LinkUnavailable> {
    if inner.local.rendezvous.is_open(&id) {
        return inner.local.rendezvous.join_here(&id, public, mac);
    }
    let (answer, sealed) = oneshot::channel();
    let client = inner.client.clone();
    let subject = inner.subjects.link(&id);
    let mut payload = Vec::with_capacity(64);
    payload.extend_from_slice(public.as_bytes());
    payload.extend_from_slice(mac.as_bytes());
    tokio::spawn(async move {
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(wait));
        match client.send_request(subject, request).await {
            Ok(reply) => {
                let _ = answer.send(reply.payload.to_vec());
            }
            // No responders, a timeout or a lost connection: the receiver closes.
            Err(e) => tracing::debug!(error = %e, "a link join over the bus got no answer"),
        }
    });
    Ok(sealed)
}

fn decode(payload: &[u8]) -> Option<(X25519Public, JoinMac)> {
    if payload.len() != 64 {
        return None;
    }
    Some((
        X25519Public::from_slice(&payload[..32])?,
        JoinMac::from_slice(&payload[32..])?,
    ))
}
