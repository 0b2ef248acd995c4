//! A `wasi:http/incoming-handler` component that uses `wasi:keyvalue@0.2.0-draft` (store,
//! atomics, batch) through whatever provider its link names. The bucket is `?bucket=<name>`
//! (default `default`); `?link=<name>` uses that named link (`wasmcloud:bus`) instead of
//! `default`.
//!
//! - `/count/<key>`: increments the counter, answers the new value
//! - `/get/<key>`: the value, or 404
//! - `/set/<key>` (body): stores the body
//! - `/del/<key>`, `/exists/<key>`
//! - `/keys`: every key of the bucket, sorted, one per line (all pages)
//! - `/batch`: set-many a=1 b=2, get-many [a b missing], delete-many [a], answers what it saw
//!
//! A key-value error is a 500 whose body is the error.

wit_bindgen::generate!({
    path: "../../../host/wit/keyvalue",
    world: "wasi:keyvalue/imports",
    generate_all,
});

mod bus {
    wit_bindgen::generate!({ path: "../../../host/wit/bus", world: "wasmcloud:bus/imports" });
}

use wasi::keyvalue::{atomics, batch, store};
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Counter;

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let param = |name: &str| {
            query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).map(str::to_owned)
        };
        let bucket = param("bucket").unwrap_or_else(|| "default".to_owned());
        if let Some(link) = param("link") {
            use bus::wasmcloud::bus::lattice::{CallTargetInterface, set_link_name};
            let store = CallTargetInterface::new("wasi", "keyvalue", "store");
            let atomics = CallTargetInterface::new("wasi", "keyvalue", "atomics");
            set_link_name(&link, vec![store, atomics]);
        }
        let (status, body) = match route(path, &bucket, request) {
            Ok(Some(body)) => (200, body),
            Ok(None) => (404, b"not found\n".to_vec()),
            Err(e) => (500, format!("{e:?}\n").into_bytes()),
        };
        respond(response_out, status, &body);
    }
}

fn route(path: &str, bucket: &str, request: IncomingRequest) -> Result<Option<Vec<u8>>, store::Error> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (op, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let b = store::open(bucket)?;
    Ok(match op {
        "count" => Some(atomics::increment(&b, key, 1)?.to_string().into_bytes()),
        "get" => b.get(key)?,
        "set" => {
            b.set(key, &read_body(request))?;
            Some(b"ok".to_vec())
        }
        "del" => {
            b.delete(key)?;
            Some(b"ok".to_vec())
        }
        "exists" => Some(b.exists(key)?.to_string().into_bytes()),
        "keys" => {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let page = b.list_keys(cursor)?;
                all.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            all.sort();
            Some(all.join("\n").into_bytes())
        }
        "batch" => {
            batch::set_many(&b, &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())])?;
            let got = batch::get_many(&b, &["a".into(), "b".into(), "missing".into()])?;
            batch::delete_many(&b, &["a".into()])?;
            let after = b.exists("a")?;
            let seen: Vec<String> = got
                .into_iter()
                .map(|v| match v {
                    Some((k, v)) => format!("{k}={}", String::from_utf8_lossy(&v)),
                    None => "none".into(),
                })
                .collect();
            Some(format!("{} a-after-delete={after}", seen.join(",")).into_bytes())
        }
        _ => None,
    })
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else { return out };
    let Ok(stream) = body.stream() else { return out };
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend_from_slice(&chunk);
    }
    drop(stream);
    IncomingBody::finish(body);
    out
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    {
        let Ok(stream) = outgoing.write() else { return };
        for chunk in body.chunks(4096) {
            let _ = stream.blocking_write_and_flush(chunk);
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(Counter);
