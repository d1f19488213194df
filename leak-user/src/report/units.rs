//! Human units for the text report: sizes in binary units, signed rates, short durations.

const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `1000 B`, `1.0 KiB`, `9.8 MiB`: exact below 1 KiB, one decimal above.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // Move up when the rounded figure would read 1024.0 (e.g. 1 MiB - 1 B is "1.0 MiB").
    while (value * 10.0).round() >= 10240.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `+1.2 KiB/s`, `0 B/s`, `-3.0 KiB/s`: always signed unless it rounds to zero.
pub fn rate(bytes_per_s: f64) -> String {
    if !bytes_per_s.is_finite() {
        return "0 B/s".to_string();
    }
    // `as` saturates, so absurd rates cannot wrap.
    let magnitude = bytes_per_s.abs().round() as u64;
    if magnitude == 0 {
        return "0 B/s".to_string();
    }
    let sign = if bytes_per_s < 0.0 { '-' } else { '+' };
    format!("{sign}{}/s", bytes(magnitude))
}

/// `850ms`, `9.8s`, `2m05s`, `1h02m`: the two most significant units, rounded.
pub fn duration(secs: f64) -> String {
    // Ages come from clock differences; a negative or NaN one means "just now".
    let secs = if secs.is_finite() && secs > 0.0 {
        secs
    } else {
        0.0
    };
    let ms = (secs * 1000.0).round();
    if ms < 1000.0 {
        return format!("{ms:.0}ms");
    }
    let tenths = (secs * 10.0).round();
    if tenths < 600.0 {
        return format!("{:.1}s", tenths / 10.0);
    }
    let whole = secs.round() as u64;
    if whole < 3600 {
        return format!("{}m{:02}s", whole / 60, whole % 60);
    }
    let minutes = (secs / 60.0).round() as u64;
    format!("{}h{:02}m", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1000), "1000 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(12 * 1024 + 1), "12.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes((9.8 * 1024.0 * 1024.0) as u64), "9.8 MiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates_are_signed() {
        assert_eq!(rate(1228.8), "+1.2 KiB/s");
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(0.4), "0 B/s");
        assert_eq!(rate(-0.4), "0 B/s");
        assert_eq!(rate(-3072.0), "-3.0 KiB/s");
        assert_eq!(rate(500.0), "+500 B/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
        assert_eq!(rate(f64::INFINITY), "0 B/s");
    }

    #[test]
    fn durations_pick_two_units() {
        assert_eq!(duration(0.85), "850ms");
        assert_eq!(duration(0.0), "0ms");
        assert_eq!(duration(-1.0), "0ms");
        assert_eq!(duration(f64::NAN), "0ms");
        assert_eq!(duration(0.9996), "1.0s");
        assert_eq!(duration(9.8), "9.8s");
        assert_eq!(duration(59.94), "59.9s");
        assert_eq!(duration(59.96), "1m00s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3599.4), "59m59s");
        assert_eq!(duration(3599.6), "1h00m");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(duration(90_000.0), "25h00m");
    }
}
