//! Named config (`trellis config`) read by components through wasi:config, live.

use trellis_tests::component;

use crate::{Lattice, get};

#[tokio::test]
async fn components_read_named_config_merged_in_order_and_live() {
    let lattice = Lattice::new("config").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    t.ok(&["config", "put", "base", "greeting=hello", "color=blue"]).await;
    t.ok(&["config", "put", "prod", "color=red"]).await;
    let wasm = component("configured");
    t.ok(&[
        "start",
        "component",
        wasm.to_str().unwrap(),
        "--id",
        "cfg",
        "--config",
        "base",
        "--config",
        "prod",
    ])
    .await;
    let addr = lattice.serve_http(&host.id, "cfg", &[]).await;

    assert_eq!(get(addr, "/config/greeting").await.text(), "hello");
    assert_eq!(get(addr, "/config/color").await.text(), "red", "a later config wins");
    assert_eq!(get(addr, "/runtime/color").await.text(), "red", "the older interface works too");
    assert_eq!(get(addr, "/config/missing").await.status, 404);
    assert_eq!(get(addr, "/config").await.text(), "color=red\ngreeting=hello");

    // A change applies to the next call, without a restart.
    t.ok(&["config", "put", "prod", "color=green"]).await;
    trellis_tests::eventually("the new config", std::time::Duration::from_secs(5), || async move {
        (get(addr, "/config/color").await.text() == "green").then_some(())
    })
    .await;

    let shown = t.ok(&["config", "get", "base", "--output", "json"]).await;
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["values"]["greeting"], "hello");
    assert_eq!(t.ok(&["config", "get"]).await, "base\nprod\n");
    t.ok(&["config", "del", "prod"]).await;
    let err = t.fails(&["config", "get", "prod"]).await;
    assert!(err.contains("no config `prod`"), "{err}");
    let err = t.fails(&["config", "put", "bad.name", "a=b"]).await;
    assert!(err.contains("config name"), "{err}");
}
