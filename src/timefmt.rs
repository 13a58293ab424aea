//! How times read wherever a person sees them (error messages, the status
//! page, `check`): UTC dates from Unix seconds, and lengths of time.
//!
//! The calendar is jiff's; what stays here is which units a length of time
//! is shown in, a choice of this project's pages rather than of a library.

use std::time::Duration;

use jiff::SignedDuration;
use jiff::civil::DateTime;

/// Midnight, 1970-01-01 UTC.
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// The UTC wall clock at `unix` seconds. Counted on the civil calendar
/// rather than through `jiff::Timestamp`, whose range stops a day short of
/// 9999-12-31 (to leave room for offsets), while StoreAPI time ranges run
/// to its last second.
fn utc(unix: i64) -> Option<DateTime> {
    EPOCH.checked_add(SignedDuration::from_secs(unix)).ok()
}

fn format(unix: i64, pattern: &str) -> String {
    match utc(unix) {
        Some(at) => at.strftime(pattern).to_string(),
        // Past year 9999 either way: no calendar date, still a true value.
        None => format!("{unix} (Unix seconds)"),
    }
}

/// `2025-06-01T12:00:00Z`, for JSON.
pub fn rfc3339(unix: i64) -> String {
    format(unix, "%Y-%m-%dT%H:%M:%SZ")
}

/// `2025-06-01 12:00:00 UTC`, for people.
pub fn human_date(unix: i64) -> String {
    format(unix, "%Y-%m-%d %H:%M:%S UTC")
}

/// A length of time in its two largest units, as the status page shows it:
/// `45s`, `5m 3s`, `2h 10m`, `3d 4h`, `2y 40d`.
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

/// How long ago (positive) or how far ahead (negative) something is, in
/// [`span`]'s units: `1m 30s ago`, `in 30d`, `now`.
pub fn relative(age_seconds: f64) -> String {
    if age_seconds.abs() < 1.0 {
        "now".into()
    } else if age_seconds > 0.0 {
        format!("{} ago", span(age_seconds))
    } else {
        format!("in {}", span(age_seconds))
    }
}

/// The distance from `now` to `then` (Unix seconds) in one spelled-out
/// unit, as `check` writes it: `in 89 days`, `3 hours ago`.
pub fn in_words(then: i64, now: i64) -> String {
    let delta = then.saturating_sub(now);
    let abs = delta.unsigned_abs();
    let (n, unit) = match abs {
        0..120 => (abs, "second"),
        120..7_200 => (abs / 60, "minute"),
        7_200..172_800 => (abs / 3600, "hour"),
        172_800..63_115_200 => (abs / 86_400, "day"),
        _ => (abs / 31_557_600, "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if delta >= 0 {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

/// A timeout or a wait in messages, to a tenth of a second: `30.0s`.
pub fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A call time: microseconds or milliseconds below a second, else seconds.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first and last seconds a StoreAPI bound can name as a date.
    const FIRST_OF_0000: i64 = -62_167_219_200;
    const LAST_OF_9999: i64 = 253_402_300_799;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(human_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(rfc3339(LAST_OF_9999), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(FIRST_OF_0000), "0000-01-01T00:00:00Z");
        assert_eq!(human_date(LAST_OF_9999 + 1), "253402300800 (Unix seconds)");
        assert_eq!(human_date(i64::MIN), format!("{} (Unix seconds)", i64::MIN));
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
    fn words_name_one_unit() {
        assert_eq!(in_words(100, 100 + 3 * 86_400), "3 days ago");
        assert_eq!(in_words(100 + 3600 * 5, 100), "in 5 hours");
        assert_eq!(in_words(160, 100), "in 60 seconds");
        assert_eq!(in_words(100 * 31_557_600, 0), "in 100 years");
        assert_eq!(in_words(i64::MIN, i64::MAX), "292271023045 years ago");
    }

    #[test]
    fn call_times() {
        assert_eq!(seconds(Duration::from_secs(30)), "30.0s");
        assert_eq!(seconds(Duration::from_millis(2540)), "2.5s");
        assert_eq!(latency(Duration::from_micros(500)), "500µs");
        assert_eq!(latency(Duration::from_micros(1500)), "2ms");
        assert_eq!(latency(Duration::from_millis(2500)), "2.50s");
    }
}
