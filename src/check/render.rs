//! The report as aligned `key: value` blocks for a terminal, or as JSON.

use std::fmt::Write;

use super::certificate::unix_now;
use super::{EndpointReport, Report};
use crate::timefmt::{in_words, rfc3339};

/// Width of the key column, colon included.
const KEY_WIDTH: usize = 15;

/// The report for people: one block per endpoint, then a summary line.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    if let Some(config) = &report.config {
        let _ = writeln!(out, "checking {config}\n");
    }
    for endpoint in &report.endpoints {
        block(&mut out, endpoint);
        out.push('\n');
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{} endpoint{}: {} ok, {} failed",
        s.endpoints,
        if s.endpoints == 1 { "" } else { "s" },
        s.ok,
        s.failed
    );
    out
}

/// The report for scripts: one JSON object (field names in docs/check.md).
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

fn block(out: &mut String, e: &EndpointReport) {
    let verdict = match (e.ok, e.failed_at) {
        (true, _) => "ok".to_owned(),
        (false, Some(stage)) => format!("FAILED ({})", stage.as_str()),
        (false, None) => "FAILED".to_owned(),
    };
    match e.address.as_deref().or(e.target.as_deref()) {
        Some(place) => {
            let _ = writeln!(out, "{} {place}: {verdict}", e.remote);
        }
        None => {
            let _ = writeln!(out, "{}: {verdict}", e.remote);
        }
    }
    let mut line = |key: &str, value: &str| {
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("{key}:")
        };
        let _ = writeln!(out, "  {key:<KEY_WIDTH$} {value}");
    };
    if let Some(target) = &e.target {
        line("target", target);
    }
    if let Some(address) = &e.address {
        match &e.peer {
            Some(peer) if peer != address => line("address", &format!("{address} ({peer})")),
            _ => line("address", address),
        }
    }
    if e.address.is_some() {
        match &e.tls {
            None => line("tls", "off (plaintext)"),
            Some(tls) => {
                let mut how = if tls.verify {
                    format!(
                        "verify with tls.ca_file {}",
                        tls.ca_file.as_deref().unwrap_or("(not set)")
                    )
                } else {
                    "no verification (tls.insecure_skip_verify)".to_owned()
                };
                match &tls.client_certificate {
                    Some(cert) => {
                        let _ = write!(how, ", client certificate {cert}");
                    }
                    None => how.push_str(", no client certificate"),
                }
                line("tls", &how);
                line(
                    "sni",
                    &format!("{} (from {})", tls.server_name, tls.server_name_from),
                );
            }
        }
    }
    if let Some(authority) = &e.authority {
        line(":authority", authority);
    }
    if let Some(cert) = &e.server_certificate {
        let now = unix_now();
        line("certificate", &cert.subject);
        line("dns names", &join_or_none(&cert.dns_names));
        line("ip addresses", &join_or_none(&cert.ip_addresses));
        line("issuer", &cert.issuer);
        for subject in &e.server_chain {
            line("chain", subject);
        }
        line(
            "valid",
            &format!(
                "{} to {} ({} {})",
                cert.not_before,
                cert.not_after,
                if cert.expired_at(now) {
                    "expired"
                } else {
                    "expires"
                },
                in_words(cert.not_after_unix, now)
            ),
        );
    }
    if let Some(h) = &e.handshake {
        let unverified = e.tls.as_ref().is_some_and(|t| !t.verify);
        let verdict = match (h.ok, h.verified) {
            (true, Some(true)) => "ok, certificate verified",
            (true, _) if unverified => "ok, certificate not verified (tls.insecure_skip_verify)",
            (true, _) => "ok",
            (false, Some(false)) => "failed, certificate rejected",
            (false, _) => "failed",
        };
        line("handshake", verdict);
        line("tls version", h.version.as_deref().unwrap_or("-"));
        line("alpn", h.alpn.as_deref().unwrap_or("-"));
        let client = match (h.client_certificate_requested, h.client_certificate_sent) {
            (false, _) => "not asked for",
            (true, true) => "asked for, sent",
            (true, false) => "asked for, none configured",
        };
        line("client cert", client);
    }
    if let Some(info) = &e.info {
        line("info", &format!("ok, component {}", info.component_type));
        if info.label_sets.is_empty() {
            line("label sets", "none");
        }
        for (i, set) in info.label_sets.iter().enumerate() {
            line(if i == 0 { "label sets" } else { "" }, set);
        }
        if let (Some(min), Some(max)) = (info.min_time, info.max_time) {
            line("time range", &format!("{} to {}", time(min), time(max)));
        }
        line("apis", &info.apis.join(", "));
    } else if e.address.is_some() {
        let info = match e.failed_at {
            Some(super::Stage::Info) => "failed",
            _ => "not reached",
        };
        line("info", info);
    }
    let l = &e.latency_ms;
    let steps: Vec<String> = [
        ("dns", l.dns),
        ("tcp", l.tcp),
        ("tls", l.tls),
        ("info", l.info),
        ("total", l.total),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.map(|v| format!("{name} {v:.1} ms")))
    .collect();
    if !steps.is_empty() {
        line("latency", &steps.join(", "));
    }
    if let Some(problem) = &e.problem {
        line("problem", problem);
    }
    if let Some(fix) = &e.fix {
        line("fix", fix);
    }
    if let Some(error) = &e.error {
        line("error", error);
    }
    for note in &e.notes {
        line("note", note);
    }
}

fn join_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A StoreAPI time (milliseconds), unbounded ends as Thanos writes them.
fn time(ms: i64) -> String {
    match ms {
        i64::MIN => "-inf".into(),
        i64::MAX => "+inf".into(),
        ms => rfc3339(ms.div_euclid(1000)),
    }
}
