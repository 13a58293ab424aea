//! Graceful shutdown of the real binary under load: SIGTERM stops new
//! connections, lets in-flight Series streams finish within
//! `grpc.grace_period`, and the process exits in time.

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

/// Starts the binary in front of `remotes` with `grace`; returns it and its
/// gRPC address once ready.
async fn start(
    remotes: &[(&str, SocketAddr)],
    grace: &str,
    dir: &std::path::Path,
) -> (Process, SocketAddr) {
    let (grpc, http) = (free_port(), free_port());
    let mut yaml = format!(
        "grpc: {{listen: \"{grpc}\", grace_period: {grace}}}\nhttp: {{listen: \"{http}\"}}\nremotes:\n"
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
    (process, grpc)
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
