//! The `trellis-provider-http-server` executable (see the library's docs).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_provider::run(trellis_otlp::init, |ctx| trellis_provider_http_server::new(&ctx)).await
}
