//! Test identities: real Ed25519/X25519 keys and correctly signed frames.

use parley_protocol::auth::register_transcript;
use parley_protocol::e2e::KemPrekeySecret;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, Handle, PrekeyId};
use parley_protocol::prekeys::PrekeySecret;
use parley_protocol::wire::client::{Auth, ClientBody, Register};
use parley_protocol::wire::server::Hello;
use rand_core::OsRng;

/// An account a test controls.
#[derive(Debug)]
pub struct TestAccount {
    /// The identity keys.
    pub identity: IdentityKeyPair,
    /// Its handle, if any.
    pub handle: Option<Handle>,
    /// The signed prekey secret.
    pub signed_prekey: PrekeySecret,
    /// The KEM prekey (ML-KEM-768), id 2: a registration without one is refused.
    pub kem_prekey: KemPrekeySecret,
    /// One-time prekey secrets, ids 1..=n.
    pub one_time: Vec<PrekeySecret>,
}

impl TestAccount {
    /// A fresh identity with a KEM prekey, `one_time` one-time prekeys and an optional
    /// handle.
    pub fn new(handle: Option<&str>, one_time: u32) -> TestAccount {
        TestAccount {
            identity: IdentityKeyPair::generate(&mut OsRng),
            handle: handle.map(|h| Handle::parse(h).expect("test handles are valid")),
            signed_prekey: PrekeySecret::generate(PrekeyId(1), &mut OsRng),
            kem_prekey: KemPrekeySecret::generate(PrekeyId(2), &mut OsRng),
            one_time: (1..=one_time)
                .map(|id| PrekeySecret::generate(PrekeyId(id), &mut OsRng))
                .collect(),
        }
    }

    /// The account's primary device.
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            account: self.identity.account_id(),
            device: DeviceId::PRIMARY,
        }
    }

    /// A correctly signed `register` for the challenge in `hello`.
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
            kem_prekey: Some(self.kem_prekey.signed_by(&self.identity)),
            one_time_prekeys: self.one_time.iter().map(PrekeySecret::one_time).collect(),
        }
    }

    /// [`TestAccount::register`] as a frame body.
    pub fn register_body(&self, hello: &Hello) -> ClientBody {
        ClientBody::Register(self.register(hello))
    }

    /// A correctly signed `auth` for the challenge in `hello`.
    pub fn auth_body(&self, hello: &Hello) -> ClientBody {
        self.auth_body_as(hello, DeviceId::PRIMARY)
    }

    /// A correctly signed `auth` as the account's `device` (a linked device holds the same
    /// identity key).
    pub fn auth_body_as(&self, hello: &Hello, device: DeviceId) -> ClientBody {
        let address = DeviceAddress {
            account: self.identity.account_id(),
            device,
        };
        ClientBody::Auth(Auth::signed(&self.identity, hello, address))
    }
}
