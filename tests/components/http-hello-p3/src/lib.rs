//! A WASI 0.3 `wasi:http/handler` component (async: one instance may serve several requests at
//! once) for tests and the benchmark. Built with the `wasip3` crate, so it imports the `@0.3.2`
//! interfaces, and, through Rust's standard library, some WASI 0.2 ones too.
//!
//! - any path: `200 hello from trellis p3, path=<path>`
//! - `/echo`: the request body back
//! - `/calls`: how many requests this instance has served, this one included
//! - `/sleep/<ms>`: waits `ms` milliseconds on the host's clock (as on I/O, without holding a
//!   thread), then answers `slept <ms> ms, <n> at once`: the most requests this instance has
//!   had in flight at one time
//! - `/fetch?to=<host:port>`: GETs `http://<host:port>/from-component` through
//!   `wasi:http/client` and answers with the status and body, or the error
//! - `/greet/<name>`: `trellis:test/types.greet(name)` over a link (a custom WIT interface,
//!   served by the WASI 0.2 `greeter`), answered with its result
//! - `/trap`: traps

use std::sync::atomic::{AtomicU32, Ordering};

use wasip3::http::client;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Hello);

mod greeting {
    wit_bindgen::generate!({ path: "../wit", world: "greeting" });
}

struct Hello;

/// Requests this instance has served.
static CALLS: AtomicU32 = AtomicU32::new(0);
/// Requests in flight in this instance now, and the most at once so far.
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
static PEAK: AtomicU32 = AtomicU32::new(0);

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_else(|| "/".to_string());
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let body = match path.as_str() {
            "/calls" => calls.to_string().into_bytes(),
            "/trap" => panic!("asked to trap"),
            "/echo" => read_body(request).await,
            p if p.starts_with("/greet/") => {
                greeting::trellis::test::types::greet(&p["/greet/".len()..]).into_bytes()
            }
            p if p.starts_with("/sleep/") => {
                let ms: u64 = p["/sleep/".len()..].parse().unwrap_or(0);
                let now = IN_FLIGHT.fetch_add(1, Ordering::Relaxed) + 1;
                PEAK.fetch_max(now, Ordering::Relaxed);
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
                format!("slept {ms} ms, {} at once\n", PEAK.load(Ordering::Relaxed)).into_bytes()
            }
            p if p.starts_with("/fetch") => {
                fetch(p.split_once("?to=").map_or("127.0.0.1:9", |(_, to)| to)).await
            }
            _ => format!("hello from trellis p3, path={path}\n").into_bytes(),
        };
        Ok(respond(body))
    }
}

/// A 200 response carrying `body`, written by a task of its own once the host reads it.
fn respond(body: Vec<u8>) -> Response {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"text/plain");
    let _ = headers.append("x-component", b"http-hello-p3");
    let (mut contents, reader) = wit_stream::new();
    let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
    drop(trailers);
    let (response, _sent) = Response::new(headers, Some(reader), trailers_reader);
    wasip3::spawn_local(async move {
        contents.write_all(body).await;
    });
    response
}

/// The whole request body.
async fn read_body(request: Request) -> Vec<u8> {
    let (done, done_reader) = wit_future::new(|| Ok(()));
    let (contents, _trailers) = Request::consume_body(request, done_reader);
    let body = contents.collect().await;
    drop(done);
    body
}

/// GETs `http://<to>/from-component`: the status and body, or the error, as text.
async fn fetch(to: &str) -> Vec<u8> {
    let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
    drop(trailers);
    let (request, _sent) = Request::new(Fields::new(), None, trailers_reader, None);
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(to));
    let _ = request.set_path_with_query(Some("/from-component"));
    match client::send(request).await {
        Ok(response) => {
            let status = response.get_status_code();
            let (done, done_reader) = wit_future::new(|| Ok(()));
            let (contents, _trailers) = Response::consume_body(response, done_reader);
            let body = contents.collect().await;
            drop(done);
            format!("fetched: {status} {}", String::from_utf8_lossy(&body)).into_bytes()
        }
        Err(e) => format!("fetch failed: {e:?}").into_bytes(),
    }
}
