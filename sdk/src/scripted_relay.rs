//! A scripted relay for the SDK's unit tests: the engine connects to it through
//! [`crate::transport::Transport::Memory`] (an in-memory pipe, the real WebSocket upgrade
//! and real protocol frames), and each test says, frame by frame, what the relay answers.
//!
//! It owns the relay's side of a connection ([`Script`]: `hello`, the login, reading
//! requests, replying, pushing), the lookups a test does not want to script one by one
//! ([`Directory`]: `fetch_devices` and `fetch_bundle`, with a log of the bundles handed
//! out), and the peers' devices ([`Device`]: real identities, prekeys and sessions from
//! `parley_protocol`). It does not know what the engine should decide: the tests do.
//! Every wait is bounded by [`DEADLINE`]; nothing sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::SinkExt;
use parley_protocol::auth::auth_transcript;
use parley_protocol::devices::{DeviceEntry, DeviceList, SignedDeviceList};
use parley_protocol::e2e::content::Content;
use parley_protocol::e2e::{self, HandshakeGuard};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{
    AccountId, DeviceAddress, DeviceId, MessageId, Nonce, RequestId, Seq, ServerId,
};
use parley_protocol::prekeys::PrekeyBundle;
use parley_protocol::signature;
use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::{
    Authenticated, Deliver, Devices, Drained, ErrorBody, Hello, ServerBody,
};
use parley_protocol::wire::{self, ClientFrame, ErrorCode, ServerFrame};
use rand_core::OsRng;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use crate::engine::now_ms;
use crate::keys::{generate_prekeys, prekey_store, published_prekeys, PublishedPrekeys};
use crate::store::PrekeyRecords;
use crate::transport::Transport;
use crate::wire::next_binary;

/// The URL the engine is given; the pipe ignores it (the upgrade request carries it).
pub(crate) const URL: &str = "ws://scripted.relay:7878";

/// Longest any step of a test waits for the other side.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Waits for `step` at most [`DEADLINE`], failing the test with `what` after it.
pub(crate) async fn within<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, step)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Takes the connections an engine opens through [`ScriptedRelay::transport`].
pub(crate) struct ScriptedRelay {
    arrivals: mpsc::Receiver<DuplexStream>,
    transport: Transport,
}

impl ScriptedRelay {
    pub(crate) fn new() -> ScriptedRelay {
        let (sender, arrivals) = mpsc::channel(4);
        ScriptedRelay {
            arrivals,
            transport: Transport::Memory(sender),
        }
    }

    /// What to hand the engine so that its connections come here.
    pub(crate) fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// The next connection: upgraded, greeted, and logged in (the `auth` signature is
    /// checked against the challenge). Returns it with the address that logged in.
    pub(crate) async fn accept(&mut self) -> (Script, DeviceAddress) {
        let pipe = within("a connection", self.arrivals.recv())
            .await
            .expect("the engine's transport is gone");
        let ws = within("the upgrade", tokio_tungstenite::accept_async(pipe))
            .await
            .unwrap();
        let mut script = Script { ws };
        let address = script.login().await;
        (script, address)
    }
}

/// The relay's end of one connection.
pub(crate) struct Script {
    ws: WebSocketStream<DuplexStream>,
}

impl Script {
    async fn login(&mut self) -> DeviceAddress {
        let hello = Hello {
            server_id: ServerId([7; 32]),
            nonce: Nonce([9; 32]),
            max_envelope_bytes: 65536,
            auth_timeout_ms: 10_000,
        };
        self.push(ServerBody::Hello(hello.clone())).await;
        let frame = self.receive().await;
        let ClientBody::Auth(auth) = frame.body else {
            panic!("expected auth, got {:?}", frame.body)
        };
        let transcript = auth_transcript(&hello.server_id, &hello.nonce, &auth.address);
        signature::verify(&auth.address.account, &transcript, &auth.signature)
            .expect("the engine signs the challenge");
        let body = ServerBody::Authenticated(Authenticated {
            address: auth.address,
            one_time_prekeys: 100,
        });
        self.reply(frame.rid, body).await;
        auth.address
    }

    async fn send(&mut self, frame: ServerFrame) {
        let bytes = wire::encode_server(&frame).unwrap();
        within("a write", self.ws.send(Message::Binary(Bytes::from(bytes))))
            .await
            .unwrap();
    }

    /// Pushes a frame nobody asked for (`deliver`, `drained`).
    pub(crate) async fn push(&mut self, body: ServerBody) {
        self.send(ServerFrame::push(body)).await;
    }

    /// Answers request `rid`.
    pub(crate) async fn reply(&mut self, rid: RequestId, body: ServerBody) {
        self.send(ServerFrame::reply(rid, body)).await;
    }

    /// Tells the engine that the queue is delivered: it serves commands from then on.
    pub(crate) async fn drained(&mut self) {
        self.push(ServerBody::Drained(Drained { through: Seq(0) }))
            .await;
    }

    /// The next frame the engine writes.
    pub(crate) async fn receive(&mut self) -> ClientFrame {
        let bytes = within("a frame from the engine", next_binary(&mut self.ws, || {}))
            .await
            .unwrap();
        wire::decode_client(&bytes).unwrap()
    }

    /// Answers `fetch_devices` and `fetch_bundle` from `directory` until the engine
    /// writes anything else, and returns that.
    pub(crate) async fn serve_lookups(&mut self, directory: &mut Directory) -> ClientFrame {
        loop {
            let frame = self.receive().await;
            let answer = match &frame.body {
                ClientBody::FetchDevices(fetch) => directory.devices(fetch.account),
                ClientBody::FetchBundle(fetch) => directory.bundle(fetch.address),
                _ => return frame,
            };
            self.reply(frame.rid, answer).await;
        }
    }

    /// Delivers `ciphertext` from `from` as the relay's `seq`-th message, and waits for
    /// the engine to acknowledge it.
    pub(crate) async fn deliver(&mut self, seq: u64, from: DeviceAddress, ciphertext: Vec<u8>) {
        self.push_delivery(seq, from, ciphertext).await;
        self.acked_through(seq).await;
    }

    /// Delivers `ciphertext` from `from` as the relay's `seq`-th message, without
    /// waiting for its ack.
    pub(crate) async fn push_delivery(
        &mut self,
        seq: u64,
        from: DeviceAddress,
        ciphertext: Vec<u8>,
    ) {
        self.push(ServerBody::Deliver(Deliver {
            seq: Seq(seq),
            from,
            id: MessageId::time_ordered(now_ms() * 1000, &mut OsRng),
            sent_at_ms: now_ms(),
            ciphertext,
            category: None,
        }))
        .await;
    }

    /// Waits for the engine's next frame and asserts that it is an ack through `seq`.
    pub(crate) async fn acked_through(&mut self, seq: u64) {
        let frame = self.receive().await;
        match frame.body {
            ClientBody::Ack(ack) => assert_eq!(ack.through, Seq(seq), "the ack's seq"),
            other => panic!("expected the ack of {seq}, got {other:?}"),
        }
    }
}

/// The error `stale_devices` with the current `lists`.
pub(crate) fn stale_devices(lists: Vec<Devices>) -> ServerBody {
    ServerBody::Error(ErrorBody {
        code: ErrorCode::StaleDevices,
        message: "the device lists changed".into(),
        retry_after_ms: None,
        devices: lists,
    })
}

/// What the scripted relay knows of accounts: their current lists and their devices'
/// prekeys.
#[derive(Default)]
pub(crate) struct Directory {
    lists: Vec<SignedDeviceList>,
    devices: Vec<Device>,
    /// Every bundle handed out, in order.
    pub(crate) bundles_served: Vec<DeviceAddress>,
}

impl Directory {
    /// Serves `list` from now on as its account's current one.
    pub(crate) fn publish(&mut self, list: SignedDeviceList) {
        self.lists.retain(|l| l.list.account != list.list.account);
        self.lists.push(list);
    }

    /// Hands out bundles of `device` from now on.
    pub(crate) fn add(&mut self, device: Device) {
        self.devices.push(device);
    }

    /// The device at `address`.
    pub(crate) fn device(&self, address: DeviceAddress) -> &Device {
        self.devices
            .iter()
            .find(|d| d.address == address)
            .expect("a device of the directory")
    }

    /// `account`'s current list as the relay serves it (none: never published).
    pub(crate) fn lists_of(&self, account: AccountId) -> Devices {
        Devices {
            account,
            list: self
                .lists
                .iter()
                .find(|l| l.list.account == account)
                .cloned(),
            last_seen: Vec::new(),
        }
    }

    fn devices(&self, account: AccountId) -> ServerBody {
        ServerBody::Devices(self.lists_of(account))
    }

    fn bundle(&mut self, address: DeviceAddress) -> ServerBody {
        let Some(device) = self.devices.iter_mut().find(|d| d.address == address) else {
            return ServerBody::Error(ErrorBody {
                code: ErrorCode::NotFound,
                message: "no such device".into(),
                retry_after_ms: None,
                devices: Vec::new(),
            });
        };
        self.bundles_served.push(address);
        ServerBody::Bundle(device.bundle())
    }
}

/// One device of an account a test plays (or the engine's own, before it is stored):
/// the account's identity and this device's prekeys.
pub(crate) struct Device {
    pub(crate) identity: IdentityKeyPair,
    pub(crate) address: DeviceAddress,
    pub(crate) prekeys: PrekeyRecords,
    published: PublishedPrekeys,
    handed_out: usize,
}

impl Device {
    /// Device 1 of a new account.
    pub(crate) fn new_account() -> Device {
        Device::of(IdentityKeyPair::generate(&mut OsRng), DeviceId::PRIMARY)
    }

    /// Another device of this device's account, with prekeys of its own.
    pub(crate) fn linked(&self, device: u32) -> Device {
        let identity = IdentityKeyPair::from_secret_bytes(&self.identity.to_secret_bytes());
        Device::of(identity, DeviceId(device))
    }

    fn of(identity: IdentityKeyPair, device: DeviceId) -> Device {
        let prekeys = generate_prekeys(&mut OsRng);
        let published = published_prekeys(&identity, &prekeys).unwrap();
        Device {
            address: DeviceAddress {
                account: identity.account_id(),
                device,
            },
            identity,
            prekeys,
            published,
            handed_out: 0,
        }
    }

    pub(crate) fn account(&self) -> AccountId {
        self.address.account
    }

    /// A prekey bundle with a one-time prekey not handed out before.
    pub(crate) fn bundle(&mut self) -> PrekeyBundle {
        let one_time = self
            .published
            .one_time_prekeys
            .get(self.handed_out)
            .cloned();
        self.handed_out += 1;
        PrekeyBundle {
            identity: self.identity.public(),
            device: self.address.device,
            signed_prekey: self.published.signed_prekey.clone(),
            kem_prekey: Some(self.published.kem_prekey.clone()),
            one_time_prekey: one_time,
        }
    }

    /// Starts a session with `to` (from one of its bundles) and encrypts `content`: the
    /// ciphertext of a first message.
    pub(crate) fn write(&self, to: &mut Device, content: &Content) -> Vec<u8> {
        let bundle = to.bundle();
        let mut session = e2e::initiate(
            &self.identity,
            self.address,
            &bundle,
            to.address,
            &mut OsRng,
        )
        .unwrap();
        session
            .encrypt(&content.encode().unwrap(), &mut OsRng, now_ms())
            .unwrap()
    }

    /// Opens the first message `from` wrote to this device.
    pub(crate) fn read(&self, from: DeviceAddress, ciphertext: &[u8]) -> Content {
        let prekeys = prekey_store(&self.prekeys).unwrap();
        let accepted = e2e::accept(
            &self.identity,
            self.address,
            from,
            ciphertext,
            &prekeys,
            &mut HandshakeGuard::default(),
            now_ms(),
        )
        .unwrap();
        Content::decode(&accepted.plaintext).unwrap()
    }
}

/// `account`'s list at `version` with `devices`, signed by `signer` (the account's own
/// identity, or, to forge one, another's).
pub(crate) fn signed_list(
    account: AccountId,
    version: u64,
    devices: &[u32],
    signer: &IdentityKeyPair,
) -> SignedDeviceList {
    let list = DeviceList {
        account,
        version,
        devices: devices
            .iter()
            .map(|&device| DeviceEntry {
                device: DeviceId(device),
                name: format!("device {device}"),
                linked_at_ms: 1,
            })
            .collect(),
    };
    let signature = signer.sign(&list.transcript());
    SignedDeviceList { list, signature }
}
