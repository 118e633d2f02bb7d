//! Generates the PD and TiKV gRPC server code from the `.proto` files in `proto/`
//! (copied from the `tikv-client` crate) without a system `protoc`: `protox` compiles
//! them to a descriptor set, `tonic-build` generates server traits from it. RPCs the
//! test cluster does not implement answer `Unimplemented` (`generate_default_stubs`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/pdpb.proto", "proto/tikvpb.proto"];
    let includes = ["proto", "proto/include"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, includes)?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds_path = out.join("tikv_descriptors.bin");
    std::fs::write(&fds_path, prost::Message::encode_to_vec(&fds))?;
    tonic_build::configure()
        .build_server(true)
        .build_client(false)
        .generate_default_stubs(true)
        .skip_protoc_run()
        .file_descriptor_set_path(&fds_path)
        .include_file("mod.rs")
        .compile(&files, &includes)?;
    Ok(())
}
