//! `wasmcloud:bus/lattice@1.0.0`: a component chooses the named link that serves an interface
//! for the rest of the call (`set-link-name`); without it every interface uses `default`.

use std::collections::HashMap;

use trellis_lattice::link::DEFAULT_LINK_NAME;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::state::CallState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/bus",
        world: "wasmcloud:bus/imports",
        imports: { default: trappable },
        with: { "wasmcloud:bus/lattice.call-target-interface": super::CallTargetInterface },
    });
}

use bindings::wasmcloud::bus::lattice;

/// An interface named by the component: `namespace:package/interface`.
#[derive(Debug)]
pub struct CallTargetInterface(String);

/// The link names a component chose, by interface (`ns:pkg/iface`).
#[derive(Debug, Default)]
pub(crate) struct LinkNames(HashMap<String, String>);

impl LinkNames {
    /// Uses link `name` for `interface`.
    pub fn set(&mut self, interface: String, name: String) {
        self.0.insert(interface, name);
    }

    /// The link name for `interface`.
    pub fn get(&self, interface: &str) -> &str {
        self.0.get(interface).map_or(DEFAULT_LINK_NAME, String::as_str)
    }
}

/// Adds the interface to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    lattice::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}

impl lattice::Host for CallState {
    fn set_link_name(
        &mut self,
        name: String,
        interfaces: Vec<Resource<CallTargetInterface>>,
    ) -> wasmtime::Result<()> {
        for interface in interfaces {
            let CallTargetInterface(interface) = self.table.delete(interface)?;
            // A bucket or container belongs to the link it was opened through: the interfaces
            // that work on one follow the interface that opens it.
            let interface = match interface.as_str() {
                "wasi:keyvalue/atomics" | "wasi:keyvalue/batch" => "wasi:keyvalue/store".to_owned(),
                "wasi:blobstore/container" | "wasi:blobstore/types" => {
                    "wasi:blobstore/blobstore".to_owned()
                }
                _ => interface,
            };
            self.set_link_name(interface, name.clone());
        }
        Ok(())
    }
}

impl lattice::HostCallTargetInterface for CallState {
    fn new(
        &mut self,
        namespace: String,
        package: String,
        interface: String,
    ) -> wasmtime::Result<Resource<CallTargetInterface>> {
        let name = format!("{namespace}:{package}/{interface}");
        Ok(self.table.push(CallTargetInterface(name))?)
    }

    fn drop(&mut self, this: Resource<CallTargetInterface>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_interfaces_use_the_default_link() {
        let mut names = LinkNames::default();
        assert_eq!(names.get("wasi:keyvalue/store"), "default");
        names.set("wasi:keyvalue/store".into(), "cache".into());
        assert_eq!(names.get("wasi:keyvalue/store"), "cache");
        assert_eq!(names.get("acme:x/y"), "default");
    }
}
