//! Generates the kiln.v1 tonic/prost code. `protoc` comes from the vendored binary unless
//! `PROTOC` names one, so a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/kiln.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/kiln.proto");
    Ok(())
}
