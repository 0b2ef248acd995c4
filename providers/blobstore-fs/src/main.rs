//! The `trellis-provider-blobstore-fs` executable (see the library's docs).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_provider::run(trellis_otlp::init, |ctx| trellis_provider_blobstore_fs::new(&ctx)).await
}
