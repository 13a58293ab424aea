//! The status page as one self-contained HTML document: inline CSS, no
//! scripts, no external assets, every value escaped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::model::{
    API_NAMES, CallCounts, EndpointHealth, EndpointStatus, ErrorSource, Health, RemoteStatus,
    Snapshot, TimeRange,
};
use super::text::{self, Escaped};
use super::{CertificateStatus, Validity};
use crate::timefmt;

/// `write!` to a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

const STYLE: &str = r#"
:root{--red:#b71c1c;--red-bg:#fdecea;--amber:#a05a00;--amber-bg:#fff3dc;--green:#1b5e20;--green-bg:#e8f5e9;--grey:#5f6368;--grey-bg:#eceff1;--line:#dde1e4}
*{box-sizing:border-box}
body{margin:0;background:#f6f7f8;color:#1c1e21;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#263238;color:#eceff1;padding:12px 24px}
header h1{margin:0;font-size:20px;font-weight:600}
header h1 .version{font-weight:400;color:#b0bec5;font-size:15px;margin-left:6px}
header .meta{margin-top:4px;color:#cfd8dc}
header .config{margin-top:2px;color:#90a4ae;font-size:13px}
main{padding:16px 24px 32px}
a{color:#0b57d0}
.verdict{border-radius:6px;padding:10px 14px;margin-bottom:16px;font-size:16px;font-weight:600;border:1px solid}
.verdict.bad{background:var(--red-bg);color:var(--red);border-color:var(--red)}
.verdict.warn{background:var(--amber-bg);color:var(--amber);border-color:var(--amber)}
.verdict.good{background:var(--green-bg);color:var(--green);border-color:var(--green)}
.verdict .detail{font-weight:400;font-size:14px;margin-top:2px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--grey-bg);font-weight:600;font-size:12px;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.down>td{background:var(--red-bg)}
tr.degraded>td,tr.warning>td{background:var(--amber-bg)}
tr.pending>td{background:#f5f5f5}
.badge{display:inline-block;min-width:68px;text-align:center;padding:1px 8px;border-radius:10px;color:#fff;font-size:11px;font-weight:700;letter-spacing:.04em;text-transform:uppercase;white-space:nowrap}
.badge.down{background:var(--red)}
.badge.degraded,.badge.warning{background:var(--amber)}
.badge.healthy{background:var(--green)}
.badge.pending{background:var(--grey)}
.err{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;font:12px/1.4 ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;color:var(--red)}
.warn-text{color:var(--amber)}
code,.mono{font:12px/1.4 ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;overflow-wrap:anywhere}
.muted{color:#6b7075}
.small{font-size:12px}
.nowrap,code.labels{white-space:nowrap}
section.remote{background:#fff;border:1px solid var(--line);border-left:6px solid var(--green);border-radius:6px;margin:18px 0;padding:12px 16px}
section.remote.down{border-left-color:var(--red)}
section.remote.degraded,section.remote.warning{border-left-color:var(--amber)}
section.remote.pending{border-left-color:var(--grey)}
section.remote h2{margin:0 0 8px;font-size:18px;display:flex;gap:10px;align-items:center}
section.remote h3{margin:14px 0 6px;font-size:14px}
.problems{border-radius:4px;padding:8px 12px;margin:8px 0;background:var(--red-bg);border:1px solid #f3b7b3}
.problems.warn{background:var(--amber-bg);border-color:#f0cf95}
.problems ul{margin:0;padding-left:18px}
.problems li+li{margin-top:6px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:6px 0}
dl.facts dt{color:#6b7075}
dl.facts dd{margin:0}
.api{display:inline-block;padding:0 6px;margin:0 3px 2px 0;border-radius:3px;background:var(--grey-bg);font-size:12px}
.api.off{background:none;color:#b0b5ba;text-decoration:line-through}
footer{color:#6b7075;font-size:12px;margin-top:24px}
"#;

/// The page for `snapshot`; `refresh` makes it reload itself every so many seconds.
pub fn render(snapshot: &Snapshot, refresh: Option<u32>) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let attention = snapshot.remotes.iter().filter(|r| r.rank() < 4).count();
    let title = if attention > 0 {
        format!(
            "thanos-fanout: {attention} of {} remotes need attention",
            snapshot.remotes.len()
        )
    } else {
        "thanos-fanout: status".to_owned()
    };
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    );
    if let Some(seconds) = refresh {
        w!(out, "<meta http-equiv=\"refresh\" content=\"{seconds}\">");
    }
    w!(
        out,
        "<title>{}</title><style>{STYLE}</style></head><body>\n",
        Escaped(&title)
    );
    header(&mut out, snapshot);
    out.push_str("<main>\n");
    verdict(&mut out, snapshot);
    if !snapshot.remotes.is_empty() {
        overview(&mut out, snapshot);
        for (i, remote) in snapshot.remotes.iter().enumerate() {
            remote_section(&mut out, snapshot, i, remote);
        }
    }
    w!(
        out,
        "<footer>Generated {} &middot; the same data for scripts: <a href=\"status.json\">status.json</a> &middot; \
         <a href=\"metrics\">metrics</a> &middot; ",
        Escaped(&timefmt::human_date(snapshot.generated_at_unix))
    );
    match refresh {
        Some(seconds) => w!(out, "reloading every {seconds}s (<a href=\"./\">stop</a>)"),
        None => out.push_str("<a href=\"?refresh=10\">reload every 10s</a>"),
    }
    out.push_str("</footer>\n</main></body></html>\n");
    out
}

fn header(out: &mut String, s: &Snapshot) {
    let c = &s.config;
    w!(
        out,
        "<header><h1>thanos-fanout<span class=\"version\">{}</span></h1>",
        Escaped(s.version)
    );
    w!(
        out,
        "<div class=\"meta\">{} &middot; up {} (since {}) &middot; {} of {} remotes healthy, {} of {} endpoints up</div>",
        if s.ready {
            "<span class=\"badge healthy\">ready</span>"
        } else if s.shutting_down {
            "<span class=\"badge pending\">not ready</span> shutting down"
        } else {
            "<span class=\"badge pending\">not ready</span> first Info round in progress"
        },
        Escaped(&timefmt::span(s.uptime_seconds)),
        Escaped(&timefmt::human_date(
            s.generated_at_unix - s.uptime_seconds as i64
        )),
        s.summary.remotes_healthy,
        s.summary.remotes,
        s.summary.endpoints_healthy,
        s.summary.endpoints,
    );
    let nameservers = if c.discovery_nameservers.is_empty() {
        "system resolver".to_owned()
    } else {
        c.discovery_nameservers.join(", ")
    };
    w!(
        out,
        "<div class=\"config\">gRPC {} &middot; HTTP {} &middot; Info every {}, timeout {} &middot; \
         DNS refresh {} via {} &middot; prefetch {} per call, {} in all &middot; {} streams per connection &middot; log level {}</div></header>\n",
        Escaped(&c.grpc_listen),
        Escaped(&c.http_listen),
        Escaped(&timefmt::span(c.info_interval_seconds)),
        Escaped(&timefmt::span(c.info_timeout_seconds)),
        Escaped(&timefmt::span(c.discovery_refresh_interval_seconds)),
        Escaped(&nameservers),
        Escaped(&text::bytes(c.prefetch_bytes)),
        Escaped(&text::bytes(c.prefetch_bytes_total)),
        c.streams_per_connection,
        Escaped(&c.log_level),
    );
}

fn verdict(out: &mut String, s: &Snapshot) {
    if s.remotes.is_empty() {
        out.push_str("<div class=\"verdict warn\">No remotes configured.</div>\n");
        return;
    }
    let needing: Vec<(usize, &RemoteStatus)> = s
        .remotes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rank() < 4)
        .collect();
    if needing.is_empty() {
        w!(
            out,
            "<div class=\"verdict good\">All {} remotes are healthy.</div>\n",
            s.remotes.len()
        );
        return;
    }
    let class = if needing.iter().any(|(_, r)| r.health == Health::Down) {
        "bad"
    } else {
        "warn"
    };
    w!(
        out,
        "<div class=\"verdict {class}\">{} of {} remotes need attention: ",
        needing.len(),
        s.remotes.len()
    );
    for (n, (i, r)) in needing.iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        w!(
            out,
            "<a href=\"#remote-{i}\">{}</a> {}",
            Escaped(&r.name),
            state_word(r)
        );
    }
    out.push_str("</div>\n");
}

/// The remote's state in one word, as its badge shows it.
fn state_word(r: &RemoteStatus) -> &'static str {
    if r.health == Health::Healthy && !r.warnings.is_empty() {
        "warning"
    } else {
        r.health.as_str()
    }
}

fn badge(word: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", Escaped(word))
}

fn overview(out: &mut String, s: &Snapshot) {
    out.push_str(
        "<table class=\"overview\"><thead><tr><th>Health</th><th>Remote</th>\
         <th class=\"num\">Endpoints up</th><th>Problem / last error</th><th>Last Info</th>\
         <th>External labels</th><th>Time range</th><th class=\"num\">Calls</th>\
         <th class=\"num\">Failed</th><th>Client cert expires</th></tr></thead><tbody>\n",
    );
    for (i, r) in s.remotes.iter().enumerate() {
        let word = state_word(r);
        w!(
            out,
            "<tr class=\"{word}\"><td>{}</td><td class=\"nowrap\"><a href=\"#remote-{i}\"><strong>{}</strong></a></td>\
             <td class=\"num\">{} / {}</td><td>",
            badge(word),
            Escaped(&r.name),
            r.endpoints_healthy,
            r.endpoints_total
        );
        problem_summary(out, r);
        out.push_str("</td><td class=\"nowrap\">");
        last_info(out, &r.endpoints);
        out.push_str("</td><td>");
        label_sets(out, &r.label_sets);
        out.push_str("</td><td class=\"small\">");
        match &r.time_range {
            Some(range) => time_range(out, range, s.generated_at_unix),
            None => out.push_str("<span class=\"muted\">unknown</span>"),
        }
        let recent = &r.calls.recent;
        w!(
            out,
            "</td><td class=\"num\">{}<div class=\"muted small\">last {}</div></td><td class=\"num\">{}</td><td class=\"nowrap\">",
            recent.finished(),
            Escaped(&timefmt::span(r.calls.recent_window_seconds)),
            failed_cell(recent)
        );
        match r.tls.as_ref().and_then(|t| t.client_certificate.as_ref()) {
            Some(c) => cert_expiry(out, c),
            None => match r.tls.as_ref() {
                Some(t) if t.client_certificate_error.is_some() => {
                    out.push_str("<span class=\"warn-text\">unreadable</span>")
                }
                Some(_) => out.push_str("<span class=\"muted\">none configured</span>"),
                None => out.push_str("<span class=\"muted\">plaintext</span>"),
            },
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn failed_cell(c: &CallCounts) -> String {
    match c.error_ratio {
        Some(ratio) if c.failed() > 0 => format!(
            "<span class=\"warn-text\"><strong>{}</strong> ({})</span>",
            c.failed(),
            Escaped(&text::percent(ratio))
        ),
        _ => "0".to_owned(),
    }
}

/// Why a remote is not healthy, or its most recent error, in full.
fn problem_summary(out: &mut String, r: &RemoteStatus) {
    let groups = grouped_info_errors(&r.endpoints);
    if groups.is_empty()
        && let Some(e) = r
            .last_error
            .as_ref()
            .filter(|e| e.source == ErrorSource::Discovery)
    {
        w!(out, "<pre class=\"err\">{}</pre>", Escaped(&e.message));
    }
    for (error, addresses) in &groups {
        w!(
            out,
            "<div class=\"small\">{} {}:</div><pre class=\"err\">{}</pre>",
            if addresses.len() == 1 {
                "endpoint"
            } else {
                "endpoints"
            },
            Escaped(&addresses.join(", ")),
            Escaped(error)
        );
    }
    if r.health == Health::Pending {
        out.push_str("<span class=\"muted\">not asked for Info yet</span>");
    }
    for warning in &r.warnings {
        w!(
            out,
            "<div class=\"warn-text small\">{}</div>",
            Escaped(warning)
        );
    }
    if groups.is_empty() && r.warnings.is_empty() && r.health == Health::Healthy {
        match r
            .last_error
            .as_ref()
            .filter(|e| e.source == ErrorSource::Call)
        {
            Some(e) => w!(
                out,
                "<span class=\"muted small\">last failed call {}: {}</span>",
                Escaped(
                    &e.at
                        .as_ref()
                        .map(|m| timefmt::relative(m.age_seconds))
                        .unwrap_or_default()
                ),
                Escaped(&e.message)
            ),
            None => out.push_str("<span class=\"muted\">none</span>"),
        }
    }
}

/// Info errors of down endpoints, each with the endpoints that share it.
fn grouped_info_errors(endpoints: &[EndpointStatus]) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in endpoints {
        if let Some(error) = &e.info_error {
            groups
                .entry(error.as_str())
                .or_default()
                .push(e.address.clone());
        }
    }
    groups
        .into_iter()
        .map(|(error, addresses)| (error.to_owned(), addresses))
        .collect()
}

/// The most recent successful Info of any endpoint.
fn last_info(out: &mut String, endpoints: &[EndpointStatus]) {
    let newest = endpoints
        .iter()
        .filter_map(|e| e.last_info_success.as_ref())
        .min_by(|a, b| a.age_seconds.total_cmp(&b.age_seconds));
    match newest {
        Some(m) => w!(out, "{}", Escaped(&timefmt::relative(m.age_seconds))),
        None => out.push_str("<span class=\"err\">never</span>"),
    }
}

fn label_sets(out: &mut String, sets: &[BTreeMap<String, String>]) {
    if sets.is_empty() {
        out.push_str("<span class=\"muted\">none</span>");
        return;
    }
    // A set breaks across lines only between labels.
    for set in sets {
        let rendered: Vec<String> = set
            .iter()
            .map(|(k, v)| Escaped(&format!("{k}={v:?}")).to_string())
            .collect();
        w!(
            out,
            "<div><code class=\"labels\">{{{}}}</code></div>",
            rendered.join(", <wbr>")
        );
    }
}

fn time_range(out: &mut String, range: &TimeRange, now: i64) {
    let bound = |ms: i64, date: &Option<String>, open: &str| match date {
        Some(_) => {
            let secs = ms.div_euclid(1000);
            format!(
                "<span class=\"nowrap\">{}</span> <span class=\"muted nowrap\">({})</span>",
                Escaped(&timefmt::human_date(secs)),
                Escaped(&timefmt::relative((now - secs) as f64))
            )
        }
        None => format!("<span class=\"muted\">{open}</span>"),
    };
    w!(
        out,
        "{} &rarr;<br>{}",
        bound(range.min_time, &range.min, "no lower bound"),
        bound(range.max_time, &range.max, "now, open-ended")
    );
}

fn cert_expiry(out: &mut String, c: &CertificateStatus) {
    let class = match c.validity {
        Validity::Valid => "",
        Validity::Expiring => "warn-text",
        Validity::Expired | Validity::NotYetValid => "err",
    };
    let when = timefmt::relative(-(c.expires_in_seconds as f64));
    let when = if c.validity == Validity::Expired {
        format!("expired {when}")
    } else {
        when
    };
    w!(
        out,
        "<span class=\"{class}\">{}</span><div class=\"muted small\">{}</div>",
        Escaped(&when),
        Escaped(&timefmt::human_date(c.not_after))
    );
}

fn remote_section(out: &mut String, s: &Snapshot, i: usize, r: &RemoteStatus) {
    let word = state_word(r);
    w!(
        out,
        "<section class=\"remote {word}\" id=\"remote-{i}\"><h2>{}<span>{}</span></h2>",
        badge(word),
        Escaped(&r.name)
    );
    // Why it is down or degraded, and anything else to look at, first.
    let groups = grouped_info_errors(&r.endpoints);
    let discovery = r
        .last_error
        .as_ref()
        .filter(|e| e.source == ErrorSource::Discovery);
    if !groups.is_empty() || discovery.is_some() {
        out.push_str("<div class=\"problems\"><strong>Not queried:</strong><ul>");
        if let Some(e) = discovery {
            w!(
                out,
                "<li><pre class=\"err\">{}</pre></li>",
                Escaped(&e.message)
            );
        }
        for (error, addresses) in &groups {
            w!(
                out,
                "<li>Info to {} failed:<pre class=\"err\">{}</pre></li>",
                Escaped(&addresses.join(", ")),
                Escaped(error)
            );
        }
        out.push_str("</ul></div>");
    }
    if !r.warnings.is_empty() {
        out.push_str("<div class=\"problems warn\"><strong>Warnings:</strong><ul>");
        for warning in &r.warnings {
            w!(out, "<li class=\"warn-text\">{}</li>", Escaped(warning));
        }
        out.push_str("</ul></div>");
    }

    out.push_str("<dl class=\"facts\">");
    fact(out, "Targets", &code_list(&r.targets));
    if !r.file_sd.is_empty() {
        fact(out, "file_sd", &code_list(&r.file_sd));
    }
    fact(
        out,
        "Endpoints",
        &format!("{} of {} healthy", r.endpoints_healthy, r.endpoints_total),
    );
    let mut labels = String::new();
    label_sets(&mut labels, &r.label_sets);
    fact(out, "External labels", &labels);
    let mut range = String::new();
    match &r.time_range {
        Some(t) => time_range(&mut range, t, s.generated_at_unix),
        None => range.push_str("<span class=\"muted\">unknown (no StoreAPI Info yet)</span>"),
    }
    fact(out, "Time range", &range);
    fact(out, "APIs", &apis(&r.apis));
    fact(
        out,
        "Calls",
        &format!(
            "mode <code>{}</code>, compression <code>{}</code>, timeout {} (no progress), connect timeout {}",
            Escaped(&format!("{:?}", r.mode).to_lowercase()),
            Escaped(&format!("{:?}", r.compression).to_lowercase()),
            Escaped(&timefmt::span(r.timeout_seconds)),
            Escaped(&timefmt::span(r.connect_timeout_seconds))
        ),
    );
    match &r.tls {
        Some(tls) => {
            let mut parts = Vec::new();
            if tls.insecure_skip_verify {
                parts.push(
                    "<span class=\"warn-text\">verification OFF (insecure_skip_verify)</span>"
                        .to_owned(),
                );
            }
            if let Some(ca) = &tls.ca_file {
                parts.push(format!("CA <code>{}</code>", Escaped(ca)));
            }
            parts.push(match &tls.server_name {
                Some(name) => format!("server name <code>{}</code>", Escaped(name)),
                None => "server name: each endpoint's host".to_owned(),
            });
            fact(out, "TLS", &parts.join(", "));
            let cert = match (&tls.cert_file, &tls.client_certificate) {
                (Some(file), Some(c)) => {
                    let mut cell = format!(
                        "<code>{}</code>: {} issued by {}, valid {} to ",
                        Escaped(file),
                        Escaped(&c.subject),
                        Escaped(&c.issuer),
                        Escaped(&timefmt::human_date(c.not_before))
                    );
                    cert_expiry_inline(&mut cell, c);
                    cell
                }
                (Some(file), None) => format!(
                    "<code>{}</code>: <span class=\"warn-text\">{}</span>",
                    Escaped(file),
                    Escaped(
                        tls.client_certificate_error
                            .as_deref()
                            .unwrap_or("not loaded")
                    )
                ),
                (None, _) => "<span class=\"muted\">none configured</span>".to_owned(),
            };
            fact(out, "Client certificate", &cert);
        }
        None => fact(out, "TLS", "<span class=\"muted\">none (plaintext)</span>"),
    }
    if let Some(authority) = &r.authority {
        fact(
            out,
            ":authority",
            &format!("<code>{}</code>", Escaped(authority)),
        );
    }
    out.push_str("</dl>");

    endpoints_table(out, s, &r.endpoints);
    calls_table(out, r);
    out.push_str("</section>\n");
}

fn fact(out: &mut String, name: &str, html: &str) {
    w!(out, "<dt>{}</dt><dd>{html}</dd>", Escaped(name));
}

fn code_list(items: &[String]) -> String {
    if items.is_empty() {
        return "<span class=\"muted\">none</span>".to_owned();
    }
    items
        .iter()
        .map(|i| format!("<code>{}</code>", Escaped(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn apis(offered: &[&str]) -> String {
    API_NAMES
        .iter()
        .map(|api| {
            let class = if offered.contains(api) {
                "api"
            } else {
                "api off"
            };
            format!("<span class=\"{class}\">{}</span>", Escaped(api))
        })
        .collect()
}

fn cert_expiry_inline(out: &mut String, c: &CertificateStatus) {
    let class = match c.validity {
        Validity::Valid => "",
        Validity::Expiring => "warn-text",
        Validity::Expired | Validity::NotYetValid => "err",
    };
    w!(
        out,
        "<span class=\"{class}\">{} ({})</span>",
        Escaped(&timefmt::human_date(c.not_after)),
        Escaped(&timefmt::relative(-(c.expires_in_seconds as f64)))
    );
}

fn endpoints_table(out: &mut String, s: &Snapshot, endpoints: &[EndpointStatus]) {
    out.push_str("<h3>Endpoints</h3>");
    if endpoints.is_empty() {
        out.push_str("<p class=\"muted\">None discovered.</p>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Endpoint</th><th>Health</th><th>Last Info success</th>\
         <th>Last check</th><th class=\"num\">Info took</th><th class=\"num\">Conns</th>\
         <th>Component</th><th>External labels</th><th>Time range</th><th>APIs</th>\
         <th>Error</th></tr></thead><tbody>\n",
    );
    for e in endpoints {
        let word = e.health.as_str();
        w!(
            out,
            "<tr class=\"{word}\"><td class=\"nowrap\"><code>{}</code>",
            Escaped(&e.address)
        );
        if !e
            .address
            .trim_start_matches('[')
            .starts_with(e.host.as_str())
        {
            w!(
                out,
                "<div class=\"muted small\">as <code>{}</code></div>",
                Escaped(&e.host)
            );
        }
        w!(out, "</td><td>{}</td><td class=\"nowrap\">", badge(word));
        match &e.last_info_success {
            Some(m) => w!(
                out,
                "{}<div class=\"muted small\">{}</div>",
                Escaped(&timefmt::relative(m.age_seconds)),
                Escaped(&m.at)
            ),
            None => out.push_str("<span class=\"err\">never</span>"),
        }
        out.push_str("</td><td class=\"nowrap\">");
        match &e.last_check {
            Some(m) => w!(out, "{}", Escaped(&timefmt::relative(m.age_seconds))),
            None => out.push_str("<span class=\"muted\">not yet</span>"),
        }
        w!(
            out,
            "</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            e.info_latency_seconds
                .map(|s| timefmt::latency(Duration::from_secs_f64(s)))
                .map(|t| Escaped(&t).to_string())
                .unwrap_or_default(),
            e.connections
        );
        match &e.info {
            Some(info) => {
                let stale = if e.health == EndpointHealth::Healthy {
                    ""
                } else {
                    "<div class=\"muted small\">(last known)</div>"
                };
                w!(out, "<td>{}{stale}</td><td>", Escaped(&info.component));
                label_sets(out, &info.label_sets);
                out.push_str("</td><td class=\"small\">");
                match &info.time_range {
                    Some(t) => time_range(out, t, s.generated_at_unix),
                    None => out.push_str("<span class=\"muted\">no StoreAPI</span>"),
                }
                w!(out, "</td><td>{}</td>", apis(&info.apis));
            }
            None => out.push_str("<td colspan=\"4\" class=\"muted\">never answered Info</td>"),
        }
        out.push_str("<td>");
        if let Some(error) = &e.info_error {
            w!(
                out,
                "<div class=\"small\">Info ({} so far):</div><pre class=\"err\">{}</pre>",
                match e.info_failures {
                    1 => "1 failure".to_owned(),
                    n => format!("{n} failures"),
                },
                Escaped(error)
            );
        }
        if let Some(open) = &e.circuit_open {
            w!(
                out,
                "<div class=\"small warn-text\">circuit breaker open after {} failed calls in a row: skipped until {}</div>",
                open.failures,
                Escaped(&open.until.at)
            );
        }
        if let Some(call) = &e.last_failed_call {
            w!(
                out,
                "<div class=\"small\">last failed call, {} {}:</div><pre class=\"err\">{}</pre>",
                Escaped(&call.method),
                Escaped(&timefmt::relative(call.at.age_seconds)),
                Escaped(&call.error)
            );
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table>");
}

fn calls_table(out: &mut String, r: &RemoteStatus) {
    let window = timefmt::span(r.calls.recent_window_seconds);
    w!(
        out,
        "<h3>Calls from queries <span class=\"muted small\">(last {} and since start; failed = error + timeout, cancelled = stopped before the remote finished: by the caller, an abort or a limit)</span></h3>",
        Escaped(&window)
    );
    let used: Vec<_> = r
        .calls
        .methods
        .iter()
        .filter(|m| m.in_flight > 0 || m.total.finished() + m.total.cancelled > 0)
        .collect();
    if used.is_empty() {
        out.push_str("<p class=\"muted\">No calls yet.</p>");
        return;
    }
    w!(
        out,
        "<table><thead><tr><th>Method</th><th class=\"num\">In flight</th>\
         <th class=\"num\">Calls ({window})</th><th class=\"num\">Failed ({window})</th>\
         <th class=\"num\">Mean time ({window})</th><th class=\"num\">Mean first frame ({window})</th>\
         <th class=\"num\">Succeeded</th><th class=\"num\">Errors</th><th class=\"num\">Timeouts</th>\
         <th class=\"num\">Cancelled</th><th class=\"num\">Failed (all)</th></tr></thead><tbody>\n",
        window = Escaped(&window)
    );
    let mean = |m: Option<f64>| {
        m.map(|s| timefmt::latency(Duration::from_secs_f64(s.max(0.0))))
            .unwrap_or_else(|| "&ndash;".to_owned())
    };
    for m in used {
        w!(
            out,
            "<tr{}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
            if m.recent.failed() > 0 {
                " class=\"warning\""
            } else {
                ""
            },
            Escaped(&m.method),
            m.in_flight,
            m.recent.finished(),
            failed_cell(&m.recent),
            mean(m.recent.mean_duration_seconds),
            mean(m.recent.mean_first_frame_seconds),
            m.total.success,
            m.total.error,
            m.total.timeout,
            m.total.cancelled,
            failed_cell(&m.total),
        );
    }
    out.push_str("</tbody></table>");
}
