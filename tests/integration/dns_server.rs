//! A real DNS server for tests: hickory-server on 127.0.0.1 (UDP and TCP on
//! one port), answering authoritatively from records the test can change at
//! any time, with switches for SERVFAIL.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

type Records = HashMap<String, Vec<Record>>;

#[derive(Default)]
struct Zone {
    records: Mutex<Records>,
    servfail: AtomicBool,
}

struct Handler(Arc<Zone>);

fn key(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

fn name(n: &str) -> Name {
    Name::from_ascii(key(n)).expect("valid name")
}

impl Handler {
    /// Records answering `qname`/`qtype`, following CNAMEs; `None` if the name does not exist.
    fn answer(&self, qname: &str, qtype: RecordType) -> Option<Vec<Record>> {
        let records = self.0.records.lock().expect("lock");
        let mut out = Vec::new();
        let mut current = key(qname);
        for _ in 0..8 {
            let at = records.get(&current)?;
            let cname = at
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME)
                .cloned();
            match cname {
                Some(c) if qtype != RecordType::CNAME => {
                    if let RData::CNAME(target) = &c.data {
                        current = key(&target.0.to_ascii());
                    }
                    out.push(c);
                }
                _ => {
                    out.extend(at.iter().filter(|r| r.record_type() == qtype).cloned());
                    return Some(out);
                }
            }
        }
        Some(out)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let answers = match request.request_info() {
            Ok(info) if !self.0.servfail.load(Ordering::SeqCst) => {
                match self.answer(&info.query.name().to_string(), info.query.query_type()) {
                    Some(records) => records,
                    None => {
                        metadata.response_code = ResponseCode::NXDomain;
                        Vec::new()
                    }
                }
            }
            _ => {
                metadata.response_code = ResponseCode::ServFail;
                Vec::new()
            }
        };
        let response = builder.build(metadata, answers.iter(), [], [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata: failed,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

/// A running DNS server; stops when dropped or with [`TestDns::stop`].
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestDns {
    pub async fn start() -> Self {
        // UDP and TCP on the same port, as resolvers expect.
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("udp");
            let addr = udp.local_addr().expect("addr");
            let Ok(tcp) = tokio::net::TcpListener::bind(addr).await else {
                continue;
            };
            let zone = Arc::new(Zone::default());
            let mut server = hickory_server::Server::new(Handler(zone.clone()));
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 16);
            let task = tokio::spawn(async move {
                let _ = server.block_until_done().await;
            });
            return Self {
                addr,
                zone,
                task: Some(task),
            };
        }
        panic!("no port free for UDP and TCP at once");
    }

    fn edit(&self, f: impl FnOnce(&mut Records)) {
        f(&mut self.zone.records.lock().expect("lock"));
    }

    /// Replaces the A/AAAA records of `host`.
    pub fn set_ips(&self, host: &str, ips: &[IpAddr], ttl: u32) {
        let records = ips
            .iter()
            .map(|ip| {
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(name(host), ttl, data)
            })
            .collect();
        self.edit(|r| {
            r.insert(key(host), records);
        });
    }

    /// Replaces the SRV records of `srv` with `(target, port)` pairs.
    pub fn set_srv(&self, srv: &str, targets: &[(&str, u16)], ttl: u32) {
        let records = targets
            .iter()
            .map(|(target, port)| {
                Record::from_rdata(
                    name(srv),
                    ttl,
                    RData::SRV(SRV::new(0, 0, *port, name(target))),
                )
            })
            .collect();
        self.edit(|r| {
            r.insert(key(srv), records);
        });
    }

    pub fn set_cname(&self, alias: &str, target: &str, ttl: u32) {
        let record = Record::from_rdata(name(alias), ttl, RData::CNAME(CNAME(name(target))));
        self.edit(|r| {
            r.insert(key(alias), vec![record]);
        });
    }

    /// Removes a name: it answers NXDOMAIN.
    pub fn remove(&self, host: &str) {
        self.edit(|r| {
            r.remove(&key(host));
        });
    }

    /// Answers every query with SERVFAIL while `on`.
    pub fn servfail(&self, on: bool) {
        self.zone.servfail.store(on, Ordering::SeqCst);
    }

    /// Stops answering: the sockets close.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
