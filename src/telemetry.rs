//! Logs and traces: a tracing subscriber writing logfmt or JSON to stderr
//! and, when configured, exporting spans over OTLP/gRPC; and W3C trace
//! context taken from the querier and passed on to remotes.

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat, TracingConfig};

/// Keeps the span exporter running; [`Telemetry::shutdown`] sends what is
/// left.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans not sent yet and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("thanos-fanout: exporting the last spans: {e}");
        }
    }
}

/// Installs the global subscriber. Call within a Tokio runtime: the OTLP
/// exporter's connection lives on it.
pub fn init(log: &LogConfig, tracing: &TracingConfig) -> Result<Telemetry, String> {
    let filter =
        EnvFilter::try_new(&log.level).map_err(|e| format!("log.level {:?}: {e}", log.level))?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(tracing)?;
    let spans = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer().with_tracer(provider.tracer("thanos-fanout"))
    });
    let registry = tracing_subscriber::registry().with(filter).with(spans);
    let result = match log.format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| format!("installing the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The span exporter, if tracing is on.
fn tracer_provider(config: &TracingConfig) -> Result<Option<SdkTracerProvider>, String> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some();
    if config.endpoint.is_none() && !from_env {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = &config.endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("tracing: the OTLP exporter: {e}"))?;
    let ratio = match config.sampling_ratio {
        Some(ratio) => ratio,
        None => match env("OTEL_TRACES_SAMPLER_ARG") {
            Some(arg) => arg
                .parse()
                .map_err(|e| format!("OTEL_TRACES_SAMPLER_ARG {arg:?}: {e}"))?,
            None => 1.0,
        },
    };
    let service_name = config
        .service_name
        .clone()
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "thanos-fanout".into());
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(resource)
            .build(),
    ))
}

/// The W3C trace context headers we read and write.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The trace context headers of an incoming call, as sent.
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders(Vec<(&'static str, String)>);

impl TraceHeaders {
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        Self(
            TRACE_HEADERS
                .into_iter()
                .filter_map(|key| {
                    let value = metadata.get(key)?.to_str().ok()?;
                    Some((key, value.to_owned()))
                })
                .collect(),
        )
    }

    /// Makes `span` a child of the caller's span (when spans are exported).
    pub fn set_parent(&self, span: &tracing::Span) {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(self));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }

    /// Adds the trace context to a call to a remote: the current span's
    /// when spans are exported (the remote's spans then hang under ours),
    /// else the caller's as it came, so the trace still joins up.
    pub fn inject(&self, metadata: &mut MetadataMap) {
        let current = tracing::Span::current().context();
        if current.span().span_context().is_valid() {
            opentelemetry::global::get_text_map_propagator(|p| {
                p.inject_context(&current, &mut MetadataInjector(metadata));
            });
            return;
        }
        for (key, value) in &self.0 {
            if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                metadata.insert(*key, value);
            }
        }
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}
