//! Durations as people write them on command lines and in configuration: `250ms`, `30s`, `1.5s`,
//! `15m`, `2h`, `1d`. The one parser of the server, the device and the load generator.

use std::time::Duration;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parses `250ms`, `30s`, `1.5s`, `15m`, `2h`, `1d`, or a bare number of seconds (`90`, `0.5`),
/// white space allowed before the unit. Zero is refused: every duration the server and the device
/// take is a lifetime, interval or timeout.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match parse_duration_allowing_zero(text)? {
        Duration::ZERO => Err("the duration must be greater than zero".into()),
        duration => Ok(duration),
    }
}

/// [`parse_duration`] that also takes zero, for the settings where zero means "none" or "no
/// wait" (the load generator's pauses and warm-up).
pub fn parse_duration_allowing_zero(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let not_a_duration = || format!("`{text}` is not a duration such as 500ms, 30s, 15m, 2h or 1d");
    let too_long = || format!("`{text}` is too long");
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, unit) = unsigned.split_at(split);
    let unit_nanos: u128 = match unit.trim_start() {
        "ms" => 1_000_000,
        "" | "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        "d" => 86_400 * NANOS_PER_SECOND,
        _ if number.is_empty() => return Err(not_a_duration()),
        _ => return Err(format!("`{text}`: the unit must be ms, s, m, h or d")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(not_a_duration());
    }
    let whole: u128 = match whole {
        "" => 0,
        digits => digits.parse().map_err(|_| too_long())?,
    };
    // Digits past the 18th are below a nanosecond even of a day; dropping them keeps the
    // product within u128.
    let fraction = &fraction[..fraction.len().min(18)];
    let fraction_nanos = match fraction {
        "" => 0,
        digits => {
            let scaled: u128 = digits.parse().map_err(|_| not_a_duration())?;
            scaled * unit_nanos / 10u128.pow(digits.len() as u32)
        }
    };
    let nanos = whole
        .checked_mul(unit_nanos)
        .and_then(|nanos| nanos.checked_add(fraction_nanos))
        .ok_or_else(too_long)?;
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).map_err(|_| too_long())?;
    Ok(Duration::new(seconds, (nanos % NANOS_PER_SECOND) as u32))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_duration_allowing_zero};
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 15 "), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("10 s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("+2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2."), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0.1h"), Ok(Duration::from_secs(360)));
        assert_eq!(
            parse_duration("1.0000000001s"),
            Ok(Duration::from_secs(1)),
            "below a nanosecond is dropped"
        );
    }

    #[test]
    fn zero_is_refused_unless_allowed() {
        for zero in ["0", "0m", "0.0s", "0ms"] {
            assert_eq!(
                parse_duration(zero),
                Err("the duration must be greater than zero".to_string())
            );
            assert_eq!(parse_duration_allowing_zero(zero), Ok(Duration::ZERO));
        }
    }

    #[test]
    fn malformed_durations_are_refused_with_their_reason() {
        for bad in ["", "m", "s", ".", "1.2.3s", "-1s", "inf", "NaN"] {
            let error = parse_duration_allowing_zero(bad).unwrap_err();
            assert!(error.contains("is not a duration"), "{bad}: {error}");
        }
        for bad in ["5y", "10x", "10 parsecs", "1e3", "1,5s"] {
            let error = parse_duration_allowing_zero(bad).unwrap_err();
            assert!(error.contains("the unit must be"), "{bad}: {error}");
        }
        for bad in [
            "99999999999999999999d",
            "99999999999999999999999999999999999999999",
        ] {
            let error = parse_duration_allowing_zero(bad).unwrap_err();
            assert!(error.contains("too long"), "{bad}: {error}");
        }
    }
}
