//! Remote faults, each isolated: for every way a remote can fail, a Series
//! call through thanos-fanout finishes within the remote's timeout, the
//! healthy remote's data arrives intact, the warning names the remote and
//! the cause, and metrics count it. Faults below gRPC come from raw TCP
//! listeners and a relay that breaks a real remote's connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thanos_fanout::app::Running;
use thanos_fanout::config::{Config, RemoteConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// The healthy remote every test queries beside the faulty one: cluster
/// "ok", ten series.
async fn healthy() -> RemoteHandle {
    let data = dataset(
        &[("cluster", "ok")],
        (0..10)
            .map(|i| {
                let i = format!("{i}");
                series(
                    &[("__name__", "up"), ("i", i.as_str())],
                    samples(0, MINUTE, |_| 1.0),
                )
            })
            .collect(),
    );
    start_remote(data, Default::default(), None).await
}

/// thanos-fanout in front of `ok` and the faulty remote `bad`, with short
/// timeouts.
async fn fanout(
    ok: &RemoteHandle,
    mut bad: RemoteConfig,
    tweak: impl FnOnce(&mut Config),
) -> Running {
    bad.timeout = Duration::from_secs(1);
    bad.connect_timeout = Duration::from_secs(1);
    let mut cfg = config(vec![remote("ok", ok.addr, None), bad]);
    cfg.info.timeout = Duration::from_secs(1);
    tweak(&mut cfg);
    start_fanout(cfg).await
}

/// How long a call may take when the faulty remote has 1 s to connect and
/// to answer: a wide margin for a loaded machine, yet well under the 10 s a
/// remote gets by default (see `remote`), so a fault noticed only by a
/// default, or not at all, still fails the check.
const WITHIN: Duration = Duration::from_secs(6);

/// Queries `{__name__=~"up|big"}` and checks what every fault must leave
/// intact: the answer within [`WITHIN`], all ten of ok's series, and one
/// warning naming remote bad that says `cause`. Returns the answer.
async fn check(running: &Running, cause: &[&str]) -> Answer {
    let mut client = client(running).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(
        WITHIN,
        call_series(
            &mut client,
            request(vec![matcher(
                thanos_fanout::proto::thanos::label_matcher::Type::Re,
                "__name__",
                "up|big",
            )]),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer within {WITHIN:?}"))
    .expect("WARN: the call succeeds");
    assert!(started.elapsed() < WITHIN, "took {:?}", started.elapsed());
    let ok: Vec<_> = answer
        .series
        .iter()
        .filter(|s| value(&s.labels, "cluster") == "ok")
        .collect();
    assert_eq!(ok.len(), 10, "the healthy remote's data: {answer:?}");
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    let warning = &answer.warnings[0];
    assert!(warning.starts_with("remote bad ("), "{warning}");
    for word in cause {
        assert!(warning.contains(word), "{warning:?} does not say {word:?}");
    }
    answer
}

/// The value of the metric line starting with `series`.
async fn metric(running: &Running, series: &str) -> f64 {
    let (_, body) = crate::info::http_get(running.http_addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn bad_at(addr: SocketAddr) -> RemoteConfig {
    remote("bad", addr, None)
}

/// A listener that accepts connections and holds them, saying nothing.
async fn silent_listener() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (addr, task)
}

/// A listener that answers every connection with bytes that are no protocol.
async fn garbage_listener() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let garbage: Vec<u8> = (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                let _ = conn.write_all(&garbage).await;
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, task)
}

/// What the relay does to a connection once `after` bytes came from the remote.
#[derive(Clone, Copy)]
enum Break {
    /// Closes both sides with a TCP reset.
    Reset,
    /// Sends garbage in place of the rest.
    Garbage,
}

/// A TCP relay to `upstream` that breaks connections while `armed`.
async fn relay(
    upstream: SocketAddr,
    after: usize,
    how: Break,
    armed: Arc<AtomicBool>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let armed = armed.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                if let Break::Reset = how {
                    // Closing then sends a reset, not an orderly end.
                    #[allow(deprecated)]
                    let _ = client.set_linger(Some(Duration::ZERO));
                }
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut relayed = 0;
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if armed.load(Ordering::SeqCst) && relayed + n > after {
                        match how {
                            Break::Reset => {
                                // No FIN first: the socket closes, with a
                                // reset, when the read half goes.
                                client_write.forget();
                                up.abort();
                                return;
                            }
                            Break::Garbage => {
                                let garbage = vec![0xee_u8; 8192];
                                let _ = client_write.write_all(&garbage).await;
                                break;
                            }
                        }
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    relayed += n;
                }
                up.abort();
            });
        }
    });
    addr
}

#[tokio::test]
async fn refuses_connections() {
    let ok = healthy().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let running = fanout(&ok, bad_at(port), |_| {}).await;
    check(&running, &["Connection refused"]).await;
    let series =
        format!(r#"thanos_fanout_remote_info_failures_total{{remote="bad",endpoint="{port}"}}"#);
    assert!(metric(&running, &series).await >= 1.0);
}

#[tokio::test]
async fn accepts_tcp_but_never_finishes_the_tls_handshake() {
    let ok = healthy().await;
    let (addr, _listener) = silent_listener().await;
    let pki = Pki::new();
    let bad = remote("bad", addr, Some(pki.client_tls("bad.test")));
    let running = fanout(&ok, bad, |_| {}).await;
    check(&running, &["timed out"]).await;
    let series = format!(
        r#"thanos_fanout_remote_tls_handshake_failures_total{{remote="bad",endpoint="{addr}",reason="timeout"}}"#
    );
    // Counted when connect_timeout passes.
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(&running, &series).await < 1.0 {
        assert!(Instant::now() < deadline, "{series} not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn accepts_tcp_and_never_answers_plaintext() {
    let ok = healthy().await;
    let (addr, _listener) = silent_listener().await;
    let running = fanout(&ok, bad_at(addr), |_| {}).await;
    check(&running, &["Info"]).await;
}

#[tokio::test]
async fn presents_an_expired_certificate() {
    let ok = healthy().await;
    let pki = Pki::new();
    let pem = pki
        .ca
        .server_valid(&["bad.test"], (2020, 1, 1), (2021, 1, 1))
        .expect("cert");
    let tls = thanos_fanout::demo::tls_server::server_config(
        &pem.cert,
        &pem.key,
        Some(&pki.ca.cert_pem()),
    )
    .expect("tls");
    let bad = up_remote("bad", Some(tls)).await;
    let running = fanout(
        &ok,
        remote("bad", bad.addr, Some(pki.client_tls("bad.test"))),
        |_| {},
    )
    .await;
    check(&running, &["expired"]).await;
    assert_eq!(bad.script.series_calls(), 0);
    let series = format!(
        r#"thanos_fanout_remote_tls_handshake_failures_total{{remote="bad",endpoint="{}",reason="expired"}}"#,
        bad.addr
    );
    assert!(metric(&running, &series).await >= 1.0);
}

/// A remote with a large answer (`big`, 300 series of 4 KiB) behind a relay
/// that breaks its connections `how` after 64 KiB once armed.
async fn broken_mid_stream(how: Break) -> (RemoteHandle, RemoteHandle, Running, Arc<AtomicBool>) {
    let ok = healthy().await;
    let big = up_remote("bad", None).await;
    big.script.set(SeriesScript::Large {
        series: 300,
        chunk_bytes: 4 << 10,
    });
    let armed = Arc::new(AtomicBool::new(false));
    let addr = relay(big.addr, 64 << 10, how, armed.clone()).await;
    let running = fanout(&ok, bad_at(addr), |_| {}).await;
    armed.store(true, Ordering::SeqCst);
    (ok, big, running, armed)
}

#[tokio::test]
async fn resets_the_connection_mid_stream() {
    let (_ok, big, running, armed) = broken_mid_stream(Break::Reset).await;
    let answer = check(&running, &[]).await;
    let from_bad = answer
        .series
        .iter()
        .filter(|s| value(&s.labels, "cluster") == "bad")
        .count();
    assert!(from_bad < 300, "{from_bad} series despite the reset");
    assert!(
        answer.warnings[0].contains("the remote closed the connection"),
        "{}",
        answer.warnings[0]
    );
    // The remote comes back (a restart): the next call gets everything,
    // without waiting for a back-off.
    armed.store(false, Ordering::SeqCst);
    let mut client = client(&running).await;
    let started = Instant::now();
    let answer = call_series(&mut client, request(vec![eq("__name__", "big")]))
        .await
        .expect("after the restart");
    assert_eq!(answer.series.len(), 300, "{:?}", answer.warnings);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(big.script.series_calls() >= 2);
}

#[tokio::test]
async fn sends_garbage_mid_stream() {
    let (_ok, _big, running, _armed) = broken_mid_stream(Break::Garbage).await;
    let answer = check(&running, &[]).await;
    // Noticed as what it is: by HTTP/2's framing, or gRPC's, or (should the
    // garbage complete a message) as a broken series; never as a remote gone
    // silent, nor a call that failed for a reason of its own.
    let warning = &answer.warnings[0];
    assert!(
        [
            "protocol error",
            "): series",
            "not valid UTF-8",
            "out of order"
        ]
        .iter()
        .any(|cause| warning.contains(cause)),
        "{warning}"
    );
    let from_bad = answer
        .series
        .iter()
        .filter(|s| value(&s.labels, "cluster") == "bad")
        .count();
    assert!(from_bad < 300);
}

#[tokio::test]
async fn answers_with_garbage_bytes() {
    let ok = healthy().await;
    let (addr, _listener) = garbage_listener().await;
    let running = fanout(&ok, bad_at(addr), |_| {}).await;
    check(&running, &["Info"]).await;
}

#[tokio::test]
async fn sends_its_first_frames_then_hangs() {
    let ok = healthy().await;
    let bad = up_remote("bad", None).await;
    bad.script.set(SeriesScript::Large {
        series: 1,
        chunk_bytes: 16,
    });
    // Two series, then nothing.
    let frames = {
        let mut frames = Vec::new();
        for i in 0..2 {
            frames.push(thanos_fanout::proto::thanos::SeriesResponse {
                result: Some(
                    thanos_fanout::proto::thanos::series_response::Result::Series(large_series(
                        &thanos_fanout::labelset::from_pairs([("cluster", "bad")]),
                        i,
                        16,
                    )),
                ),
            });
        }
        frames
    };
    bad.script.set(SeriesScript::FramesThenHang(frames));
    let running = fanout(&ok, bad_at(bad.addr), |_| {}).await;
    let answer = check(&running, &["sent nothing for 1.0s", "after 2 series"]).await;
    assert_eq!(
        answer
            .series
            .iter()
            .filter(|s| value(&s.labels, "cluster") == "bad")
            .count(),
        2,
        "what arrived before the hang is kept"
    );
}

#[tokio::test]
async fn trickles_within_its_timeout_and_slower_than_it() {
    let ok = healthy().await;
    let bad = up_remote("bad", None).await;
    // 300 ms between frames, a 1 s timeout: slow, but making progress.
    bad.script
        .set(SeriesScript::Drip(Duration::from_millis(300)));
    let running = fanout(&ok, bad_at(bad.addr), |_| {}).await;
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("answer");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(
        answer
            .label_values("cluster")
            .iter()
            .filter(|c| *c == "bad")
            .count(),
        1
    );
    // 1.5 s between frames: no progress within the timeout.
    bad.script
        .set(SeriesScript::Drip(Duration::from_millis(1500)));
    check(&running, &["sent nothing for 1.0s"]).await;
}

#[tokio::test]
async fn sends_a_frame_over_the_size_limit() {
    let ok = healthy().await;
    let bad = up_remote("bad", None).await;
    bad.script.set(SeriesScript::Large {
        series: 2,
        chunk_bytes: 3 << 20,
    });
    let running = fanout(&ok, bad_at(bad.addr), |cfg| {
        cfg.remotes[1].max_message_bytes = 2 << 20;
    })
    .await;
    check(&running, &["max_message_bytes"]).await;
}

#[tokio::test]
async fn answers_info_with_an_error() {
    let ok = healthy().await;
    let bad = up_remote("bad", None).await;
    bad.script.info_fails.store(true, Ordering::SeqCst);
    let running = fanout(&ok, bad_at(bad.addr), |_| {}).await;
    check(&running, &["not queried", "not ready"]).await;
    assert_eq!(bad.script.series_calls(), 0);
}

#[tokio::test]
async fn advertises_an_empty_or_inverted_time_range() {
    for range in [(0, 0), (1_000, -1_000)] {
        let ok = healthy().await;
        let bad = up_remote("bad", None).await;
        *bad.script.info_time_range.lock().expect("lock") = Some(range);
        let running = fanout(&ok, bad_at(bad.addr), |_| {}).await;
        let mut client = client(&running).await;
        // A query over recent data: the remote says it has none, so it is
        // left out like a querier leaves it out, without a warning.
        let mut req = request(vec![eq("__name__", "up")]);
        req.min_time = 10 * MINUTE;
        req.max_time = 20 * MINUTE;
        let answer = call_series(&mut client, req).await.expect("answer");
        assert!(
            answer.warnings.is_empty(),
            "{range:?}: {:?}",
            answer.warnings
        );
        assert_eq!(bad.script.series_calls(), 0, "{range:?}");
        // The status page still shows it.
        let (_, json) = crate::info::http_get(running.http_addr, "/status.json").await;
        assert!(json.contains("\"bad\""), "{json}");
    }
}

#[tokio::test]
async fn faults_leak_no_connections_or_calls() {
    let ok = healthy().await;
    let (silent, _s) = silent_listener().await;
    let (garbage, _g) = garbage_listener().await;
    let hanging = up_remote("hanging", None).await;
    hanging.script.set(SeriesScript::PartThenHang(1));
    let big = up_remote("big", None).await;
    big.script.set(SeriesScript::Large {
        series: 300,
        chunk_bytes: 4 << 10,
    });
    let armed = Arc::new(AtomicBool::new(true));
    let reset = relay(big.addr, 64 << 10, Break::Reset, armed).await;
    let mut cfg = config(vec![
        remote("ok", ok.addr, None),
        remote("silent", silent, None),
        remote("garbage", garbage, None),
        remote("hanging", hanging.addr, None),
        remote("reset", reset, None),
    ]);
    for r in &mut cfg.remotes {
        r.timeout = Duration::from_secs(1);
        r.connect_timeout = Duration::from_secs(1);
        r.circuit_breaker.failures = 0;
    }
    cfg.info.timeout = Duration::from_secs(1);
    let running = start_fanout(cfg).await;
    let burst = || async {
        let mut calls = Vec::new();
        for _ in 0..8 {
            let mut client = client(&running).await;
            calls.push(tokio::spawn(async move {
                call_series(
                    &mut client,
                    request(vec![matcher(
                        thanos_fanout::proto::thanos::label_matcher::Type::Re,
                        "__name__",
                        "up|big",
                    )]),
                )
                .await
            }));
        }
        for call in calls {
            let answer = call.await.expect("task").expect("WARN");
            assert_eq!(
                answer
                    .label_values("cluster")
                    .iter()
                    .filter(|c| *c == "ok")
                    .count(),
                10
            );
        }
    };
    // Connections thanos-fanout holds to the remotes, by its own count (the
    // test process's descriptors are shared with the tests running beside
    // this one; the soak test watches the real process's descriptors).
    let connections = || async {
        let (_, body) = crate::info::http_get(running.http_addr, "/metrics").await;
        body.lines()
            .filter(|l| l.starts_with("thanos_fanout_remote_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    burst().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = connections().await;
    for _ in 0..5 {
        burst().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = connections().await;
    assert!(
        after <= before,
        "connections to the remotes {before} -> {after} over 40 faulty calls"
    );
    let in_flight = metric(
        &running,
        r#"thanos_fanout_remote_calls_in_flight{remote="hanging",method="Series"}"#,
    )
    .await;
    assert_eq!(in_flight, 0.0, "calls still counted in flight");
}

/// What [`gate`] does with connections.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Gate {
    /// Relays them to the remote.
    Open,
    /// Accepts them and closes them at once with a FIN (an ingress or load
    /// balancer whose backends are gone); open ones are closed too.
    Close,
    /// The same with a TCP reset.
    Reset,
}

/// A TCP front for `upstream` that relays or, when switched, accepts and
/// closes every connection.
async fn gate(upstream: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<Gate>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (mode, _) = tokio::sync::watch::channel(Gate::Open);
    let modes = mode.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut mode = modes.subscribe();
            let now = *mode.borrow_and_update();
            tokio::spawn(async move {
                let shut = |client: TcpStream, how: Gate| {
                    if how == Gate::Reset {
                        #[allow(deprecated)]
                        let _ = client.set_linger(Some(Duration::ZERO));
                    }
                    drop(client);
                };
                if now != Gate::Open {
                    return shut(client, now);
                }
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    Ok(()) = mode.changed() => {
                        let now = *mode.borrow();
                        shut(client, now);
                    }
                }
            });
        }
    });
    (addr, mode)
}

/// A remote whose address accepts connections and closes them (with a FIN,
/// then with a reset) counts as the remote's failure: the warning says the
/// remote closed the connection, and the circuit breaker opens after
/// `failures` such calls, and again after a retry that fails.
#[tokio::test]
async fn accepts_and_closes_connections() {
    for how in [Gate::Close, Gate::Reset] {
        let ok = healthy().await;
        let big = up_remote("bad", None).await;
        let (addr, gate) = gate(big.addr).await;
        let mut bad = bad_at(addr);
        bad.circuit_breaker.failures = 3;
        bad.circuit_breaker.backoff = Duration::from_secs(1);
        let running = fanout(&ok, bad, |cfg| {
            // The endpoint stays healthy by its Info for the whole test, as
            // between two polls: only calls see the closed connections.
            cfg.info.interval = Duration::from_secs(3600);
        })
        .await;
        check_no_warning(&running).await;
        let reached = big.script.series_calls();
        gate.send_replace(how);

        for call in 1..=3 {
            let answer = check(&running, &[]).await;
            let warning = &answer.warnings[0];
            assert!(
                warning.contains("the remote closed the connection"),
                "{how:?}, call {call}: {warning}"
            );
            assert!(
                !warning.contains("not queried"),
                "{how:?}, call {call}: {warning}"
            );
        }
        let answer = check(&running, &["circuit breaker open after 3 failed calls"]).await;
        assert!(
            answer.warnings[0].contains("the remote closed the connection"),
            "{how:?}: the last failure is named: {}",
            answer.warnings[0]
        );
        // After the back-off one call goes through, fails the same way, and
        // reopens the breaker.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let answer = check(&running, &["the remote closed the connection"]).await;
        assert!(
            !answer.warnings[0].contains("not queried"),
            "{how:?}: {}",
            answer.warnings[0]
        );
        check(&running, &["circuit breaker open"]).await;
        assert_eq!(
            big.script.series_calls(),
            reached,
            "{how:?}: no call reached the remote"
        );
    }
}

/// A call answered by every remote without a warning.
async fn check_no_warning(running: &Running) {
    let mut client = client(running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("call");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
}

/// Remote bad, spoken to in snappy with a 2 MiB message limit, answering
/// Series with `body` (then hanging, if `then_hang`).
async fn answering_in_snappy(
    ok: &RemoteHandle,
    body: Vec<u8>,
    then_hang: bool,
) -> (RemoteHandle, Running) {
    let bad = up_remote("bad", None).await;
    bad.script.set(SeriesScript::Raw(RawAnswer {
        encoding: "snappy",
        body: body.into(),
        then_hang,
    }));
    let mut config = bad_at(bad.addr);
    config.compression = thanos_fanout::config::Compression::Snappy;
    config.max_message_bytes = 2 << 20;
    let running = fanout(ok, config, |_| {}).await;
    (bad, running)
}

#[tokio::test]
async fn sends_a_snappy_message_over_the_size_limit() {
    let ok = healthy().await;
    // A message announced as 3 GiB; 64 KiB of it come, then nothing.
    let mut body = vec![1];
    body.extend_from_slice(&(3u32 << 30).to_be_bytes());
    body.extend_from_slice(&[0xa5; 64 << 10]);
    let (_bad, running) = answering_in_snappy(&ok, body, true).await;
    check(
        &running,
        &["ResourceExhausted", "remotes[].max_message_bytes"],
    )
    .await;
}

#[tokio::test]
async fn sends_a_snappy_bomb() {
    let ok = healthy().await;
    // 16 MiB of zeros, under 1 MiB compressed.
    let bomb = grpc_frame(1, &snappy(&vec![0; 16 << 20]));
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    // Whole, then the call ends.
    let (_bad, running) = answering_in_snappy(&ok, bomb.clone(), false).await;
    check(&running, &["remotes[].max_message_bytes"]).await;
    // Its first half, inflating to 8 MiB, then nothing: refused as it
    // inflates, not after the rest (which never comes).
    let (_bad, running) = answering_in_snappy(&ok, bomb[..bomb.len() / 2].to_vec(), true).await;
    check(
        &running,
        &["ResourceExhausted", "remotes[].max_message_bytes"],
    )
    .await;
}
