//! Our listeners when the process runs out of file descriptors, and under a
//! flood of connections that never finish their TLS handshake: the real
//! binary, started by `prlimit` with a low `RLIMIT_NOFILE`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thanos_fanout::config::{ListenerTls, TlsConfig};

use crate::common::*;
use crate::listener_tls::{answers, listener_cert, tls_client_at};
use crate::shutdown::{Process, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_thanos-fanout");

/// The binary, started with at most `nofile` descriptors.
struct Limited {
    process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Limited {
    /// Starts it in front of `remote`, over TLS on the gRPC port when `tls`
    /// is given, logging to `log` (or nowhere), and waits until it is ready.
    async fn start(
        nofile: u32,
        remote: SocketAddr,
        tls: Option<&ListenerTls>,
        dir: &Path,
        log: Option<&Path>,
    ) -> Self {
        let (grpc, http) = (free_port(), free_port());
        let tls = tls.map_or(String::new(), |tls| {
            format!(
                ", tls: {{cert_file: {:?}, key_file: {:?}, client_ca_file: {:?}}}",
                tls.cert_file,
                tls.key_file,
                tls.client_ca_file.as_deref().expect("client CA"),
            )
        });
        let yaml = format!(
            "grpc: {{listen: \"{grpc}\"{tls}}}\nhttp: {{listen: \"{http}\"}}\n\
             remotes:\n  - {{name: a, targets: [\"{remote}\"]}}\n"
        );
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::null(),
        };
        // prlimit sets the limit on itself, then becomes the binary: same pid.
        let process = Process(
            Command::new("prlimit")
                .arg(format!("--nofile={nofile}:{nofile}"))
                .arg("--")
                .arg(BIN)
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("start the binary under prlimit (util-linux)"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(http).await.is_err()
            || crate::info::http_get(http, "/-/ready").await.0 != 200
        {
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            process,
            grpc,
            http,
        }
    }

    fn proc(&self, what: &str) -> PathBuf {
        Path::new("/proc")
            .join(self.process.0.id().to_string())
            .join(what)
    }

    /// Descriptors it has open.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(self.proc("fd")).map_or(0, Iterator::count)
    }

    /// CPU time it has used so far, user and system.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(self.proc("stat")).expect("stat");
        // Fields after the command name, which ends in the last ')': state
        // is field 3, utime 14 and stime 15.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .expect("stat format")
            .1
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields[10] + fields[11];
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
    }
}

/// Kernel clock ticks per second, the unit of /proc/<pid>/stat's times.
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// TCP connections to `addr` that send nothing, from blocking sockets so
/// that hundreds of them cost the test's runtime nothing.
fn idle_connections(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| {
            let conn = std::net::TcpStream::connect(addr).expect("connect");
            conn.set_nonblocking(true).expect("non-blocking");
            conn
        })
        .collect()
}

/// Whether the other side has closed `conn`.
fn closed_by_peer(conn: &std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0; 1];
    match (&*conn).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A verified client and whether it is answered.
async fn verified_answers(grpc: SocketAddr, tls: Option<&TlsConfig>) -> Result<(), String> {
    match tls {
        Some(tls) => answers(tls_client_at(grpc, tls, "fanout.test").await).await,
        None => {
            let client = thanos_fanout::proto::thanos::store_client::StoreClient::connect(format!(
                "http://{grpc}"
            ))
            .await
            .map_err(|e| format!("{e:?}"));
            answers(client).await
        }
    }
}

/// Out of descriptors with connections waiting to be accepted: a client
/// connected before goes on being answered, the process does not spin on
/// the failing accept (nor log every failure), and once the waiting
/// connections go away new clients are served on both ports.
async fn out_of_descriptors(tls: bool) {
    const NOFILE: u32 = 64;
    let remote = up_remote("a", None).await;
    let pki = Pki::new();
    let listener = tls.then(|| {
        let mut cert = listener_cert(&pki.ca, pki.dir.path(), "fanout.test");
        cert.client_ca_file = Some(pki.ca_file.clone());
        cert
    });
    let client_tls = tls.then(|| pki.client_tls("fanout.test"));
    let log = pki.dir.path().join("stderr.log");
    let fanout = Limited::start(
        NOFILE,
        remote.addr,
        listener.as_ref(),
        pki.dir.path(),
        Some(&log),
    )
    .await;

    // A client connected while descriptors are still free.
    let mut established = match &client_tls {
        Some(tls) => tls_client_at(fanout.grpc, tls, "fanout.test")
            .await
            .expect("connect"),
        None => thanos_fanout::proto::thanos::store_client::StoreClient::connect(format!(
            "http://{}",
            fanout.grpc
        ))
        .await
        .expect("connect"),
    };
    let up = || request(vec![eq("__name__", "up")]);
    call_series(&mut established, up())
        .await
        .expect("answered before");

    // More connections than descriptors: the rest wait in the backlog.
    let extra = idle_connections(fanout.grpc, 2 * NOFILE as usize);
    eventually(
        "the process to run out of descriptors",
        Duration::from_secs(10),
        || fanout.descriptors() + 1 >= NOFILE as usize,
    )
    .await;
    let log_lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let failures_before = log_lines().matches("accept").count();

    let (cpu, wall) = (fanout.cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu, wall) = (fanout.cpu() - cpu, wall.elapsed());
    assert!(
        cpu < wall / 4,
        "{cpu:?} of CPU in {wall:?} out of descriptors: the accept loop spins"
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), call_series(&mut established, up()))
        .await
        .expect("an answer in time")
        .expect("the established client is answered out of descriptors");
    assert_eq!(answer.label_values("cluster"), ["a"]);
    let failures = log_lines().matches("accept").count() - failures_before;
    assert!(
        failures <= 4,
        "{failures} log lines about accepting in 2 s: one per failure?\n{}",
        log_lines().lines().take(20).collect::<Vec<_>>().join("\n")
    );

    // Descriptors free up: new clients are served again, on both ports.
    drop(extra);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            verified_answers(fanout.grpc, client_tls.as_ref()),
        )
        .await
        .unwrap_or_else(|_| Err("no answer within 5s".into()));
        match served {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "not served again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        crate::info::http_get(fanout.http, "/-/healthy").await.0,
        200
    );
    let log = log_lines();
    assert!(
        log.contains("accepting connections failed; retrying with back-off")
            && log.contains("accepting connections again"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_plaintext_keeps_serving_without_spinning_and_recovers() {
    out_of_descriptors(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_tls_keeps_serving_without_spinning_and_recovers() {
    out_of_descriptors(true).await;
}

/// More idle connections than handshakes may be in progress (the default
/// `grpc.tls.max_handshakes`, 256) and than the process has descriptors:
/// the oldest are closed to make room, and a verified client arriving
/// behind them all is served before any handshake times out (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_does_not_keep_verified_clients_out() {
    const NOFILE: u32 = 512;
    const FLOOD: usize = 1000;
    const MAX_HANDSHAKES: usize = 256;
    let remote = up_remote("a", None).await;
    let pki = Pki::new();
    let mut listener = listener_cert(&pki.ca, pki.dir.path(), "fanout.test");
    listener.client_ca_file = Some(pki.ca_file.clone());
    let fanout = Limited::start(NOFILE, remote.addr, Some(&listener), pki.dir.path(), None).await;

    let good = pki.client_tls("fanout.test");
    // Bounded from the flood's start: a listener that lets the flood take
    // every descriptor serves no one until the first stalled handshakes
    // time out, 10 s after they were accepted, and with twice as many
    // connections waiting as it has descriptors, not even then.
    let started = Instant::now();
    let flood = idle_connections(fanout.grpc, FLOOD);
    let served = tokio::time::timeout(
        Duration::from_secs(10).saturating_sub(started.elapsed()),
        verified_answers(fanout.grpc, Some(&good)),
    )
    .await
    .unwrap_or_else(|_| Err("no answer".into()));
    assert_eq!(
        served,
        Ok(()),
        "a verified client behind {FLOOD} stalled handshakes, after {:?}",
        started.elapsed()
    );
    // The ones beyond the cap were closed, not left to time out.
    eventually(
        "the flood beyond the cap to be closed",
        Duration::from_secs(5),
        || flood.iter().filter(|c| closed_by_peer(c)).count() >= FLOOD - MAX_HANDSHAKES - 16,
    )
    .await;
    assert!(fanout.descriptors() < NOFILE as usize);
}
