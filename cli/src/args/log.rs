//! `meshctl log`: the audit trail of replicated writes.

use clap::Args;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only entries from this time on: RFC 3339 (`2026-12-07T06:00:00Z`)
    /// or a span back from now (`10m`, `2h`, `1d`).
    #[arg(long, value_name = "T", value_parser = parse_since)]
    pub since: Option<u64>,
    /// Only writes by this host (a name, or the start of an id).
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--since`: milliseconds since the Unix epoch.
pub fn parse_since(s: &str) -> Result<u64, String> {
    parse_since_at(s, SystemTime::now())
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_since_at(s: &str, now: SystemTime) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(millis(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)));
    }
    humantime::parse_rfc3339_weak(s)
        .map(millis)
        .map_err(|_| {
            format!("{s:?} is neither a time (RFC 3339, e.g. 2026-12-07T06:00:00Z) nor a span back from now (e.g. 10m, 2h)")
        })
}

/// A journal time (ms since the epoch) as RFC 3339, UTC, to the second.
pub fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_spans_back_and_rfc3339() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_since_at("10m", now), Ok(1_000_000_000 - 600_000));
        assert_eq!(parse_since_at("2h", now), Ok(1_000_000_000 - 7_200_000));
        assert_eq!(parse_since_at("1000000d", now), Ok(0), "before the epoch");
        assert_eq!(
            parse_since_at("2026-12-07T06:00:00Z", now),
            Ok(1_796_623_200_000)
        );
        assert_eq!(format_time(1_796_623_200_000), "2026-12-07T06:00:00Z");
        let e = parse_since_at("yesterday", now).unwrap_err();
        assert!(e.contains("\"yesterday\"") && e.contains("RFC 3339"), "{e}");
    }
}
