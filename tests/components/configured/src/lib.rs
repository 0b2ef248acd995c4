//! An HTTP component that reads its runtime config (`wasi:config`) and logs (`wasi:logging`).
//!
//! - `/config/<key>`: the value from `wasi:config/store`, or 404
//! - `/runtime/<key>`: the same through the older `wasi:config/runtime`
//! - `/config`: every `key=value`, one per line
//! - `/secret/<name>`: a granted secret through `wasmcloud:secrets` (`store.get`, then
//!   `reveal`), or 404 with the error
//!
//! Every request is logged at info level with context `configured`.

mod config {
    wit_bindgen::generate!({ path: "../../../host/wit/config", world: "wasi:config/imports" });
}
mod logging {
    wit_bindgen::generate!({ path: "../../../host/wit/logging", world: "wasi:logging/imports" });
}
mod secrets {
    wit_bindgen::generate!({ path: "../../../host/wit/secrets", world: "wasmcloud:secrets/imports" });
}

use config::wasi::config::{runtime, store};
use logging::wasi::logging::logging::{Level, log};
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Configured;

impl wasip2::exports::http::incoming_handler::Guest for Configured {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        log(Level::Info, "configured", &format!("serving {path}"));
        let found = if let Some(name) = path.strip_prefix("/secret/") {
            secret(name)
        } else if let Some(key) = path.strip_prefix("/config/") {
            store::get(key).ok().flatten()
        } else if let Some(key) = path.strip_prefix("/runtime/") {
            runtime::get(key).ok().flatten()
        } else {
            let all = store::get_all().unwrap_or_default();
            Some(all.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"))
        };
        let (status, body) = match found {
            Some(value) => (200, value),
            None => (404, "no such key".to_owned()),
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = out.write() {
            let _ = stream.blocking_write_and_flush(body.as_bytes());
        }
        let _ = OutgoingBody::finish(out, None);
    }
}

/// Secret `name` as wasmCloud 1.x components read one: a handle first, the value on reveal.
fn secret(name: &str) -> Option<String> {
    use secrets::wasmcloud::secrets::{reveal, store};
    let handle = store::get(name).ok()?;
    match reveal::reveal(&handle) {
        store::SecretValue::String(value) => Some(value),
        store::SecretValue::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

wasip2::http::proxy::export!(Configured);
