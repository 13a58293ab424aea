//! Graceful shutdown of the real binary under load: on SIGTERM it reports
//! not ready and serves on, new connections included, for
//! `grpc.shutdown_delay`; then it stops accepting, tells clients to go
//! (HTTP/2 GOAWAY), lets in-flight Series streams finish within
//! `grpc.grace_period`, and exits in time.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thanos_fanout::proto::thanos::store_client::StoreClient;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_thanos-fanout");

pub(crate) fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// The binary; killed if still running when dropped.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `within` for the process to exit.
    async fn exited_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.0.try_wait().expect("wait").is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// Starts the binary in front of `remotes` with `grace` and no shutdown
/// delay; returns it and its gRPC address once ready.
async fn start(
    remotes: &[(&str, SocketAddr)],
    grace: &str,
    dir: &std::path::Path,
) -> (Process, SocketAddr) {
    let (process, grpc, _) = start_with(remotes, grace, "0s", dir).await;
    (process, grpc)
}

/// Starts the binary with `grace` and `delay` (`grpc.shutdown_delay`);
/// returns it and its gRPC and HTTP addresses once ready.
async fn start_with(
    remotes: &[(&str, SocketAddr)],
    grace: &str,
    delay: &str,
    dir: &std::path::Path,
) -> (Process, SocketAddr, SocketAddr) {
    let (grpc, http) = (free_port(), free_port());
    let mut yaml = format!(
        "grpc: {{listen: \"{grpc}\", grace_period: {grace}, shutdown_delay: {delay}}}\nhttp: {{listen: \"{http}\"}}\nremotes:\n"
    );
    for (name, addr) in remotes {
        yaml.push_str(&format!(
            "  - {{name: {name}, targets: [\"{addr}\"], timeout: 60s}}\n"
        ));
    }
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let process = Process(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(http).await.is_err()
        || crate::info::http_get(http, "/-/ready").await.0 != 200
    {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (process, grpc, http)
}

async fn connect(
    grpc: SocketAddr,
) -> Result<StoreClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect()
        .await?;
    Ok(StoreClient::new(channel))
}

/// A remote answering 20 series, one every 100 ms.
async fn slow_remote() -> RemoteHandle {
    let data = dataset(
        &[("cluster", "slow")],
        (0..20)
            .map(|i| {
                let i = format!("{i:02}");
                series(
                    &[("__name__", "up"), ("i", i.as_str())],
                    samples(0, MINUTE, |_| 1.0),
                )
            })
            .collect(),
    );
    let r = start_remote(data, Default::default(), None).await;
    r.script.set(SeriesScript::Drip(Duration::from_millis(100)));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_streams_finish_and_refuses_new_connections() {
    let slow = slow_remote().await;
    let fast = up_remote("fast", None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut process, grpc) = start(
        &[("slow", slow.addr), ("fast", fast.addr)],
        "5s",
        dir.path(),
    )
    .await;

    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut client = connect(grpc).await.expect("connect");
        calls.push(tokio::spawn(async move {
            call_series(&mut client, request(vec![eq("__name__", "up")])).await
        }));
    }
    // Streams are under way (about 2 s each) when SIGTERM comes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    process.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = match connect(grpc).await {
        Err(_) => None,
        Ok(mut client) => Some(call_series(&mut client, request(vec![eq("__name__", "up")])).await),
    };
    assert!(
        late.as_ref().is_none_or(Result::is_err),
        "a connection after SIGTERM was served: {late:?}"
    );
    for call in calls {
        let answer = call
            .await
            .expect("task")
            .expect("an in-flight stream finishes");
        assert_eq!(answer.series.len(), 21, "every series of both remotes");
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    }
    assert!(
        process.exited_within(Duration::from_secs(3)).await,
        "still running 3 s after its streams finished"
    );
    assert!(signalled.elapsed() < Duration::from_secs(5 + 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlasting_the_grace_period_is_cut_and_the_process_exits_in_time() {
    let hanging = up_remote("hanging", None).await;
    hanging.script.set(SeriesScript::NormalThenHang);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut process, grpc) = start(&[("hanging", hanging.addr)], "1s", dir.path()).await;
    let mut client = connect(grpc).await.expect("connect");
    let call =
        tokio::spawn(
            async move { call_series(&mut client, request(vec![eq("__name__", "up")])).await },
        );
    eventually("the remote is called", Duration::from_secs(5), || {
        hanging.script.series_calls() == 1
    })
    .await;
    process.sigterm();
    let signalled = Instant::now();
    assert!(
        process.exited_within(Duration::from_secs(1 + 2)).await,
        "not gone 3 s after SIGTERM with a 1 s grace period"
    );
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "the grace period was not given"
    );
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends")
        .expect("task");
    assert!(
        result.is_err(),
        "a cut stream is an error, not a complete answer: {result:?}"
    );
}

/// A bare HTTP/2 connection to `grpc`, driven in the background.
async fn h2_connection(grpc: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(grpc).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    send
}

/// Whether the server takes a new stream on `connection`: false once it
/// said GOAWAY (or closed the connection).
async fn takes_new_streams(connection: &h2::client::SendRequest<bytes::Bytes>) -> bool {
    let Ok(mut send) = connection.clone().ready().await else {
        return false;
    };
    let request = http::Request::post("/thanos.info.Info/Info")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let Ok((response, mut body)) = send.send_request(request, false) else {
        return false;
    };
    // An empty InfoRequest: no compression, length 0.
    if body
        .send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .is_err()
    {
        return false;
    }
    matches!(response.await, Ok(response) if response.status() == 200)
}

/// What a rolling update needs: after SIGTERM the replica is not ready at
/// once, yet for `grpc.shutdown_delay` serves on, new connections and Info
/// included, and keeps its connections open; then it closes them with a
/// GOAWAY, lets every stream in flight finish and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_not_ready_serves_on_for_the_delay_then_drains() {
    let slow = slow_remote().await;
    let fast = up_remote("fast", None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The streams in flight (5 s) outlast the delay.
    slow.script
        .set(SeriesScript::Drip(Duration::from_millis(250)));
    let delay = Duration::from_secs(2);
    let (mut process, grpc, http) = start_with(
        &[("slow", slow.addr), ("fast", fast.addr)],
        "10s",
        "2s",
        dir.path(),
    )
    .await;
    let idle = h2_connection(grpc).await;
    assert!(
        takes_new_streams(&idle).await,
        "a new connection takes calls"
    );
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut client = connect(grpc).await.expect("connect");
        calls.push(tokio::spawn(async move {
            call_series(&mut client, request(vec![eq("__name__", "up")])).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    process.sigterm();

    // Not ready at once; alive.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (code, body) = crate::info::http_get(http, "/-/ready").await;
        if code == 503 {
            assert!(body.contains("shutting down"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready after SIGTERM: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(crate::info::http_get(http, "/-/healthy").await.0, 200);

    // A connection made during the delay is served whole, Info included.
    let mut late = connect(grpc).await.expect("a connection during the delay");
    let answer = call_series(
        &mut late,
        request(vec![eq("__name__", "up"), eq("cluster", "fast")]),
    )
    .await
    .expect("a call during the delay");
    assert_eq!(
        answer.label_values("cluster"),
        ["fast"],
        "{:?}",
        answer.warnings
    );
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    let mut info = thanos_fanout::proto::thanos::info::info_client::InfoClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    let answered = info
        .info(thanos_fanout::proto::thanos::info::InfoRequest {})
        .await
        .expect("Info during the delay")
        .into_inner();
    assert_eq!(answered.label_sets.len(), 2, "{answered:?}");
    assert!(
        signalled.elapsed() < delay,
        "the checks above took past the delay ({:?}): they prove nothing",
        signalled.elapsed()
    );
    assert!(
        takes_new_streams(&idle).await,
        "a connection made before SIGTERM was told to go before the delay ended"
    );

    // After the delay: connections are told to go (GOAWAY), new ones are
    // not served, streams in flight finish whole.
    let deadline = Instant::now() + Duration::from_secs(5);
    while {
        let t = takes_new_streams(&idle).await;
        eprintln!("{:?} {t}", signalled.elapsed());
        t
    } {
        assert!(
            Instant::now() < deadline,
            "a connection still takes new calls {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        signalled.elapsed() >= delay - Duration::from_millis(100),
        "told to go after {:?}, before the delay",
        signalled.elapsed()
    );
    // The port is closed: a new connection is refused at once (and goes to
    // another replica), not left waiting in the backlog until the process
    // exits.
    let refused = tokio::net::TcpStream::connect(grpc).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a connection after the delay: {refused:?}"
    );
    assert!(
        calls.iter().all(|call| !call.is_finished()),
        "the streams in flight should outlast the delay"
    );
    for call in calls {
        let answer = call
            .await
            .expect("task")
            .expect("an in-flight stream finishes");
        assert_eq!(answer.series.len(), 21, "every series of both remotes");
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    }
    assert!(
        process.exited_within(Duration::from_secs(10)).await,
        "still running 10 s after its streams finished"
    );
}
