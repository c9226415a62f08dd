//! Serializable shapes shared by server functions and components (both builds compile them).

use serde::{Deserialize, Serialize};

/// How many instances have one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}

/// One row of the instance list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct InstanceSummary {
    pub instance_id: String,
    pub name: String,
    pub status: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    /// When it ended; `None` while it runs.
    #[serde(default)]
    pub completed_at: Option<i64>,
}

/// A page of the instance list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct InstanceList {
    pub instances: Vec<InstanceSummary>,
    /// When the server read the list (ms since the epoch): "now" for its relative times.
    #[serde(default)]
    pub as_of: i64,
    /// Present when another page follows.
    pub next_cursor: Option<String>,
}

/// The instance tag naming who started an instance from the dashboard or the API (the user, or
/// the API token's owner).
pub const STARTED_BY_TAG: &str = "started-by";

/// The statuses the list can filter by, in display order.
pub const STATUSES: [&str; 8] = [
    "Pending",
    "Running",
    "Suspended",
    "Completed",
    "Failed",
    "Terminated",
    "Canceled",
    "ContinuedAsNew",
];

/// Percent-encodes `value` for a URL path segment or query value: everything but RFC 3986's
/// unreserved characters. Instance ids may contain `/`, `?`, `#`, `&` or spaces.
pub fn url_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A run's length for people, precise when short: `56 ms`, `1.234 s`, `2 min 3 s`, then
/// [`format_span`]'s hours and days.
pub fn format_duration(ms: i64) -> String {
    match ms {
        ..1_000 => format!("{} ms", ms.max(0)),
        1_000..60_000 => format!("{:.3} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
        _ => format_span(ms),
    }
}

/// A span of time for people, to the second under an hour: `45 s`, `3 min 20 s`, `2 h 5 min`,
/// `3 d 4 h`. Negative spans read as `0 s`.
pub fn format_span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        ..60 => format!("{s} s"),
        60..3_600 => format!("{} min {} s", s / 60, s % 60),
        3_600..86_400 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// How long ago something was, for lists: `just now`, `45 s ago`, `3 min ago`, `2 h ago`,
/// `4 d ago`, or `in 5 min` for a time ahead (a clock a little off, or a deadline).
pub fn format_ago(elapsed_ms: i64) -> String {
    let ahead = elapsed_ms < -1_000;
    let s = elapsed_ms.unsigned_abs() / 1000;
    let span = match s {
        ..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..86_400 => format!("{} h", s / 3_600),
        _ => format!("{} d", s / 86_400),
    };
    match (ahead, s) {
        (false, ..5) => "just now".to_owned(),
        (false, _) => format!("{span} ago"),
        (true, _) => format!("in {span}"),
    }
}

/// `YYYY-MM-DD HH:MM:SS` UTC for a millisecond timestamp, computed without a date library.
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DD HH:MM[:SS]` as UTC into milliseconds
/// since the epoch (the inverse of [`format_utc`]); `None` when it is not such a date.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1..=9999).contains(&year) {
        return None;
    }
    let seconds = match time {
        None => 0,
        Some(t) => {
            let mut hms = t.splitn(3, ':');
            let h: i64 = hms.next()?.parse().ok()?;
            let m: i64 = hms.next()?.parse().ok()?;
            let s: i64 = hms.next().map_or(Some(0), |s| s.parse().ok())?;
            if h > 23 || m > 59 || s > 59 {
                return None;
            }
            h * 3600 + m * 60 + s
        }
    };
    // Days-from-civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = (days * 86_400 + seconds) * 1000;
    // Reject dates such as 2026-02-31 that do not round-trip.
    (format_utc(ms)[..10] == *date).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_as_ago_or_ahead() {
        assert_eq!(format_ago(0), "just now");
        assert_eq!(format_ago(4_999), "just now");
        assert_eq!(format_ago(45_000), "45 s ago");
        assert_eq!(format_ago(200_000), "3 min ago");
        assert_eq!(format_ago(2 * 3_600_000 + 1), "2 h ago");
        assert_eq!(format_ago(4 * 86_400_000), "4 d ago");
        assert_eq!(format_ago(-300_000), "in 5 min");
        // A clock a few hundred ms ahead is still "just now".
        assert_eq!(format_ago(-500), "just now");
    }

    #[test]
    fn durations_are_precise_when_short() {
        for (ms, text) in [
            (56, "56 ms"),
            (1_234, "1.234 s"),
            (123_000, "2 min 3 s"),
            (7_500_000, "2 h 5 min"),
        ] {
            assert_eq!(format_duration(ms), text);
        }
    }

    #[test]
    fn spans_read_at_the_right_scale() {
        for (ms, text) in [
            (-5, "0 s"),
            (45_999, "45 s"),
            (200_000, "3 min 20 s"),
            (7_500_000, "2 h 5 min"),
            (273_600_000, "3 d 4 h"),
        ] {
            assert_eq!(format_span(ms), text);
        }
    }

    #[test]
    fn encodes_url_components() {
        assert_eq!(url_component("hello-ada_1.2~x"), "hello-ada_1.2~x");
        assert_eq!(url_component("a/b?c#d&e f|g"), "a%2Fb%3Fc%23d%26e%20f%7Cg");
        assert_eq!(url_component("é"), "%C3%A9");
    }

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 1_795_000_000_000, 951_782_400_000] {
            assert_eq!(parse_utc(&format_utc(ms)), Some(ms));
        }
        assert_eq!(
            parse_utc("2026-11-18T11:06"),
            Some(1_795_000_000_000 - 40_000)
        );
        assert_eq!(parse_utc("2000-02-29"), Some(951_782_400_000));
        for bad in [
            "",
            "2026-02-31",
            "2026-13-01",
            "yesterday",
            "2026-11-18T25:00",
            "2026-11",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
