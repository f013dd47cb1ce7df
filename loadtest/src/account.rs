//! Load-test identities: real Ed25519/X25519 keys and correctly signed `register`,
//! `auth` (as any of the account's devices), `grant_consent` bodies and device lists. No one-time prekeys: the relay path does not need
//! them. The KEM prekey a registration must carry is generated for it and not kept
//! (nobody starts a session with a load-test account).

use anyhow::Context;
use parley_protocol::auth::register_transcript;
use parley_protocol::business::{CategorySet, ConsentGrant, ConsentNonce, SignedGrant};
use parley_protocol::devices::{DeviceEntry, DeviceList, SignedDeviceList};
use parley_protocol::e2e::KemPrekeySecret;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, PrekeyId};
use parley_protocol::prekeys::PrekeySecret;
use parley_protocol::wire::client::{Auth, Register};
use parley_protocol::wire::server::Hello;
use parley_server::store::NewAccount;
use rand_core::{OsRng, RngCore};

/// An account the generator controls.
#[derive(Debug)]
pub struct Account {
    identity: IdentityKeyPair,
    signed_prekey: PrekeySecret,
    handle: Option<Handle>,
}

impl Account {
    /// A fresh identity.
    pub fn generate() -> Account {
        Account {
            identity: IdentityKeyPair::generate(&mut OsRng),
            signed_prekey: PrekeySecret::generate(PrekeyId(1), &mut OsRng),
            handle: None,
        }
    }

    /// The same account, registering with `handle`.
    pub fn with_handle(mut self, handle: &str) -> anyhow::Result<Account> {
        self.handle = Some(Handle::parse(handle).with_context(|| format!("handle {handle}"))?);
        Ok(self)
    }

    /// The account's only device.
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            account: self.identity.account_id(),
            device: DeviceId::PRIMARY,
        }
    }

    /// A signed `register` for the challenge in `hello`.
    pub fn register(&self, hello: &Hello) -> Register {
        let identity = self.identity.public();
        let transcript = register_transcript(
            &hello.server_id,
            &hello.nonce,
            &identity,
            self.handle.as_ref(),
        );
        Register {
            signature: self.identity.sign(&transcript),
            identity,
            handle: self.handle.clone(),
            signed_prekey: self.signed_prekey.signed_by(&self.identity),
            kem_prekey: Some(
                KemPrekeySecret::generate(PrekeyId(2), &mut OsRng).signed_by(&self.identity),
            ),
            one_time_prekeys: Vec::new(),
        }
    }

    /// The account as the server stores it at registration (for the in-process store
    /// scenario, which skips the network and the signature checks).
    pub fn new_account(&self) -> NewAccount {
        NewAccount {
            identity: self.identity.public(),
            handle: self.handle.clone(),
            signed_prekey: self.signed_prekey.signed_by(&self.identity),
            kem_prekey: None,
            one_time_prekeys: Vec::new(),
            now_ms: crate::sys::now_ms(),
        }
    }

    /// Device `device` of the account.
    pub fn device(&self, device: DeviceId) -> DeviceAddress {
        DeviceAddress {
            account: self.identity.account_id(),
            device,
        }
    }

    /// A signed `auth` for the challenge in `hello`.
    pub fn auth(&self, hello: &Hello) -> Auth {
        self.auth_as(hello, DeviceId::PRIMARY)
    }

    /// A signed `auth` as the account's `device` (on its published list) for the
    /// challenge in `hello`: every device logs in with the account's identity key.
    pub fn auth_as(&self, hello: &Hello, device: DeviceId) -> Auth {
        Auth::signed(&self.identity, hello, self.device(device))
    }

    /// The account's device list at `version` naming devices `1..=devices`, signed.
    pub fn device_list(&self, version: u64, devices: u32) -> anyhow::Result<SignedDeviceList> {
        let now_ms = crate::sys::now_ms();
        DeviceList {
            account: self.identity.account_id(),
            version,
            devices: (1..=devices)
                .map(|d| DeviceEntry {
                    device: DeviceId(d),
                    name: format!("load device {d}"),
                    linked_at_ms: now_ms,
                })
                .collect(),
        }
        .sign(&self.identity)
        .map_err(|e| anyhow::anyhow!("signing a device list: {e:?}"))
    }

    /// This account's signed grant of `categories` to `business`, issued now, without
    /// expiry, with a fresh nonce.
    pub fn consent_grant(
        &self,
        business: AccountId,
        categories: CategorySet,
    ) -> anyhow::Result<SignedGrant> {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let issued_at_ms = crate::sys::now_ms();
        ConsentGrant {
            user: self.identity.account_id(),
            business,
            categories,
            issued_at_ms,
            expires_at_ms: None,
            nonce: ConsentNonce(nonce),
        }
        .sign(&self.identity)
        .map_err(|e| anyhow::anyhow!("signing a consent grant: {e:?}"))
    }
}
