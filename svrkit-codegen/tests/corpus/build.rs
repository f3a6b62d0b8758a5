//! Generates the whole corpus, as a service author's build script would.

fn main() {
    let files = [
        "idl/corpus/types.proto",
        "idl/corpus/wkt.proto",
        "idl/corpus/keywords.proto",
        "idl/corpus/multi_a.proto",
        "idl/corpus/multi_b.proto",
        "idl/corpus/docs.proto",
    ];
    if let Err(e) = svrkit_codegen::compile(&files, &["idl", "../../../idl"]) {
        panic!("svrkit codegen failed: {e}");
    }
}
