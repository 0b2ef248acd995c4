//! The `trellis-provider-keyvalue-redis` executable (see the library's docs).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_provider::run(trellis_otlp::init, |ctx| trellis_provider_keyvalue_redis::new(&ctx))
        .await
}
