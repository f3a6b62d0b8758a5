fn main() {
    let files = [
        "../../idl/wx/storage.proto",
        "../../idl/wx/replication.proto",
        "../../idl/wx/account.proto",
        "../../idl/wx/contact.proto",
        "../../idl/wx/access.proto",
        "../../idl/wx/seq.proto",
        "../../idl/wx/message.proto",
        "../../idl/wx/moments_store.proto",
        "../../idl/wx/moments.proto",
        "../../idl/wx/wallet_store.proto",
        "../../idl/wx/wallet.proto",
    ];
    if let Err(e) = svrkit_codegen::compile(&files, &["../../idl"]) {
        panic!("svrkit codegen failed: {e}");
    }
}
