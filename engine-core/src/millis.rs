//! Durations as whole milliseconds in JSON: `#[serde(with = "engine::millis")]` on a
//! `Duration` field keeps inputs readable (`"timeout_ms": 60000`) while the code works with
//! `Duration`s, never with bare integers.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes the duration as milliseconds (saturating at `u64::MAX`).
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Reads milliseconds.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}
