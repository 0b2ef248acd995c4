//! The lattice's secrets on this host: the secrets key (`--secrets-seed`), and opening the
//! secrets a component is granted when it starts (see `docs/design/secrets.md`).
//!
//! A host opens a secret only for a component it starts with that secret granted, or for an
//! admin operator's `trellis secret get` (sealed again to the operator's one-time key). Values
//! live in the running component's entry ([`crate::components::Running`]) and reach its guest
//! through wasi:config; they are never logged, and no event, span or inventory carries them.

use nkeys::XKey;
use trellis_lattice::record::{Opened, RecordGate};
use trellis_lattice::secrets::{
    SealedSecret, SecretError, SecretStore, SecretValue, public_xkey, xkey_from_seed,
};
use trellis_lattice::subject::validate_id;

use crate::host::HostError;
use crate::refused::Refused;

/// The secrets key and the bucket it opens.
pub(crate) struct Secrets {
    key: XKey,
    store: SecretStore,
    lattice: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("key", &self.key.public_key()).finish_non_exhaustive()
    }
}

/// A secret granted to a component, opened.
pub(crate) type Granted = Vec<(String, SecretValue)>;

impl Secrets {
    /// The secrets of `lattice`, opened with the key whose seed is `seed`.
    pub async fn open(
        seed: &str,
        js: &async_nats::jetstream::Context,
        lattice: &str,
        replicas: usize,
    ) -> Result<Self, HostError> {
        let key = xkey_from_seed(seed).map_err(|e| {
            HostError::Config(format!(
                "--secrets-seed: {e} (it must hold the lattice's secrets seed, SX...)"
            ))
        })?;
        let store = SecretStore::open(js, lattice, replicas).await?;
        Ok(Self { key, store, lattice: lattice.to_owned() })
    }

    /// The public half of the key (`X...`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// Opens secret `name`: it must exist, be sealed by an operator `gate` trusts (or be plain
    /// on a development host) and open with this host's key as `name` of this lattice.
    async fn open_one(&self, name: &str, gate: &RecordGate) -> Result<SecretValue, Refused> {
        validate_id("secret name", name).map_err(|e| Refused::BadRequest(e.to_string()))?;
        let missing = || {
            Refused::NotFound(format!(
                "no secret `{name}` in lattice `{}`; put it with `trellis secret put {name}`",
                self.lattice
            ))
        };
        let entry = self
            .store
            .entry(name)
            .await
            .map_err(|e| Refused::Internal(format!("cannot read secret `{name}`: {e}")))?
            .ok_or_else(missing)?;
        let json = match gate.open(self.store.bucket(), name, &entry) {
            Ok(Opened::Put(json)) => json,
            Ok(Opened::Deleted) => return Err(missing()),
            Err(denied) => {
                return Err(Refused::Denied(format!("secret `{name}` was not taken: {denied}")));
            }
        };
        let opened = SealedSecret::from_json(name, json)
            .and_then(|sealed| sealed.open(&self.key, &self.lattice, name));
        opened.map_err(|e| Refused::Denied(e.to_string()))
    }

    /// Opens every secret in `names` (a component's grants), or says which one failed and why.
    pub async fn open_grants(
        &self,
        names: &[String],
        gate: &RecordGate,
    ) -> Result<Granted, Refused> {
        let mut granted = Vec::with_capacity(names.len());
        for name in names {
            granted.push((name.clone(), self.open_one(name, gate).await?));
        }
        Ok(granted)
    }

    /// Secret `name` sealed to `recipient` (an admin operator's one-time key), by this host's
    /// secrets key: the form `trellis secret get` opens.
    pub async fn reseal(
        &self,
        name: &str,
        recipient: &str,
        gate: &RecordGate,
    ) -> Result<Vec<u8>, Refused> {
        let recipient = public_xkey(recipient).map_err(|e| Refused::BadRequest(e.to_string()))?;
        let value = self.open_one(name, gate).await?;
        let sealed = SealedSecret::seal_from(&self.key, &recipient, &self.lattice, name, &value)
            .map_err(|e: SecretError| Refused::BadRequest(e.to_string()))?;
        Ok(sealed.to_json())
    }
}

/// The refusal of a start with secrets granted on a host without the secrets key.
pub(crate) fn no_key(host: &str) -> Refused {
    Refused::Denied(format!(
        "host {host} holds no secrets key, so it cannot open the secrets granted to this \
         component: start the host with --secrets-seed <file> (TRELLIS_SECRETS_SEED), or place \
         the component on a host that has it"
    ))
}
