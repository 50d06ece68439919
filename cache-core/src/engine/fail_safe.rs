//! The fail-safe's state in one handle: the defaults functions inherit, the throttle that
//! answers a failing entry's misses with its expired copy for a while (so a database that is
//! down is not asked by every request), and the count and the rate-limited log line of each
//! expired copy served. What a copy *is* (an entry past its `fresh:` deadline, kept for the
//! grace) is the store's; when one may be returned is the read path's (`read_through.rs`):
//! only after a failed or timed-out load, and only as read again after the failure, so that
//! an invalidation that came during the load is never undone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Engine;
use crate::guard::RateLimiter;
use crate::locks::MutexExt as _;
use crate::stats::Counter;

/// The most entries one handle throttles at once; past it, misses of further failing
/// entries ask the function again (the copies are still served when it fails).
const MAX_THROTTLED: usize = 100_000;
/// Expired throttles are swept when the map grows past this.
const SWEEP_AT: usize = 1024;
/// One log line per this interval, however many copies are served.
const STALE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Entries whose fail-safe throttle lasts, with their ends.
#[derive(Debug)]
pub(crate) struct Throttled {
    until: Mutex<HashMap<String, Instant>>,
    log: RateLimiter,
}

impl Default for Throttled {
    fn default() -> Self {
        Throttled {
            until: Mutex::default(),
            log: RateLimiter::new(STALE_LOG_INTERVAL),
        }
    }
}

/// Why an expired copy was returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaleBecause {
    /// The function returned an error.
    Failed,
    /// The function outlasted `hard_timeout` or `soft_timeout`.
    TimedOut,
    /// A failure's throttle lasts: the function was not asked.
    Throttled,
    /// `soft_timeout`: another call or process is loading the entry.
    Loading,
}

impl StaleBecause {
    fn as_str(self) -> &'static str {
        match self {
            StaleBecause::Failed => "the function failed",
            StaleBecause::TimedOut => "the function timed out",
            StaleBecause::Throttled => "a recent failure's throttle lasts",
            StaleBecause::Loading => "another call is loading it (soft_timeout)",
        }
    }
}

impl Engine {
    /// How long a function's entries are kept past their TTL: its own `fail_safe` (`Some`;
    /// zero turns it off), else the handle's. `None`: no fail-safe.
    pub(crate) fn fail_safe_for(&self, per_function: Option<Duration>) -> Option<Duration> {
        Some(per_function.unwrap_or(self.fail_safe)).filter(|grace| !grace.is_zero())
    }

    /// A function's throttle after a fail-safe answer: its own, else the handle's.
    pub(crate) fn fail_safe_throttle_for(&self, per_function: Option<Duration>) -> Duration {
        per_function.unwrap_or(self.fail_safe_throttle)
    }

    /// Whether a failure's throttle on `key` lasts.
    pub(crate) fn is_throttled(&self, key: &str) -> bool {
        let until = self.throttled.until.lock_recovered();
        until.get(key).is_some_and(|end| *end > Instant::now())
    }

    /// Throttles `key`'s misses for `throttle`: they get the expired copy without a load.
    pub(crate) fn throttle(&self, key: &str, throttle: Duration) {
        if throttle.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut until = self.throttled.until.lock_recovered();
        if until.len() >= SWEEP_AT {
            until.retain(|_, end| *end > now);
        }
        if until.len() < MAX_THROTTLED || until.contains_key(key) {
            until.insert(key.to_owned(), now + throttle);
        }
    }

    /// Ends `key`'s throttle: a load of it succeeded.
    pub(crate) fn end_throttle(&self, key: &str) {
        let mut until = self.throttled.until.lock_recovered();
        if !until.is_empty() {
            until.remove(key);
        }
    }

    /// Counts an expired copy returned, and says so at most once per interval.
    pub(crate) fn served_stale(&self, prefix: &str, key: &str, because: StaleBecause) {
        self.counters.bump(Counter::StaleServed);
        if let Some(held_back) = self.throttled.log.permit() {
            tracing::warn!(
                prefix,
                key,
                because = because.as_str(),
                more_since_last_line = held_back,
                "fail-safe: returned an expired copy (never one a write invalidated)"
            );
        }
    }

    /// Counts a background refresh that filled its entry.
    pub(crate) fn count_refresh(&self) {
        self.counters.bump(Counter::Refreshes);
    }

    /// Counts a load that outlasted its timeout.
    pub(crate) fn count_loader_timeout(&self) {
        self.counters.bump(Counter::LoaderTimeouts);
    }
}
