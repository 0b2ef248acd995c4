//! A load generator for fault tests: numbered calls, each with the outcome it got, counted by
//! outcome. Every fault scenario prints its [`Tally`] and asserts on it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use trellis_lattice::envelope::InvokeErrorKind;

/// What one call got.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A result.
    Answered,
    /// A typed error, by kind (`Unavailable`, `Timeout`, ...), before the caller gave up.
    Typed(String),
    /// The caller's deadline passed without an answer (HTTP 504, or no response at all within
    /// the client's own limit).
    TimedOut,
    /// The connection failed or the answer was not one (no status, no typed error).
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered => f.write_str("answered"),
            Outcome::Typed(kind) => write!(f, "typed {kind}"),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// One call's record.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: usize,
    pub outcome: Outcome,
    pub took: Duration,
    /// Its HTTP headers, for HTTP calls (`retry-after` and the like).
    pub headers: Vec<(String, String)>,
}

/// Every call of a run, by outcome.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub records: Vec<Record>,
}

impl Tally {
    /// Calls that got `outcome`.
    pub fn count(&self, outcome: &Outcome) -> usize {
        self.records.iter().filter(|r| &r.outcome == outcome).count()
    }

    /// Calls that got a typed error of `kind`.
    pub fn typed(&self, kind: &str) -> usize {
        self.count(&Outcome::Typed(kind.to_owned()))
    }

    /// The records with `outcome`.
    pub fn with<'a>(&'a self, outcome: &'a Outcome) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| &r.outcome == outcome)
    }

    /// The longest any call with `outcome` took.
    pub fn slowest(&self, outcome: &Outcome) -> Option<Duration> {
        self.with(outcome).map(|r| r.took).max()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by: BTreeMap<&Outcome, (usize, Duration)> = BTreeMap::new();
        for r in &self.records {
            let entry = by.entry(&r.outcome).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(r.took);
        }
        writeln!(f, "{:<40} {:>7} {:>12}", "outcome", "calls", "slowest ms")?;
        for (outcome, (n, slowest)) in by {
            writeln!(f, "{:<40} {n:>7} {:>12}", outcome.to_string(), slowest.as_millis())?;
        }
        write!(f, "{:<40} {:>7}", "total", self.records.len())
    }
}

/// `total` GET requests of `path` to `addr`, `concurrency` at a time, each given up after
/// `give_up` (counted as timed out).
pub async fn http(
    addr: SocketAddr,
    path: &str,
    (total, concurrency): (usize, usize),
    give_up: Duration,
) -> Tally {
    let calls = (0..total).map(|seq| one_http(addr, path, seq, give_up));
    let mut records: Vec<Record> =
        futures::stream::iter(calls).buffer_unordered(concurrency).collect().await;
    records.sort_by_key(|r| r.seq);
    Tally { records }
}

/// GET requests of `path` to `addr`, `concurrency` at a time, until `running` turns false
/// (the calls under way then finish).
pub async fn http_while(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    give_up: Duration,
    running: Arc<AtomicBool>,
) -> Tally {
    while_running(concurrency, &running, |seq| one_http(addr, path, seq, give_up)).await
}

/// `concurrency` workers, each making one call after another with `call(seq)` until `running`
/// turns false (the calls under way then finish); every record, in sequence order.
async fn while_running<F, Fut>(concurrency: usize, running: &AtomicBool, call: F) -> Tally
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Record>,
{
    let seq = AtomicUsize::new(0);
    let workers = (0..concurrency).map(|_| async {
        let mut records = Vec::new();
        while running.load(Ordering::Relaxed) {
            records.push(call(seq.fetch_add(1, Ordering::Relaxed)).await);
        }
        records
    });
    let mut records: Vec<Record> = futures::future::join_all(workers).await.concat();
    records.sort_by_key(|r| r.seq);
    Tally { records }
}

/// Invocations of `function` of `interface` on `target` with `payload` through `client`,
/// `concurrency` at a time, each with deadline `timeout`, until `running` turns false. A call
/// counts as timed out when it got `Timeout` or outlived its deadline by a second.
pub async fn invoke_while(
    client: &trellis_lattice::client::LatticeClient,
    (target, interface, function): (&str, &str, &str),
    payload: bytes::Bytes,
    (concurrency, timeout): (usize, Duration),
    running: Arc<AtomicBool>,
) -> Tally {
    let payload = &payload;
    while_running(concurrency, &running, |seq| async move {
        let started = Instant::now();
        let call = client.invoke(target, interface, function, payload.clone(), timeout);
        let reply = tokio::time::timeout(timeout + Duration::from_secs(1), call).await;
        let outcome = match reply {
            Err(_) => Outcome::TimedOut,
            Ok(Ok(_)) => Outcome::Answered,
            Ok(Err(e)) if e.kind() == InvokeErrorKind::Timeout => Outcome::TimedOut,
            Ok(Err(e)) => Outcome::Typed(e.kind().as_str().to_owned()),
        };
        Record { seq, outcome, took: started.elapsed(), headers: Vec::new() }
    })
    .await
}

async fn one_http(addr: SocketAddr, path: &str, seq: usize, give_up: Duration) -> Record {
    {
        let started = Instant::now();
        let reply =
            tokio::time::timeout(give_up, crate::http_request(addr, "GET", path, b"")).await;
        let took = started.elapsed();
        let (outcome, headers) = match reply {
            Err(_) => (Outcome::TimedOut, Vec::new()),
            Ok(Err(e)) => (Outcome::Failed(e.kind().to_string()), Vec::new()),
            Ok(Ok(reply)) => {
                let outcome = match (reply.status, reply.header("trellis-error")) {
                    (200, _) => Outcome::Answered,
                    (504, _) | (_, Some("Timeout")) => Outcome::TimedOut,
                    (_, Some(kind)) => Outcome::Typed(kind.to_owned()),
                    (status, None) => Outcome::Failed(format!("HTTP {status}")),
                };
                (outcome, reply.headers)
            }
        };
        Record { seq, outcome, took, headers }
    }
}
