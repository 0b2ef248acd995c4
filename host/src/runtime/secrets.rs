//! `wasmcloud:secrets` (`store` and `reveal`), served by the host for components written for
//! wasmCloud 1.x: `get` hands out a handle to a secret granted to the component by name
//! (`--secret`, or `secrets:` in a manifest), `reveal` its value. The same secrets read as
//! `wasi:config` keys; a component without the grant gets `not-found` either way.

use wasmtime::component::{HasSelf, Linker, Resource};

use super::state::CallState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/secrets",
        world: "wasmcloud:secrets/imports",
        imports: { default: trappable },
        with: { "wasmcloud:secrets/store.secret": super::Secret },
    });
}

use bindings::wasmcloud::secrets::{reveal, store};

/// A handle to a secret granted to the calling component: its name only; the value is looked
/// up when revealed, so a handle holds nothing worth stealing.
#[derive(Debug)]
pub struct Secret {
    name: String,
}

/// Adds the secrets interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    bindings::Imports::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}

impl CallState {
    fn granted_secret(&self, name: &str) -> Option<String> {
        self.outbound.as_ref().and_then(|o| o.secret(&self.component_id, name))
    }
}

impl store::Host for CallState {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Secret>, store::SecretsError>> {
        if self.granted_secret(&key).is_none() {
            return Ok(Err(store::SecretsError::NotFound));
        }
        Ok(Ok(self.table.push(Secret { name: key })?))
    }
}

impl store::HostSecret for CallState {
    fn drop(&mut self, secret: Resource<Secret>) -> wasmtime::Result<()> {
        self.table.delete(secret)?;
        Ok(())
    }
}

impl reveal::Host for CallState {
    fn reveal(&mut self, secret: Resource<Secret>) -> wasmtime::Result<store::SecretValue> {
        let name = &self.table.get(&secret)?.name;
        // Granted when the handle was made, and grants do not change while a replica runs.
        let value = self.granted_secret(name).unwrap_or_default();
        Ok(store::SecretValue::String(value))
    }
}
