//! Warm instances: a component that opts in keeps instances between calls instead of building a
//! fresh store and instance for each one.
//!
//! A warm instance serves calls one at a time, up to `max_calls`, and is dropped once it has
//! been idle for `idle`. State the guest keeps in its memory (globals, caches) survives from
//! one call to the next, which is why reuse is off unless asked for (and claims can forbid it).
//! An instance whose guest failed (a trap, a timeout, a memory-limit hit) is never reused: its
//! call owns it and drops it. So is one whose custom function's results could not be sent.
//!
//! A host holds at most a budget of idle instances over all its components, so warm instances
//! never crowd calls out of the instance pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::Instance;
use wasmtime_wasi_http::p2::bindings::Proxy;

use super::state::CallState;

/// How a component reuses its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Calls one instance serves before it is dropped (at least 1).
    pub max_calls: u32,
    /// How long an unused instance is kept.
    pub idle: Duration,
    /// Calls one instance of a WASI 0.3 component serves at once (at least 1); a WASI 0.2
    /// instance serves one at a time.
    pub at_once: u32,
}

impl Reuse {
    /// The settings used when only reuse itself is asked for.
    pub const DEFAULT: Reuse =
        Reuse { max_calls: 10_000, idle: Duration::from_secs(1), at_once: 16 };
}

/// Idle warm instances a host keeps over all its components.
#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    idle: AtomicUsize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, idle: AtomicUsize::new(0) })
    }

    fn try_take(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.idle.fetch_sub(n, Ordering::AcqRel);
    }
}

/// An instance with its store, between calls or serving one.
pub(super) struct Warm {
    pub store: Store<CallState>,
    pub instance: Instance,
    /// The typed `wasi:http` handler, when the component exports one.
    pub proxy: Option<Proxy>,
    /// Calls it has served.
    calls: u32,
    last_used: Instant,
}

impl Warm {
    pub fn new(store: Store<CallState>, instance: Instance, proxy: Option<Proxy>) -> Self {
        Self { store, instance, proxy, calls: 0, last_used: Instant::now() }
    }
}

/// One component's idle warm instances.
pub(super) struct WarmPool {
    reuse: Reuse,
    budget: Arc<Budget>,
    /// Most recently used last: its memory is likeliest still in cache.
    idle: Mutex<Vec<Warm>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool").field("reuse", &self.reuse).finish_non_exhaustive()
    }
}

impl WarmPool {
    /// A pool for one component; a task drops its instances once idle (it ends with the pool).
    pub fn start(reuse: Reuse, budget: Arc<Budget>) -> Arc<Self> {
        let reuse = Reuse { max_calls: reuse.max_calls.max(1), ..reuse };
        let pool = Arc::new(Self { reuse, budget, idle: Mutex::new(Vec::new()) });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&pool), reuse.idle));
        }
        pool
    }

    /// The most recently used idle instance, if any.
    pub fn take(&self) -> Option<Warm> {
        let now = Instant::now();
        let mut idle = self.lock();
        let warm = idle.pop()?;
        drop(idle);
        self.budget.give_back(1);
        // An expired one is dropped (outside the lock: dropping a store resets its memory).
        (now.duration_since(warm.last_used) < self.reuse.idle).then_some(warm)
    }

    /// Keeps `warm` after a call that succeeded, unless it has served its calls or the host
    /// holds its budget of idle instances already.
    pub fn put(&self, mut warm: Warm) {
        warm.calls += 1;
        if warm.calls >= self.reuse.max_calls || !self.budget.try_take() {
            return;
        }
        warm.last_used = Instant::now();
        self.lock().push(warm);
    }

    /// Drops the instances idle for longer than the pool allows.
    fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<Warm> = {
            let mut idle = self.lock();
            let keep = idle.iter().position(|w| now.duration_since(w.last_used) < self.reuse.idle);
            let keep = keep.unwrap_or(idle.len());
            idle.drain(..keep).collect()
        };
        self.budget.give_back(expired.len());
    }

    /// Idle instances held now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        // Holding the lock never panics; a poisoned one still holds whole instances.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().map_or(0, |v| v.len());
        self.budget.give_back(idle);
    }
}

/// Drops idle instances of `pool` as they expire, until the pool is gone.
async fn sweep(pool: Weak<WarmPool>, idle: Duration) {
    let period = (idle / 2).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(pool) => pool.expire(),
            None => return,
        }
    }
}
