//! A `wasi:http/incoming-handler@0.2.0` component: answers `hello from wasi 0.2.0, path=<path>`.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(200);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = out.write() {
            let _ = stream.blocking_write_and_flush(format!("hello from wasi 0.2.0, path={path}\n").as_bytes());
        }
        let _ = OutgoingBody::finish(out, None);
    }
}

wasi::http::proxy::export!(Hello);
