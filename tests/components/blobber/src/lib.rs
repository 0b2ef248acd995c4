//! An HTTP component that uses `wasi:blobstore@0.2.0-draft` through whatever provider its link
//! names. Container `box` is created on first use.
//!
//! - `PUT /o/<name>` (body): writes the object (through an output stream)
//! - `GET /o/<name>`: the object (through an input stream), 404 when missing
//! - `GET /range/<name>?<start>-<end>`: bytes start..=end (read whole)
//! - `DELETE /o/<name>`
//! - `GET /list`: the object names, one per line
//! - `GET /copy/<from>/<to>`, `GET /info/<name>`: copy, size
//!
//! A blob store error is a 500 whose body is the error.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../host/wit/blobstore",
        world: "wasi:blobstore/imports",
        with: {
            "wasi:io/streams@0.2.0": ::wasi::io::streams,
            "wasi:io/error@0.2.0": ::wasi::io::error,
            "wasi:io/poll@0.2.0": ::wasi::io::poll,
        },
    });
}

use bindings::wasi::blobstore::blobstore::{copy_object, create_container, get_container};
use bindings::wasi::blobstore::container::Container;
use bindings::wasi::blobstore::types::{IncomingValue, ObjectId, OutgoingValue};
use ::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};

struct Blobber;

impl ::wasi::exports::http::incoming_handler::Guest for Blobber {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = match route(request) {
            Ok(Some(body)) => (200, body),
            Ok(None) => (404, b"not found".to_vec()),
            Err(e) => (500, e.into_bytes()),
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = out.write() {
            for chunk in body.chunks(4096) {
                let _ = stream.blocking_write_and_flush(chunk);
            }
        }
        let _ = OutgoingBody::finish(out, None);
    }
}

fn container() -> Result<Container, String> {
    get_container(&"box".to_string()).or_else(|_| create_container(&"box".to_string()))
}

fn route(request: IncomingRequest) -> Result<Option<Vec<u8>>, String> {
    let path = request.path_with_query().unwrap_or_default();
    let method = request.method();
    let c = container()?;
    if let Some(name) = path.strip_prefix("/o/") {
        return match method {
            Method::Put => {
                let value = OutgoingValue::new_outgoing_value();
                c.write_data(&name.to_string(), &value)?;
                {
                    let stream = value.outgoing_value_write_body().map_err(|()| "no body stream")?;
                    for chunk in read_body(request).chunks(4096) {
                        stream.blocking_write_and_flush(chunk).map_err(|e| format!("{e:?}"))?;
                    }
                }
                OutgoingValue::finish(value)?;
                Ok(Some(b"stored".to_vec()))
            }
            Method::Delete => c.delete_object(&name.to_string()).map(|()| Some(b"deleted".to_vec())),
            _ => {
                if !c.has_object(&name.to_string())? {
                    return Ok(None);
                }
                let value = c.get_data(&name.to_string(), 0, u64::MAX)?;
                let stream = IncomingValue::incoming_value_consume_async(value)?;
                let mut out = Vec::new();
                while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                    out.extend_from_slice(&chunk);
                }
                Ok(Some(out))
            }
        };
    }
    if let Some(rest) = path.strip_prefix("/range/") {
        let (name, range) = rest.split_once('?').ok_or("expected /range/<name>?<start>-<end>")?;
        let (start, end) = range.split_once('-').ok_or("expected <start>-<end>")?;
        let (start, end) = (start.parse().map_err(|_| "bad start")?, end.parse().map_err(|_| "bad end")?);
        let value = c.get_data(&name.to_string(), start, end)?;
        return IncomingValue::incoming_value_consume_sync(value).map(Some);
    }
    if path == "/list" {
        let names = c.list_objects()?;
        let mut all = Vec::new();
        loop {
            let (page, end) = names.read_stream_object_names(2)?;
            all.extend(page);
            if end {
                break;
            }
        }
        return Ok(Some(all.join("\n").into_bytes()));
    }
    if let Some(rest) = path.strip_prefix("/copy/") {
        let (from, to) = rest.split_once('/').ok_or("expected /copy/<from>/<to>")?;
        let id = |o: &str| ObjectId { container: "box".into(), object: o.into() };
        copy_object(&id(from), &id(to))?;
        return Ok(Some(b"copied".to_vec()));
    }
    if let Some(name) = path.strip_prefix("/info/") {
        let info = c.object_info(&name.to_string())?;
        return Ok(Some(format!("{} {} bytes", info.name, info.size).into_bytes()));
    }
    Ok(None)
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else { return out };
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            out.extend_from_slice(&chunk);
        }
    }
    let _ = IncomingBody::finish(body);
    out
}

::wasi::http::proxy::export!(Blobber);
