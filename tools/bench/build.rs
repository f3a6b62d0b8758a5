use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let proto = "proto/bench.proto";
    println!("cargo:rerun-if-changed={proto}");

    svrkit_codegen::Builder::new()
        .out_dir(out.join("svrkit"))
        .compile(&[proto], &["proto", "../../idl"])
        .unwrap_or_else(|e| panic!("svrkit codegen: {e}"));

    let mut fds =
        protox::compile([proto], ["proto", "../../idl"]).unwrap_or_else(|e| panic!("protox: {e}"));
    // tonic ignores svrkit's method options; generate code for the bench's own file only.
    fds.file.retain(|f| f.name() == "bench.proto");
    let tonic_out = out.join("tonic");
    std::fs::create_dir_all(&tonic_out).expect("tonic out dir");
    tonic_prost_build::configure()
        .out_dir(&tonic_out)
        .bytes(".")
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("tonic codegen: {e}"));
}
