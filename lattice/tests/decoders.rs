//! Decoders of network input never panic: valid encodings, each mutated many ways, and random
//! bytes (proptest: different ones each run, a failure shrunk to a small input). A quick
//! stand-in for the fuzz targets in `fuzz/`, run on every test run.

use trellis_lattice::hostlink::{
    Bootstrap, ToHost, ToProvider, WireError, decode_frame, encode_frame,
};
use trellis_lattice::http::{HttpRequest, HttpResponse, decode, encode};
use trellis_lattice::subject::Subjects;

mod mutants;

use mutants::on_mutants;

fn request() -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path_and_query: "/a?b".into(),
        authority: Some("h".into()),
        headers: vec![("k".into(), b"v".to_vec().into())],
        body: b"body".to_vec().into(),
        scheme: None,
    }
}

#[test]
fn http_messages_survive_mutation() {
    let req = encode(&request()).unwrap();
    let resp =
        encode(&HttpResponse { status: 200, headers: vec![], body: b"x".to_vec().into() }).unwrap();
    for seed in [req, resp] {
        on_mutants(&seed, 5000, |m| {
            let _ = decode::<HttpRequest>(m);
            let _ = decode::<HttpResponse>(m);
        });
    }
}

#[test]
fn hostlink_frames_survive_mutation() {
    let frames = [
        encode_frame(&ToHost::Invoke {
            id: 1,
            target: "t".into(),
            interface: "wasi:http/incoming-handler".into(),
            function: "handle".into(),
            timeout_ms: 5,
            payload: vec![1, 2],
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        })
        .unwrap(),
        encode_frame(&ToProvider::Reply {
            id: 1,
            result: Err(WireError { kind: "Trap".into(), message: "m".into() }),
        })
        .unwrap(),
        encode_frame(&Bootstrap {
            lattice: "l".into(),
            nats_url: "nats://x".into(),
            nats_auth: Default::default(),
            host_id: "h".into(),
            provider_id: "p".into(),
            kind: "k".into(),
            telemetry: trellis_lattice::telemetry::Config::from_vars("s", |name| {
                (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318".to_owned())
            })
            .unwrap(),
            trusted_operators: vec![],
            allow_unsigned: false,
        })
        .unwrap(),
    ];
    for frame in frames {
        on_mutants(&frame[4..], 5000, |m| {
            let _ = decode_frame::<ToHost>(m);
            let _ = decode_frame::<ToProvider>(m);
            let _ = decode_frame::<Bootstrap>(m);
        });
    }
}

#[test]
fn subjects_survive_mutation() {
    let s = Subjects::new("lat").unwrap();
    for seed in [s.rpc("a", "wasi:http/incoming-handler", "handle"), s.hosts_ping()] {
        on_mutants(seed.as_bytes(), 5000, |m| {
            let _ = s.parse(&String::from_utf8_lossy(m));
        });
    }
}

#[test]
fn signed_invocation_headers_survive_mutation() {
    use trellis_lattice::envelope::Invocation;
    use trellis_lattice::signing::{BodyDigest, HOST, SIG, Signed, Signer, Verifier};
    let signer = Signer::new(nkeys::KeyPair::new_server(), None);
    let verifier = Verifier::new(vec![nkeys::KeyPair::new_cluster().public_key()], false, 60_000);
    let now = 1_800_000_000_000;
    let inv = Invocation {
        source: "s".into(),
        operation: "o".into(),
        deadline_ms: now + 1000,
        jti: "j".into(),
        link: "default".into(),
        trace: Some(trellis_lattice::trace::TraceContext::root()),
        caller: None,
        depth: 0,
    };
    let mut headers = inv.to_headers();
    signer.sign(
        &mut headers,
        &Signed {
            subject: "x",
            operation: "o",
            source: "s",
            jti: "j",
            link: "default",
            caller: None,
            deadline_ms: now + 1000,
            body: BodyDigest::of(b"b"),
        },
    );
    for name in [HOST, SIG, trellis_lattice::envelope::header::DEADLINE] {
        let value = headers.get(name).unwrap().as_str().as_bytes().to_vec();
        on_mutants(&value, 1000, |m| {
            // A header value on the wire has no line breaks (and HeaderMap refuses them).
            let value = String::from_utf8_lossy(m).replace(['\r', '\n'], "");
            let mut h = headers.clone();
            h.insert(name, value.as_str());
            let _ = verifier.verify(("x", "_INBOX.x.1"), Some(&h), BodyDigest::of(b"b"), now);
        });
    }
}

#[test]
fn signed_control_request_headers_survive_mutation() {
    use trellis_lattice::envelope::header::{DEADLINE, JTI};
    use trellis_lattice::signing::{ControlVerifier, OPERATOR, OperatorKey, Role, SIG};
    let key = OperatorKey::generate();
    let trusted = key.public_key().parse().unwrap();
    let verifier = ControlVerifier::new(vec![trusted], false);
    let now = 1_800_000_000_000;
    let headers = key.sign("s", b"body", now + 1000);
    for name in [OPERATOR, SIG, DEADLINE, JTI] {
        let value = headers.get(name).unwrap().as_str().as_bytes().to_vec();
        on_mutants(&value, 1000, |m| {
            let value = String::from_utf8_lossy(m).replace(['\r', '\n'], "");
            let mut h = headers.clone();
            h.insert(name, value.as_str());
            // Only the unchanged request may pass (a mutant can equal the original).
            if verifier.check("s", Some(&h), b"body", Role::Admin, now).is_ok() {
                assert_eq!(h.get(name), headers.get(name));
            }
        });
    }
}

#[test]
fn chunk_announcements_survive_mutation() {
    use trellis_lattice::chunks::{BODY, BODY_LEN, BODY_SHA256, announced};
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(BODY, "_INBOX.abc");
    headers.insert(BODY_LEN, "4096");
    headers.insert(BODY_SHA256, "A".repeat(43).as_str());
    assert!(announced(Some(&headers)).unwrap().is_ok());
    for name in [BODY, BODY_LEN, BODY_SHA256] {
        let value = headers.get(name).unwrap().as_str().as_bytes().to_vec();
        on_mutants(&value, 1000, |m| {
            let value = String::from_utf8_lossy(m).replace(['\r', '\n'], "");
            let mut h = headers.clone();
            h.insert(name, value.as_str());
            let _ = announced(Some(&h));
        });
    }
}
