//! Discovery against a real DNS server: SRV, A/AAAA, CNAME, file_sd; TLS by
//! the discovered name while dialling addresses; DNS failures and NXDOMAIN.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use thanos_fanout::app::Running;
use thanos_fanout::config::{Config, RemoteConfig, TlsConfig};
use thanos_fanout::demo::synthetic::Capabilities;

use crate::common::*;
use crate::dns_server::TestDns;

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A remote `replica` on `listener` with a certificate for `names` only.
fn replica_on(
    listener: tokio::net::TcpListener,
    pki: &Pki,
    names: &[&str],
    replica: &str,
) -> RemoteHandle {
    let data = dataset(
        &[("cluster", "a"), ("replica", replica)],
        vec![series(&[("__name__", "up")], samples(0, MINUTE, |_| 1.0))],
    );
    start_remote_on(
        listener,
        data,
        Capabilities::default(),
        Some(pki.server(names)),
    )
}

async fn replica(pki: &Pki, names: &[&str], replica: &str) -> RemoteHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    replica_on(listener, pki, names, replica)
}

/// TLS with our CA and client certificate, verifying the discovered name.
fn tls_by_discovered_name(pki: &Pki) -> TlsConfig {
    let mut tls = pki.client_tls("unused");
    tls.server_name = None;
    tls
}

fn dns_config(dns: &TestDns, remotes: Vec<RemoteConfig>) -> Config {
    let mut cfg = config(remotes);
    cfg.discovery.nameservers = vec![dns.addr.to_string()];
    cfg.discovery.refresh_interval = Duration::from_secs(1);
    cfg.discovery.file_interval = Duration::from_millis(200);
    cfg
}

fn discovered(name: &str, targets: &[&str], tls: Option<TlsConfig>) -> RemoteConfig {
    let mut r = remote(name, "127.0.0.1:1".parse().expect("addr"), tls);
    r.targets = targets.iter().map(|t| (*t).to_owned()).collect();
    r
}

/// The aggregator with one remote `a` found through `target`, verified by the discovered name.
async fn fanout_discovering(dns: &TestDns, pki: &Pki, target: &str) -> Running {
    start_fanout(dns_config(
        dns,
        vec![discovered(
            "a",
            &[target],
            Some(tls_by_discovered_name(pki)),
        )],
    ))
    .await
}

fn endpoints(running: &Running) -> Vec<String> {
    let mut e: Vec<String> = running
        .upstreams
        .endpoints()
        .iter()
        .map(|e| e.address.clone())
        .collect();
    e.sort();
    e
}

fn healthy(running: &Running) -> usize {
    running
        .upstreams
        .endpoints()
        .iter()
        .filter(|e| e.queryable().is_some())
        .count()
}

async fn replicas_answering(running: &Running) -> Vec<String> {
    let mut client = client(running).await;
    let mut req = request(vec![eq("__name__", "up")]);
    req.skip_chunks = true;
    let answer = call_series(&mut client, req).await.expect("series");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    answer.label_values("replica")
}

#[tokio::test]
async fn srv_with_two_targets_on_different_ports_verified_by_name() {
    let pki = Pki::new();
    // Certificates carry DNS names only; every endpoint is dialled at 127.0.0.1.
    let r1 = replica(&pki, &["a1.remote.test"], "1").await;
    let r2 = replica(&pki, &["a2.remote.test"], "2").await;
    assert_ne!(r1.addr.port(), r2.addr.port());
    let dns = TestDns::start().await;
    dns.set_srv(
        "_grpc._tcp.a.remote.test.",
        &[
            ("a1.remote.test.", r1.addr.port()),
            ("a2.remote.test.", r2.addr.port()),
        ],
        30,
    );
    dns.set_ips("a1.remote.test", &[loopback(1)], 30);
    dns.set_ips("a2.remote.test", &[loopback(1)], 30);
    let running = fanout_discovering(&dns, &pki, "dnssrv+_grpc._tcp.a.remote.test").await;
    let mut expected = vec![r1.addr.to_string(), r2.addr.to_string()];
    expected.sort();
    assert_eq!(endpoints(&running), expected);
    assert_eq!(
        healthy(&running),
        2,
        "both verified by their SRV target names"
    );
    assert_eq!(replicas_answering(&running).await, ["1", "2"]);
    // SNI name and :authority are the SRV target (trailing dot dropped), never the IP.
    assert_eq!(
        r1.script.authorities.lock().expect("lock")[0],
        format!("a1.remote.test:{}", r1.addr.port())
    );
}

#[tokio::test]
async fn a_record_with_three_addresses_and_a_cname() {
    let pki = Pki::new();
    let first = tokio::net::TcpListener::bind((loopback(1), 0))
        .await
        .expect("bind");
    let port = first.local_addr().expect("addr").port();
    let mut remotes = vec![replica_on(first, &pki, &["multi.remote.test"], "1")];
    for n in [2, 3] {
        let listener = tokio::net::TcpListener::bind((loopback(n), port))
            .await
            .expect("same port on another loopback address");
        remotes.push(replica_on(
            listener,
            &pki,
            &["multi.remote.test"],
            &n.to_string(),
        ));
    }
    let dns = TestDns::start().await;
    // The configured name is an alias; the certificate names the alias.
    dns.set_cname("multi.remote.test", "hosts.internal.test", 30);
    dns.set_ips(
        "hosts.internal.test",
        &[loopback(1), loopback(2), loopback(3)],
        30,
    );
    let running = fanout_discovering(&dns, &pki, &format!("dns+multi.remote.test:{port}")).await;
    assert_eq!(endpoints(&running).len(), 3);
    assert_eq!(healthy(&running), 3);
    assert_eq!(replicas_answering(&running).await, ["1", "2", "3"]);
    // A plain host:port name is resolved the same way.
    drop(running);
    let running = fanout_discovering(&dns, &pki, &format!("multi.remote.test:{port}")).await;
    assert_eq!(healthy(&running), 3);
    drop(remotes);
}

#[tokio::test]
async fn server_name_override_applies_to_every_discovered_endpoint() {
    let pki = Pki::new();
    let r = replica(&pki, &["override.example"], "1").await;
    let dns = TestDns::start().await;
    dns.set_ips("a.remote.test", &[loopback(1)], 30);
    let running = start_fanout(dns_config(
        &dns,
        vec![discovered(
            "a",
            &[&format!("dns+a.remote.test:{}", r.addr.port())],
            Some(pki.client_tls("override.example")),
        )],
    ))
    .await;
    assert_eq!(healthy(&running), 1);
    assert_eq!(
        r.script.authorities.lock().expect("lock")[0],
        "override.example"
    );
    // Without the override the discovered name is verified, and this certificate lacks it.
    let running =
        fanout_discovering(&dns, &pki, &format!("dns+a.remote.test:{}", r.addr.port())).await;
    let error = running.upstreams.endpoints()[0]
        .state()
        .last_error
        .clone()
        .expect("fails");
    assert!(error.contains("not valid for the name"), "{error}");
}

#[tokio::test]
async fn endpoints_come_and_go_while_a_stream_to_a_survivor_flows() {
    let pki = Pki::new();
    let r1 = replica(&pki, &["a1.remote.test"], "1").await;
    let r2 = replica(&pki, &["a2.remote.test"], "2").await;
    let r3 = replica(&pki, &["a3.remote.test"], "3").await;
    let dns = TestDns::start().await;
    for n in 1..=3 {
        dns.set_ips(&format!("a{n}.remote.test"), &[loopback(1)], 1);
    }
    let srv = "_grpc._tcp.a.remote.test";
    dns.set_srv(
        srv,
        &[
            ("a1.remote.test", r1.addr.port()),
            ("a2.remote.test", r2.addr.port()),
        ],
        1,
    );
    let running = fanout_discovering(&dns, &pki, &format!("dnssrv+{srv}")).await;
    assert_eq!(healthy(&running), 2);

    // A long stream from replica 1: 20 series, one every 100 ms.
    let many: Vec<_> = (0..20)
        .map(|i| {
            series(
                &[("__name__", "up"), ("i", &format!("{i:02}"))],
                samples(0, MINUTE, |_| 1.0),
            )
        })
        .collect();
    drop(r1);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port1 = listener.local_addr().expect("addr").port();
    let r1 = start_remote_on(
        listener,
        dataset(&[("cluster", "a"), ("replica", "1")], many),
        Capabilities::default(),
        Some(pki.server(&["a1.remote.test"])),
    );
    r1.script
        .set(SeriesScript::Drip(Duration::from_millis(100)));
    dns.set_srv(
        srv,
        &[
            ("a1.remote.test", port1),
            ("a2.remote.test", r2.addr.port()),
        ],
        1,
    );
    eventually("replica 1 rediscovered", Duration::from_secs(10), || {
        running
            .upstreams
            .endpoints()
            .iter()
            .any(|e| e.address.ends_with(&format!(":{port1}")) && e.queryable().is_some())
    })
    .await;
    let mut client = client(&running).await;
    let stream = tokio::spawn(async move {
        call_series(
            &mut client,
            request(vec![eq("__name__", "up"), eq("replica", "1")]),
        )
        .await
    });
    // While it flows: replica 2 leaves, replica 3 joins.
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.set_srv(
        srv,
        &[
            ("a1.remote.test", port1),
            ("a3.remote.test", r3.addr.port()),
        ],
        1,
    );
    eventually("3 in, 2 out", Duration::from_secs(10), || {
        let e = endpoints(&running);
        e.contains(&r3.addr.to_string()) && !e.contains(&r2.addr.to_string())
    })
    .await;
    let answer = stream.await.expect("join").expect("stream survives");
    assert_eq!(
        answer.series.len(),
        20,
        "every series of the long stream arrived"
    );
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    eventually("3 healthy", Duration::from_secs(5), || {
        healthy(&running) == 2
    })
    .await;
    let mut replicas = replicas_answering(&running).await;
    replicas.dedup();
    assert_eq!(replicas, ["1", "3"]);
    assert_eq!(
        r2.script.series_calls(),
        0,
        "the removed endpoint is not queried"
    );
}

#[tokio::test]
async fn resolver_down_keeps_the_last_good_endpoints() {
    let pki = Pki::new();
    let r = replica(&pki, &["a.remote.test"], "1").await;
    let mut dns = TestDns::start().await;
    dns.set_ips("a.remote.test", &[loopback(1)], 1);
    let running =
        fanout_discovering(&dns, &pki, &format!("dns+a.remote.test:{}", r.addr.port())).await;
    assert_eq!(healthy(&running), 1);
    // SERVFAIL, then no server at all, for several refresh intervals.
    dns.servfail(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    dns.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(endpoints(&running), [r.addr.to_string()]);
    assert_eq!(replicas_answering(&running).await, ["1"]);
    let metrics = metrics_text(&running);
    assert!(
        metrics.contains(r#"thanos_fanout_discovery_lookups_total{remote="a",result="Failed"}"#),
        "{metrics}"
    );
}

fn metrics_text(running: &Running) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &running.registry).expect("encode");
    text
}

#[tokio::test]
async fn nxdomain_removes_endpoints_only_after_stale_after() {
    let pki = Pki::new();
    let r = replica(&pki, &["a.remote.test"], "1").await;
    let dns = TestDns::start().await;
    dns.set_ips("a.remote.test", &[loopback(1)], 1);
    let mut cfg = dns_config(
        &dns,
        vec![discovered(
            "a",
            &[&format!("dns+a.remote.test:{}", r.addr.port())],
            Some(tls_by_discovered_name(&pki)),
        )],
    );
    cfg.discovery.stale_after = Duration::from_secs(4);
    let running = start_fanout(cfg).await;
    assert_eq!(healthy(&running), 1);

    // A blip: gone for two refreshes, then back. Nothing is removed.
    dns.remove("a.remote.test");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        endpoints(&running),
        [r.addr.to_string()],
        "kept through a short NXDOMAIN"
    );
    dns.set_ips("a.remote.test", &[loopback(1)], 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(endpoints(&running), [r.addr.to_string()]);

    // Gone for good: removed once stale_after has passed, not before.
    dns.remove("a.remote.test");
    let gone = std::time::Instant::now();
    eventually("endpoints removed", Duration::from_secs(12), || {
        endpoints(&running).is_empty()
    })
    .await;
    assert!(
        gone.elapsed() >= Duration::from_secs(3),
        "removed after {:?}",
        gone.elapsed()
    );
    let metrics = metrics_text(&running);
    assert!(
        metrics.contains(r#"thanos_fanout_discovery_lookups_total{remote="a",result="Missing"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"thanos_fanout_remote_endpoints{remote="a"} 0"#),
        "{metrics}"
    );
    // The remote does not vanish from answers in silence.
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("WARN");
    assert!(answer.series.is_empty());
    assert!(
        answer.warnings.len() == 1
            && answer.warnings[0].starts_with("remote a (dns+a.remote.test:")
            && answer.warnings[0].contains("discovery finds no endpoints"),
        "{:?}",
        answer.warnings
    );
}

#[tokio::test]
async fn a_refresh_interval_under_a_second_works() {
    let pki = Pki::new();
    let first = tokio::net::TcpListener::bind((loopback(1), 0))
        .await
        .expect("bind");
    let port = first.local_addr().expect("addr").port();
    let _r1 = replica_on(first, &pki, &["a.remote.test"], "1");
    let second = tokio::net::TcpListener::bind((loopback(2), port))
        .await
        .expect("same port on another loopback address");
    let _r2 = replica_on(second, &pki, &["a.remote.test"], "2");
    let dns = TestDns::start().await;
    dns.set_ips("a.remote.test", &[loopback(1)], 1);
    let mut cfg = dns_config(
        &dns,
        vec![discovered(
            "a",
            &[&format!("dns+a.remote.test:{port}")],
            Some(tls_by_discovered_name(&pki)),
        )],
    );
    cfg.discovery.refresh_interval = Duration::from_millis(300);
    let running = start_fanout(cfg).await;
    assert_eq!(replicas_answering(&running).await, ["1"]);
    // Several refreshes later, discovery still runs and follows changes:
    // answers only a lookup made now can give.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    dns.set_ips("a.remote.test", &[loopback(1), loopback(2)], 1);
    eventually("the second address found", Duration::from_secs(5), || {
        healthy(&running) == 2
    })
    .await;
    assert_eq!(replicas_answering(&running).await, ["1", "2"]);
    let missing = || {
        metric_in(
            &running,
            r#"thanos_fanout_discovery_lookups_total{remote="a",result="Missing"}"#,
        )
    };
    assert_eq!(missing(), None, "no NXDOMAIN yet");
    dns.remove("a.remote.test");
    eventually("the NXDOMAIN seen", Duration::from_secs(5), || {
        missing().is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(
        replicas_answering(&running).await,
        ["1", "2"],
        "kept through NXDOMAIN"
    );
}

#[tokio::test]
async fn dnssrvnoa_dials_the_srv_target_name() {
    let pki = Pki::new();
    let r = replica(&pki, &["a1.remote.test"], "1").await;
    let dns = TestDns::start().await;
    dns.set_srv(
        "_grpc._tcp.a.remote.test",
        &[("a1.remote.test", r.addr.port())],
        30,
    );
    dns.set_ips("a1.remote.test", &[loopback(1)], 30);
    let running = fanout_discovering(&dns, &pki, "dnssrvnoa+_grpc._tcp.a.remote.test").await;
    assert_eq!(
        endpoints(&running),
        [format!("a1.remote.test:{}", r.addr.port())]
    );
    assert_eq!(healthy(&running), 1);
    assert_eq!(replicas_answering(&running).await, ["1"]);
}

#[tokio::test]
async fn file_sd_changes_are_picked_up() {
    let r1 = up_remote("one", None).await;
    let r2 = up_remote("two", None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("targets.json");
    let write = |addr: SocketAddr| {
        std::fs::write(
            &file,
            format!(r#"[{{"targets": ["{addr}"], "labels": {{"env": "test"}}}}]"#),
        )
        .expect("write");
    };
    write(r1.addr);
    let dns = TestDns::start().await;
    let mut remote = discovered("files", &[], None);
    remote.file_sd = vec![file.clone()];
    let running = start_fanout(dns_config(&dns, vec![remote])).await;
    assert_eq!(endpoints(&running), [r1.addr.to_string()]);
    write(r2.addr);
    eventually("file change picked up", Duration::from_secs(5), || {
        endpoints(&running) == [r2.addr.to_string()] && healthy(&running) == 1
    })
    .await;
    // A broken file keeps the last good targets.
    std::fs::write(&file, "[{not json").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(endpoints(&running), [r2.addr.to_string()]);
}

#[tokio::test]
async fn aaaa_records_and_short_ttls_are_honoured() {
    let pki = Pki::new();
    let v6 = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind ::1");
    let port = v6.local_addr().expect("addr").port();
    let r6 = replica_on(v6, &pki, &["a.remote.test"], "6");
    let v4 = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("same port on 127.0.0.1");
    let r4 = replica_on(v4, &pki, &["a.remote.test"], "4");
    let dns = TestDns::start().await;
    dns.set_ips("a.remote.test", &["::1".parse().expect("ip")], 1);
    let mut cfg = dns_config(
        &dns,
        vec![discovered(
            "a",
            &[&format!("dns+a.remote.test:{port}")],
            Some(tls_by_discovered_name(&pki)),
        )],
    );
    // Long refresh interval: only the 1 s TTL can bring the change in time.
    cfg.discovery.refresh_interval = Duration::from_secs(600);
    let running = start_fanout(cfg).await;
    assert_eq!(endpoints(&running), [format!("[::1]:{port}")]);
    assert_eq!(healthy(&running), 1, "verified by name over IPv6");
    dns.set_ips(
        "a.remote.test",
        &["::1".parse().expect("ip"), loopback(1)],
        1,
    );
    eventually(
        "TTL expiry brings the new address",
        Duration::from_secs(6),
        || healthy(&running) == 2,
    )
    .await;
    assert_eq!(replicas_answering(&running).await, ["4", "6"]);
    drop((r4, r6));
}

#[tokio::test]
async fn a_remote_moved_by_dns_stays_queried_while_its_new_endpoint_answers_info() {
    let pki = Pki::new();
    let old = replica(&pki, &["a1.remote.test"], "1").await;
    let new = replica(&pki, &["a2.remote.test"], "2").await;
    // The new endpoint is slow to answer its first Info: the move must not
    // leave the remote without a queryable endpoint meanwhile.
    *new.script.info_delay.lock().expect("lock") = Duration::from_millis(800);
    let dns = TestDns::start().await;
    let srv = "_grpc._tcp.a.remote.test.";
    dns.set_srv(srv, &[("a1.remote.test.", old.addr.port())], 1);
    dns.set_ips("a1.remote.test", &[loopback(1)], 1);
    dns.set_ips("a2.remote.test", &[loopback(1)], 1);
    let running = fanout_discovering(&dns, &pki, &format!("dnssrv+{srv}")).await;
    assert_eq!(replicas_answering(&running).await, ["1"]);

    // Three clients query without pause while the record moves.
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = client(&running).await;
        let moved = moved.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !moved.load(std::sync::atomic::Ordering::SeqCst) {
                let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
                    .await
                    .expect("series");
                answers.push((answer.label_values("replica"), answer.warnings));
            }
            answers
        }));
    }
    dns.set_srv(srv, &[("a2.remote.test.", new.addr.port())], 1);
    eventually(
        "the new endpoint is queried",
        Duration::from_secs(10),
        || endpoints(&running) == [new.addr.to_string()] && healthy(&running) == 1,
    )
    .await;
    moved.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.expect("client"));
    }
    assert!(answers.len() > 10, "only {} answers", answers.len());
    for (replicas, warnings) in &answers {
        assert!(
            (replicas == &["1"] || replicas == &["2"]) && warnings.is_empty(),
            "an answer while the remote moved: replicas {replicas:?}, warnings {warnings:?}"
        );
    }
    assert_eq!(replicas_answering(&running).await, ["2"]);
}
