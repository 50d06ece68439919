//! Durations as Redis and the library's atomics take them: whole milliseconds.

use std::time::Duration;

/// A duration in whole milliseconds, as Redis takes them (saturating, never panicking).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
