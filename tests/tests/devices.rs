//! The signed device list through a real server (ADR 0007, protocol.md §15): the relay
//! stores and serves the list the account signed and refuses every other; a device on it
//! can log in as the account and be written to; a device dropped from it is closed (4005),
//! refused at login and no longer reachable. Through the [`Deployment`] switch the account's
//! devices sit on different nodes of a cluster.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_protocol::devices::{
    DeviceEntry, DeviceList, DeviceListView, ListChange, SignedDeviceList,
};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId};
use parley_protocol::signature::Signature;
use parley_protocol::wire::client::{
    ClientBody, FetchBundle, FetchDevices, PublishDevices, UploadPrekeys,
};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::{CloseCode, ErrorCode};
use parley_tests::deployment::Deployment;
use parley_tests::store_contract::device_list;
use parley_tests::{Client, TestAccount};

async fn publish(client: &mut Client, list: SignedDeviceList) -> parley_tests::client::Reply {
    client
        .request(ClientBody::PublishDevices(PublishDevices { list }))
        .await
        .unwrap()
}

async fn fetch(client: &mut Client, account: AccountId) -> parley_tests::client::Reply {
    client
        .request(ClientBody::FetchDevices(FetchDevices { account }))
        .await
        .unwrap()
}

/// Logs in as `account`'s `device`.
async fn login_as(url: &str, account: &TestAccount, device: u32) -> anyhow::Result<Client> {
    let mut client = Client::connect(url).await?;
    let body = account.auth_body_as(&client.hello, DeviceId(device));
    match client.request(body).await? {
        Ok(ServerBody::Authenticated(_)) => Ok(client),
        other => anyhow::bail!("login as device {device} failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_device_joins_the_account_and_a_removed_one_is_shut_out() {
    let Some(server) = Deployment::start_temp(&[]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 2);
    let bob = TestAccount::new(Some("bob"), 2);
    let mut phone = Client::register(&server.url_for(0), &alice).await.unwrap();
    let mut bobs = Client::register(&server.url_for(1), &bob).await.unwrap();
    let account = alice.identity.account_id();
    let laptop = DeviceAddress {
        account,
        device: DeviceId(2),
    };

    // Before any list, the account has the implicit one, and device 2 does not exist.
    assert!(matches!(
        fetch(&mut bobs, account).await,
        Ok(ServerBody::Devices(d)) if d.list.is_none()
    ));
    assert!(login_as(&server.url_for(1), &alice, 2).await.is_err());

    let v1 = device_list(&alice, 1, &[1, 2]);
    assert!(matches!(
        publish(&mut phone, v1.clone()).await,
        Ok(ServerBody::Devices(d)) if d.list.as_ref() == Some(&v1)
    ));

    // The laptop logs in as device 2 and publishes its prekeys; Bob can then write to it.
    let mut laptop_client = login_as(&server.url_for(1), &alice, 2).await.unwrap();
    let uploaded = laptop_client
        .request(ClientBody::UploadPrekeys(UploadPrekeys {
            signed_prekey: Some(alice.signed_prekey.signed_by(&alice.identity)),
            kem_prekey: Some(alice.kem_prekey.signed_by(&alice.identity)),
            one_time_prekeys: alice.one_time.iter().map(|p| p.one_time()).collect(),
        }))
        .await
        .unwrap();
    assert!(
        matches!(uploaded, Ok(ServerBody::PrekeysStored(_))),
        "{uploaded:?}"
    );

    // Bob checks the list himself before writing to the new device.
    let Ok(ServerBody::Devices(served)) = fetch(&mut bobs, account).await else {
        panic!("fetch_devices failed");
    };
    let mut view = DeviceListView::new(DeviceList::implicit(account));
    assert_eq!(
        view.accept(&account, served.list.as_ref().unwrap()),
        Ok(ListChange::Changed {
            added: vec![DeviceId(2)],
            removed: vec![]
        })
    );
    let bundle = bobs
        .request(ClientBody::FetchBundle(FetchBundle { address: laptop }))
        .await
        .unwrap();
    assert!(matches!(bundle, Ok(ServerBody::Bundle(_))), "{bundle:?}");
    bobs.send(laptop, MessageId([7; 16]), b"to the laptop".to_vec())
        .await
        .unwrap();
    let delivered = laptop_client.next_deliver().await.unwrap();
    assert_eq!(delivered.ciphertext, b"to the laptop");

    // The phone drops the laptop: its connection closes with 4005, it cannot log in again,
    // and writing to it is refused as to a device that does not exist.
    let v2 = device_list(&alice, 2, &[1]);
    assert!(matches!(
        publish(&mut phone, v2).await,
        Ok(ServerBody::Devices(_))
    ));
    assert_eq!(
        laptop_client.closed().await.unwrap(),
        Some(CloseCode::DeviceRemoved.code())
    );
    assert!(login_as(&server.url_for(0), &alice, 2).await.is_err());
    let refused = bobs
        .request(ClientBody::Send(parley_protocol::wire::client::Send {
            to: laptop,
            id: MessageId([8; 16]),
            ciphertext: b"too late".to_vec(),
            category: None,
            receipt: false,
        }))
        .await
        .unwrap();
    assert_eq!(Client::error_code(&refused), Some(ErrorCode::NotFound));
    let Ok(ServerBody::Devices(served)) = fetch(&mut bobs, account).await else {
        panic!("fetch_devices failed");
    };
    assert_eq!(
        view.accept(&account, served.list.as_ref().unwrap()),
        Ok(ListChange::Changed {
            added: vec![],
            removed: vec![DeviceId(2)]
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_stores_only_a_newer_list_the_account_signed() {
    let Some(server) = Deployment::start_temp(&["--max-devices-per-account", "3"]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 1);
    let mallory = TestAccount::new(Some("mallory"), 1);
    let mut phone = Client::register(&server.url_for(0), &alice).await.unwrap();
    drop(
        Client::register(&server.url_for(0), &mallory)
            .await
            .unwrap(),
    );

    let code = |reply: parley_tests::client::Reply| Client::error_code(&reply);

    // Another account's list, even correctly signed by it.
    assert_eq!(
        code(publish(&mut phone, device_list(&mallory, 1, &[1, 2])).await),
        Some(ErrorCode::InvalidDeviceList)
    );
    // A device injected after signing.
    let mut injected = device_list(&alice, 1, &[1, 2]);
    injected.list.devices.push(DeviceEntry {
        device: DeviceId(3),
        name: "injected".into(),
        linked_at_ms: 0,
    });
    assert_eq!(
        code(publish(&mut phone, injected).await),
        Some(ErrorCode::InvalidDeviceList)
    );
    // A malformed list, signed over its transcript all the same.
    let mut devices = device_list(&alice, 1, &[1, 2]).list.devices;
    devices.reverse();
    let unsorted = DeviceList {
        account: alice.identity.account_id(),
        version: 1,
        devices,
    };
    let signature: Signature = alice.identity.sign(&unsorted.transcript());
    assert_eq!(
        code(
            publish(
                &mut phone,
                SignedDeviceList {
                    list: unsorted,
                    signature
                }
            )
            .await
        ),
        Some(ErrorCode::InvalidDeviceList)
    );
    // More devices than this server allows.
    assert_eq!(
        code(publish(&mut phone, device_list(&alice, 1, &[1, 2, 3, 4])).await),
        Some(ErrorCode::TooManyDevices)
    );
    // Version 0 is the implicit list's; after version 2, neither 2 nor 1 again.
    assert_eq!(
        code(publish(&mut phone, device_list(&alice, 0, &[1])).await),
        Some(ErrorCode::StaleDeviceList)
    );
    let v2 = device_list(&alice, 2, &[1, 2, 3]);
    assert!(publish(&mut phone, v2.clone()).await.is_ok());
    for stale in [
        device_list(&alice, 2, &[1]),
        device_list(&alice, 1, &[1, 2]),
    ] {
        let reply = publish(&mut phone, stale).await;
        assert_eq!(code(reply.clone()), Some(ErrorCode::StaleDeviceList));
        assert!(reply.unwrap_err().message.contains("version 2"));
    }
    assert!(matches!(
        fetch(&mut phone, alice.identity.account_id()).await,
        Ok(ServerBody::Devices(d)) if d.list == Some(v2)
    ));
    // Nobody's list.
    assert_eq!(
        code(fetch(&mut phone, TestAccount::new(None, 0).identity.account_id()).await),
        Some(ErrorCode::NotFound)
    );
}

/// A `send_to_all` (protocol.md §15): made for old lists it is refused with the current
/// ones and stores nothing; made for the current lists every device of the recipient,
/// and every other device of the sender, gets its own copy under the same id, and acks
/// it on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_all_reaches_every_device_or_is_refused_with_the_current_lists() {
    use parley_protocol::wire::client::{DeviceCopy, SendToAll};
    let Some(server) = Deployment::start_temp(&[]).unwrap() else {
        return;
    };
    let alice = TestAccount::new(Some("alice"), 2);
    let bob = TestAccount::new(Some("bob"), 2);
    let mut phone = Client::register(&server.url_for(0), &alice).await.unwrap();
    let mut bobs = Client::register(&server.url_for(1), &bob).await.unwrap();
    let v1 = device_list(&alice, 1, &[1, 2]);
    assert!(matches!(
        publish(&mut phone, v1.clone()).await,
        Ok(ServerBody::Devices(_))
    ));
    let mut laptop = login_as(&server.url_for(1), &alice, 2).await.unwrap();
    let copy = |device: u32, text: &str| DeviceCopy {
        device: DeviceId(device),
        ciphertext: text.as_bytes().to_vec(),
    };
    let to_alice = |to_version: u64, copies: Vec<DeviceCopy>, id: u8| {
        ClientBody::SendToAll(SendToAll {
            to: alice.identity.account_id(),
            to_version,
            copies,
            own_version: 0,
            own_copies: Vec::new(),
            id: MessageId([id; 16]),
            category: None,
            receipt: false,
        })
    };

    // Bob still believes Alice has one device: refused, with her list and his own.
    let refused = bobs
        .request(to_alice(0, vec![copy(1, "phone only")], 1))
        .await
        .unwrap();
    let Err(error) = &refused else {
        panic!("a stale send was accepted: {refused:?}");
    };
    assert_eq!(error.code, ErrorCode::StaleDevices);
    assert_eq!(error.devices.len(), 2, "{error:?}");
    assert_eq!(error.devices[0].account, alice.identity.account_id());
    assert_eq!(error.devices[0].list.as_ref(), Some(&v1));
    assert_eq!(error.devices[1].account, bob.identity.account_id());
    assert_eq!(error.devices[1].list, None, "Bob has the implicit list");
    assert!(
        error.devices.iter().all(|d| d.last_seen.is_empty()),
        "no last-seen days in a refusal"
    );
    let Ok(ServerBody::Devices(alices)) = fetch(&mut bobs, alice.identity.account_id()).await
    else {
        panic!("fetch_devices failed");
    };
    assert!(
        alices.last_seen.is_empty(),
        "Bob does not learn when Alice's devices were used"
    );

    // For the current list: each device gets its own copy, and acks it on its own.
    let accepted = bobs
        .request(to_alice(
            1,
            vec![copy(1, "to the phone"), copy(2, "to the laptop")],
            2,
        ))
        .await
        .unwrap();
    assert!(
        matches!(accepted, Ok(ServerBody::Accepted(_))),
        "{accepted:?}"
    );
    for (client, text) in [(&mut phone, "to the phone"), (&mut laptop, "to the laptop")] {
        let delivered = client.next_deliver().await.unwrap();
        assert_eq!(delivered.ciphertext, text.as_bytes());
        assert_eq!(delivered.id, MessageId([2; 16]));
        assert_eq!(delivered.from.account, bob.identity.account_id());
        client.ack(delivered.seq).await.unwrap();
    }

    // Alice's phone writes to Bob and tells her laptop what it sent.
    let from_phone = phone
        .request(ClientBody::SendToAll(SendToAll {
            to: bob.identity.account_id(),
            to_version: 0,
            copies: vec![copy(1, "hello bob")],
            own_version: 1,
            own_copies: vec![copy(2, "what the phone sent")],
            id: MessageId([3; 16]),
            category: None,
            receipt: false,
        }))
        .await
        .unwrap();
    assert!(
        matches!(from_phone, Ok(ServerBody::Accepted(_))),
        "{from_phone:?}"
    );
    assert_eq!(bobs.next_deliver().await.unwrap().ciphertext, b"hello bob");
    let own = laptop.next_deliver().await.unwrap();
    assert_eq!(own.ciphertext, b"what the phone sent");
    assert_eq!(
        own.from,
        DeviceAddress {
            account: alice.identity.account_id(),
            device: DeviceId(1)
        }
    );
}
