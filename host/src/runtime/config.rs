//! `wasi:config` (`store`, and `runtime` for older components) and `wasi:logging`, served by
//! the host: config is the component's named configs merged (`trellis config put`, `trellis
//! start component --config`), log records go to the host's log with the component's id.

use wasmtime::component::{HasSelf, Linker};

use super::state::CallState;

mod bindings {
    pub mod config {
        wasmtime::component::bindgen!({
            path: "wit/config",
            world: "wasi:config/imports",
            imports: { default: trappable },
        });
    }
    pub mod logging {
        wasmtime::component::bindgen!({
            path: "wit/logging",
            world: "wasi:logging/imports",
            imports: { default: trappable },
        });
    }
}

use bindings::config::wasi::config::{runtime, store};
use bindings::logging::wasi::logging::logging::{self, Level};

/// Adds the config and logging interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    bindings::config::Imports::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    bindings::logging::Imports::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}

impl CallState {
    fn config_all(&self) -> Vec<(String, String)> {
        self.outbound.as_ref().map(|o| o.config(&self.component_id)).unwrap_or_default()
    }

    fn config_get(&self, key: &str) -> Option<String> {
        self.config_all().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl store::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        Ok(Ok(self.config_get(&key)))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.config_all()))
    }
}

impl runtime::Host for CallState {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, runtime::ConfigError>> {
        Ok(Ok(self.config_get(&key)))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, runtime::ConfigError>> {
        Ok(Ok(self.config_all()))
    }
}

impl logging::Host for CallState {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        let component = &*self.component_id;
        // Correlated with the request: the trace id a collector shows.
        let trace_id = self.trace.trace_id_hex();
        match level {
            Level::Trace => tracing::trace!(component, trace_id, context, "{message}"),
            Level::Debug => tracing::debug!(component, trace_id, context, "{message}"),
            Level::Info => tracing::info!(component, trace_id, context, "{message}"),
            Level::Warn => tracing::warn!(component, trace_id, context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(component, trace_id, context, "{message}")
            }
        }
        Ok(())
    }
}
