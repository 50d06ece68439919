//! Counters behind [`Cache::stats`](crate::Cache::stats).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a cache handle's counters since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that found the entry absent, incomplete or undecodable and called the function.
    pub misses: u64,
    /// Values written into the cache after a miss (or by `put`).
    pub fills: u64,
    /// Fills refused because an invalidation came after their read (the value was returned
    /// but not cached: it may be older than the write), or because the load outlasted the
    /// lease time.
    pub refused_fills: u64,
    /// Updates whose value was written into the cache (`cached_update` with `schema`).
    pub written_through: u64,
    /// Misses that waited for a concurrent call loading the same entry instead of loading.
    pub coalesced: u64,
    /// Entries and tags invalidated (each counts once).
    pub invalidations: u64,
    /// Redis operations that failed: refused, timed out, dropped, or an error reply.
    pub errors: u64,
    /// Calls that did not touch Redis: circuit breaker open, a pending invalidation on the
    /// key, a `None` key, or a schema that cannot be stored as a hash. Each call counts
    /// once (the macros' calls and the direct API's); the background delivery of pending
    /// invalidations is no call and counts nothing.
    pub bypassed: u64,
    /// Invalidations that could not be delivered yet and wait for Redis to come back.
    pub pending_invalidations: u64,
    /// Reads answered from process memory (`near_cache`), without Redis. Not in `hits`.
    pub near_hits: u64,
    /// Reads the near cache could not answer (absent, expired, or not listening), which then
    /// asked Redis.
    pub near_misses: u64,
    /// Keys named by the invalidations the near cache received: pushed by Redis, or told by
    /// the `mem://` store.
    pub near_invalidations: u64,
    /// Values the near cache dropped to stay within `near_cache` entries (and
    /// `near_max_bytes`); invalidated and expired ones are not counted.
    pub near_evictions: u64,
    /// Calls answered with an expired copy because the function failed or timed out
    /// (`fail_safe`), or while a failure's throttle lasts (`fail_safe_throttle`). Never a
    /// copy that an invalidation removed. Not in `hits`.
    pub stale_served: u64,
    /// Loads that outlasted `hard_timeout` or `soft_timeout`.
    pub loader_timeouts: u64,
    /// Background loads (`refresh_after`, `soft_timeout`) whose value went into the cache.
    pub refreshes: u64,
}

/// What a handle counts, one slot each in every [`Stripe`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Hits,
    Misses,
    Fills,
    RefusedFills,
    Coalesced,
    WrittenThrough,
    Invalidations,
    Errors,
    Bypassed,
    NearHits,
    NearMisses,
    StaleServed,
    LoaderTimeouts,
    Refreshes,
}

const COUNTERS: usize = Counter::Refreshes as usize + 1;

/// How many copies of the counters a handle keeps. Threads are spread over them, so that
/// hits on different cores do not write the same cache line: one shared counter costs a
/// near hit about a fifth of its time at 64 tasks on two cores (measured with `perf`).
pub(crate) const STRIPES: usize = 16;

/// One copy of every counter, alone on its cache lines (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; COUNTERS]);

/// A handle's counters, striped by thread; [`Counters::snapshot`] sums the stripes.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }
}

thread_local! {
    /// This thread's stripe, given out round-robin as threads first count.
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
    };
}

/// This thread's stripe, for counters striped like [`Counters`] (the metrics' near hits).
pub(crate) fn this_thread_stripe() -> usize {
    // A thread being torn down has no stripe of its own any more: the first one.
    STRIPE.try_with(|stripe| *stripe).unwrap_or(0)
}

impl Counters {
    pub(crate) fn bump(&self, counter: Counter) {
        self.add(counter, 1);
    }

    pub(crate) fn add(&self, counter: Counter, amount: u64) {
        self.stripes[this_thread_stripe()].0[counter as usize].fetch_add(amount, Ordering::Relaxed);
    }

    fn read(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0[counter as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub(crate) fn snapshot(&self, pending_invalidations: usize, near: (u64, u64)) -> Stats {
        let (near_invalidations, near_evictions) = near;
        Stats {
            hits: self.read(Counter::Hits),
            misses: self.read(Counter::Misses),
            fills: self.read(Counter::Fills),
            refused_fills: self.read(Counter::RefusedFills),
            coalesced: self.read(Counter::Coalesced),
            written_through: self.read(Counter::WrittenThrough),
            invalidations: self.read(Counter::Invalidations),
            errors: self.read(Counter::Errors),
            bypassed: self.read(Counter::Bypassed),
            pending_invalidations: pending_invalidations as u64,
            near_hits: self.read(Counter::NearHits),
            near_misses: self.read(Counter::NearMisses),
            near_invalidations,
            near_evictions,
            stale_served: self.read(Counter::StaleServed),
            loader_timeouts: self.read(Counter::LoaderTimeouts),
            refreshes: self.read(Counter::Refreshes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_across_stripes() {
        let counters = Counters::default();
        std::thread::scope(|scope| {
            for _ in 0..(STRIPES + 3) {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        counters.bump(Counter::Hits);
                    }
                    counters.add(Counter::Invalidations, 2);
                });
            }
        });
        let stats = counters.snapshot(4, (5, 6));
        assert_eq!(stats.hits, 1_000 * (STRIPES as u64 + 3));
        assert_eq!(stats.invalidations, 2 * (STRIPES as u64 + 3));
        assert_eq!(stats.misses, 0);
        assert_eq!(stats.pending_invalidations, 4);
        assert_eq!(stats.near_invalidations, 5);
        assert_eq!(stats.near_evictions, 6);
    }
}
