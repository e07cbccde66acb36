//! Wall-clock helpers. Reports carry RFC 3339 UTC timestamps so that they sort
//! as text and need no time-zone database to read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit the store and the wire use.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-27T11:23:19Z` for a Unix time in milliseconds.
pub fn rfc3339_from_unix_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    rfc3339_from_unix_ms(now_unix_ms())
}
