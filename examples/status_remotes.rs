//! Remotes to look at the status page with, for `scripts/browser-test`:
//! one healthy synthetic cluster over mutual TLS (`eu-west`), an address
//! that refuses connections (`us-east`), and a TLS server whose certificate
//! another CA signed (`ap-south`). It writes a thanos-fanout config for them
//! into DIR, waits until a thanos-fanout started from that config is ready,
//! sends it a few queries so the page has calls to count, and then serves
//! until killed.
//!
//! ```sh
//! cargo run --example status_remotes -- DIR
//! ```
//!
//! Files in DIR: `config.yaml`, `fixture.env` (`GRPC=` and `HTTP=`
//! addresses, written with the config) and `traffic-done` (once the
//! queries are sent).

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thanos_fanout::demo::certs::Authority;
use thanos_fanout::demo::synthetic::{self, Capabilities, Dataset, SyntheticStore};
use thanos_fanout::labelset;
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::proto::thanos::{LabelMatcher, LabelNamesRequest, SeriesRequest, label_matcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

#[tokio::main]
async fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: status_remotes DIR")?;
    std::fs::create_dir_all(&dir)?;
    thanos_fanout::tls::install_crypto_provider();

    let ca = Authority::new("status page CA")?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let (cert_file, key_file) = ca.client("thanos-fanout")?.write(&dir, "client")?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let healthy = serve_synthetic(&ca, "eu-west", now).await?;
    let other_ca = Authority::new("some other CA")?;
    let wrong_ca = serve_synthetic(&other_ca, "ap-south", now).await?;
    let refused = free_port().await?;
    let grpc = free_port().await?;
    let http = free_port().await?;

    let tls = |name: &str| {
        format!(
            "    tls:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n      server_name: {name}.remote.test\n",
            quoted(&ca_file),
            quoted(&cert_file),
            quoted(&key_file)
        )
    };
    let config = format!(
        "grpc:\n  listen: \"{grpc}\"\nhttp:\n  listen: \"{http}\"\ninfo:\n  interval: 2s\n  timeout: 2s\n\
         remotes:\n\
         \x20 - name: eu-west\n    targets: [\"{healthy}\"]\n{}\
         \x20 - name: us-east\n    targets: [\"{refused}\"]\n    connect_timeout: 2s\n{}\
         \x20 - name: ap-south\n    targets: [\"{wrong_ca}\"]\n{}",
        tls("eu-west"),
        tls("us-east"),
        tls("ap-south"),
    );
    std::fs::write(dir.join("config.yaml"), config)?;
    std::fs::write(
        dir.join("fixture.env"),
        format!("GRPC={grpc}\nHTTP={http}\n"),
    )?;
    println!(
        "remotes: eu-west {healthy} (healthy), us-east {refused} (refuses connections), ap-south {wrong_ca} (another CA)"
    );
    println!("config: {}", dir.join("config.yaml").display());

    wait_ready(http, Duration::from_secs(120)).await?;
    send_queries(grpc).await?;
    std::fs::write(dir.join("traffic-done"), "")?;
    println!("queries sent; serving until killed");
    std::future::pending::<()>().await;
    Ok(())
}

/// A path as a double-quoted YAML string.
fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A synthetic sidecar for `cluster` behind TLS with a certificate from `ca`,
/// requiring client certificates from `ca`.
async fn serve_synthetic(ca: &Authority, cluster: &str, now: i64) -> Result<SocketAddr> {
    let pem = ca.server(&[&format!("{cluster}.remote.test")])?;
    let tls =
        thanos_fanout::demo::tls_server::server_config(&pem.cert, &pem.key, Some(&ca.cert_pem()))?;
    let data = Dataset::demo(labelset::from_pairs([("cluster", cluster)]), now)?;
    let store = SyntheticStore::new(data).with_capabilities(Capabilities {
        sidecar_apis: true,
        ..Capabilities::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(synthetic::serve(
        synthetic::sidecar_routes(store),
        listener,
        Some(tls),
        std::future::pending(),
    ));
    Ok(address)
}

/// A loopback address nothing listens on (free a moment ago).
async fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

async fn wait_ready(http: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut stream) = TcpStream::connect(http).await {
            stream
                .write_all(b"GET /-/ready HTTP/1.0\r\nHost: fixture\r\n\r\n")
                .await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("thanos-fanout at {http} not ready within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A few Series and LabelNames calls, as a querier would send.
async fn send_queries(grpc: SocketAddr) -> Result<()> {
    let mut client = StoreClient::connect(format!("http://{grpc}")).await?;
    for _ in 0..3 {
        let mut stream = client
            .series(SeriesRequest {
                min_time: 0,
                max_time: i64::MAX,
                matchers: vec![LabelMatcher {
                    r#type: label_matcher::Type::Eq as i32,
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                ..Default::default()
            })
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
    }
    client
        .label_names(LabelNamesRequest {
            start: 0,
            end: i64::MAX,
            ..Default::default()
        })
        .await?;
    Ok(())
}
