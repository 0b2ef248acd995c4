//! Calling an exported function of a custom WIT interface with a fresh store per call:
//! arguments and results are msgpack values (see `values`), checked against the export's types.

use bytes::Bytes;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::trace::TraceContext;
use wasmtime::component::Val;

use super::component::Component;
use super::outbound::CallSettings;
use super::values;

impl Component {
    /// Whether the component exports `interface.function` (interface without version).
    pub fn exports_function(&self, interface: &str, function: &str) -> bool {
        self.functions.get(interface).is_some_and(|f| f.contains_key(function))
    }

    /// Calls `interface.function` with msgpack `payload`; the call is abandoned at its timeout.
    pub async fn call_function(
        &self,
        interface: &str,
        function: &str,
        payload: &[u8],
        settings: CallSettings<'_>,
    ) -> Result<Bytes, InvokeError> {
        let (id, trace) = (settings.component_id, settings.trace);
        let Some(index) = self.functions.get(interface).and_then(|f| f.get(function)) else {
            return Err(InvokeError::new(
                InvokeErrorKind::BadRequest,
                format!("component `{id}` does not export {interface}.{function}"),
            ));
        };
        let timeout = settings.timeout;
        let call = async {
            let mut warm = self.instance(&settings).await.map_err(|e| trap((id, trace), &e))?;
            let func = warm.instance.get_func(&mut warm.store, index).ok_or_else(|| {
                InvokeError::new(
                    InvokeErrorKind::BadRequest,
                    format!("component `{id}` has no function {interface}.{function}"),
                )
            })?;
            let ty = func.ty(&warm.store);
            let args = values::decode_all(payload, ty.params()).map_err(|e| {
                InvokeError::new(
                    InvokeErrorKind::BadRequest,
                    format!("arguments of {interface}.{function} do not fit its types: {e}"),
                )
            })?;
            let mut results = vec![Val::Bool(false); ty.results().len()];
            func.call_async(&mut warm.store, &args, &mut results)
                .await
                .map_err(|e| trap((id, trace), &e))?;
            let encoded = values::encode_all(&results).map(Bytes::from).map_err(|e| {
                InvokeError::new(
                    InvokeErrorKind::Trap,
                    format!("results of {interface}.{function} cannot be sent: {e}"),
                )
            })?;
            // Only an instance whose call succeeded serves another.
            if let Some(pool) = self.warm_pool() {
                pool.put(warm);
            }
            Ok(encoded)
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(InvokeError::new(
                InvokeErrorKind::Timeout,
                format!("component `{id}` did not answer within {timeout:?}"),
            )),
        }
    }
}

fn trap((id, trace): (&str, TraceContext), e: &wasmtime::Error) -> InvokeError {
    let trace_id = trace.trace_id_hex();
    tracing::warn!(component = id, trace_id, error = %format!("{e:#}"), "component call failed");
    InvokeError::new(InvokeErrorKind::Trap, format!("component `{id}` trapped: {}", e.root_cause()))
}
