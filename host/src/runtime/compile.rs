//! Where compiling runs: on threads below the host's other threads in CPU priority, so a host
//! busy compiling a large component (several seconds of CPU) still heartbeats and answers on
//! time, and so do the other hosts sharing its machine (a scheduler must tell a slow host from
//! a lost one, issue 20).
//!
//! Two kinds of threads compile: the one that checks claims and asks wasmtime to compile (one
//! per load, [`low_priority`]), and wasmtime's parallel compilation workers (rayon's global
//! pool, set up by [`lower_compile_workers`]). On Linux nice applies per thread.

/// How much nicer than the rest of the host compiling threads are (0 to 19). Mildly: the
/// host's own threads wake briefly and go first at any nice value; against other busy
/// processes on the machine, nice 10 left a compile about a tenth of a core (a 21 MB component
/// took over a minute on a busy 2-core machine), nice 5 about a quarter.
pub const NICE: i32 = 5;

/// Runs `work` on a thread of its own at [`NICE`] and gives back what it returns; an error
/// when the thread could not start or `work` panicked.
pub async fn low_priority<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trellis-compile".into())
        .spawn(move || {
            lower_this_thread();
            let _ = tx.send(work());
        })
        .map_err(|e| format!("cannot start a compile thread: {e}"))?;
    rx.await.map_err(|_| "the compile thread stopped without an answer".to_owned())
}

/// Builds rayon's global pool, which wasmtime compiles on, with its workers at [`NICE`]. Does
/// nothing when the pool exists already (another host in this process made it).
pub fn lower_compile_workers() {
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("trellis-compile-{i}"))
        .start_handler(|_| lower_this_thread())
        .build_global();
}

fn lower_this_thread() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), NICE) {
        tracing::debug!(error = %e, "cannot lower a compile thread's priority");
    }
}
