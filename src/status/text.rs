//! How the status page writes numbers an operator reads at a glance, and
//! which StoreAPI timestamps are real instants. Dates and lengths of time
//! are [`crate::timefmt`]'s.

/// Milliseconds since the Unix epoch that stand for "no bound": Thanos
/// advertises `math.MinInt64`/`MaxInt64`, or Prometheus' MinTime/MaxTime,
/// all far outside years 0 to 9999.
const LAST_MS_OF_9999: i64 = 253_402_300_799_999;
const FIRST_MS_OF_0000: i64 = -62_167_219_200_000;

/// Whether a StoreAPI timestamp (ms) is a real instant rather than "unbounded".
pub fn is_bounded_ms(ms: i64) -> bool {
    (FIRST_MS_OF_0000..=LAST_MS_OF_9999).contains(&ms)
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
    fn numbers_read_well() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.5), "50%");
        assert_eq!(percent(0.012), "1.2%");
        assert_eq!(percent(0.0004), "0.04%");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
