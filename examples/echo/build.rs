fn main() {
    if let Err(e) = svrkit_codegen::compile(&["../../idl/demo/echo.proto"], &["../../idl"]) {
        panic!("svrkit codegen failed: {e}");
    }
}
