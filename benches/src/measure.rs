//! Closed-loop measurement of calls: `in_flight` workers each sending the next call as soon as
//! the previous one answered; one call alone, or several interleaved so that drift on a shared
//! machine weighs on all of them alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::report::Figures;

/// One operation under test; fails with a reason.
pub(crate) type CallFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// A cloneable operation, so several of different types can be interleaved.
pub(crate) type Call = Arc<dyn Fn() -> CallFuture + Send + Sync>;

/// Rounds of an interleaved measurement; even, so that each call runs first as often as last.
const ROUNDS: usize = 4;

/// Runs `ops` calls of `call`, `in_flight` at a time, after a warm-up; returns the figures.
pub async fn measure<F, Fut>(ops: usize, in_flight: usize, call: F) -> Result<Figures, BenchError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    warm_up(ops, &call).await?;
    let (mut samples, elapsed) = run_calls(ops, in_flight, call).await?;
    Ok(Figures::from_samples(&mut samples, elapsed))
}

/// [`measure`] of every call in `calls`, in alternating rounds (`a b c`, `c b a`, `a b c`,
/// `c b a`): a machine that slows down or speeds up during the run weighs on all alike, and
/// each call follows each other equally often. Figures in the order of `calls`.
pub async fn measure_interleaved(
    ops: usize,
    in_flight: usize,
    calls: &[Call],
) -> Result<Vec<Figures>, BenchError> {
    for call in calls {
        warm_up(ops, &|| call()).await?;
    }
    let per_round = ops.div_ceil(ROUNDS);
    let mut samples = vec![Vec::new(); calls.len()];
    let mut elapsed = vec![Duration::ZERO; calls.len()];
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..calls.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let call = calls[i].clone();
            let (done, took) = run_calls(per_round, in_flight, move || call()).await?;
            samples[i].extend(done);
            elapsed[i] += took;
        }
    }
    Ok(samples
        .iter_mut()
        .zip(elapsed)
        .map(|(samples, elapsed)| Figures::from_samples(samples, elapsed))
        .collect())
}

async fn warm_up<F, Fut>(ops: usize, call: &F) -> Result<(), BenchError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    for _ in 0..(ops / 10).clamp(10, 200) {
        call().await.map_err(fail)?;
    }
    Ok(())
}

fn fail(reason: String) -> BenchError {
    BenchError::Run { scenario: "invoke", reason }
}

/// `ops` calls, `in_flight` at a time: each call's latency, and the time it all took.
pub(crate) async fn run_calls<F, Fut>(
    ops: usize,
    in_flight: usize,
    call: F,
) -> Result<(Vec<Duration>, Duration), BenchError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let per_worker = ops.div_ceil(in_flight);
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let t = Instant::now();
                    call().await?;
                    samples.push(t.elapsed());
                }
                Ok::<_, String>(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(per_worker * in_flight);
    for worker in workers {
        let done = worker.await.map_err(|e| fail(e.to_string()))?;
        samples.extend(done.map_err(fail)?);
    }
    Ok((samples, started.elapsed()))
}
