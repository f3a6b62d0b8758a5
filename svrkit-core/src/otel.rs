//! Exporting svrkit's spans to OpenTelemetry (feature `otel`; the OTLP exporter behind
//! `SVRKIT_OTLP_ENDPOINT` needs feature `otlp`).
//!
//! svrkit names every span with ids that travel in its request headers: a server's `rpc`
//! span, a client's `call` span and an entry point's span all carry `trace_id`, `span_id`
//! and `parent` fields. [`SpanLayer`] is a `tracing-subscriber` layer that turns each
//! such span, when it closes, into an OpenTelemetry span with exactly those ids — so the
//! spans every process exports join into one trace with the right parent/child links,
//! with nothing to propagate but what svrkit already sends. Spans without those fields
//! are not exported (they stay in the logs).
//!
//! What a span becomes:
//! - its name: `service/method` when it has both fields (the RPC convention), else its
//!   `action` field, else the span's own name;
//! - its kind: a `call` span is a client span, every other one a server span (its parent
//!   lives in another process or outside svrkit, and is marked remote);
//! - its attributes: every other field (`rpc.system` = `svrkit` too), under its own name;
//! - its status: `code` = `ok` is OK, any other code an error with that code.
//!
//! ```no_run
//! # #[cfg(feature = "otlp")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tracing_subscriber::layer::SubscriberExt;
//! let layer = svrkit::otel::init_from_env("wx.contact.Contact")?; // None when unset
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::set_global_default(subscriber)?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "otlp"))]
//! # fn main() {}
//! ```

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

/// Exports svrkit's spans through an OpenTelemetry span processor (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct SpanLayer {
    processor: Arc<dyn SpanProcessor>,
    scope: InstrumentationScope,
}

impl SpanLayer {
    /// A layer handing every finished svrkit span to `processor` (a `BatchSpanProcessor`
    /// around an exporter, in production).
    pub fn new(processor: impl SpanProcessor + 'static) -> SpanLayer {
        SpanLayer {
            processor: Arc::new(processor),
            scope: InstrumentationScope::builder("svrkit")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// Exports what is still buffered (call before the process exits).
    pub fn flush(&self) {
        if let Err(error) = self.processor.force_flush() {
            tracing::debug!(%error, "flushing spans failed");
        }
    }
}

/// What a span being recorded has gathered so far.
#[derive(Debug, Default)]
struct Recording {
    trace_id: Option<u128>,
    span_id: Option<u64>,
    parent: u64,
    service: Option<String>,
    method: Option<String>,
    action: Option<String>,
    code: Option<String>,
    attributes: Vec<KeyValue>,
    start: Option<SystemTime>,
}

impl Recording {
    fn set(&mut self, name: &'static str, value: String) {
        match name {
            "trace_id" => self.trace_id = u128::from_str_radix(&value, 16).ok(),
            "span_id" => self.span_id = u64::from_str_radix(&value, 16).ok(),
            "parent" => self.parent = u64::from_str_radix(&value, 16).unwrap_or(0),
            "service" => self.service = Some(value),
            "method" => self.method = Some(value),
            "action" => self.action = Some(value),
            "code" => self.code = Some(value),
            _ => self.attributes.push(KeyValue::new(name, value)),
        }
    }
}

impl Visit for Recording {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            name @ ("trace_id" | "span_id" | "parent" | "code") => {
                self.set(name, value.to_string());
            }
            name => self.attributes.push(KeyValue::new(
                name,
                i64::try_from(value).unwrap_or(i64::MAX),
            )),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` fields arrive here; their Debug is their Display.
        self.set(field.name(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let fields = attrs.metadata().fields();
        if fields.field("trace_id").is_none() || fields.field("span_id").is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut recording = Recording {
            start: Some(SystemTime::now()),
            ..Recording::default()
        };
        attrs.record(&mut recording);
        span.extensions_mut().insert(recording);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(recording) = span.extensions_mut().get_mut::<Recording>()
        {
            values.record(recording);
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(recording) = span.extensions_mut().remove::<Recording>() else {
            return;
        };
        let (Some(trace_id), Some(span_id)) = (recording.trace_id, recording.span_id) else {
            return;
        };
        let kind = match span.name() {
            "call" => SpanKind::Client,
            _ => SpanKind::Server,
        };
        let name: Cow<'static, str> = match (&recording.service, &recording.method) {
            (Some(service), Some(method)) => format!("{service}/{method}").into(),
            _ => match &recording.action {
                Some(action) => action.clone().into(),
                None => span.name().into(),
            },
        };
        let mut attributes = recording.attributes;
        attributes.push(KeyValue::new("rpc.system", "svrkit"));
        for (key, value) in [
            ("rpc.service", recording.service),
            ("rpc.method", recording.method),
            ("action", recording.action),
            ("svrkit.code", recording.code.clone()),
        ] {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value));
            }
        }
        let status = match recording.code.as_deref() {
            None => opentelemetry::trace::Status::Unset,
            Some("ok") => opentelemetry::trace::Status::Ok,
            Some(code) => opentelemetry::trace::Status::error(code.to_string()),
        };
        let data = SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(recording.parent),
            parent_span_is_remote: kind == SpanKind::Server && recording.parent != 0,
            span_kind: kind,
            name,
            start_time: recording.start.unwrap_or_else(SystemTime::now),
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        };
        self.processor.on_end(data);
    }
}

/// Why the OTLP exporter could not start.
#[cfg(feature = "otlp")]
#[derive(Debug, thiserror::Error)]
#[error("SVRKIT_OTLP_ENDPOINT: {0}")]
pub struct OtlpError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The layer exporting to the OTLP/HTTP collector at `SVRKIT_OTLP_ENDPOINT` (say
/// `http://127.0.0.1:4318/v1/traces`) in batches from a thread of its own, as service
/// `service`; `None` when the setting is absent or empty (export is off by default).
#[cfg(feature = "otlp")]
pub fn init_from_env(service: &str) -> Result<Option<SpanLayer>, OtlpError> {
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = match std::env::var("SVRKIT_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint,
        _ => return Ok(None),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    let mut processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(
        &opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_string())
            .build(),
    );
    Ok(Some(SpanLayer::new(processor)))
}
