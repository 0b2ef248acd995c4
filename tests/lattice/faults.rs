//! Faults from outside the processes, under load: each scenario runs a load generator
//! ([`trellis_tests::load`]), prints what every call got, and asserts the promise: a call is
//! answered or refused with a typed error before its deadline. See docs/reliability.md.

use std::net::SocketAddr;
use std::time::Duration;

use trellis_tests::load::{self, Outcome};
use trellis_tests::{free_port, http_request};

use crate::Lattice;

/// A counter of a host's `/metrics` (its one series).
async fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let text = http_request(metrics, "GET", "/metrics", b"").await.expect("metrics").text();
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("/metrics has no {name}:\n{text}"))
}

#[tokio::test]
async fn a_flood_beyond_a_hosts_intake_is_shed_at_once_with_503_and_nothing_times_out() {
    let lattice = Lattice::new("flood").await;
    let t = &lattice.trellis;
    let front = t.host("front", &[]).await;
    // One call at a time, so an intake of four (one running, three waiting) overflows at once.
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let back_args = [
        "--allow-unsigned".to_owned(),
        "--max-instances=1".to_owned(),
        format!("--metrics-listen={metrics}"),
    ];
    let back = t.host_with("back", &back_args).await;
    lattice.start_hello("hello", &["--host", &back.id]).await;
    let addr = lattice.serve_http(&front.id, "hello", &[]).await;
    assert_eq!(http_request(addr, "GET", "/", b"").await.unwrap().status, 200);

    // 64 callers at once, each call taking 500 ms, against one slot.
    let tally = load::http(addr, "/sleep/500", (64, 64), Duration::from_secs(60)).await;
    println!("{tally}");
    assert_eq!(tally.count(&Outcome::TimedOut), 0, "no caller waits out its deadline");
    assert_eq!(tally.typed("Denied"), 0, "overload is not a denial");
    let shed = Outcome::Typed("Unavailable".to_owned());
    assert!(tally.count(&Outcome::Answered) >= 1, "the calls the host took were answered");
    assert!(tally.count(&shed) >= 32, "most of the flood was shed");
    assert_eq!(tally.count(&Outcome::Answered) + tally.count(&shed), 64, "{tally}");
    for refused in tally.with(&shed) {
        assert!(
            refused.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("retry-after") && v == "1"),
            "a 503 says when to try again: {refused:?}"
        );
    }
    // At once: a shed call is not held until the admitted ones are done (4 x 500 ms).
    let slowest = tally.slowest(&shed).unwrap();
    assert!(slowest < Duration::from_secs(15), "shed calls waited {slowest:?}");
    assert!(metric(metrics, "trellis_calls_shed_total").await > 0);
    assert_eq!(metric(metrics, "trellis_nats_slow_consumer_total").await, 0);
}
