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
