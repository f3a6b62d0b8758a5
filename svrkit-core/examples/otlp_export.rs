//! Exports one server span and one client span over OTLP/HTTP to `SVRKIT_OTLP_ENDPOINT`:
//! a smoke check of the `otlp` feature against a real collector.
//!
//! ```text
//! SVRKIT_OTLP_ENDPOINT=http://127.0.0.1:4318/v1/traces \
//!     cargo run -p svrkit --features otlp --example otlp_export
//! ```

use tracing_subscriber::layer::SubscriberExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(layer) = svrkit::otel::init_from_env("otlp-example")? else {
        eprintln!("set SVRKIT_OTLP_ENDPOINT to a collector's /v1/traces URL");
        return Ok(());
    };
    let subscriber = tracing_subscriber::registry().with(layer.clone());
    tracing::subscriber::with_default(subscriber, || {
        let rpc = tracing::info_span!(
            "rpc",
            service = "svrkit.demo.Echo",
            method = "Relay",
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id = "00f067aa0ba902b7",
            parent = "0000000000000000",
            code = "ok",
        );
        let _rpc = rpc.enter();
        let call = tracing::info_span!(
            "call",
            service = "svrkit.demo.Echo",
            method = "Echo",
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id = "1111111111111111",
            parent = "00f067aa0ba902b7",
            code = "unavailable",
        );
        drop(call);
    });
    layer.flush();
    eprintln!("exported");
    Ok(())
}
