//! Time as the CLI shows and reads it: UTC RFC 3339 with milliseconds out; RFC 3339 (UTC) or a
//! journalctl-style relative time (`-10m`, `-2h`, `now`) in.

use super::fail::CliError;
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::audit::format_micros;

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Parses a point in time: `now`, `-<duration>` before now (`-10m`, `-2h`, `-1h30m`, `-90s`), or
/// an RFC 3339 UTC time (`2026-11-21T12:00:00Z`, `2026-11-21 12:00:00`, fractions allowed).
pub fn parse_when(s: &str, now: u64) -> Result<u64, CliError> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let d = humantime::parse_duration(rel).map_err(|e| {
            CliError::Usage(format!(
                "{s:?} is not a relative time like -10m or -2h: {e}"
            ))
        })?;
        return Ok(now.saturating_sub(d.as_micros() as u64));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        CliError::Usage(format!(
            "{s:?} is not an RFC 3339 UTC time (2026-11-21T12:00:00Z) or a relative time (-10m): {e}"
        ))
    })?;
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .map_err(|_| CliError::Usage(format!("{s:?} is before 1970")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_parses_back() {
        let m = 1_763_728_000_123_456;
        let s = format_micros(m);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(parse_when(&s, 0).unwrap(), 1_763_728_000_123_000);
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = 10_000_000_000;
        assert_eq!(parse_when("-10m", now).unwrap(), now - 600_000_000);
        assert_eq!(parse_when("-2h", now).unwrap(), now - 7_200_000_000);
        assert_eq!(parse_when("now", now).unwrap(), now);
        assert!(parse_when("yesterday-ish", now).is_err());
    }
}
