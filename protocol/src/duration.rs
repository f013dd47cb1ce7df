//! Durations as people write them in settings: a whole number and a unit, `500ms`,
//! `10s`, `5m`, `2h`, `30d`. Every binary (the server's flags, variables and
//! configuration file, the CLI, the load test) parses them here, so one rule holds
//! everywhere: **the unit is required**. A bare `30` is refused, because a reader cannot
//! tell whether it means seconds or days (`--retention 30` once meant 30 seconds, and
//! deleted undelivered mail after half a minute).
//!
//! No wire meaning: durations never travel in frames (those carry milliseconds).

use std::time::Duration;

/// The units, with their length in milliseconds, as written after the number.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `250ms`, `10s`, `5m`, `2h` or `30d`. The error is one sentence that shows the
/// accepted form, with the caller's number when it forgot the unit.
///
/// ```
/// use std::time::Duration;
/// use parley_protocol::duration;
///
/// assert_eq!(duration::parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
/// let refused = duration::parse("30").unwrap_err();
/// assert!(refused.contains("30s") && refused.contains("30d"), "{refused}");
/// ```
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| {
        format!("'{text}' is not a duration: write a whole number and a unit, e.g. 500ms, 10s, 5m, 2h or 30d")
    })?;
    if unit.is_empty() {
        return Err(format!(
            "'{text}' has no unit: write {value}s, {value}m, {value}h or {value}d \
             (units: ms, s, m, h, d)"
        ));
    }
    let Some((_, millis_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "unknown unit '{unit}' in '{text}': use ms, s, m, h or d (e.g. 10s, 30d)"
        ));
    };
    value
        .checked_mul(*millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{text}' is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_bare_number_is_refused_with_the_accepted_form() {
        for bare in ["30", "0", "10"] {
            let err = parse(bare).unwrap_err();
            assert!(err.contains("has no unit"), "{err}");
            assert!(err.contains(&format!("{bare}s")), "{err}");
            assert!(err.contains(&format!("{bare}d")), "{err}");
        }
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse("").is_err());
        assert!(parse("10 parsecs").is_err());
        assert!(parse("1.5s").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("s").is_err());
        assert!(parse("99999999999999999999d").is_err());
        assert!(parse("9999999999999999d").is_err(), "overflow");
    }
}
