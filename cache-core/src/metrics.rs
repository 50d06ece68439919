//! What the cache does, through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): counters and a latency histogram per prefix, and per handle the pending
//! invalidations and the near cache's invalidations and evictions. Without the feature the
//! types below are empty and their methods compile to nothing.
//!
//! The handles of each prefix are registered once, on its function's first call, and kept in
//! its `static` spec: a call then costs an atomic add per counter, never a registry lookup.
//! So install the recorder (e.g. `metrics-exporter-prometheus`) before the first cached call.
//! Near hits, the one path short enough for a shared atomic to show (two cores adding to one
//! cache line cost a third of a near hit's throughput), are counted in per-thread stripes and
//! published to the recorder every [`PUBLISH_EVERY`] by one thread of the library's.
//!
//! | metric | labels | |
//! |---|---|---|
//! | `cache_hits_total` | `prefix` | reads answered by Redis |
//! | `cache_near_hits_total` / `cache_near_misses_total` | `prefix` | reads answered (or not) by process memory |
//! | `cache_misses_total` | `prefix` | reads that ran the function |
//! | `cache_fills_total` / `cache_refused_fills_total` | `prefix` | values stored after a miss / refused (an invalidation came after the read) |
//! | `cache_coalesced_total` | `prefix` | misses that waited for another caller's load |
//! | `cache_bypasses_total` | `prefix` | calls that skipped Redis (breaker open, pending invalidation, `None` key, uncacheable schema) |
//! | `cache_errors_total` | `prefix` | calls that met a Redis failure (and answered all the same) |
//! | `cache_invalidations_total` / `cache_written_through_total` | `prefix` | successful writes that invalidated / wrote through |
//! | `cache_get_duration_seconds` | `prefix`, `result` (`hit`, `miss`, `bypass`) | histogram of `cached_get` calls that asked Redis (near hits are counted, not timed) |
//! | `cache_pending_invalidations` | `namespace` | gauge: invalidations waiting for Redis |
//! | `cache_near_invalidations_total` / `cache_near_evictions_total` | `namespace` | keys the near cache was told changed / copies dropped for room |

#[cfg(feature = "metrics")]
pub(crate) use self::enabled::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use self::disabled::*;

/// How a `cached_get` call that asked Redis ended, for the latency histogram.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GetResult {
    Hit,
    Miss,
    Bypass,
}

/// How often near hits counted in stripes reach the recorder.
#[cfg(feature = "metrics")]
pub(crate) const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

    use super::{GetResult, PUBLISH_EVERY};
    use crate::locks::MutexExt as _;
    use crate::stats::{this_thread_stripe, STRIPES};

    /// One stripe's count, alone on its cache lines.
    #[derive(Debug, Default)]
    #[repr(align(128))]
    struct Stripe(AtomicU64);

    /// The prefixes whose near hits the publishing thread reports.
    static PUBLISHED: OnceLock<Mutex<Vec<&'static PrefixMetrics>>> = OnceLock::new();

    /// Has `metrics`' near hits published from now on (once per prefix; the thread starts with
    /// the first).
    pub(crate) fn publish(metrics: &'static PrefixMetrics) {
        let mut first = false;
        let published = PUBLISHED.get_or_init(|| {
            first = true;
            Mutex::default()
        });
        {
            let mut published = published.lock_recovered();
            if !published.iter().any(|known| std::ptr::eq(*known, metrics)) {
                published.push(metrics);
            }
        }
        if first {
            let spawned = std::thread::Builder::new()
                .name("cache-metrics".into())
                .spawn(|| loop {
                    std::thread::sleep(PUBLISH_EVERY);
                    let published = PUBLISHED.get().map(|all| all.lock_recovered().clone());
                    for metrics in published.unwrap_or_default() {
                        metrics.publish_near_hits();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the thread that reports near hits to the metrics recorder");
            }
        }
    }

    /// One prefix's counters and histograms.
    #[derive(Debug)]
    pub(crate) struct PrefixMetrics {
        hits: Counter,
        near_hits: Counter,
        /// Near hits not yet published, by thread stripe.
        near_hit_stripes: Box<[Stripe]>,
        near_misses: Counter,
        misses: Counter,
        fills: Counter,
        refused_fills: Counter,
        coalesced: Counter,
        bypasses: Counter,
        errors: Counter,
        invalidations: Counter,
        written_through: Counter,
        durations: [Histogram; 3],
    }

    impl PrefixMetrics {
        pub(crate) fn new(prefix: &'static str) -> Self {
            let labels = [("prefix", prefix)];
            let duration = |result: &'static str| histogram!("cache_get_duration_seconds", "prefix" => prefix, "result" => result);
            PrefixMetrics {
                hits: counter!("cache_hits_total", &labels),
                near_hits: counter!("cache_near_hits_total", &labels),
                near_hit_stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
                near_misses: counter!("cache_near_misses_total", &labels),
                misses: counter!("cache_misses_total", &labels),
                fills: counter!("cache_fills_total", &labels),
                refused_fills: counter!("cache_refused_fills_total", &labels),
                coalesced: counter!("cache_coalesced_total", &labels),
                bypasses: counter!("cache_bypasses_total", &labels),
                errors: counter!("cache_errors_total", &labels),
                invalidations: counter!("cache_invalidations_total", &labels),
                written_through: counter!("cache_written_through_total", &labels),
                durations: [duration("hit"), duration("miss"), duration("bypass")],
            }
        }

        pub(crate) fn hit(&self) {
            self.hits.increment(1);
        }
        pub(crate) fn near_hit(&self) {
            self.near_hit_stripes[this_thread_stripe()]
                .0
                .fetch_add(1, Ordering::Relaxed);
        }

        /// Reports the near hits counted so far (the recorder keeps the highest total).
        fn publish_near_hits(&self) {
            let total = self
                .near_hit_stripes
                .iter()
                .map(|stripe| stripe.0.load(Ordering::Relaxed))
                .fold(0, u64::wrapping_add);
            self.near_hits.absolute(total);
        }
        pub(crate) fn near_miss(&self) {
            self.near_misses.increment(1);
        }
        pub(crate) fn miss(&self) {
            self.misses.increment(1);
        }
        pub(crate) fn fill(&self, stored: bool) {
            if stored {
                self.fills.increment(1);
            } else {
                self.refused_fills.increment(1);
            }
        }
        pub(crate) fn coalesced(&self) {
            self.coalesced.increment(1);
        }
        pub(crate) fn bypass(&self) {
            self.bypasses.increment(1);
        }
        pub(crate) fn error(&self) {
            self.errors.increment(1);
        }
        pub(crate) fn invalidation(&self) {
            self.invalidations.increment(1);
        }
        pub(crate) fn written_through(&self) {
            self.written_through.increment(1);
        }

        /// The start of a call, for [`finished`](Self::finished).
        pub(crate) fn start(&self) -> Option<Instant> {
            Some(Instant::now())
        }

        pub(crate) fn finished(&self, started: Option<Instant>, result: GetResult) {
            if let Some(started) = started {
                self.durations[result as usize].record(started.elapsed().as_secs_f64());
            }
        }
    }

    /// One handle's gauges and counters, labelled by its namespace.
    #[derive(Debug, Clone)]
    pub(crate) struct HandleMetrics {
        pending: Gauge,
        near_invalidations: Counter,
        near_evictions: Counter,
    }

    impl HandleMetrics {
        pub(crate) fn new(namespace: Option<&str>) -> Self {
            let labels = [("namespace", namespace.unwrap_or("").to_owned())];
            HandleMetrics {
                pending: gauge!("cache_pending_invalidations", &labels),
                near_invalidations: counter!("cache_near_invalidations_total", &labels),
                near_evictions: counter!("cache_near_evictions_total", &labels),
            }
        }

        pub(crate) fn pending(&self, count: usize) {
            self.pending.set(count as f64);
        }
        pub(crate) fn near_invalidations(&self, keys: u64) {
            self.near_invalidations.increment(keys);
        }
        pub(crate) fn near_eviction(&self) {
            self.near_evictions.increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::GetResult;

    /// Without the `metrics` feature: nothing.
    #[derive(Debug)]
    pub(crate) struct PrefixMetrics;

    #[allow(clippy::unused_self)]
    impl PrefixMetrics {
        #[inline(always)]
        pub(crate) fn hit(&self) {}
        #[inline(always)]
        pub(crate) fn near_hit(&self) {}
        #[inline(always)]
        pub(crate) fn near_miss(&self) {}
        #[inline(always)]
        pub(crate) fn miss(&self) {}
        #[inline(always)]
        pub(crate) fn fill(&self, _: bool) {}
        #[inline(always)]
        pub(crate) fn coalesced(&self) {}
        #[inline(always)]
        pub(crate) fn bypass(&self) {}
        #[inline(always)]
        pub(crate) fn error(&self) {}
        #[inline(always)]
        pub(crate) fn invalidation(&self) {}
        #[inline(always)]
        pub(crate) fn written_through(&self) {}
        #[inline(always)]
        pub(crate) fn start(&self) -> Option<std::convert::Infallible> {
            None
        }
        #[inline(always)]
        pub(crate) fn finished(&self, _: Option<std::convert::Infallible>, _: GetResult) {}
    }

    /// Without the `metrics` feature: nothing.
    #[derive(Debug, Clone)]
    pub(crate) struct HandleMetrics;

    #[allow(clippy::unused_self)]
    impl HandleMetrics {
        pub(crate) fn new(_: Option<&str>) -> Self {
            HandleMetrics
        }
        #[inline(always)]
        pub(crate) fn pending(&self, _: usize) {}
        #[inline(always)]
        pub(crate) fn near_invalidations(&self, _: u64) {}
        #[inline(always)]
        pub(crate) fn near_eviction(&self) {}
    }
}
