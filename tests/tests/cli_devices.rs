//! `parley devices` and `parley devices remove N` through a real server: the CLI shows the
//! list the account signed, refuses to remove itself or a device the account does not
//! have, and removing a device publishes a newer signed list, after which the server
//! closes that device (4005). The second device is played by the test kit with the
//! account key read from the profile (linking from the CLI is not built yet).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::DeviceId;
use parley_protocol::wire::client::{Auth, ClientBody, FetchDevices, PublishDevices};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::CloseCode;
use parley_sdk::store::ClientStore;
use parley_tests::cli::CliUser;
use parley_tests::store_contract::device_list;
use parley_tests::{Client, ServerProcess, TestAccount};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_the_signed_devices_and_removes_one() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let alice = CliUser::new(home.path(), "alice", &server.url()).unwrap();
    alice.run(&["register", "alice"]);

    // Only device 1 before any list.
    let listed = alice.json(&["devices"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["device"], 1);
    assert_eq!(listed[0]["this_device"], true);

    // A second device, signed with the account key from the profile.
    let stored = ClientStore::open_read_only(&home.path().join("alice").join("client.db"))
        .unwrap()
        .identity()
        .unwrap()
        .unwrap();
    let identity = IdentityKeyPair::from_secret_bytes(&stored.secret[..].try_into().unwrap());
    let account = TestAccount {
        identity,
        ..TestAccount::new(None, 0)
    };
    let mut laptop = Client::connect(&server.url()).await.unwrap();
    let address = parley_protocol::ids::DeviceAddress {
        account: account.identity.account_id(),
        device: DeviceId(2),
    };
    // Publish from a connection of device 1, then log in as device 2.
    let mut phone = Client::connect(&server.url()).await.unwrap();
    let login = phone
        .request(ClientBody::Auth(Auth::signed(
            &account.identity,
            &phone.hello,
            account.address(),
        )))
        .await
        .unwrap();
    assert!(matches!(login, Ok(ServerBody::Authenticated(_))));
    let published = phone
        .request(ClientBody::PublishDevices(PublishDevices {
            list: device_list(&account, 1, &[1, 2]),
        }))
        .await
        .unwrap();
    assert!(
        matches!(published, Ok(ServerBody::Devices(_))),
        "{published:?}"
    );
    phone.close().await.unwrap();
    let login = laptop
        .request(ClientBody::Auth(Auth::signed(
            &account.identity,
            &laptop.hello,
            address,
        )))
        .await
        .unwrap();
    assert!(matches!(login, Ok(ServerBody::Authenticated(_))));

    let listed = alice.json(&["devices"]);
    let ids: Vec<u64> = listed
        .iter()
        .map(|d| d["device"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2], "{listed:?}");
    assert!(listed.iter().all(|d| d["list_version"] == 1));
    let text = String::from_utf8_lossy(&alice.run(&["devices"]).stdout).into_owned();
    assert!(text.contains("device 2 \"device 2\""), "{text}");

    // Not itself, not a device the account does not have.
    let refused = alice.fail(&["devices", "remove", "1"]);
    assert!(refused.contains("device 1 is this device"), "{refused}");
    let refused = alice.fail(&["devices", "remove", "7"]);
    assert!(refused.contains("no device 7"), "{refused}");

    // Removing device 2: a newer list, and the server disconnects it.
    let removed = alice.json(&["devices", "remove", "2"]);
    assert_eq!(removed[0]["type"], "device_removed");
    assert_eq!(removed[0]["version"], 2);
    assert_eq!(
        laptop.closed().await.unwrap(),
        Some(CloseCode::DeviceRemoved.code())
    );
    let mut observer = Client::register(&server.url(), &TestAccount::new(None, 0))
        .await
        .unwrap();
    let served = observer
        .request(ClientBody::FetchDevices(FetchDevices {
            account: account.identity.account_id(),
        }))
        .await
        .unwrap();
    let Ok(ServerBody::Devices(served)) = served else {
        panic!("{served:?}");
    };
    let served = served.list.unwrap();
    assert_eq!(served.verify(), Ok(()));
    assert_eq!(served.list.version, 2);
    assert_eq!(
        served.list.device_ids().collect::<Vec<_>>(),
        vec![DeviceId(1)]
    );
}
