//! Shared harness: per-test certificates, remote StoreAPI servers on
//! 127.0.0.1:0 (synthetic data, scriptable faults), the aggregator started
//! from a config, and a client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use thanos_fanout::app::{self, Running};
use thanos_fanout::config::{Config, RemoteConfig, TlsConfig};
use thanos_fanout::demo::certs::Authority;
use thanos_fanout::demo::synthetic::{self, Capabilities, Dataset, SampleSeries, SyntheticStore};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::info::info_server::Info;
use thanos_fanout::proto::thanos::info::{InfoRequest, InfoResponse};
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::proto::thanos::store_server::Store;
use thanos_fanout::proto::thanos::{
    Label, LabelMatcher, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, Series, SeriesRequest, SeriesResponse, label_matcher, series_response,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub const MINUTE: i64 = 60_000;

/// What a fake remote does when asked for Series.
#[derive(Debug, Clone, Default)]
pub enum SeriesScript {
    /// Answer from the synthetic data.
    #[default]
    Normal,
    /// Fail with this status.
    Fail(tonic::Code, String),
    /// Accept the call and never send anything.
    Hang,
    /// Send the synthetic answer, then keep the stream open forever.
    NormalThenHang,
    /// Send exactly these frames.
    Frames(Vec<SeriesResponse>),
    /// Send these frames, then keep the stream open forever.
    FramesThenHang(Vec<SeriesResponse>),
    /// Send the synthetic answer one frame at a time, this far apart.
    Drip(Duration),
    /// Send the first this many frames of the synthetic answer, then nothing.
    PartThenHang(usize),
    /// Send a generated answer far larger than any buffer (see [`large_series`]).
    Large { series: usize, chunk_bytes: usize },
    /// Answer with these bytes as the body, as they are, under
    /// `grpc-encoding: <encoding>`; then end with status OK, or hang.
    Raw(RawAnswer),
}

/// An answer body written by hand, for answers no gRPC server would send.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub encoding: &'static str,
    pub body: bytes::Bytes,
    pub then_hang: bool,
}

/// Shared between a fake remote and the test that drives it.
#[derive(Debug, Default)]
pub struct Script {
    pub series: Mutex<SeriesScript>,
    pub info_fails: AtomicBool,
    pub series_calls: AtomicUsize,
    pub label_calls: AtomicUsize,
    /// Series streams dropped by the caller before they ended.
    pub cancelled: AtomicUsize,
    pub tenants: Mutex<Vec<String>>,
    /// The `traceparent` of every Series call.
    pub traceparents: Mutex<Vec<String>>,
    /// `:authority` of every request received, in order.
    pub authorities: Mutex<Vec<String>>,
    /// `grpc-encoding` of every request received ("" when uncompressed).
    pub encodings: Mutex<Vec<String>>,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    pub requests: Mutex<Vec<SeriesRequest>>,
    /// Series frames handed to the transport, over all calls.
    pub frames_sent: AtomicUsize,
    /// How long Info takes to answer.
    pub info_delay: Mutex<Duration>,
    /// When each cancelled Series stream was dropped.
    pub cancelled_at: Mutex<Vec<std::time::Instant>>,
    /// The time range Info advertises instead of the data's.
    pub info_time_range: Mutex<Option<(i64, i64)>>,
    /// The `grpc-timeout` of every Series call, if it had one.
    pub grpc_timeouts: Mutex<Vec<Option<String>>>,
    /// Label calls are accepted and never answered.
    pub labels_hang: AtomicBool,
    /// A warning label calls answer with, besides their data.
    pub label_warning: Mutex<Option<String>>,
}

impl Script {
    pub fn set(&self, script: SeriesScript) {
        *self.series.lock().expect("lock") = script;
    }

    pub fn series_calls(&self) -> usize {
        self.series_calls.load(Ordering::SeqCst)
    }
}

/// A remote StoreAPI server: synthetic data plus scripted faults.
#[derive(Clone)]
pub struct Fake {
    inner: SyntheticStore,
    script: Arc<Script>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

/// Counts a stream as cancelled if it is dropped before it ended.
struct Guard {
    inner: FrameStream,
    script: Arc<Script>,
    ended: bool,
}

impl Stream for Guard {
    type Item = Result<SeriesResponse, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.as_mut().poll_next(cx);
        match &item {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Ok(_))) => {
                self.script.frames_sent.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        item
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.ended {
            self.script.cancelled.fetch_add(1, Ordering::SeqCst);
            self.script
                .cancelled_at
                .lock()
                .expect("lock")
                .push(std::time::Instant::now());
        }
    }
}

#[tonic::async_trait]
impl Store for Fake {
    type SeriesStream = FrameStream;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        self.script.series_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = request.metadata().get("thanos-tenant") {
            let tenant = t.to_str().unwrap_or_default().to_owned();
            self.script.tenants.lock().expect("lock").push(tenant);
        }
        if let Some(t) = request.metadata().get("traceparent") {
            let traceparent = t.to_str().unwrap_or_default().to_owned();
            self.script
                .traceparents
                .lock()
                .expect("lock")
                .push(traceparent);
        }
        let grpc_timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|t| t.to_str().unwrap_or_default().to_owned());
        self.script
            .grpc_timeouts
            .lock()
            .expect("lock")
            .push(grpc_timeout);
        self.script
            .requests
            .lock()
            .expect("lock")
            .push(request.get_ref().clone());
        let script = self.script.series.lock().expect("lock").clone();
        let inner: FrameStream = match script {
            SeriesScript::Normal => {
                let frames = self.inner.series_frames(request.get_ref())?;
                Box::pin(tokio_stream::iter(frames.into_iter().map(Ok)))
            }
            SeriesScript::Fail(code, msg) => return Err(Status::new(code, msg)),
            SeriesScript::Hang => Box::pin(futures::stream::pending()),
            SeriesScript::NormalThenHang => {
                let frames = self.inner.series_frames(request.get_ref())?;
                Box::pin(futures::StreamExt::chain(
                    tokio_stream::iter(frames.into_iter().map(Ok)),
                    futures::stream::pending(),
                ))
            }
            SeriesScript::Frames(frames) => {
                Box::pin(tokio_stream::iter(frames.into_iter().map(Ok)))
            }
            SeriesScript::FramesThenHang(frames) => Box::pin(futures::StreamExt::chain(
                tokio_stream::iter(frames.into_iter().map(Ok)),
                futures::stream::pending(),
            )),
            SeriesScript::PartThenHang(n) => {
                let mut frames = self.inner.series_frames(request.get_ref())?;
                frames.truncate(n);
                Box::pin(futures::StreamExt::chain(
                    tokio_stream::iter(frames.into_iter().map(Ok)),
                    futures::stream::pending(),
                ))
            }
            SeriesScript::Large {
                series,
                chunk_bytes,
            } => {
                let external = self.inner.dataset().external_labels.clone();
                Box::pin(tokio_stream::iter((0..series).map(move |i| {
                    Ok(SeriesResponse {
                        result: Some(series_response::Result::Series(large_series(
                            &external,
                            i,
                            chunk_bytes,
                        ))),
                    })
                })))
            }
            SeriesScript::Raw(raw) => {
                // The layer `raw_answers` puts it in place of the empty
                // stream; the extension carries it there.
                let mut response = Response::new(Box::pin(Guard {
                    inner: Box::pin(futures::stream::pending()),
                    script: self.script.clone(),
                    ended: false,
                }) as FrameStream);
                response.extensions_mut().insert(raw);
                return Ok(response);
            }
            SeriesScript::Drip(every) => {
                let frames = self.inner.series_frames(request.get_ref())?;
                Box::pin(futures::StreamExt::then(
                    tokio_stream::iter(frames),
                    move |frame| async move {
                        tokio::time::sleep(every).await;
                        Ok(frame)
                    },
                ))
            }
        };
        Ok(Response::new(Box::pin(Guard {
            inner,
            script: self.script.clone(),
            ended: false,
        })))
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        self.script.label_calls.fetch_add(1, Ordering::SeqCst);
        if let SeriesScript::Fail(code, msg) = self.script.series.lock().expect("lock").clone() {
            return Err(Status::new(code, msg));
        }
        self.labels_answer(Store::label_names(&self.inner, request).await, |a| {
            &mut a.warnings
        })
        .await
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        self.script.label_calls.fetch_add(1, Ordering::SeqCst);
        if let SeriesScript::Fail(code, msg) = self.script.series.lock().expect("lock").clone() {
            return Err(Status::new(code, msg));
        }
        self.labels_answer(Store::label_values(&self.inner, request).await, |a| {
            &mut a.warnings
        })
        .await
    }
}

impl Fake {
    /// A label call's answer as the script has it: never, or with its warning.
    async fn labels_answer<T>(
        &self,
        answer: Result<Response<T>, Status>,
        warnings: fn(&mut T) -> &mut Vec<String>,
    ) -> Result<Response<T>, Status> {
        if self.script.labels_hang.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
        let mut answer = answer?;
        if let Some(warning) = self.script.label_warning.lock().expect("lock").clone() {
            warnings(answer.get_mut()).push(warning);
        }
        Ok(answer)
    }
}

#[tonic::async_trait]
impl Info for Fake {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let delay = *self.script.info_delay.lock().expect("lock");
        tokio::time::sleep(delay).await;
        if self.script.info_fails.load(Ordering::SeqCst) {
            return Err(Status::unavailable("not ready"));
        }
        let mut answer = Info::info(&self.inner, request).await?;
        if let Some((min, max)) = *self.script.info_time_range.lock().expect("lock")
            && let Some(store) = &mut answer.get_mut().store
        {
            (store.min_time, store.max_time) = (min, max);
        }
        Ok(answer)
    }
}

/// Certificates for one test, written to a temp dir.
pub struct Pki {
    pub ca: Authority,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let ca = Authority::new("test CA").expect("CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
        let (client_cert, client_key) = ca
            .client("thanos-fanout")
            .expect("client cert")
            .write(dir.path(), "client")
            .expect("write client cert");
        Self {
            ca,
            dir,
            ca_file,
            client_cert,
            client_key,
        }
    }

    /// Client TLS for a remote whose certificate is for `server_name`.
    pub fn client_tls(&self, server_name: &str) -> TlsConfig {
        TlsConfig {
            ca_file: Some(self.ca_file.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            server_name: Some(server_name.to_owned()),
            insecure_skip_verify: false,
        }
    }

    /// A server config for `names`, requiring client certificates from our CA.
    pub fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let pem = self.ca.server(names).expect("server cert");
        thanos_fanout::demo::tls_server::server_config(
            &pem.cert,
            &pem.key,
            Some(&self.ca.cert_pem()),
        )
        .expect("server config")
    }
}

/// A running remote; stops when dropped.
pub struct RemoteHandle {
    pub addr: SocketAddr,
    pub script: Arc<Script>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RemoteHandle {
    /// Stops the server and waits until its port is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A graceful stop sends GOAWAY, so live connections close too and the
        // remote is really gone, not just its listener.
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts a fake remote with `data`, over TLS when `tls` is given.
pub async fn start_remote(
    data: Dataset,
    caps: Capabilities,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> RemoteHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind remote");
    start_remote_on(listener, data, caps, tls)
}

/// Starts a fake remote on a listener the caller bound (any loopback address).
pub fn start_remote_on(
    listener: tokio::net::TcpListener,
    data: Dataset,
    caps: Capabilities,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> RemoteHandle {
    let fake = Fake {
        inner: SyntheticStore::new(data).with_capabilities(caps),
        script: Arc::new(Script::default()),
    };
    let script = fake.script.clone();
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_fake(fake, listener, tls, async {
        let _ = stopped.await;
    }));
    RemoteHandle {
        addr,
        script,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Like `synthetic::serve`, plus a layer recording each request's
/// `:authority` and a count of accepted connections.
async fn serve_fake(
    fake: Fake,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let script = fake.script.clone();
    let record = tower::ServiceBuilder::new()
        .map_request(move |req: http::Request<_>| {
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            script.authorities.lock().expect("lock").push(authority);
            let encoding = req
                .headers()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            script.encodings.lock().expect("lock").push(encoding);
            req
        })
        .map_response(raw_answers);
    // Served like the demo's remotes, which answer like Thanos servers.
    let router = tonic::transport::Server::builder()
        .layer(record)
        .layer(thanos_fanout::snappy::SnappyRequests::new(
            thanos_fanout::snappy::Limit {
                bytes: thanos_fanout::proto::MAX_MESSAGE_SIZE,
                key: "the fake remote's message size limit",
            },
        ))
        .add_service(synthetic::info_server(fake.clone()))
        .add_service(synthetic::store_server(fake.clone()));
    let script = fake.script.clone();
    let counted = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let counted = futures::StreamExt::inspect(counted, move |conn| {
        script.connections.fetch_add(1, Ordering::SeqCst);
        if let Ok(conn) = conn {
            let _ = conn.set_nodelay(true);
        }
    });
    let _ = match tls {
        Some(config) => {
            let incoming = thanos_fanout::demo::tls_server::accept(Box::pin(counted), config);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => router.serve_with_incoming_shutdown(counted, shutdown).await,
    };
}

/// Puts a [`SeriesScript::Raw`] answer in place of the body tonic made.
fn raw_answers(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(raw) = response.extensions_mut().remove::<RawAnswer>() else {
        return response;
    };
    response.headers_mut().insert(
        "grpc-encoding",
        http::HeaderValue::from_static(raw.encoding),
    );
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let data = futures::stream::iter([Ok::<_, Status>(http_body::Frame::data(raw.body))]);
    let end: Pin<Box<dyn Stream<Item = Result<http_body::Frame<bytes::Bytes>, Status>> + Send>> =
        if raw.then_hang {
            Box::pin(futures::stream::pending())
        } else {
            Box::pin(futures::stream::iter([Ok(http_body::Frame::trailers(
                trailers,
            ))]))
        };
    let body = http_body_util::StreamBody::new(futures::StreamExt::chain(data, end));
    *response.body_mut() = tonic::body::Body::new(body);
    response
}

/// The gRPC framing of one message: compression flag, length, bytes.
pub fn grpc_frame(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// `bytes` in snappy's framing format, as Thanos's `snappy` encoding sends them.
pub fn snappy(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut encoder, bytes).expect("compress");
    encoder.into_inner().expect("flush")
}

/// Series `i` of a [`SeriesScript::Large`] answer: `{__name__="big", at="<i>"}`
/// plus the remote's external labels, so equal answers from two remotes
/// interleave in a merge, with one chunk of `chunk_bytes` unique to the series
/// and the remote.
pub fn large_series(external: &[Label], i: usize, chunk_bytes: usize) -> Series {
    let mut labels = from_pairs([("__name__", "big"), ("at", &format!("{i:07}"))]);
    labels.extend(external.iter().cloned());
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    let seed = external
        .iter()
        .flat_map(|l| l.value.bytes())
        .fold(i as u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        });
    let mut data = vec![seed as u8; chunk_bytes.max(8)];
    data[..8].copy_from_slice(&seed.to_le_bytes());
    Series {
        labels,
        chunks: vec![thanos_fanout::proto::thanos::AggrChunk {
            min_time: 0,
            max_time: MINUTE,
            raw: Some(thanos_fanout::proto::thanos::Chunk {
                r#type: 0,
                data: data.into(),
                hash: 0,
            }),
            ..Default::default()
        }],
    }
}

/// A remote for cluster `cluster` with one `up` series over the first minute.
pub async fn up_remote(cluster: &str, tls: Option<Arc<rustls::ServerConfig>>) -> RemoteHandle {
    let data = dataset(
        &[("cluster", cluster)],
        vec![series(&[("__name__", "up")], samples(0, MINUTE, |_| 1.0))],
    );
    start_remote(data, Capabilities::default(), tls).await
}

/// A remote config entry for `addr`.
pub fn remote(name: &str, addr: SocketAddr, tls: Option<TlsConfig>) -> RemoteConfig {
    RemoteConfig {
        name: name.to_owned(),
        targets: vec![addr.to_string()],
        file_sd: Vec::new(),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        tls,
        authority: None,
        compression: Default::default(),
        mode: Default::default(),
        http2: Default::default(),
        circuit_breaker: Default::default(),
        max_concurrent_calls: 256,
        max_message_bytes: thanos_fanout::config::DEFAULT_MAX_MESSAGE_BYTES,
    }
}

/// A config on ephemeral loopback ports with a fast Info poll.
pub fn config(remotes: Vec<RemoteConfig>) -> Config {
    let mut config = Config::default();
    config.grpc.listen = "127.0.0.1:0".into();
    config.http.listen = "127.0.0.1:0".into();
    config.grpc.grace_period = Duration::from_secs(1);
    config.info.interval = Duration::from_millis(200);
    config.info.timeout = Duration::from_secs(2);
    config.remotes = remotes;
    config
}

/// Starts the aggregator and waits until it is ready.
pub async fn start_fanout(config: Config) -> Running {
    let config = config.validate(None).expect("valid config");
    let running = app::start(config).await.expect("fanout starts");
    tokio::time::timeout(Duration::from_secs(10), running.ready.wait())
        .await
        .expect("ready in time");
    running
}

pub async fn client(running: &Running) -> StoreClient<Channel> {
    StoreClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect to fanout")
        .max_decoding_message_size(usize::MAX)
}

/// Samples every 15 s in `[start, end]` with values from `f`.
pub fn samples(start: i64, end: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
    (start..=end).step_by(15_000).map(|t| (t, f(t))).collect()
}

/// One series; `labels` are `name=value` pairs.
pub fn series(labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> SampleSeries {
    SampleSeries {
        labels: from_pairs(labels.iter().copied()),
        samples,
    }
}

/// A data set with external labels `ext` and the given series.
pub fn dataset(ext: &[(&str, &str)], series: Vec<SampleSeries>) -> Dataset {
    Dataset::new(from_pairs(ext.iter().copied()), series).expect("dataset")
}

pub fn eq(name: &str, value: &str) -> LabelMatcher {
    matcher(label_matcher::Type::Eq, name, value)
}

pub fn matcher(t: label_matcher::Type, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: t as i32,
        name: name.into(),
        value: value.into(),
    }
}

/// A request over all time for the given matchers.
pub fn request(matchers: Vec<LabelMatcher>) -> SeriesRequest {
    SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers,
        ..Default::default()
    }
}

/// What a Series call returned: series (batches unpacked), warnings, and the
/// number of batch frames.
#[derive(Debug, Default)]
pub struct Answer {
    pub series: Vec<Series>,
    pub warnings: Vec<String>,
    pub batches: Vec<usize>,
    pub single_frames: usize,
}

impl Answer {
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.series
            .iter()
            .map(|s| value(&s.labels, name).to_owned())
            .collect()
    }
}

pub fn value<'a>(labels: &'a [Label], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

pub async fn call_series(
    client: &mut StoreClient<Channel>,
    req: SeriesRequest,
) -> Result<Answer, Status> {
    let mut stream = client.series(req).await?.into_inner();
    let mut answer = Answer::default();
    while let Some(frame) = stream.message().await? {
        match frame.result {
            Some(series_response::Result::Series(s)) => {
                answer.single_frames += 1;
                answer.series.push(s);
            }
            Some(series_response::Result::Batch(b)) => {
                answer.batches.push(b.series.len());
                answer.series.extend(b.series);
            }
            Some(series_response::Result::Warning(w)) => answer.warnings.push(w),
            _ => {}
        }
    }
    Ok(answer)
}

/// Waits until `check` holds, polling; panics with `what` after `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the metric line that starts with `series` (its name and
/// labels exactly as the registry encodes them), if there is one.
pub fn metric_in(running: &Running, series: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &running.registry).expect("encode");
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
