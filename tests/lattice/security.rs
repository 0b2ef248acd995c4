//! Signed invocations between hosts: every attack on a strict host is refused with `Denied`
//! before guest code runs, counted, and announced; honest calls from a trusted host go through.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use trellis_lattice::chunks;
use trellis_lattice::envelope::header;
use trellis_lattice::envelope::{Invocation, InvokeError, InvokeErrorKind, unix_ms};
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};
use trellis_lattice::signing::{self, Signer, inbox_prefix, invocation_headers, issue_identity};
use trellis_lattice::subject::EventKind;
use trellis_tests::component;

use crate::{Lattice, get};

fn request(path: &str) -> Bytes {
    let req = HttpRequest::get(path);
    encode(&req).unwrap().into()
}

fn seed_file(dir: &Path, name: &str, key: &nkeys::KeyPair) -> String {
    let path = dir.join(name);
    std::fs::write(&path, key.seed().unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

fn vouched(cluster: &nkeys::KeyPair) -> Signer {
    let key = nkeys::KeyPair::new_server();
    let identity = issue_identity(cluster, &key.public_key(), unix_ms() / 1000).unwrap();
    Signer::new(key, Some(identity))
}

/// Sends one hand-made invocation to `hello`, its answer to `reply_to`'s inbox (the host that
/// signs it has replies there), and returns its typed outcome.
async fn send(
    nats: &async_nats::Client,
    reply_to: &Signer,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: Bytes,
) -> Result<Bytes, InvokeError> {
    let inbox = format!("{}.{}", inbox_prefix(reply_to.public_key()), nats.new_inbox());
    let request = async_nats::Request::new().headers(headers).payload(body).inbox(inbox);
    let msg = nats.send_request(subject.to_owned(), request).await.unwrap();
    match InvokeError::from_reply(msg.headers.as_ref(), &msg.payload) {
        Some(e) => Err(e),
        None => Ok(msg.payload),
    }
}

fn signed_headers(
    signer: &Signer,
    subject: &str,
    body: &[u8],
    deadline_ms: u64,
    jti: &str,
) -> async_nats::HeaderMap {
    let op = "wasi:http/incoming-handler.handle".into();
    let inv = Invocation {
        source: "attacker".into(),
        operation: op,
        deadline_ms,
        jti: jti.into(),
        link: "default".into(),
        trace: None,
        caller: None,
        depth: 0,
    };
    invocation_headers(&inv, subject, body, Some(signer))
}

#[tokio::test]
async fn strict_hosts_refuse_every_forged_replayed_or_untrusted_call() {
    let lattice = Lattice::new("signing").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let account = nkeys::KeyPair::new_account();
    let cluster = nkeys::KeyPair::new_cluster();
    let cluster_seed = seed_file(dir.path(), "cluster.nk", &cluster);
    let strict = vec![
        format!("--trusted-issuer={}", account.public_key()),
        format!("--trusted-cluster={}", cluster.public_key()),
        format!("--cluster-seed={cluster_seed}"),
    ];
    let worker = t.host_with("worker", &strict).await;
    let edge = t.host_with("edge", &strict).await;

    let file = trellis_tests::signed_hello(dir.path(), &account, false);
    t.ok(&["start", "component", &file, "--id", "hello", "--host", &worker.id]).await;

    // Honest path: HTTP into the edge host, signed by it, served on the worker.
    let addr = lattice.serve_http(&edge.id, "hello", &[]).await;
    let reply = get(addr, "/signed-hop").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(lattice.invocations(&worker.id, "hello").await >= 2);

    let client = t.client().await;
    let mut denied_events = client
        .nats()
        .subscribe(client.subjects().event(EventKind::InvocationDenied))
        .await
        .unwrap();
    trellis_lattice::connect::sync_with_server(client.nats()).await.unwrap();
    let subject = client.subjects().rpc("hello", INCOMING_HANDLER, HANDLE);
    let nats = client.nats();
    let soon = || unix_ms() + 5000;
    let denied = |r: Result<Bytes, InvokeError>| {
        let e = r.expect_err("the call must be refused");
        assert_eq!(e.kind(), InvokeErrorKind::Denied, "{e}");
        e.message().to_owned()
    };

    // A caller vouched for by the trusted cluster gets through.
    let trusted = client.clone().with_signer(vouched(&cluster));
    trusted
        .invoke("hello", INCOMING_HANDLER, HANDLE, request("/ok"), Duration::from_secs(5))
        .await
        .unwrap();

    let unsigned = client
        .invoke("hello", INCOMING_HANDLER, HANDLE, request("/x"), Duration::from_secs(5))
        .await;
    assert!(denied(unsigned).contains("unsigned invocation"));

    let stranger = client.clone().with_signer(vouched(&nkeys::KeyPair::new_cluster()));
    let r = stranger
        .invoke("hello", INCOMING_HANDLER, HANDLE, request("/x"), Duration::from_secs(5))
        .await;
    assert!(denied(r).contains("untrusted cluster"));

    let anonymous = client.clone().with_signer(Signer::new(nkeys::KeyPair::new_server(), None));
    let r = anonymous
        .invoke("hello", INCOMING_HANDLER, HANDLE, request("/x"), Duration::from_secs(5))
        .await;
    assert!(denied(r).contains("no cluster identity"));

    let signer = vouched(&cluster);
    let body = request("/replay");
    let headers = signed_headers(&signer, &subject, &body, soon(), "replay-1");
    send(nats, &signer, &subject, headers.clone(), body.clone())
        .await
        .expect("first delivery is honest");
    assert!(
        denied(send(nats, &signer, &subject, headers.clone(), body.clone()).await)
            .contains("replayed")
    );
    // Captured and sent again to get the answer elsewhere: the reply subject is not the inbox
    // of the host that signed it.
    let headers = signed_headers(&signer, &subject, &body, soon(), "redirect-1");
    let elsewhere =
        nats.request_with_headers(subject.clone(), headers, body.clone()).await.unwrap();
    let e = InvokeError::from_reply(elsewhere.headers.as_ref(), &elsewhere.payload)
        .expect("a call answered elsewhere must be refused");
    assert_eq!(e.kind(), InvokeErrorKind::Denied, "{e}");
    assert!(e.message().contains("reply subject"), "{e}");

    let headers = signed_headers(&signer, &subject, &request("/a"), soon(), "altered-1");
    assert!(
        denied(send(nats, &signer, &subject, headers, request("/b")).await)
            .contains("bad signature")
    );

    let mut forged =
        signed_headers(&vouched(&cluster), &subject, &request("/f"), soon(), "forged-1");
    let real = signed_headers(&signer, &subject, &request("/f"), soon(), "forged-2");
    for name in [trellis_lattice::signing::HOST, trellis_lattice::signing::IDENTITY] {
        forged.insert(name, real.get(name).unwrap().as_str());
    }
    assert!(
        denied(send(nats, &signer, &subject, forged, request("/f")).await)
            .contains("bad signature")
    );

    // A correctly signed call whose operation header names something else than its subject.
    let inv = Invocation {
        source: "attacker".into(),
        operation: "wasi:http/incoming-handler.other".into(),
        deadline_ms: soon(),
        jti: "mismatch-1".into(),
        link: "default".into(),
        trace: None,
        caller: None,
        depth: 0,
    };
    let headers = invocation_headers(&inv, &subject, &request("/m"), Some(&signer));
    assert!(
        denied(send(nats, &signer, &subject, headers, request("/m")).await)
            .contains("does not match")
    );

    // A call past its deadline is refused too, as late (`Timeout`) rather than forbidden.
    let expired = signed_headers(&signer, &subject, &request("/late"), unix_ms() - 1000, "late-1");
    let late = send(nats, &signer, &subject, expired, request("/late")).await.unwrap_err();
    assert_eq!(late.kind(), InvokeErrorKind::Timeout, "{late}");
    assert!(late.message().contains("deadline passed"), "{late}");

    // Each refusal was counted and announced, and no guest code ran for them.
    let event =
        tokio::time::timeout(Duration::from_secs(5), denied_events.next()).await.unwrap().unwrap();
    let event = trellis_proto::Event::decode(event.payload).unwrap();
    assert_eq!(event.host_id, worker.id);
    let info = client.hosts(Duration::from_millis(300)).await.unwrap();
    let worker_info = info.iter().find(|h| h.id == worker.id).unwrap();
    assert!(worker_info.invocations_denied >= 8, "{worker_info:?}");
}

/// `trellis_calls_accepted_total` of the host serving metrics on `addr`: (signature, pair key).
async fn accepted(addr: std::net::SocketAddr) -> (u64, u64) {
    let text = trellis_tests::http_request(addr, "GET", "/metrics", b"").await.unwrap().text();
    let count = |by: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("trellis_calls_accepted_total") && l.contains(&format!("by=\"{by}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {by} count in\n{text}"))
    };
    (count("signature"), count("pair_key"))
}

#[tokio::test]
async fn hosts_that_met_authenticate_calls_by_pair_key_and_new_replicas_are_met_on_the_way() {
    let lattice = Lattice::new("pairkeys").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let cluster = nkeys::KeyPair::new_cluster();
    let cluster_seed = seed_file(dir.path(), "cluster.nk", &cluster);
    let strict = |metrics: Option<std::net::SocketAddr>| {
        // Components may be unsigned here; hosts sign or MAC their calls all the same, and
        // accept them only from hosts the cluster vouched for.
        let mut args = vec![
            "--allow-unsigned".to_owned(),
            format!("--trusted-cluster={}", cluster.public_key()),
            format!("--cluster-seed={cluster_seed}"),
        ];
        if let Some(addr) = metrics {
            args.push(format!("--metrics-listen={addr}"));
        }
        args
    };
    let port = |_| format!("127.0.0.1:{}", trellis_tests::free_port()).parse().unwrap();
    let (first_metrics, second_metrics) = (port(()), port(()));
    let edge = t.host_with("edge", &strict(None)).await;
    let first = t.host_with("first", &strict(Some(first_metrics))).await;
    let wasm = component("http-hello");
    let wasm = wasm.to_str().unwrap();
    t.ok(&["start", "component", wasm, "--id", "hello", "--host", &first.id]).await;
    let addr = lattice.serve_http(&edge.id, "hello", &[]).await;

    for i in 0..10 {
        let reply = get(addr, &format!("/n{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // The edge host's first call was signed; the rest carried a MAC only `first` can check.
    let (signed, mac) = accepted(first_metrics).await;
    assert!((1..=2).contains(&signed), "signed {signed}, mac {mac}");
    assert!(mac >= 9, "signed {signed}, mac {mac}");

    // A replica on a host the edge has not met: calls that land there are refused for want of
    // a signature, sent again signed, and every request is still answered.
    let second = t.host_with("second", &strict(Some(second_metrics))).await;
    t.ok(&["start", "component", wasm, "--id", "hello", "--host", &second.id]).await;
    let mut served_by_second = (0, 0);
    for i in 0..200 {
        let reply = get(addr, &format!("/m{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        served_by_second = accepted(second_metrics).await;
        if served_by_second.1 >= 3 {
            break;
        }
    }
    let (signed, mac) = served_by_second;
    assert!(signed >= 1 && mac >= 3, "the second replica: signed {signed}, mac {mac}");
}

#[tokio::test]
async fn an_unauthenticated_call_announcing_64_mib_is_refused_before_a_single_chunk_is_pulled() {
    let lattice = Lattice::new("preauth").await;
    let t = &lattice.trellis;
    let host = t.host_with("strict", &[]).await;
    // A provider target takes bodies up to 64 MiB in chunks.
    t.ok(&["start", "provider", "http-server", "--id", "web", "--host", &host.id, "--builtin"])
        .await;
    let nats = async_nats::connect(&lattice.nats.url()).await.unwrap();
    let inbox = nats.new_inbox();
    let mut pulls = nats.subscribe(inbox.clone()).await.unwrap();
    let subjects = trellis_lattice::subject::Subjects::new("preauth").unwrap();
    let subject = subjects.rpc("web", INCOMING_HANDLER, HANDLE);
    let announce = |headers: &mut async_nats::HeaderMap| {
        headers.insert(chunks::BODY, inbox.as_str());
        headers.insert(chunks::BODY_LEN, chunks::MAX_BODY.to_string().as_str());
        headers.insert(chunks::BODY_SHA256, "A".repeat(43).as_str());
    };
    let call = |jti: &str| {
        let op = format!("{INCOMING_HANDLER}.{HANDLE}");
        Invocation::new("attacker", &op, Duration::from_secs(5), jti.into())
    };

    // Unsigned.
    let mut headers = call("u1").to_headers();
    announce(&mut headers);
    let request = async_nats::Request::new().headers(headers).payload(Bytes::new());
    let msg = nats.send_request(subject.clone(), request).await.unwrap();
    let err = InvokeError::from_reply(msg.headers.as_ref(), &msg.payload).expect("refused");
    assert_eq!(err.kind(), InvokeErrorKind::Denied, "{err}");
    assert!(err.message().contains("unsigned"), "{err}");

    // Signed by a host key, over some other body than the one announced.
    let signer = Signer::new(nkeys::KeyPair::new_server(), None);
    let mut headers = signed_headers(&signer, &subject, b"tiny", unix_ms() + 5000, "s1");
    announce(&mut headers);
    let err = send(&nats, &signer, &subject, headers, Bytes::new()).await.unwrap_err();
    assert_eq!(err.kind(), InvokeErrorKind::Denied, "{err}");
    assert!(err.message().contains("bad signature"), "{err}");

    // Nobody asked for a chunk.
    let pulled = tokio::time::timeout(Duration::from_millis(500), pulls.next()).await;
    assert!(pulled.is_err(), "the host pulled a chunk: {pulled:?}");
    let hosts = t.client().await.hosts(Duration::from_millis(500)).await.unwrap();
    assert_eq!(hosts.iter().find(|h| h.id == host.id).unwrap().invocations_denied, 2);
}

#[tokio::test]
async fn forged_answers_are_dropped_and_counted_and_the_genuine_one_taken() {
    let lattice = Lattice::new("answers").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let cluster = nkeys::KeyPair::new_cluster();
    let cluster_seed = seed_file(dir.path(), "cluster.nk", &cluster);
    let vouched_args = vec![
        "--allow-unsigned".to_owned(),
        format!("--trusted-cluster={}", cluster.public_key()),
        format!("--cluster-seed={cluster_seed}"),
    ];
    // The caller: a host the cluster vouches for, taking answers only from such hosts.
    let signer = vouched(&cluster).with_trusted_clusters(vec![cluster.public_key()]);
    let caller = t.client().await.with_signer(signer);

    // A replica of `hello` (a host the cluster vouches for, played by the test so the order of
    // answers is certain) is raced by a NATS user who heard the call: before the replica
    // answers, a plain answer, one MAC'd under a host key no cluster vouches for, and a plain
    // refusal arrive in the caller's inbox.
    let nats = async_nats::connect(&lattice.nats.url()).await.unwrap();
    let mut calls = nats.subscribe("trellis.answers.rpc.hello.>").await.unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let replica = vouched(&cluster);
    let forger = Signer::new(nkeys::KeyPair::new_server(), None);
    let serve = {
        let nats = nats.clone();
        tokio::spawn(async move {
            let call = calls.next().await.expect("the call");
            let (reply, headers) = (call.reply.unwrap(), call.headers.unwrap());
            let (from, jti) = (headers.get(signing::HOST).unwrap(), headers.get(header::JTI));
            let (from, jti) = (from.as_str(), jti.unwrap().as_str());
            let answer = |by: &Signer, body: &'static [u8]| {
                let mut headers = async_nats::HeaderMap::new();
                let digest = signing::BodyDigest::of(body);
                by.authenticate_answer(&mut headers, from, jti, digest);
                by.introduce(&mut headers);
                headers
            };
            let forged = Bytes::from_static(b"forged");
            let plain = async_nats::HeaderMap::new();
            nats.publish_with_headers(reply.clone(), plain, forged.clone()).await.unwrap();
            let stranger = answer(&forger, b"forged");
            nats.publish_with_headers(reply.clone(), stranger, forged).await.unwrap();
            let refusal = InvokeError::new(InvokeErrorKind::Denied, "forged refusal");
            let message = Bytes::from_static(b"forged refusal");
            nats.publish_with_headers(reply.clone(), refusal.to_headers(), message).await.unwrap();
            trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
            let genuine = answer(&replica, b"genuine");
            nats.publish_with_headers(reply, genuine, Bytes::from_static(b"genuine"))
                .await
                .unwrap();
        })
    };
    let answer = caller
        .invoke("hello", INCOMING_HANDLER, HANDLE, request("/"), Duration::from_secs(10))
        .await
        .expect("the genuine answer is taken");
    assert_eq!(&answer[..], b"genuine");
    assert_eq!(caller.forged_answers(), 3, "each forgery reached the caller and was dropped");
    serve.await.unwrap();
    drop(nats);

    // A real host's answers, results and refusals alike, are taken.
    let worker = t.host_with("worker", &vouched_args).await;
    lattice.start_hello("hello", &["--host", &worker.id]).await;
    let answer = caller
        .invoke("hello", INCOMING_HANDLER, HANDLE, request("/"), Duration::from_secs(5))
        .await
        .expect("the worker's own answer is taken");
    assert!(!answer.is_empty());
    let err = caller
        .invoke("hello", INCOMING_HANDLER, "no-such-function", request("/"), Duration::from_secs(5))
        .await
        .expect_err("no such function");
    assert_ne!(err.kind(), InvokeErrorKind::Timeout, "the worker's refusal is taken: {err}");
    assert_eq!(caller.forged_answers(), 3);
}
