//! Per-component limits: a component held to small limits hits them with typed errors while its
//! neighbour on the same host, with the host's defaults, keeps answering.

use std::time::Duration;

use bytes::Bytes;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::http::{HANDLE, HttpRequest, HttpResponse, INCOMING_HANDLER, decode, encode};
use trellis_tests::component;

use crate::Lattice;

fn request(path: &str, body: usize) -> Bytes {
    let req = HttpRequest {
        method: "POST".into(),
        path_and_query: path.into(),
        authority: None,
        headers: vec![],
        body: vec![b'x'; body].into(),
        scheme: None,
    };
    encode(&req).unwrap().into()
}

async fn call(
    client: &LatticeClient,
    id: &str,
    path: &str,
    body: usize,
) -> Result<HttpResponse, InvokeError> {
    let reply = client
        .invoke(id, INCOMING_HANDLER, HANDLE, request(path, body), Duration::from_secs(10))
        .await?;
    Ok(decode(&reply).unwrap())
}

#[tokio::test]
async fn tight_limits_bite_and_the_neighbour_keeps_answering() {
    let lattice = Lattice::new("limits").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = component("http-hello");
    let wasm = wasm.to_str().unwrap();
    t.ok(&[
        "start",
        "component",
        wasm,
        "--id",
        "tight",
        "--host",
        &host.id,
        "--max-memory-mb",
        "2",
        "--max-concurrent",
        "1",
        "--timeout-ms",
        "700",
        "--max-request-bytes",
        "256",
    ])
    .await;
    t.ok(&["start", "component", wasm, "--id", "roomy", "--host", &host.id]).await;
    let client = t.client().await;

    let grown = call(&client, "tight", "/grow", 0).await.unwrap_err();
    assert_eq!(grown.kind(), InvokeErrorKind::Trap);
    assert!(grown.message().contains("memory"), "{grown}");

    let big = call(&client, "tight", "/echo", 1024).await.unwrap_err();
    assert_eq!(big.kind(), InvokeErrorKind::TooLarge, "{big}");
    assert_eq!(call(&client, "roomy", "/echo", 1024).await.unwrap().body.len(), 1024);

    let spinning = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "tight", "/spin", 0).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = call(&client, "tight", "/", 0).await.unwrap_err();
    assert_eq!(busy.kind(), InvokeErrorKind::Unavailable, "{busy}");
    assert!(busy.message().contains("limit of 1 concurrent calls"), "{busy}");
    assert_eq!(
        call(&client, "roomy", "/", 0).await.unwrap().status,
        200,
        "the neighbour answers meanwhile"
    );
    let spun = spinning.await.unwrap().unwrap_err();
    assert_eq!(spun.kind(), InvokeErrorKind::Timeout, "{spun}");
    assert_eq!(
        call(&client, "tight", "/", 0).await.unwrap().status,
        200,
        "free again after the timeout"
    );

    let inventory = t.ok(&["get", "inventory", &host.id, "--output", "json"]).await;
    assert!(inventory.contains("\"max_memory_bytes\": 2097152"), "{inventory}");
    let err = t
        .fails(&[
            "start",
            "component",
            wasm,
            "--id",
            "greedy",
            "--host",
            &host.id,
            "--max-memory-mb",
            "4096",
        ])
        .await;
    assert!(err.contains("exceeds this host's limit"), "{err}");
}
