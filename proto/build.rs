//! Compiles the internal gRPC API (proto/chat.proto) with protox (pure Rust,
//! no system protoc) when the `grpc` feature is on.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/chat.proto");
    #[cfg(feature = "grpc")]
    {
        let descriptors = protox::compile(["proto/chat.proto"], ["proto"])?;
        tonic_prost_build::configure().compile_fds(descriptors)?;
    }
    Ok(())
}
