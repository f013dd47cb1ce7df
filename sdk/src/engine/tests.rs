//! The engine's decisions about linked devices, without a socket: the real engine (a
//! [`Client`] with its run loop, a `ClientStore` file in a temporary directory, the
//! protocol crate's crypto) against a relay each test scripts frame by frame
//! ([`crate::scripted_relay`]). They complement the end-to-end tests in
//! `tests/tests/sdk_engine.rs` and `tests/tests/devices.rs`: here the relay is free to
//! say what a real one would only say in a race (`stale_devices` twice in a row) or if
//! it lied (a forged or replayed device list).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use parley_protocol::devices::{DeviceList, DeviceListError, SignedDeviceList};
use parley_protocol::e2e::content::{self, Content, Sent, Text, VerifiedContact};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, Seq};
use parley_protocol::wire::client::{ClientBody, ResolveHandle, SendToAll};
use parley_protocol::wire::server::{Accepted, Done, ServerBody};
use tempfile::TempDir;

use crate::scripted_relay::{
    signed_list, stale_devices, within, Device, Directory, Script, ScriptedRelay, DEADLINE, URL,
};
use crate::store::{ClientStore, Contact, Profile};
use crate::{Client, ClientConfig, Event, Outgoing, Peer, SdkError};

/// Alice's device 1 running on the scripted relay, past the `drained` that lets it
/// serve commands.
struct Alice {
    client: Client,
    script: Script,
    /// Her device's keys, as stored: what others encrypt to.
    device: Device,
    /// Kept so that the engine's transport stays open, and its profile on disk.
    _relay: ScriptedRelay,
    _dir: TempDir,
}

async fn alice() -> Alice {
    alice_with(|_| {}).await
}

/// [`alice`], with `configure` applied to her client's configuration.
async fn alice_with(configure: impl FnOnce(&mut ClientConfig)) -> Alice {
    let device = Device::new_account();
    let dir = tempfile::tempdir().unwrap();
    let store = ClientStore::open(&dir.path().join("alice.db")).unwrap();
    let profile = Profile {
        account: device.account(),
        handle: None,
        device: DeviceId::PRIMARY,
    };
    let secret = device.identity.to_secret_bytes();
    store
        .save_identity(secret.as_slice(), &profile, &device.prekeys)
        .unwrap();
    store.registered(None).unwrap();
    // No receipts: each test scripts every frame the engine writes.
    let mut config = ClientConfig {
        send_receipts: false,
        ..ClientConfig::new(URL)
    };
    configure(&mut config);
    let mut relay = ScriptedRelay::new();
    let transport = relay.transport();
    let (client, (mut script, logged_in)) = tokio::join!(
        Client::start_via(config, Arc::new(store), transport),
        relay.accept()
    );
    assert_eq!(logged_in, device.address, "logged in as the stored device");
    script.drained().await;
    Alice {
        client: client.unwrap(),
        script,
        device,
        _relay: relay,
        _dir: dir,
    }
}

fn text(body: &str) -> Content {
    Content::Text(Text {
        body: body.to_owned(),
        sender_handle: None,
        category: None,
    })
}

fn text_to(account: AccountId, body: &str) -> Outgoing {
    Outgoing {
        to: Peer::Account(account),
        content: text(body),
        category: None,
        id: None,
    }
}

/// The events the engine has raised so far, without waiting.
fn events(client: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| client.try_next_event()).collect()
}

/// The `send_to_all` in `frame`.
fn send_to_all(frame: &ClientBody) -> SendToAll {
    match frame {
        ClientBody::SendToAll(send) => send.clone(),
        other => panic!("expected send_to_all, got {other:?}"),
    }
}

fn copies_for(send: &SendToAll) -> Vec<DeviceId> {
    send.copies.iter().map(|c| c.device).collect()
}

fn device(account: AccountId, device: u32) -> DeviceAddress {
    DeviceAddress {
        account,
        device: DeviceId(device),
    }
}

/// Bob (whose identity signs his later lists) and a relay directory that serves `list`
/// as his current one and bundles of his devices 1 and 2.
fn bob_with(list: impl FnOnce(&Device) -> SignedDeviceList) -> (Device, Directory) {
    let bob = Device::new_account();
    let mut directory = Directory::default();
    directory.publish(list(&bob));
    directory.add(bob.linked(1));
    directory.add(bob.linked(2));
    (bob, directory)
}

/// A request the engine sends only when asked: the first frame after a send's answer,
/// it shows that the engine wrote nothing more for that send.
fn probe() -> ClientBody {
    ClientBody::ResolveHandle(ResolveHandle {
        handle: Handle::parse("carol").unwrap(),
    })
}

/// Asks the engine for [`probe`] and returns the next frame it writes (lookups
/// answered).
async fn next_written(
    client: &Client,
    script: &mut Script,
    directory: &mut Directory,
) -> ClientBody {
    let relay = async {
        let frame = script.serve_lookups(directory).await;
        script.reply(frame.rid, ServerBody::Done(Done {})).await;
        frame.body
    };
    let (answer, written) = within("the probe", async {
        tokio::join!(client.request(probe()), relay)
    })
    .await;
    assert_eq!(answer.unwrap(), ServerBody::Done(Done {}));
    written
}

#[tokio::test]
async fn after_stale_devices_the_new_device_gets_a_copy_the_listed_ones_keep_theirs_and_the_send_is_retried_once(
) {
    let Alice {
        mut client,
        mut script,
        device: me,
        _relay,
        _dir,
    } = alice().await;
    let (bob, mut directory) = bob_with(|bob| signed_list(bob.account(), 1, &[1], &bob.identity));
    let linked = signed_list(bob.account(), 2, &[1, 2], &bob.identity);
    let relay = async {
        let first = script.serve_lookups(&mut directory).await;
        // Bob linked device 2 after Alice's copies were made.
        directory.publish(linked.clone());
        let current = directory.lists_of(bob.account());
        script.reply(first.rid, stale_devices(vec![current])).await;
        let second = script.serve_lookups(&mut directory).await;
        let retry = send_to_all(&second.body);
        let accepted = ServerBody::Accepted(Accepted {
            id: retry.id,
            seq: Seq(1),
        });
        script.reply(second.rid, accepted).await;
        (send_to_all(&first.body), retry)
    };
    let (sent, (first, retry)) = within("the send", async {
        tokio::join!(
            client.send_content(text_to(bob.account(), "hello Bob")),
            relay
        )
    })
    .await;

    assert_eq!(sent.unwrap(), first.id, "the caller gets the message id");
    assert_eq!(
        (first.to_version, copies_for(&first)),
        (1, vec![DeviceId(1)])
    );
    assert_eq!(
        (retry.id, retry.to_version, copies_for(&retry)),
        (first.id, 2, vec![DeviceId(1), DeviceId(2)]),
        "one retry, same id, for the new list"
    );
    // Compared whole, not printed: the ciphertexts are long.
    assert!(
        retry.copies[0] == first.copies[0],
        "device 1's copy is kept, not encrypted again"
    );
    let bob2 = device(bob.account(), 2);
    assert_eq!(
        directory.bundles_served,
        [device(bob.account(), 1), bob2],
        "only the new device's bundle was fetched for the retry"
    );
    let opened = directory
        .device(bob2)
        .read(me.address, &retry.copies[1].ciphertext);
    assert_eq!(opened, text("hello Bob"), "device 2 reads the message");
    assert!(
        events(&mut client).contains(&Event::DevicesChanged {
            account: bob.account(),
            version: 2,
            added: vec![DeviceId(2)],
            removed: Vec::new(),
        }),
        "Alice hears that Bob has a device more"
    );
    assert_eq!(
        client.store().outbox().unwrap(),
        Vec::new(),
        "accepted: not queued"
    );
}

#[tokio::test]
async fn a_second_stale_devices_in_a_row_is_not_retried_and_the_message_stays_queued() {
    let Alice {
        mut client,
        mut script,
        _relay,
        _dir,
        ..
    } = alice().await;
    let (bob, mut directory) = bob_with(|bob| signed_list(bob.account(), 1, &[1], &bob.identity));
    let relay = async {
        let first = script.serve_lookups(&mut directory).await;
        directory.publish(signed_list(bob.account(), 2, &[1, 2], &bob.identity));
        let current = directory.lists_of(bob.account());
        script.reply(first.rid, stale_devices(vec![current])).await;
        let second = script.serve_lookups(&mut directory).await;
        // And again: a relay that keeps saying so is not believed forever.
        directory.publish(signed_list(bob.account(), 3, &[1, 2, 3], &bob.identity));
        let current = directory.lists_of(bob.account());
        script.reply(second.rid, stale_devices(vec![current])).await;
        send_to_all(&second.body)
    };
    let (sent, retry) = within("the send", async {
        tokio::join!(
            client.send_content(text_to(bob.account(), "hello Bob")),
            relay
        )
    })
    .await;

    match sent {
        Err(SdkError::Queued(reason)) => {
            assert_eq!(reason, SdkError::StaleDevices(Vec::new()).to_string());
        }
        other => panic!("expected the send to be queued, got {other:?}"),
    }
    assert_eq!(
        next_written(&client, &mut script, &mut directory).await,
        probe(),
        "no third send_to_all"
    );
    assert_eq!(
        directory.bundles_served,
        [device(bob.account(), 1), device(bob.account(), 2)],
        "nothing encrypted for the second refusal's list"
    );
    let remembered = client.store().device_list(&bob.account()).unwrap().unwrap();
    assert_eq!(
        remembered.version, 2,
        "the second refusal's list is not taken"
    );
    let queued: Vec<_> = client
        .store()
        .outbox()
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(queued, [retry.id], "queued for the next connection");
    assert!(
        events(&mut client)
            .iter()
            .any(|e| matches!(e, Event::DevicesChanged { version: 2, .. })),
        "the first refusal's list was taken"
    );
}

/// Alice sends to Bob, whose list she verified at version `known`; the relay answers
/// `stale_devices` with `served`, which names a device 2. The engine must refuse it for
/// `why`: nothing is encrypted to device 2, nothing is sent again, and she hears of it.
async fn a_served_list_is_refused(
    known: u64,
    served: impl FnOnce(&Device) -> SignedDeviceList,
    why: DeviceListError,
) {
    let Alice {
        mut client,
        mut script,
        _relay,
        _dir,
        ..
    } = alice().await;
    let (bob, mut directory) =
        bob_with(|bob| signed_list(bob.account(), known, &[1], &bob.identity));
    let injected = served(&bob);
    assert!(
        injected.list.contains(DeviceId(2)),
        "the list names device 2"
    );
    let relay = async {
        let first = script.serve_lookups(&mut directory).await;
        let lists = vec![parley_protocol::wire::server::Devices {
            account: bob.account(),
            list: Some(injected),
            last_seen: Vec::new(),
        }];
        script.reply(first.rid, stale_devices(lists)).await;
    };
    let (sent, ()) = within("the send", async {
        tokio::join!(
            client.send_content(text_to(bob.account(), "hello Bob")),
            relay
        )
    })
    .await;

    let refused = SdkError::DeviceListRefused {
        account: bob.account(),
        reason: why.to_string(),
    };
    match sent {
        Err(SdkError::Queued(reason)) => assert_eq!(reason, refused.to_string()),
        other => panic!("expected the send to be queued, got {other:?}"),
    }
    assert!(
        events(&mut client).contains(&Event::DeviceListRefused {
            account: bob.account(),
            reason: why.to_string(),
        }),
        "Alice hears that a list was refused"
    );
    assert_eq!(
        next_written(&client, &mut script, &mut directory).await,
        probe(),
        "not sent again"
    );
    let bob2 = device(bob.account(), 2);
    assert_eq!(
        directory.bundles_served,
        [device(bob.account(), 1)],
        "no bundle of the injected device fetched"
    );
    assert_eq!(
        client.store().session(&bob2).unwrap(),
        None,
        "no session with it"
    );
    let remembered = client.store().device_list(&bob.account()).unwrap();
    let known_list: DeviceList = signed_list(bob.account(), known, &[1], &bob.identity).list;
    assert_eq!(remembered, Some(known_list), "the verified list is kept");
}

#[tokio::test]
async fn a_device_list_signed_by_another_key_is_refused_and_nothing_is_encrypted_to_it() {
    let mallory = Device::new_account();
    a_served_list_is_refused(
        1,
        |bob| signed_list(bob.account(), 2, &[1, 2], &mallory.identity),
        DeviceListError::BadSignature,
    )
    .await;
}

#[tokio::test]
async fn a_device_list_older_than_the_one_remembered_is_refused_and_nothing_is_encrypted_to_it() {
    a_served_list_is_refused(
        2,
        |bob| signed_list(bob.account(), 1, &[1, 2], &bob.identity),
        DeviceListError::Stale {
            offered: 1,
            known: 2,
        },
    )
    .await;
}

/// Deliveries that arrive together are each stored, then acked once, through the last:
/// one ack frame per burst rather than one per delivery.
#[tokio::test]
async fn deliveries_that_arrive_together_are_stored_then_acked_once_through_the_last() {
    // Each delivery's commit waits for the disk: no time limit on the burst here.
    let Alice {
        client,
        mut script,
        device: mut me,
        _relay,
        _dir,
    } = alice_with(|config| config.ack_gather = DEADLINE).await;
    let bob = Device::new_account();
    // Encrypted first, then written without a pause: the engine's task shares this
    // test's thread, so it reads none of them before all three are in the pipe.
    let ciphertexts: Vec<_> = (1..=3)
        .map(|n| bob.write(&mut me, &text(&format!("number {n}"))))
        .collect();
    for (seq, ciphertext) in (1..).zip(ciphertexts) {
        script.push_delivery(seq, bob.address, ciphertext).await;
    }
    within("the ack of the burst", script.acked_through(3)).await;
    let history = client.store().history(&bob.account(), 10).unwrap();
    assert_eq!(history.len(), 3, "every delivery stored before the ack");
    // One at a time, each delivery still gets its own ack.
    let ciphertext = bob.write(&mut me, &text("number 4"));
    within(
        "a lone delivery's ack",
        script.deliver(4, bob.address, ciphertext),
    )
    .await;
}

#[tokio::test]
async fn a_copy_of_a_sent_message_is_taken_only_from_the_accounts_own_devices() {
    let Alice {
        mut client,
        mut script,
        device: mut me,
        _relay,
        _dir,
    } = alice().await;
    let carol = Device::new_account().account();
    let sent = Content::Sent(Sent {
        to: carol,
        to_handle: None,
        message: Box::new(text("words in Alice's mouth")),
    });

    let bob = Device::new_account();
    script
        .deliver(1, bob.address, bob.write(&mut me, &sent))
        .await;
    let from_bob = events(&mut client);
    assert!(
        from_bob.contains(&Event::Undecryptable {
            from: bob.address,
            reason: "a copy of a sent message from another account".into(),
        }),
        "{from_bob:?}"
    );
    assert!(!from_bob
        .iter()
        .any(|e| matches!(e, Event::SentElsewhere { .. })));
    assert_eq!(client.store().history(&carol, 10).unwrap(), Vec::new());

    let my_laptop = me.linked(2);
    script
        .deliver(2, my_laptop.address, my_laptop.write(&mut me, &sent))
        .await;
    let from_mine = events(&mut client);
    assert!(
        from_mine.iter().any(|e| matches!(
            e,
            Event::SentElsewhere { from, to, text, .. }
                if *from == my_laptop.address && *to == carol && text == "words in Alice's mouth"
        )),
        "{from_mine:?}"
    );
    let history = client.store().history(&carol, 10).unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].state.is_mine(), "kept as Alice's own message");
}

#[tokio::test]
async fn account_state_is_taken_only_from_the_accounts_own_devices() {
    let Alice {
        mut client,
        mut script,
        device: mut me,
        _relay,
        _dir,
    } = alice().await;
    let carol = Device::new_account();
    let contact = Contact {
        account: carol.account(),
        handle: None,
        identity: carol.identity.public(),
        verified: false,
    };
    client.store().save_contact(&contact).unwrap();
    let verified = Content::Sync(content::Sync::Verified(VerifiedContact {
        account: carol.account(),
        identity: carol.identity.public(),
        verified: true,
    }));
    let is_verified = |client: &Client| {
        let stored = client.store().contact(&carol.account()).unwrap();
        stored.expect("Carol is a contact").verified
    };

    let bob = Device::new_account();
    script
        .deliver(1, bob.address, bob.write(&mut me, &verified))
        .await;
    assert!(!is_verified(&client), "Bob cannot mark Alice's contacts");
    assert!(events(&mut client).contains(&Event::Undecryptable {
        from: bob.address,
        reason: "account state from another account".into(),
    }));

    let my_laptop = me.linked(2);
    script
        .deliver(2, my_laptop.address, my_laptop.write(&mut me, &verified))
        .await;
    assert!(is_verified(&client), "Alice's laptop can");
    assert!(!events(&mut client)
        .iter()
        .any(|e| matches!(e, Event::Undecryptable { .. })));
}

#[tokio::test]
async fn a_sync_whose_devices_were_all_removed_is_dropped_and_does_not_hold_up_the_outbox() {
    let Alice {
        client,
        mut script,
        device: me,
        _relay,
        _dir,
    } = alice().await;
    let mut directory = Directory::default();
    directory.publish(signed_list(me.account(), 1, &[1, 2], &me.identity));
    directory.add(me.linked(2));
    let carol = Device::new_account();
    let sync = Outgoing {
        to: Peer::Account(me.account()),
        content: Content::Sync(content::Sync::Verified(VerifiedContact {
            account: carol.account(),
            identity: carol.identity.public(),
            verified: true,
        })),
        category: None,
        id: None,
    };
    let relay = async {
        let first = script.serve_lookups(&mut directory).await;
        // The laptop was removed (from the laptop itself) after the sync was made.
        directory.publish(signed_list(me.account(), 2, &[1], &me.identity));
        let current = directory.lists_of(me.account());
        script.reply(first.rid, stale_devices(vec![current])).await;
        send_to_all(&first.body)
    };
    let (sent, first) = within("the sync", async {
        tokio::join!(client.send_content(sync), relay)
    })
    .await;

    assert_eq!(copies_for(&first), [DeviceId(2)], "made for the laptop");
    assert_eq!(sent.unwrap(), first.id, "done: nobody is left to tell");
    assert_eq!(
        client.store().outbox().unwrap(),
        Vec::new(),
        "not kept to be sent again"
    );
    assert_eq!(
        next_written(&client, &mut script, &mut directory).await,
        probe(),
        "the engine goes on, on the same connection, without sending it again"
    );
}
