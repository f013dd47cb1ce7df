//! Load-test identities: real Ed25519/X25519 keys and correctly signed `register` and
//! `auth` bodies. No one-time prekeys: the relay path does not need them.

use parley_protocol::auth::{auth_transcript, register_transcript};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, PrekeyId};
use parley_protocol::prekeys::PrekeySecret;
use parley_protocol::wire::client::{Auth, ClientBody, Register};
use parley_protocol::wire::server::Hello;
use rand_core::OsRng;

/// An account the generator controls.
#[derive(Debug)]
pub struct Account {
    identity: IdentityKeyPair,
    signed_prekey: PrekeySecret,
}

impl Account {
    /// A fresh identity.
    pub fn generate() -> Account {
        Account {
            identity: IdentityKeyPair::generate(&mut OsRng),
            signed_prekey: PrekeySecret::generate(PrekeyId(1), &mut OsRng),
        }
    }

    /// The account's only device.
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            account: self.identity.account_id(),
            device: DeviceId::PRIMARY,
        }
    }

    /// A signed `register` for the challenge in `hello`.
    pub fn register_body(&self, hello: &Hello) -> ClientBody {
        let identity = self.identity.public();
        let transcript = register_transcript(&hello.server_id, &hello.nonce, &identity, None);
        ClientBody::Register(Register {
            signature: self.identity.sign(&transcript),
            identity,
            handle: None,
            signed_prekey: self.signed_prekey.signed_by(&self.identity),
            kem_prekey: None,
            one_time_prekeys: Vec::new(),
        })
    }

    /// A signed `auth` for the challenge in `hello`.
    pub fn auth_body(&self, hello: &Hello) -> ClientBody {
        let address = self.address();
        let transcript = auth_transcript(&hello.server_id, &hello.nonce, &address);
        ClientBody::Auth(Auth {
            address,
            signature: self.identity.sign(&transcript),
        })
    }
}
