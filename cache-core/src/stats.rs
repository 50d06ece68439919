//! Counters behind [`Cache::stats`](crate::Cache::stats).

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// key, a `None` key, or a schema that cannot be stored as a hash.
    pub bypassed: u64,
    /// Invalidations that could not be delivered yet and wait for Redis to come back.
    pub pending_invalidations: u64,
    /// Reads answered from process memory (`near_cache`), without Redis. Not in `hits`.
    pub near_hits: u64,
    /// Reads the near cache could not answer (absent, expired, or not listening), which then
    /// asked Redis.
    pub near_misses: u64,
    /// Keys named by the invalidations Redis pushed to the near cache.
    pub near_invalidations: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) fills: AtomicU64,
    pub(crate) refused_fills: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) written_through: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) near_hits: AtomicU64,
    pub(crate) near_misses: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, pending_invalidations: usize, near_invalidations: u64) -> Stats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            hits: read(&self.hits),
            misses: read(&self.misses),
            fills: read(&self.fills),
            refused_fills: read(&self.refused_fills),
            coalesced: read(&self.coalesced),
            written_through: read(&self.written_through),
            invalidations: read(&self.invalidations),
            errors: read(&self.errors),
            bypassed: read(&self.bypassed),
            pending_invalidations: pending_invalidations as u64,
            near_hits: read(&self.near_hits),
            near_misses: read(&self.near_misses),
            near_invalidations,
        }
    }
}
