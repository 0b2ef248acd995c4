//! wasi:blobstore through the blobstore-fs provider on another host: objects land in the link's
//! directory, and names that would leave it are refused.

use trellis_tests::{component, http_request};

use crate::{Lattice, get};

#[tokio::test]
async fn objects_are_written_read_listed_and_confined_to_the_root() {
    let root = tempfile::tempdir().unwrap();
    let lattice = Lattice::new("blobs").await;
    let t = &lattice.trellis;
    let a = t.host("a", &[]).await;
    let b = t.host("b", &[]).await;
    let wasm = component("blobber");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "blobber", "--host", &a.id]).await;
    let addr = lattice.serve_http(&a.id, "blobber", &[]).await;

    let reply = get(addr, "/list").await;
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("NoLink"), "{}", reply.text());

    t.ok(&["start", "provider", "blobstore-fs", "--id", "files", "--host", &b.id]).await;
    let config = format!("root={}", root.path().display());
    t.ok(&[
        "link",
        "put",
        "--source",
        "blobber",
        "--interface",
        "wasi:blobstore/blobstore",
        "--target",
        "files",
        "--config",
        &config,
    ])
    .await;

    let put = |path: &'static str, body: &'static [u8]| async move {
        http_request(addr, "PUT", path, body).await.expect("HTTP request")
    };
    assert_eq!(put("/o/hello.txt", b"hello blob").await.text(), "stored");
    assert_eq!(put("/o/dir/nested.txt", b"deep").await.text(), "stored");
    assert_eq!(get(addr, "/o/hello.txt").await.text(), "hello blob");
    assert_eq!(std::fs::read(root.path().join("box/hello.txt")).unwrap(), b"hello blob");
    assert_eq!(get(addr, "/list").await.text(), "dir/nested.txt\nhello.txt");
    assert_eq!(get(addr, "/range/hello.txt?0-4").await.text(), "hello");
    assert_eq!(get(addr, "/copy/hello.txt/copy.txt").await.text(), "copied");
    assert_eq!(get(addr, "/info/copy.txt").await.text(), "copy.txt 10 bytes");
    let deleted = http_request(addr, "DELETE", "/o/hello.txt", b"").await.unwrap();
    assert_eq!(deleted.text(), "deleted");
    assert_eq!(get(addr, "/o/hello.txt").await.status, 404);

    let escape = put("/o/a/../../escape", b"x").await;
    assert_eq!(escape.status, 500);
    assert!(escape.text().contains("not an allowed name"), "{}", escape.text());
    assert!(!root.path().join("escape").exists());
}
