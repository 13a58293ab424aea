//! How the status page writes values: HTML escaping, UTC dates, durations
//! and ages an operator reads at a glance.

use std::fmt;
use std::time::Duration;

/// Text escaped for HTML element content and quoted attribute values.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// Milliseconds since the Unix epoch that stand for "no bound": Thanos
/// advertises `math.MinInt64`/`MaxInt64`, or Prometheus' MinTime/MaxTime,
/// all far outside years 0 to 9999.
const LAST_MS_OF_9999: i64 = 253_402_300_799_999;
const FIRST_MS_OF_0000: i64 = -62_167_219_200_000;

/// Whether a StoreAPI timestamp (ms) is a real instant rather than "unbounded".
pub fn is_bounded_ms(ms: i64) -> bool {
    (FIRST_MS_OF_0000..=LAST_MS_OF_9999).contains(&ms)
}

/// Year, month and day of a day count since 1970-01-01 (proleptic Gregorian).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn parts(unix_seconds: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (year, month, day) = civil_from_days(unix_seconds.div_euclid(86_400));
    let secs = unix_seconds.rem_euclid(86_400);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

/// `2025-06-01T12:00:00Z`, for the JSON.
pub fn rfc3339(unix_seconds: i64) -> String {
    let (y, mo, d, h, mi, s) = parts(unix_seconds);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2025-06-01 12:00:00 UTC`, for people.
pub fn human_date(unix_seconds: i64) -> String {
    let (y, mo, d, h, mi, s) = parts(unix_seconds);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// A length of time in its two largest units: `45s`, `5m 3s`, `2h 10m`,
/// `3d 4h`, `2y 40d`.
pub fn span(seconds: f64) -> String {
    let total = seconds.abs();
    if total < 1.0 {
        return format!("{:.0}ms", total * 1000.0);
    }
    if total < 10.0 && total.fract() > 0.05 {
        return format!("{total:.1}s");
    }
    let s = total.round() as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d >= 365 {
        return match (d / 365, d % 365) {
            (y, 0) => format!("{y}y"),
            (y, d) => format!("{y}y {d}d"),
        };
    }
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// How long ago (positive) or how far ahead (negative) something is.
pub fn relative(age_seconds: f64) -> String {
    if age_seconds.abs() < 1.0 {
        "now".into()
    } else if age_seconds > 0.0 {
        format!("{} ago", span(age_seconds))
    } else {
        format!("in {}", span(age_seconds))
    }
}

/// A call time: milliseconds below a second, else seconds.
pub fn latency(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 0.001 {
        format!("{:.0}µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.0}ms", secs * 1000.0)
    } else {
        format!("{secs:.2}s")
    }
}

/// A ratio as a percentage with sensible precision.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == 0.0 || p >= 10.0 {
        format!("{p:.0}%")
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// A byte count in binary units.
pub fn bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            Escaped(r#"<script>alert("x" & 'y')</script>"#).to_string(),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(Escaped("plain").to_string(), "plain");
        assert_eq!(Escaped("ünï&").to_string(), "ünï&amp;");
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(human_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(LAST_MS_OF_9999 / 1000), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(FIRST_MS_OF_0000 / 1000), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn sentinels_are_unbounded() {
        assert!(!is_bounded_ms(i64::MIN));
        assert!(!is_bounded_ms(i64::MAX));
        // Prometheus' MaxTime and MinTime in milliseconds.
        assert!(!is_bounded_ms(9_223_309_901_257_974_999));
        assert!(!is_bounded_ms(-9_223_309_901_257_974_000));
        assert!(is_bounded_ms(0));
        assert!(is_bounded_ms(1_700_000_000_000));
    }

    #[test]
    fn spans_use_two_units() {
        assert_eq!(span(0.25), "250ms");
        assert_eq!(span(2.5), "2.5s");
        assert_eq!(span(45.0), "45s");
        assert_eq!(span(303.0), "5m 3s");
        assert_eq!(span(600.0), "10m");
        assert_eq!(span(7800.0), "2h 10m");
        assert_eq!(span(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0), "3d 4h");
        assert_eq!(relative(90.0), "1m 30s ago");
        assert_eq!(relative(-86_400.0 * 30.0), "in 30d");
        assert_eq!(span(86_400.0 * 400.0), "1y 35d");
        assert_eq!(span(86_400.0 * 730.0), "2y");
        assert_eq!(relative(0.2), "now");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.5), "50%");
        assert_eq!(percent(0.012), "1.2%");
        assert_eq!(percent(0.0004), "0.04%");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(latency(Duration::from_micros(1500)), "2ms");
        assert_eq!(latency(Duration::from_millis(2500)), "2.50s");
    }
}
