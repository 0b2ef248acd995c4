//! Decoders of network input never panic: valid encodings, each mutated many ways, and random
//! bytes. A quick deterministic stand-in for the fuzz targets in `fuzz/`, run on every test run.

use trellis_lattice::hostlink::{
    Bootstrap, ToHost, ToProvider, WireError, decode_frame, encode_frame,
};
use trellis_lattice::http::{HttpRequest, HttpResponse, decode, encode};
use trellis_lattice::subject::Subjects;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, deletes, duplicates and truncates bytes of `seed`.
fn mutants(seed: &[u8], rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count + count / 4);
    for _ in 0..count {
        let mut m = seed.to_vec();
        for _ in 0..=rng.below(4) {
            if m.is_empty() {
                break;
            }
            let i = rng.below(m.len());
            match rng.below(4) {
                0 => m[i] ^= 1 << rng.below(8),
                1 => {
                    m.remove(i);
                }
                2 => m.insert(i, rng.next() as u8),
                _ => m.truncate(i),
            }
        }
        out.push(m);
    }
    for _ in 0..count / 4 {
        let len = rng.below(64);
        out.push((0..len).map(|_| rng.next() as u8).collect());
    }
    out
}

fn request() -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path_and_query: "/a?b".into(),
        authority: Some("h".into()),
        headers: vec![("k".into(), b"v".to_vec().into())],
        body: b"body".to_vec().into(),
    }
}

#[test]
fn http_messages_survive_mutation() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let req = encode(&request()).unwrap();
    let resp =
        encode(&HttpResponse { status: 200, headers: vec![], body: b"x".to_vec().into() }).unwrap();
    for seed in [req, resp] {
        for m in mutants(&seed, &mut rng, 5000) {
            let _ = decode::<HttpRequest>(&m);
            let _ = decode::<HttpResponse>(&m);
        }
    }
}

#[test]
fn hostlink_frames_survive_mutation() {
    let mut rng = Rng(42);
    let frames = [
        encode_frame(&ToHost::Invoke {
            id: 1,
            target: "t".into(),
            interface: "wasi:http/incoming-handler".into(),
            function: "handle".into(),
            timeout_ms: 5,
            payload: vec![1, 2],
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
        })
        .unwrap(),
    ];
    for frame in frames {
        for m in mutants(&frame[4..], &mut rng, 5000) {
            let _ = decode_frame::<ToHost>(&m);
            let _ = decode_frame::<ToProvider>(&m);
            let _ = decode_frame::<Bootstrap>(&m);
        }
    }
}

#[test]
fn subjects_survive_mutation() {
    let mut rng = Rng(7);
    let s = Subjects::new("lat").unwrap();
    for seed in [s.rpc("a", "wasi:http/incoming-handler", "handle"), s.hosts_ping()] {
        for m in mutants(seed.as_bytes(), &mut rng, 5000) {
            let _ = s.parse(&String::from_utf8_lossy(&m));
        }
    }
}
