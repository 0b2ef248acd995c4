//! The providers of this repository, linked into `trellis` so a host can run them in process
//! (`trellis start provider <kind> --builtin`).

use std::sync::Arc;

use trellis_host::{BuiltinPipe, BuiltinRun, Builtins};
use trellis_provider::{Context, Provider};

/// Every provider this binary includes.
pub fn all() -> Builtins {
    let mut builtins = Builtins::default();
    builtins.insert(trellis_provider_http_server::KIND, runner(trellis_provider_http_server::new));
    builtins.insert(trellis_provider_http_client::KIND, runner(trellis_provider_http_client::new));
    builtins
        .insert(trellis_provider_keyvalue_nats::KIND, runner(trellis_provider_keyvalue_nats::new));
    builtins.insert(
        trellis_provider_keyvalue_redis::KIND,
        runner(trellis_provider_keyvalue_redis::new),
    );
    builtins.insert(
        trellis_provider_messaging_nats::KIND,
        runner(trellis_provider_messaging_nats::new),
    );
    builtins
        .insert(trellis_provider_blobstore_fs::KIND, runner(trellis_provider_blobstore_fs::new));
    builtins
}

fn runner<P: Provider>(make: fn(&Context) -> P) -> BuiltinRun {
    Arc::new(move |pipe: BuiltinPipe| {
        Box::pin(async move {
            let BuiltinPipe { from_host, to_host, stop, host } = pipe;
            let stopped = async move {
                let _ = stop.await;
            };
            let pipe = (from_host, to_host);
            if let Err(e) =
                trellis_provider::serve_builtin(pipe, host, |ctx| make(&ctx), stopped).await
            {
                tracing::error!(error = %e, "builtin provider failed");
            }
        })
    })
}
