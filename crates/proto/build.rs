//! Compiles the protos under `proto/` with Debian's protoc (`apt-get install protobuf-compiler
//! libprotobuf-dev`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "capstan/agent/v1/agent.proto",
        "capstan/v1/capstan.proto",
        "capstan/nodegroup/v1/nodegroup.proto",
    ];
    let files: Vec<_> = protos.iter().map(|p| root.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("capstan_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
