//! The engine behind a [`Cache`](crate::Cache) handle: the state that one handle's clones
//! share (the store, the breaker, pending invalidations, single flights, the near cache, the
//! settings and counters) and the guarded call that every Redis operation goes through. The
//! protocol is in the children: [`read`](mod@read) (reads, tag checks, clock reads,
//! leases), [`write`](mod@write) (fills, invalidations and write-through, on one "owed
//! write" skeleton) and [`delivery`] (invalidations kept while Redis cannot take them). What the macros expand to runs on an
//! `&Arc<Engine>`; the public [`Cache`](crate::Cache) is a handle over one.

mod delivery;
mod fail_safe;
mod read;
mod write;

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use self::fail_safe::StaleBecause;
use self::fail_safe::Throttled;
pub(crate) use self::read::{Copyable, Lease, Lookup};
use crate::codec;
use crate::flight::Flights;
use crate::guard::{
    Admission, Backoff, CircuitBreaker, PendingInvalidations, RateLimiter, Transition,
};
use crate::key::{clock_key, entry_key, tag_keys, tag_stamp_key, TagKeys};
use crate::metrics::{HandleMetrics, PrefixMetrics};
use crate::near::Near;
use crate::stats::{Counter, Counters, Stats};
use crate::store::{Store, StoreResult};
use crate::time::millis;
use crate::Error;

/// The longest a call waits for a connection being made (when the operation timeout is
/// shorter), before its operation's own timeout starts.
const CONNECT_BUDGET: Duration = Duration::from_secs(2);
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// How often pending invalidations are tried again while Redis is unreachable or refuses
/// them: first after this, then backing off exponentially (with jitter) up to
/// [`DELIVERY_BACKOFF_LIMIT`].
const DELIVERY_INTERVAL: Duration = Duration::from_millis(50);
const DELIVERY_BACKOFF_LIMIT: Duration = Duration::from_secs(5);
/// The backoff's limit while Redis is unreachable rather than refusing: other processes may
/// read what the pending invalidations concern from the moment Redis is back (a replica
/// promoted after a failover, say), so the writer must try again soon. An attempt costs at
/// most a timeout, and the breaker keeps them from other calls' paths.
const OUTAGE_BACKOFF_LIMIT: Duration = Duration::from_millis(250);
/// The most entries or tags one invalidation script handles: a few hundred microseconds of
/// Redis' time at most.
const INVALIDATION_BATCH: usize = 64;

/// The checked options an engine is made from (see [`CacheBuilder`](crate::CacheBuilder)).
pub(crate) struct Settings {
    pub(crate) namespace: Option<String>,
    pub(crate) default_ttl: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) max_pending_invalidations: usize,
    pub(crate) max_value_size: usize,
    pub(crate) lease_time: Duration,
    pub(crate) lease_wait: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) fail_safe: Duration,
    pub(crate) fail_safe_throttle: Duration,
    pub(crate) batch_size: usize,
}

/// What a call saw that the handle and the function both count ([`Engine::record`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seen {
    NearHit,
    NearMiss,
    /// The call waited for another's load (this handle's single flight, or another
    /// process's lease).
    Coalesced,
    /// The function's schema cannot be cached: the call skips the cache.
    Uncacheable,
    /// The call's key is `None` (an `Option` in it is): the call skips the cache.
    NoKey,
}

/// One handle's state, shared by its clones.
#[derive(Debug)]
pub(crate) struct Engine {
    store: Store,
    /// `false` for [`Cache::disabled`](crate::Cache::disabled): every call goes straight to
    /// the function.
    enabled: bool,
    namespace: Option<String>,
    /// What the entries of this namespace carry as their owner (`by:` in `__meta`).
    owner: String,
    default_ttl: Duration,
    operation_timeout: Duration,
    breaker: CircuitBreaker,
    failure_log: RateLimiter,
    /// When pending invalidations may be tried again.
    delivery: Backoff,
    delivery_task_running: AtomicBool,
    pending: PendingInvalidations,
    max_value_size: usize,
    /// The longest TTL this handle has written, in ms: how long a lost entry can live.
    longest_ttl_ms: AtomicU64,
    lease_time: Duration,
    lease_wait: Duration,
    /// The most entries one pipeline of a batch read carries (`CacheBuilder::batch_size`).
    batch_size: usize,
    negative_ttl: Duration,
    /// The fail-safe's defaults, for functions that set none (see `fail_safe.rs`).
    fail_safe: Duration,
    fail_safe_throttle: Duration,
    /// Entries whose fail-safe throttle lasts, in this process (see `fail_safe.rs`).
    throttled: Throttled,
    clock_key: String,
    flights: Flights,
    counters: Counters,
    /// The near cache, when `near_cache` asked for one and tracking can keep it right.
    near: Option<Arc<Near>>,
    /// The handle's own metrics (feature `metrics`).
    metrics: HandleMetrics,
}

impl Engine {
    pub(crate) fn new(
        settings: Settings,
        store: Store,
        enabled: bool,
        near: Option<Arc<Near>>,
    ) -> Engine {
        let Settings {
            namespace,
            default_ttl,
            operation_timeout,
            breaker_threshold,
            breaker_cooldown,
            max_pending_invalidations,
            max_value_size,
            lease_time,
            lease_wait,
            negative_ttl,
            fail_safe,
            fail_safe_throttle,
            batch_size,
        } = settings;
        Engine {
            store,
            enabled,
            owner: namespace.clone().unwrap_or_default(),
            clock_key: clock_key(namespace.as_deref()),
            metrics: HandleMetrics::new(namespace.as_deref()),
            namespace,
            default_ttl,
            operation_timeout,
            breaker: CircuitBreaker::new(breaker_threshold, breaker_cooldown),
            failure_log: RateLimiter::new(LOG_INTERVAL),
            delivery: Backoff::new(DELIVERY_INTERVAL, DELIVERY_BACKOFF_LIMIT),
            delivery_task_running: AtomicBool::new(false),
            pending: PendingInvalidations::new(max_pending_invalidations),
            max_value_size,
            longest_ttl_ms: AtomicU64::new(millis(default_ttl)),
            lease_time,
            lease_wait,
            negative_ttl,
            fail_safe,
            fail_safe_throttle,
            throttled: Throttled::default(),
            batch_size,
            flights: Flights::default(),
            counters: Counters::default(),
            near,
        }
    }

    /// `false` for [`Cache::disabled`](crate::Cache::disabled).
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The handle's counters.
    pub(crate) fn stats(&self) -> Stats {
        let near = self.near.as_ref().map_or((0, 0), |near| {
            (
                near.invalidations_received.load(Ordering::Relaxed),
                near.evictions(),
            )
        });
        self.counters.snapshot(self.pending.len(), near)
    }

    pub(crate) fn max_value_size(&self) -> usize {
        self.max_value_size
    }

    pub(crate) fn key(&self, prefix: &str, key: &(impl Display + ?Sized)) -> String {
        entry_key(self.namespace.as_deref(), prefix, key)
    }

    /// The keys of `tags` in this namespace: each tag's member set and stamp.
    fn tag_keys(&self, tags: &[String]) -> Vec<TagKeys> {
        let namespace = self.namespace.as_deref();
        tags.iter().map(|tag| tag_keys(namespace, tag)).collect()
    }

    /// The stamp keys of `tags` in this namespace.
    fn stamp_keys(&self, tags: &[String]) -> Vec<String> {
        let namespace = self.namespace.as_deref();
        tags.iter()
            .map(|tag| tag_stamp_key(namespace, tag))
            .collect()
    }

    pub(crate) fn ttl_or_default(&self, ttl: Option<Duration>) -> Duration {
        ttl.unwrap_or(self.default_ttl)
    }

    pub(crate) fn negative_ttl(&self) -> Duration {
        self.negative_ttl
    }

    /// `Err(size)` when encoded `fields` are over the handle's `max_value_size`.
    pub(crate) fn check_size(&self, fields: &[codec::EncodedField]) -> Result<(), usize> {
        let size: usize = fields
            .iter()
            .map(|(name, value)| match value {
                codec::FieldValue::Text(text) => name.len() + text.len(),
                codec::FieldValue::Null | codec::FieldValue::Skipped => name.len(),
            })
            .sum();
        if size > self.max_value_size {
            Err(size)
        } else {
            Ok(())
        }
    }

    pub(crate) fn flights(&self) -> &Flights {
        &self.flights
    }

    pub(crate) fn flight_wait(&self) -> Duration {
        self.lease_time
    }

    pub(crate) fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub(crate) fn lease_wait(&self) -> Duration {
        self.lease_wait
    }

    /// The near cache, if on and usable: not while invalidations wait for Redis (a value in
    /// memory may be one of theirs; one atomic load when none do).
    pub(crate) fn near(&self) -> Option<&Near> {
        self.near.as_deref().filter(|_| self.pending.is_empty())
    }

    /// Counts what a call of an annotated function saw, in the handle's [`Stats`] and the
    /// function's metrics together. The other counts each have one home: a read's hit or
    /// miss, a fill, an error and a bypass forced by Redis are counted where the engine sees
    /// them (its [`Stats`] count every read, the direct API's too), and a call's outcome in
    /// the function's metrics by the call (once per call, however often it reads).
    #[inline]
    pub(crate) fn record(&self, metrics: &PrefixMetrics, seen: Seen) {
        // Inlined into the call (a near hit's path): each arm is two direct calls.
        match seen {
            Seen::NearHit => {
                self.counters.bump(Counter::NearHits);
                metrics.near_hit();
            }
            Seen::NearMiss => {
                self.counters.bump(Counter::NearMisses);
                metrics.near_miss();
            }
            Seen::Coalesced => {
                self.counters.bump(Counter::Coalesced);
                metrics.coalesced();
            }
            Seen::Uncacheable | Seen::NoKey => {
                self.counters.bump(Counter::Bypassed);
                metrics.bypass();
            }
        }
    }

    /// Evicts what a write of this handle invalidated from its near cache, once Redis has it
    /// (or has it pending): a read after the write returns cannot find the old value in
    /// memory, and a read that fetched it from Redis before the invalidation cannot insert it.
    fn evict_near(&self, keys: &[&str], tags: &[String]) {
        if let Some(near) = &self.near {
            near.evict(keys, tags);
        }
    }

    pub(crate) fn count_hit(&self) {
        self.counters.bump(Counter::Hits);
    }

    pub(crate) fn count_miss(&self) {
        self.counters.bump(Counter::Misses);
    }

    /// Counts one call that did not touch Redis. Calls only: never an operation of a
    /// call or of a background delivery.
    pub(crate) fn count_bypass(&self) {
        self.counters.bump(Counter::Bypassed);
    }

    /// Counts a call of the direct API that ended without touching Redis (the breaker open,
    /// or an invalidation of its key pending).
    pub(crate) fn count_if_bypassed<T>(&self, outcome: &Result<T, Error>) {
        if matches!(
            outcome,
            Err(Error::CircuitOpen | Error::InvalidationPending)
        ) {
            self.count_bypass();
        }
    }

    /// Runs one store operation under the breaker and the timeout, counting and logging
    /// failures.
    async fn guarded<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = StoreResult<T>>,
    ) -> Result<T, Error> {
        let admission = self.breaker.admit();
        if admission == Admission::Rejected {
            // Not counted here: an operation is not a call (a call may run several, and
            // background deliveries are none); calls count their bypass where they end.
            return Err(Error::CircuitOpen);
        }
        let probe = self.breaker.probe_guard(admission);
        // A connection to make first (the first call, or one after a connection broke) has a
        // budget of its own: connecting to a cluster's nodes (over TLS, on busy cores) takes
        // longer than a command, and inside the operation's timeout every first call of a
        // process failed open without filling. The connection is made in a task of its own
        // (see `store::redis::link`), which goes on for the next call if this one gives up.
        let mut waited = self.operation_timeout;
        let outcome = if self.store.needs_connection() {
            waited = self.operation_timeout.max(CONNECT_BUDGET);
            match tokio::time::timeout(waited, self.store.connect()).await {
                Ok(Ok(())) => {
                    waited = self.operation_timeout;
                    tokio::time::timeout(self.operation_timeout, future).await
                }
                Ok(Err(error)) => Ok(Err(error)),
                Err(elapsed) => Err(elapsed),
            }
        } else {
            tokio::time::timeout(self.operation_timeout, future).await
        };
        probe.settle();
        let (error, reachable) = match outcome {
            Ok(Ok(value)) => {
                if self.breaker.record_success(admission) == Transition::Closed {
                    tracing::info!("redis answers again; circuit breaker closed");
                }
                return Ok(value);
            }
            // redis-rs' own connect/response timeouts mean the same as ours.
            Ok(Err(error)) if error.is_timeout() => (Error::Timeout(self.operation_timeout), false),
            // Redis answered, so it is reachable: the error is about this request only.
            Ok(Err(error)) => {
                let reachable = !is_outage(&error);
                if reachable
                    && error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                {
                    // A demoted primary: the next call connects anew, which behind Sentinel
                    // asks the sentinels for the new one.
                    self.store.connection_failed();
                }
                (Error::Redis(error), reachable)
            }
            Err(_elapsed) => (Error::Timeout(waited), false),
        };
        self.counters.bump(Counter::Errors);
        let transition = if reachable {
            self.breaker.record_success(admission)
        } else {
            // A connection that timed out may be dead without knowing it: start afresh.
            self.store.connection_failed();
            self.breaker.record_failure(admission)
        };
        if transition == Transition::Opened {
            tracing::warn!(%error, "redis keeps failing; circuit breaker open, calls go straight to the function");
        } else if let Some(suppressed) = self.failure_log.permit() {
            tracing::warn!(operation, %error, suppressed, "cache operation failed; calling the function instead");
        }
        Err(error)
    }
}

/// Whether a failed operation found Redis unreachable or unwell (down, silent, failing over,
/// skipped by the open breaker), as opposed to refusing the request.
fn is_unreachable(error: &Error) -> bool {
    match error {
        Error::Redis(error) => is_outage(error),
        Error::Timeout(_) | Error::CircuitOpen => true,
        _ => false,
    }
}

/// Whether an error means Redis is unreachable or unwell, as opposed to refusing one request.
fn is_outage(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match error.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        ),
        // Redis answered with an error code redis-rs has no kind for: `OOM` (out of memory
        // under `noeviction`), `WRONGTYPE`, …: a refusal of this request, not an outage.
        ErrorKind::Extension => false,
        _ => true,
    }
}
