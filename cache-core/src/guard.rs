//! What keeps a sick Redis from hurting the caller: the circuit breaker, rate-limited logs,
//! and the invalidations that could not be delivered yet.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::locks::MutexExt as _;
use crate::time::millis;

/// Milliseconds since the guard was made; fits an atomic, unlike `Instant`.
#[derive(Debug)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        millis(self.start.elapsed())
    }
}

/// Opens after `threshold` consecutive failures; while open, Redis is not contacted at all,
/// so an outage costs the caller nothing but an atomic load. After `cooldown` one call is let
/// through as a probe: success closes the breaker, failure opens it again.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    clock: Clock,
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: AtomicU32,
    /// 0 when closed; else the clock reading at which a probe may go through.
    open_until_ms: AtomicU64,
    probe_in_flight: AtomicBool,
}

/// The breaker's answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed: go ahead.
    Allowed,
    /// Half open: go ahead; the outcome decides the breaker's state.
    Probe,
    /// Open: do not contact Redis.
    Rejected,
}

/// What a reported outcome changed, so that the caller can log transitions once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Opened,
    Closed,
}

impl CircuitBreaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            clock: Clock {
                start: Instant::now(),
            },
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probe_in_flight: AtomicBool::new(false),
        }
    }

    pub(crate) fn admit(&self) -> Admission {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return Admission::Allowed;
        }
        if self.clock.now_ms() < open_until {
            return Admission::Rejected;
        }
        match self.probe_in_flight.compare_exchange(
            false,
            true,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Rejected,
        }
    }

    /// Arms the give-back of a probe: if the call that probes is dropped before its outcome
    /// is recorded (its caller timed out, a client disconnected), the probe is given back,
    /// so that a later call probes; otherwise the breaker would stay open for good.
    pub(crate) fn probe_guard(&self, admission: Admission) -> ProbeGuard<'_> {
        ProbeGuard {
            breaker: self,
            armed: admission == Admission::Probe,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    pub(crate) fn record_success(&self, admission: Admission) -> Transition {
        // Every successful call comes here: reading first keeps the cache line shared between
        // cores instead of writing it on every call.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Release);
        }
        if admission == Admission::Probe || self.is_open() {
            self.open_until_ms.store(0, Ordering::Release);
            self.probe_in_flight.store(false, Ordering::Release);
            return Transition::Closed;
        }
        Transition::None
    }

    pub(crate) fn record_failure(&self, admission: Admission) -> Transition {
        let reopen_at = self
            .clock
            .now_ms()
            .saturating_add(millis(self.cooldown))
            .max(1);
        if admission == Admission::Probe {
            self.open_until_ms.store(reopen_at, Ordering::Release);
            self.probe_in_flight.store(false, Ordering::Release);
            return Transition::None;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.threshold
            && self
                .open_until_ms
                .compare_exchange(0, reopen_at, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Transition::Opened;
        }
        Transition::None
    }
}

/// See [`CircuitBreaker::probe_guard`].
#[derive(Debug)]
pub(crate) struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl ProbeGuard<'_> {
    /// The outcome is known: recording it settles the probe.
    pub(crate) fn settle(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.probe_in_flight.store(false, Ordering::Release);
        }
    }
}

/// Lets one event through per interval and counts the ones it held back: one warning every
/// few seconds in a storm of failing calls instead of one per call, and one delivery attempt
/// of pending invalidations per interval instead of one per read.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    clock: Clock,
    interval_ms: u64,
    /// Clock reading + 1 of the last line let through (0: none yet).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimiter {
            clock: Clock {
                start: Instant::now(),
            },
            interval_ms: millis(interval),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(number of events held back since the last one)` when one may happen now.
    pub(crate) fn permit(&self) -> Option<u64> {
        let now = self.clock.now_ms() + 1;
        let last = self.last_ms.load(Ordering::Acquire);
        if last != 0 && now < last.saturating_add(self.interval_ms) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self
            .last_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// When to try again something that keeps failing: after `base`, then twice as long each
/// time up to `max`, each wait drawn between half and all of it (jitter, so that processes
/// that failed together do not retry together); back to `base` after a success. Against a
/// Redis that refuses (OOM, NOPERM, READONLY), pending invalidations are then resent a few
/// times a minute, not twenty times a second.
#[derive(Debug)]
pub(crate) struct Backoff {
    clock: Clock,
    base_ms: u64,
    max_ms: u64,
    /// The current full wait.
    wait_ms: AtomicU64,
    /// Clock reading before which no attempt is made.
    next_ms: AtomicU64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        let base_ms = millis(base).max(1);
        Backoff {
            clock: Clock {
                start: Instant::now(),
            },
            base_ms,
            max_ms: millis(max).max(base_ms),
            wait_ms: AtomicU64::new(base_ms),
            next_ms: AtomicU64::new(0),
        }
    }

    /// Whether an attempt may be made now; claims it, so concurrent callers make one.
    pub(crate) fn permit(&self) -> bool {
        let now = self.clock.now_ms();
        let next = self.next_ms.load(Ordering::Acquire);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.base_ms),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// How long to wait before the next attempt, now.
    pub(crate) fn delay(&self) -> Duration {
        let next = self.next_ms.load(Ordering::Acquire);
        Duration::from_millis(next.saturating_sub(self.clock.now_ms()).max(1))
    }

    /// After a failed attempt: waits twice as long, up to the limit given at construction.
    pub(crate) fn failed(&self) {
        self.failed_up_to(Duration::from_millis(self.max_ms));
    }

    /// After a failed attempt: waits twice as long, up to `ceiling` (at most the limit).
    pub(crate) fn failed_up_to(&self, ceiling: Duration) {
        let ceiling = millis(ceiling).clamp(self.base_ms, self.max_ms);
        let wait = self.wait_ms.load(Ordering::Acquire).min(ceiling);
        self.wait_ms
            .store((wait * 2).min(ceiling), Ordering::Release);
        // Half to all of the wait: cheap jitter from the clock's sub-millisecond noise.
        let noise = self.clock.start.elapsed().subsec_nanos() as u64;
        let jittered = wait / 2 + noise % (wait / 2 + 1);
        self.next_ms.store(
            self.clock.now_ms().saturating_add(jittered),
            Ordering::Release,
        );
    }

    pub(crate) fn succeeded(&self) {
        self.wait_ms.store(self.base_ms, Ordering::Release);
        self.next_ms.store(
            self.clock.now_ms().saturating_add(self.base_ms),
            Ordering::Release,
        );
    }
}

/// Invalidations that could not reach Redis. Until they are delivered, reads of those keys
/// (and of entries carrying those tags) bypass the cache, so an entry that should be gone is
/// never served by this handle; the first successful contact with Redis delivers them before
/// anything else is read.
#[derive(Debug)]
pub(crate) struct PendingInvalidations {
    /// Fast check for the hit path: one load when nothing is pending.
    any: AtomicBool,
    state: Mutex<PendingState>,
    capacity: usize,
    /// Held while a delivery is in flight, so a recovering Redis gets one call, not a storm.
    delivering: tokio::sync::Mutex<()>,
    /// Deliveries completed so far.
    deliveries: AtomicU64,
}

/// What is waiting to be delivered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Undelivered {
    pub(crate) keys: Vec<String>,
    pub(crate) tags: Vec<String>,
}

#[derive(Debug, Default)]
struct PendingState {
    keys: HashSet<String>,
    tags: HashSet<String>,
    /// Set when more failed than `capacity`: which ones is no longer known, so every read
    /// bypasses the cache until every entry that could be stale has expired.
    bypass_all_until: Option<Instant>,
}

impl PendingInvalidations {
    pub(crate) fn new(capacity: usize) -> Self {
        PendingInvalidations {
            any: AtomicBool::new(false),
            state: Mutex::new(PendingState::default()),
            capacity,
            delivering: tokio::sync::Mutex::new(()),
            deliveries: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock_recovered()
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let state = self.state();
        state.keys.len() + state.tags.len()
    }

    /// Remembers an invalidation that failed. `longest_ttl` bounds how long an entry written
    /// before now can live, for the overflow case.
    pub(crate) fn add(&self, keys: &[&str], tags: &[String], longest_ttl: Duration) {
        let mut state = self.state();
        let targets = keys
            .iter()
            .map(|key| (false, *key))
            .chain(tags.iter().map(|tag| (true, tag.as_str())));
        for (is_tag, target) in targets {
            if state.keys.len() + state.tags.len() >= self.capacity {
                state.bypass_all_until = Some(Instant::now() + longest_ttl);
                break;
            }
            let set = if is_tag {
                &mut state.tags
            } else {
                &mut state.keys
            };
            set.insert(target.to_owned());
        }
        self.any.store(true, Ordering::Release);
    }

    /// Whether the entry at `key`, carrying `tags`, must not be read from Redis now.
    pub(crate) fn blocks(&self, key: &str, tags: &[String]) -> bool {
        if self.is_empty() {
            return false;
        }
        let state = self.state();
        state.keys.contains(key)
            || tags.iter().any(|tag| state.tags.contains(tag))
            || state
                .bypass_all_until
                .is_some_and(|end| Instant::now() < end)
    }

    /// Whether any tag invalidation is waiting (entries' tags must then be checked).
    pub(crate) fn has_tags(&self) -> bool {
        !self.is_empty() && !self.state().tags.is_empty()
    }

    /// `None` when no tag invalidation waits; else how many deliveries have completed. A
    /// read takes this before it goes to Redis: if a delivery completes while the read is in
    /// flight, what the read got may predate it, and the count has moved.
    pub(crate) fn tag_delivery_mark(&self) -> Option<u64> {
        self.has_tags()
            .then(|| self.deliveries.load(Ordering::Acquire))
    }

    /// How many deliveries have completed (see [`tag_delivery_mark`](Self::tag_delivery_mark)).
    pub(crate) fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Acquire)
    }

    /// Delivers what is pending with `deliver`; what is added meanwhile stays pending.
    pub(crate) async fn deliver<F, Fut, E>(&self, deliver: F) -> Result<(), E>
    where
        F: FnOnce(Undelivered) -> Fut,
        Fut: std::future::Future<Output = Result<Undelivered, E>>,
    {
        let Ok(_delivering) = self.delivering.try_lock() else {
            return Ok(());
        };
        let undelivered = {
            let state = self.state();
            Undelivered {
                keys: state.keys.iter().cloned().collect(),
                tags: state.tags.iter().cloned().collect(),
            }
        };
        let delivered = if undelivered == Undelivered::default() {
            undelivered
        } else {
            deliver(undelivered).await?
        };
        let mut state = self.state();
        for key in &delivered.keys {
            state.keys.remove(key);
        }
        for tag in &delivered.tags {
            state.tags.remove(tag);
        }
        self.deliveries.fetch_add(1, Ordering::AcqRel);
        if state
            .bypass_all_until
            .is_some_and(|end| Instant::now() >= end)
        {
            state.bypass_all_until = None;
        }
        if state.keys.is_empty() && state.tags.is_empty() && state.bypass_all_until.is_none() {
            self.any.store(false, Ordering::Release);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_closes_after_a_good_probe() {
        let breaker = CircuitBreaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert_eq!(breaker.admit(), Admission::Allowed);
            assert_eq!(breaker.record_failure(Admission::Allowed), Transition::None);
        }
        assert_eq!(
            breaker.record_failure(Admission::Allowed),
            Transition::Opened
        );
        assert_eq!(breaker.admit(), Admission::Rejected);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.admit(), Admission::Probe);
        assert_eq!(breaker.admit(), Admission::Rejected, "one probe at a time");
        assert_eq!(breaker.record_failure(Admission::Probe), Transition::None);
        assert_eq!(
            breaker.admit(),
            Admission::Rejected,
            "a failed probe reopens"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.admit(), Admission::Probe);
        assert_eq!(breaker.record_success(Admission::Probe), Transition::Closed);
        assert_eq!(breaker.admit(), Admission::Allowed);
    }

    #[test]
    fn a_probe_dropped_before_its_outcome_is_given_back() {
        let breaker = CircuitBreaker::new(1, Duration::from_millis(10));
        breaker.record_failure(Admission::Allowed);
        std::thread::sleep(Duration::from_millis(15));
        let probe = breaker.admit();
        assert_eq!(probe, Admission::Probe);
        drop(breaker.probe_guard(probe));
        assert_eq!(breaker.admit(), Admission::Probe, "another call may probe");
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(60));
        breaker.record_failure(Admission::Allowed);
        breaker.record_success(Admission::Allowed);
        assert_eq!(breaker.record_failure(Admission::Allowed), Transition::None);
        assert_eq!(breaker.admit(), Admission::Allowed);
    }

    #[test]
    fn log_limiter_lets_one_line_per_interval_and_counts_the_rest() {
        let limiter = RateLimiter::new(Duration::from_millis(50));
        assert_eq!(limiter.permit(), Some(0));
        assert_eq!(limiter.permit(), None);
        assert_eq!(limiter.permit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(limiter.permit(), Some(2));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_limit_and_resets_on_success() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        assert!(backoff.permit());
        assert!(!backoff.permit(), "one attempt at a time");
        for _ in 0..5 {
            backoff.failed();
        }
        assert_eq!(backoff.wait_ms.load(Ordering::Relaxed), 40, "capped");
        let delay = backoff.delay();
        assert!(delay <= Duration::from_millis(40), "{delay:?}");
        assert!(!backoff.permit());
        backoff.succeeded();
        assert_eq!(backoff.wait_ms.load(Ordering::Relaxed), 10);
        std::thread::sleep(Duration::from_millis(15));
        assert!(backoff.permit());
        // An outage keeps the wait short: a failover's promoted replica must get the
        // invalidations soon; the wait grows past the ceiling only after refusals.
        for _ in 0..5 {
            backoff.failed_up_to(Duration::from_millis(20));
        }
        assert_eq!(
            backoff.wait_ms.load(Ordering::Relaxed),
            20,
            "outage ceiling"
        );
        backoff.failed();
        assert_eq!(backoff.wait_ms.load(Ordering::Relaxed), 40);
        backoff.failed_up_to(Duration::from_millis(20));
        assert_eq!(
            backoff.wait_ms.load(Ordering::Relaxed),
            20,
            "back under the ceiling"
        );
    }

    #[tokio::test]
    async fn pending_keys_and_tags_block_reads_until_delivered() {
        let pending = PendingInvalidations::new(10);
        let tag = |name: &str| vec![name.to_owned()];
        assert!(!pending.blocks("a", &[]));
        pending.add(&["a", "b"], &tag("user:1"), Duration::from_secs(60));
        assert!(pending.blocks("a", &[]) && pending.blocks("b", &[]) && !pending.blocks("c", &[]));
        assert!(pending.blocks("c", &tag("user:1")) && !pending.blocks("c", &tag("user:2")));
        let failed: Result<(), ()> = pending.deliver(|_| async { Err(()) }).await;
        assert!(failed.is_err());
        assert!(pending.blocks("a", &[]), "a failed delivery keeps the keys");
        pending
            .deliver(|all| async { Ok::<_, ()>(all) })
            .await
            .unwrap();
        assert!(pending.is_empty() && !pending.blocks("a", &tag("user:1")));
    }

    #[tokio::test]
    async fn overflow_bypasses_every_read_until_the_longest_ttl_passed() {
        let pending = PendingInvalidations::new(1);
        pending.add(&["a", "b"], &[], Duration::from_millis(30));
        assert!(
            pending.blocks("zzz", &[]),
            "unknown keys may be stale after an overflow"
        );
        pending
            .deliver(|all| async { Ok::<_, ()>(all) })
            .await
            .unwrap();
        assert!(pending.blocks("zzz", &[]));
        tokio::time::sleep(Duration::from_millis(40)).await;
        pending
            .deliver(|all| async { Ok::<_, ()>(all) })
            .await
            .unwrap();
        assert!(!pending.blocks("zzz", &[]) && pending.is_empty());
    }
}
