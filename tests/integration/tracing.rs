//! OpenTelemetry: a span per incoming call, under the querier's trace, with
//! a child per remote call, exported over OTLP/gRPC to a receiver in the
//! test; the trace context passed on to remotes.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::{Request, Response, Status};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_thanos-fanout");

/// The querier's trace and span, as its `traceparent` says.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const QUERIER_SPAN: &str = "b7ad6b7169203331";

/// Collects every span exported to it, with its resource's service name.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|a| a.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// The binary, stopped with SIGTERM (so it flushes its spans) when dropped.
struct Process(Child);

impl Process {
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate();
    }
}

// Multi-threaded: the receiver keeps serving while the test waits for the
// binary to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_traced_under_the_queriers_trace_and_passed_on() {
    let receiver = Receiver::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp_addr = otlp.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );
    let remote = up_remote("a", None).await;

    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"grpc: {{listen: "{grpc}", shutdown_delay: 0s}}
http: {{listen: "{http}"}}
info: {{interval: 200ms}}
tracing:
  endpoint: "http://{otlp_addr}"
  service_name: fanout-under-test
  resource_attributes: {{deployment.environment: test}}
remotes:
  - name: a
    targets: ["{}"]
"#,
            remote.addr
        ),
    )
    .expect("write config");
    let mut process = Process(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(http).await.is_err()
        || crate::info::http_get(http, "/-/ready").await.0 != 200
    {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = thanos_fanout::proto::thanos::store_client::StoreClient::new(channel);
    let mut req = tonic::Request::new(request(vec![eq("__name__", "up")]));
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{QUERIER_SPAN}-01")
            .parse()
            .expect("header"),
    );
    let mut stream = client.series(req).await.expect("series").into_inner();
    let mut frames = 0;
    while stream.message().await.expect("frame").is_some() {
        frames += 1;
    }
    assert!(frames > 0);
    // Shutting down exports what is left.
    process.terminate();

    let spans = receiver.spans.lock().expect("lock").clone();
    let named = |name: &str, kind: SpanKind| {
        spans
            .iter()
            .filter(|(_, s)| s.name == name && s.kind == kind as i32)
            .collect::<Vec<_>>()
    };
    let incoming = named("thanos.Store/Series", SpanKind::Server);
    assert_eq!(incoming.len(), 1, "{spans:#?}");
    let (service, incoming) = incoming[0];
    assert_eq!(service, "fanout-under-test");
    assert_eq!(hex(&incoming.trace_id), TRACE_ID);
    assert_eq!(hex(&incoming.parent_span_id), QUERIER_SPAN);
    assert_eq!(
        attribute(&incoming.attributes, "code").as_deref(),
        Some("Ok")
    );

    let outgoing = named("thanos.Store/Series", SpanKind::Client);
    assert_eq!(outgoing.len(), 1, "{spans:#?}");
    let (_, outgoing) = outgoing[0];
    assert_eq!(hex(&outgoing.trace_id), TRACE_ID);
    assert_eq!(outgoing.parent_span_id, incoming.span_id);
    assert_eq!(
        attribute(&outgoing.attributes, "remote").as_deref(),
        Some("a")
    );
    assert_eq!(
        attribute(&outgoing.attributes, "outcome").as_deref(),
        Some("Success")
    );
    assert_eq!(
        attribute(&outgoing.attributes, "received").as_deref(),
        Some("1")
    );
    assert!(attribute(&outgoing.attributes, "first_frame_seconds").is_some());
    // The incoming span covers the remote call.
    assert!(incoming.start_time_unix_nano <= outgoing.start_time_unix_nano);
    assert!(incoming.end_time_unix_nano >= outgoing.end_time_unix_nano);

    // The remote was called within our remote call's span.
    let seen = remote.script.traceparents.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [format!("00-{TRACE_ID}-{}-01", hex(&outgoing.span_id))]
    );
}

#[tokio::test]
async fn without_tracing_the_queriers_trace_context_is_passed_on_as_is() {
    let remote = up_remote("a", None).await;
    let running = start_fanout(config(vec![crate::common::remote("a", remote.addr, None)])).await;
    let mut client = client(&running).await;
    let traceparent = format!("00-{TRACE_ID}-{QUERIER_SPAN}-01");
    let mut req = tonic::Request::new(request(vec![eq("__name__", "up")]));
    req.metadata_mut()
        .insert("traceparent", traceparent.parse().expect("header"));
    let mut stream = client.series(req).await.expect("series").into_inner();
    while stream.message().await.expect("frame").is_some() {}
    let seen = remote.script.traceparents.lock().expect("lock").clone();
    assert_eq!(seen, [traceparent]);
}
