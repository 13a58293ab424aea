//! The status page as one self-contained HTML document: inline CSS, no
//! scripts, no external assets, every value escaped.
//!
//! Written with maud rather than askama: the page is mostly decisions (which
//! badge, which errors grouped with which endpoints, the same cells in three
//! tables), and maud keeps those plain Rust functions while checking the
//! markup at compile time and escaping every value.

use std::collections::BTreeMap;
use std::time::Duration;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::model::{
    API_NAMES, CallCounts, EndpointHealth, EndpointStatus, ErrorSource, Health, RemoteStatus,
    Snapshot, TimeRange,
};
use super::text;
use super::{CertificateStatus, Validity};
use crate::timefmt;

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
    let attention = snapshot.remotes.iter().filter(|r| r.rank() < 4).count();
    let title = if attention > 0 {
        format!(
            "thanos-fanout: {attention} of {} remotes need attention",
            snapshot.remotes.len()
        )
    } else {
        "thanos-fanout: status".to_owned()
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (header(snapshot))
                main {
                    (verdict(snapshot))
                    @if !snapshot.remotes.is_empty() {
                        (overview(snapshot))
                        @for (i, remote) in snapshot.remotes.iter().enumerate() {
                            (remote_section(snapshot, i, remote))
                        }
                    }
                    footer {
                        "Generated " (timefmt::human_date(snapshot.generated_at_unix))
                        " · the same data for scripts: " a href="status.json" { "status.json" }
                        " · " a href="metrics" { "metrics" } " · "
                        @match refresh {
                            Some(seconds) => { "reloading every " (seconds) "s (" a href="./" { "stop" } ")" }
                            None => { a href="?refresh=10" { "reload every 10s" } }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

fn header(s: &Snapshot) -> Markup {
    let c = &s.config;
    let nameservers = if c.discovery_nameservers.is_empty() {
        "system resolver".to_owned()
    } else {
        c.discovery_nameservers.join(", ")
    };
    html! {
        header {
            h1 { "thanos-fanout" span.version { (s.version) } }
            div.meta {
                @if s.ready {
                    span.badge.healthy { "ready" }
                } @else if s.shutting_down {
                    span.badge.pending { "not ready" } " shutting down"
                } @else {
                    span.badge.pending { "not ready" } " first Info round in progress"
                }
                " · up " (timefmt::span(s.uptime_seconds))
                " (since " (timefmt::human_date(s.generated_at_unix - s.uptime_seconds as i64)) ")"
                " · " (s.summary.remotes_healthy) " of " (s.summary.remotes) " remotes healthy, "
                (s.summary.endpoints_healthy) " of " (s.summary.endpoints) " endpoints up"
            }
            div.config {
                "gRPC " (c.grpc_listen) " · HTTP " (c.http_listen)
                " · Info every " (timefmt::span(c.info_interval_seconds))
                ", timeout " (timefmt::span(c.info_timeout_seconds))
                " · DNS refresh " (timefmt::span(c.discovery_refresh_interval_seconds))
                " via " (nameservers)
                " · prefetch " (text::bytes(c.prefetch_bytes)) " per call, "
                (text::bytes(c.prefetch_bytes_total)) " in all"
                " · " (c.streams_per_connection) " streams per connection"
                " · log level " (c.log_level)
            }
        }
    }
}

fn verdict(s: &Snapshot) -> Markup {
    let needing: Vec<(usize, &RemoteStatus)> = s
        .remotes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rank() < 4)
        .collect();
    let class = if needing.iter().any(|(_, r)| r.health == Health::Down) {
        "bad"
    } else {
        "warn"
    };
    html! {
        @if s.remotes.is_empty() {
            div.verdict.warn { "No remotes configured." }
        } @else if needing.is_empty() {
            div.verdict.good { "All " (s.remotes.len()) " remotes are healthy." }
        } @else {
            div.verdict.(class) {
                (needing.len()) " of " (s.remotes.len()) " remotes need attention: "
                @for (n, (i, r)) in needing.iter().enumerate() {
                    @if n > 0 { ", " }
                    a href={ "#remote-" (i) } { (r.name) } " " (state_word(r))
                }
            }
        }
    }
}

/// The remote's state in one word, as its badge shows it.
fn state_word(r: &RemoteStatus) -> &'static str {
    if r.health == Health::Healthy && !r.warnings.is_empty() {
        "warning"
    } else {
        r.health.as_str()
    }
}

fn badge(word: &str) -> Markup {
    html! { span.badge.(word) { (word) } }
}

fn overview(s: &Snapshot) -> Markup {
    html! {
        table.overview {
            thead {
                tr {
                    th { "Health" } th { "Remote" } th.num { "Endpoints up" }
                    th { "Problem / last error" } th { "Last Info" } th { "External labels" }
                    th { "Time range" } th.num { "Calls" } th.num { "Failed" }
                    th { "Client cert expires" }
                }
            }
            tbody {
                @for (i, r) in s.remotes.iter().enumerate() {
                    @let word = state_word(r);
                    @let recent = &r.calls.recent;
                    tr.(word) {
                        td { (badge(word)) }
                        td.nowrap { a href={ "#remote-" (i) } { strong { (r.name) } } }
                        td.num { (r.endpoints_healthy) " / " (r.endpoints_total) }
                        td { (problem_summary(r)) }
                        td.nowrap { (last_info(&r.endpoints)) }
                        td { (label_sets(&r.label_sets)) }
                        td.small {
                            @match &r.time_range {
                                Some(range) => { (time_range(range, s.generated_at_unix)) }
                                None => { span.muted { "unknown" } }
                            }
                        }
                        td.num {
                            (recent.finished())
                            div.muted.small { "last " (timefmt::span(r.calls.recent_window_seconds)) }
                        }
                        td.num { (failed_cell(recent)) }
                        td.nowrap {
                            @match (&r.tls, r.tls.as_ref().and_then(|t| t.client_certificate.as_ref())) {
                                (_, Some(c)) => { (cert_expiry(c)) }
                                (Some(t), None) if t.client_certificate_error.is_some() => {
                                    span.warn-text { "unreadable" }
                                }
                                (Some(_), None) => { span.muted { "none configured" } }
                                (None, None) => { span.muted { "plaintext" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn failed_cell(c: &CallCounts) -> Markup {
    html! {
        @match c.error_ratio {
            Some(ratio) if c.failed() > 0 => {
                span.warn-text { strong { (c.failed()) } " (" (text::percent(ratio)) ")" }
            }
            _ => { "0" }
        }
    }
}

/// Why a remote is not healthy, or its most recent error, in full.
fn problem_summary(r: &RemoteStatus) -> Markup {
    let groups = grouped_info_errors(&r.endpoints);
    let discovery = r
        .last_error
        .as_ref()
        .filter(|e| groups.is_empty() && e.source == ErrorSource::Discovery);
    // Only a healthy remote with nothing else to say shows its last failed call.
    let quiet = groups.is_empty() && r.warnings.is_empty() && r.health == Health::Healthy;
    let last_call = r
        .last_error
        .as_ref()
        .filter(|e| e.source == ErrorSource::Call);
    html! {
        @if let Some(e) = discovery {
            pre.err { (e.message) }
        }
        @for (error, addresses) in &groups {
            div.small {
                (if addresses.len() == 1 { "endpoint" } else { "endpoints" })
                " " (addresses.join(", ")) ":"
            }
            pre.err { (error) }
        }
        @if r.health == Health::Pending {
            span.muted { "not asked for Info yet" }
        }
        @for warning in &r.warnings {
            div.warn-text.small { (warning) }
        }
        @if quiet {
            @match last_call {
                Some(e) => {
                    span.muted.small {
                        "last failed call "
                        (e.at.as_ref().map(|m| timefmt::relative(m.age_seconds)).unwrap_or_default())
                        ": " (e.message)
                    }
                }
                None => { span.muted { "none" } }
            }
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
fn last_info(endpoints: &[EndpointStatus]) -> Markup {
    let newest = endpoints
        .iter()
        .filter_map(|e| e.last_info_success.as_ref())
        .min_by(|a, b| a.age_seconds.total_cmp(&b.age_seconds));
    html! {
        @match newest {
            Some(m) => { (timefmt::relative(m.age_seconds)) }
            None => { span.err { "never" } }
        }
    }
}

fn label_sets(sets: &[BTreeMap<String, String>]) -> Markup {
    // A set breaks across lines only between labels.
    html! {
        @if sets.is_empty() {
            span.muted { "none" }
        }
        @for set in sets {
            div {
                code.labels {
                    "{"
                    @for (n, (k, v)) in set.iter().enumerate() {
                        @if n > 0 { ", " wbr; }
                        (format!("{k}={v:?}"))
                    }
                    "}"
                }
            }
        }
    }
}

fn time_range(range: &TimeRange, now: i64) -> Markup {
    let bound = |ms: i64, date: &Option<String>, open: &str| {
        let secs = ms.div_euclid(1000);
        html! {
            @if date.is_some() {
                span.nowrap { (timefmt::human_date(secs)) }
                " "
                span.muted.nowrap { "(" (timefmt::relative((now - secs) as f64)) ")" }
            } @else {
                span.muted { (open) }
            }
        }
    };
    html! {
        (bound(range.min_time, &range.min, "no lower bound"))
        " →"
        br;
        (bound(range.max_time, &range.max, "now, open-ended"))
    }
}

/// The class a certificate's expiry is shown in.
fn validity_class(c: &CertificateStatus) -> &'static str {
    match c.validity {
        Validity::Valid => "",
        Validity::Expiring => "warn-text",
        Validity::Expired | Validity::NotYetValid => "err",
    }
}

fn cert_expiry(c: &CertificateStatus) -> Markup {
    let when = timefmt::relative(-(c.expires_in_seconds as f64));
    let when = if c.validity == Validity::Expired {
        format!("expired {when}")
    } else {
        when
    };
    html! {
        span class=(validity_class(c)) { (when) }
        div.muted.small { (timefmt::human_date(c.not_after)) }
    }
}

fn cert_expiry_inline(c: &CertificateStatus) -> Markup {
    html! {
        span class=(validity_class(c)) {
            (timefmt::human_date(c.not_after))
            " (" (timefmt::relative(-(c.expires_in_seconds as f64))) ")"
        }
    }
}

fn remote_section(s: &Snapshot, i: usize, r: &RemoteStatus) -> Markup {
    let word = state_word(r);
    let groups = grouped_info_errors(&r.endpoints);
    let discovery = r
        .last_error
        .as_ref()
        .filter(|e| e.source == ErrorSource::Discovery);
    html! {
        section.remote.(word) id={ "remote-" (i) } {
            h2 { (badge(word)) span { (r.name) } }
            // Why it is down or degraded, and anything else to look at, first.
            @if !groups.is_empty() || discovery.is_some() {
                div.problems {
                    strong { "Not queried:" }
                    ul {
                        @if let Some(e) = discovery {
                            li { pre.err { (e.message) } }
                        }
                        @for (error, addresses) in &groups {
                            li { "Info to " (addresses.join(", ")) " failed:" pre.err { (error) } }
                        }
                    }
                }
            }
            @if !r.warnings.is_empty() {
                div.problems.warn {
                    strong { "Warnings:" }
                    ul {
                        @for warning in &r.warnings {
                            li.warn-text { (warning) }
                        }
                    }
                }
            }
            dl.facts {
                (fact("Targets", code_list(&r.targets)))
                @if !r.file_sd.is_empty() {
                    (fact("file_sd", code_list(&r.file_sd)))
                }
                (fact("Endpoints", html! {
                    (r.endpoints_healthy) " of " (r.endpoints_total) " healthy"
                }))
                (fact("External labels", label_sets(&r.label_sets)))
                (fact("Time range", html! {
                    @match &r.time_range {
                        Some(t) => { (time_range(t, s.generated_at_unix)) }
                        None => { span.muted { "unknown (no StoreAPI Info yet)" } }
                    }
                }))
                (fact("APIs", apis(&r.apis)))
                (fact("Calls", html! {
                    "mode " code { (format!("{:?}", r.mode).to_lowercase()) }
                    ", compression " code { (format!("{:?}", r.compression).to_lowercase()) }
                    ", timeout " (timefmt::span(r.timeout_seconds)) " (no progress)"
                    ", connect timeout " (timefmt::span(r.connect_timeout_seconds))
                }))
                @match &r.tls {
                    Some(tls) => {
                        (fact("TLS", html! {
                            @if tls.insecure_skip_verify {
                                span.warn-text { "verification OFF (insecure_skip_verify)" } ", "
                            }
                            @if let Some(ca) = &tls.ca_file {
                                "CA " code { (ca) } ", "
                            }
                            @match &tls.server_name {
                                Some(name) => { "server name " code { (name) } }
                                None => { "server name: each endpoint's host" }
                            }
                        }))
                        (fact("Client certificate", html! {
                            @match (&tls.cert_file, &tls.client_certificate) {
                                (Some(file), Some(c)) => {
                                    code { (file) } ": " (c.subject) " issued by " (c.issuer)
                                    ", valid " (timefmt::human_date(c.not_before)) " to "
                                    (cert_expiry_inline(c))
                                }
                                (Some(file), None) => {
                                    code { (file) } ": "
                                    span.warn-text {
                                        (tls.client_certificate_error.as_deref().unwrap_or("not loaded"))
                                    }
                                }
                                (None, _) => { span.muted { "none configured" } }
                            }
                        }))
                    }
                    None => { (fact("TLS", html! { span.muted { "none (plaintext)" } })) }
                }
                @if let Some(authority) = &r.authority {
                    (fact(":authority", html! { code { (authority) } }))
                }
            }
            (endpoints_table(s, &r.endpoints))
            (calls_table(r))
        }
    }
}

fn fact(name: &str, value: Markup) -> Markup {
    html! { dt { (name) } dd { (value) } }
}

fn code_list(items: &[String]) -> Markup {
    html! {
        @if items.is_empty() {
            span.muted { "none" }
        }
        @for (n, item) in items.iter().enumerate() {
            @if n > 0 { ", " }
            code { (item) }
        }
    }
}

fn apis(offered: &[&str]) -> Markup {
    html! {
        @for api in &API_NAMES {
            span class=(if offered.contains(api) { "api" } else { "api off" }) { (api) }
        }
    }
}

fn endpoints_table(s: &Snapshot, endpoints: &[EndpointStatus]) -> Markup {
    html! {
        h3 { "Endpoints" }
        @if endpoints.is_empty() {
            p.muted { "None discovered." }
        } @else {
            table {
                thead {
                    tr {
                        th { "Endpoint" } th { "Health" } th { "Last Info success" }
                        th { "Last check" } th.num { "Info took" } th.num { "Conns" }
                        th { "Component" } th { "External labels" } th { "Time range" }
                        th { "APIs" } th { "Error" }
                    }
                }
                tbody {
                    @for e in endpoints {
                        (endpoint_row(s, e))
                    }
                }
            }
        }
    }
}

fn endpoint_row(s: &Snapshot, e: &EndpointStatus) -> Markup {
    let word = e.health.as_str();
    // The address alone says which host it is, unless discovery resolved a name.
    let resolved = !e
        .address
        .trim_start_matches('[')
        .starts_with(e.host.as_str());
    html! {
        tr.(word) {
            td.nowrap {
                code { (e.address) }
                @if resolved {
                    div.muted.small { "as " code { (e.host) } }
                }
            }
            td { (badge(word)) }
            td.nowrap {
                @match &e.last_info_success {
                    Some(m) => { (timefmt::relative(m.age_seconds)) div.muted.small { (m.at) } }
                    None => { span.err { "never" } }
                }
            }
            td.nowrap {
                @match &e.last_check {
                    Some(m) => { (timefmt::relative(m.age_seconds)) }
                    None => { span.muted { "not yet" } }
                }
            }
            td.num {
                @if let Some(took) = e.info_latency_seconds.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
                    (timefmt::latency(took))
                }
            }
            td.num { (e.connections) }
            @match &e.info {
                Some(info) => {
                    td {
                        (info.component)
                        @if e.health != EndpointHealth::Healthy {
                            div.muted.small { "(last known)" }
                        }
                    }
                    td { (label_sets(&info.label_sets)) }
                    td.small {
                        @match &info.time_range {
                            Some(t) => { (time_range(t, s.generated_at_unix)) }
                            None => { span.muted { "no StoreAPI" } }
                        }
                    }
                    td { (apis(&info.apis)) }
                }
                None => { td colspan="4" class="muted" { "never answered Info" } }
            }
            td {
                @if let Some(error) = &e.info_error {
                    div.small {
                        "Info ("
                        @match e.info_failures {
                            1 => { "1 failure" }
                            n => { (n) " failures" }
                        }
                        " so far):"
                    }
                    pre.err { (error) }
                }
                @if let Some(open) = &e.circuit_open {
                    div.small.warn-text {
                        "circuit breaker open after " (open.failures)
                        " failed calls in a row: skipped until " (open.until.at)
                    }
                }
                @if let Some(call) = &e.last_failed_call {
                    div.small {
                        "last failed call, " (call.method) " "
                        (timefmt::relative(call.at.age_seconds)) ":"
                    }
                    pre.err { (call.error) }
                }
            }
        }
    }
}

fn calls_table(r: &RemoteStatus) -> Markup {
    let window = timefmt::span(r.calls.recent_window_seconds);
    let used: Vec<_> = r
        .calls
        .methods
        .iter()
        .filter(|m| m.in_flight > 0 || m.total.finished() + m.total.cancelled > 0)
        .collect();
    let mean = |m: Option<f64>| {
        m.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok())
            .map(timefmt::latency)
            .unwrap_or_else(|| "–".to_owned())
    };
    html! {
        h3 {
            "Calls from queries "
            span.muted.small {
                "(last " (window) " and since start; failed = error + timeout, cancelled = stopped before the remote finished: by the caller, an abort or a limit)"
            }
        }
        @if used.is_empty() {
            p.muted { "No calls yet." }
        } @else {
            table {
                thead {
                    tr {
                        th { "Method" } th.num { "In flight" }
                        th.num { "Calls (" (window) ")" } th.num { "Failed (" (window) ")" }
                        th.num { "Mean time (" (window) ")" }
                        th.num { "Mean first frame (" (window) ")" }
                        th.num { "Succeeded" } th.num { "Errors" } th.num { "Timeouts" }
                        th.num { "Cancelled" } th.num { "Failed (all)" }
                    }
                }
                tbody {
                    @for m in used {
                        tr class=[(m.recent.failed() > 0).then_some("warning")] {
                            td { (m.method) }
                            td.num { (m.in_flight) }
                            td.num { (m.recent.finished()) }
                            td.num { (failed_cell(&m.recent)) }
                            td.num { (mean(m.recent.mean_duration_seconds)) }
                            td.num { (mean(m.recent.mean_first_frame_seconds)) }
                            td.num { (m.total.success) }
                            td.num { (m.total.error) }
                            td.num { (m.total.timeout) }
                            td.num { (m.total.cancelled) }
                            td.num { (failed_cell(&m.total)) }
                        }
                    }
                }
            }
        }
    }
}
