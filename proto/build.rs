//! Compiles `trellis.proto` with `protox` (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=trellis.proto");
    let fds = protox::compile(["trellis.proto"], ["."])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
