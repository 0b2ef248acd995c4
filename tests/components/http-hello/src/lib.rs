//! A `wasi:http/incoming-handler` component for tests and the demo.
//!
//! - any path: `200 hello from trellis, path=<path>`
//! - `/echo`: the request body back
//! - `/calls`: how many requests this instance has served, this one included (1 unless the
//!   host keeps instances warm)
//! - `/trap`: traps (to test error reporting)
//! - `/spin`: loops forever (to test deadlines)
//! - `/grow`: allocates memory without end (to test memory limits)
//! - `/recurse`: recurses without end (to test stack limits)
//! - `/fetch?to=<host:port>`: GETs `http://<host:port>/from-component` (imports
//!   `wasi:http/outgoing-handler`) and answers with the status and body, or the error

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

/// Requests this instance has served.
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let body = match path.as_str() {
            "/calls" => calls.to_string().into_bytes(),
            "/trap" => panic!("asked to trap"),
            "/spin" => loop {
                std::hint::black_box(0u8);
            },
            "/grow" => grow(),
            "/recurse" => format!("{}", recurse(std::hint::black_box(1))).into_bytes(),
            p if p.starts_with("/fetch") => {
                fetch(p.split_once("?to=").map_or("127.0.0.1:9", |(_, to)| to))
            }
            "/echo" => read_body(request),
            // A slow call that waits (as on I/O) rather than spins: `/sleep/<ms>`.
            p if p.starts_with("/sleep/") => {
                let ms = p["/sleep/".len()..].parse().unwrap_or(0u64);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                format!("slept {ms} ms\n").into_bytes()
            }
            _ => format!("hello from trellis, path={path}\n").into_bytes(),
        };
        let headers = Fields::new();
        let _ = headers.append("content-type", b"text/plain");
        let _ = headers.append("x-component", b"http-hello");
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(200);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        {
            let Ok(stream) = out.write() else { return };
            for chunk in body.chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    return;
                }
            }
        }
        let _ = OutgoingBody::finish(out, None);
    }
}

fn fetch(authority: &str) -> Vec<u8> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some("/from-component"));
    match outgoing_handler::handle(request, None) {
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => {
                    let status = response.status();
                    let mut body = Vec::new();
                    if let Ok(incoming) = response.consume() {
                        if let Ok(stream) = incoming.stream() {
                            while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                                body.extend_from_slice(&chunk);
                            }
                        }
                    }
                    let mut out = format!("fetched: {status} ").into_bytes();
                    out.extend_from_slice(&body);
                    out
                }
                Some(Ok(Err(e))) => format!("fetch failed: {e:?}\n").into_bytes(),
                other => format!("fetch failed: {other:?}\n").into_bytes(),
            }
        }
        Err(e) => format!("fetch refused: {e:?}\n").into_bytes(),
    }
}

fn grow() -> Vec<u8> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    // Frames too large to be optimised away, so the stack really grows.
    let frame = std::hint::black_box([n; 64]);
    recurse(frame[7].wrapping_add(1)).wrapping_add(frame[3])
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    let Ok(body) = request.consume() else { return bytes };
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend_from_slice(&chunk);
        }
    }
    let _ = IncomingBody::finish(body);
    bytes
}

wasip2::http::proxy::export!(Hello);
