//! `#[cached_get]`'s call, as a state machine: the near cache (synchronously, before any
//! future exists), then one read of the entry; a hit returns; a miss joins the single flight
//! of this handle, waits for another process's lease holder if the entry has one, loads by
//! running the function, and fills unless a write invalidated the entry since the read. Every
//! cache failure ends in running the function.
//!
//! ```text
//! near_hit ──hit──▶ value
//!    │miss
//! get_or_fill ─ lookup ──hit──▶ value
//!                 │ bypass (breaker open, pending invalidation, Redis error) ──▶ body
//!                 │ miss
//!            after_miss ─ single flight ─ leader: across_processes (lease) ─▶ load_and_fill
//!                                       └ follower: wait, lookup again ────▶ finish
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::adapt::{NearOps, Output, Schema, Tags};
use crate::codec::{EncodedField, FieldValue};
use crate::engine::{Copyable, Engine, Lease, Lookup, Seen, StaleBecause};
use crate::flight::{wait_for_leader, Flight};
use crate::function::Spec;
use crate::metrics::GetResult;
use crate::near::{NearCopy, Ticket};
use crate::store::{ClockRead, FillBody};
use crate::{Cache, Error, LoadTimeout};

/// `cached_get`'s first step: the value in the near cache, if it holds one. Synchronous and
/// on a borrowed handle, before the call's future exists: a near hit clones no handle and
/// builds, moves and drops no future (measured: a shared handle's reference count alone
/// cost a near hit a fifth of its time at 64 tasks on two cores).
pub fn near_hit<S, R>(
    cache: Option<&Cache>,
    spec: &'static Spec,
    key: Option<&str>,
    schema: &Schema<S>,
    output: &Output<S, R>,
) -> Option<R> {
    let (Some(cache), Some(key), Some(ops)) = (cache, key, schema.near.as_ref()) else {
        return None;
    };
    let engine = cache.engine();
    let near = engine.near()?;
    match (ops.get)(near, key) {
        Some(value) => {
            engine.record(spec.metrics(), Seen::NearHit);
            Some((output.from_hit)(value))
        }
        None => {
            engine.record(spec.metrics(), Seen::NearMiss);
            None
        }
    }
}

/// `cached_get`: answer from the cache, or run `body` and fill the cache with its value.
///
/// Never fails because of the cache: every cache problem ends in calling `body`.
#[allow(clippy::too_many_arguments)]
pub async fn get_or_fill<S, R, F, T>(
    cache: Option<Cache>,
    spec: &'static Spec,
    key: Option<String>,
    schema: Schema<S>,
    output: Output<S, R>,
    tags: Tags<T>,
    body: F,
) -> R
where
    F: Future<Output = R>,
    T: Fn(&S) -> Vec<String>,
{
    let Some(cache) = cache.filter(Cache::is_enabled) else {
        return body.await;
    };
    let engine = cache.engine();
    let metrics = spec.metrics();
    let Some(key) = key else {
        engine.record(metrics, Seen::NoKey);
        return body.await;
    };
    let Some(call) = Call::prepare(engine, spec, &key, &schema, &output, &tags) else {
        return body.await;
    };
    let started = metrics.start();
    match call.lookup().await {
        Step::Done(result) => {
            metrics.hit();
            metrics.finished(started, GetResult::Hit);
            result
        }
        Step::Bypass => {
            metrics.bypass();
            let result = body.await;
            metrics.finished(started, GetResult::Bypass);
            result
        }
        // The miss path's future is large (single flight, leases, the fill): boxed, it costs
        // only misses, and a hit's future stays small enough to be cheap to create and move.
        Step::Load(miss) => {
            metrics.miss();
            let span = tracing::debug_span!("cache.miss", prefix = spec.prefix, key = %key);
            let result = Box::pin(tracing::Instrument::instrument(
                call.after_miss(miss, body),
                span,
            ))
            .await;
            metrics.finished(started, GetResult::Miss);
            result
        }
    }
}

/// The schema's fields to read, once the function's first call learnt them; `None` when the
/// schema cannot be cached (the call runs the function).
pub(crate) fn fields_to_read<S>(
    engine: &Engine,
    spec: &'static Spec,
    schema: &Schema<S>,
) -> Option<&'static [&'static str]> {
    let metrics = spec.metrics();
    if spec.learned.uncacheable.load(Ordering::Relaxed) {
        engine.record(metrics, Seen::Uncacheable);
        return None;
    }
    if let Some(fields) = spec.learned.fields.get() {
        return Some(fields);
    }
    match (schema.fields)() {
        Ok(fields) => Some(fields),
        Err(error) => {
            if spec.learned.first_warning() {
                tracing::warn!(prefix = spec.prefix, %error, "schema cannot be cached; this function always runs");
            }
            spec.learned.uncacheable.store(true, Ordering::Relaxed);
            engine.record(metrics, Seen::Uncacheable);
            None
        }
    }
}

/// `cached_get` with `refresh_after` or `soft_timeout`: as [`get_or_fill`], with the function
/// given as `loader`, which makes its future from copies of the receiver and parameters, so
/// that it can also run after the call returned. A hit past the refresh point returns at once
/// and starts one background load (one per handle, by single flight; one across processes,
/// by the entry's lease), whose fill is stamp-checked as any. A miss that found an expired
/// copy loads in the background and waits `soft_timeout` for it; then it returns the copy
/// (read again) and the load goes on, filling when it completes.
#[allow(clippy::too_many_arguments)]
pub async fn get_or_fill_detached<S, R, T, L, Fut>(
    cache: Option<Cache>,
    spec: &'static Spec,
    key: Option<String>,
    schema: Schema<S>,
    output: Output<S, R>,
    tags: Tags<T>,
    loader: L,
) -> R
where
    S: Send + Sync + 'static,
    R: Send + 'static,
    T: Fn(&S) -> Vec<String> + Clone + Send + Sync + 'static,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let Some(cache) = cache.filter(Cache::is_enabled) else {
        return loader().await;
    };
    let engine = cache.engine();
    let metrics = spec.metrics();
    let Some(key) = key else {
        engine.record(metrics, Seen::NoKey);
        return loader().await;
    };
    let Some(call) = Call::prepare(engine, spec, &key, &schema, &output, &tags) else {
        return loader().await;
    };
    let started = metrics.start();
    match call.lookup().await {
        Step::Done(result) => {
            metrics.hit();
            metrics.finished(started, GetResult::Hit);
            if call.refresh_due.load(Ordering::Relaxed) {
                let parts = Parts::of(&call);
                tokio::spawn(parts.load_in_background(loader));
            }
            result
        }
        Step::Bypass => {
            metrics.bypass();
            let result = loader().await;
            metrics.finished(started, GetResult::Bypass);
            result
        }
        Step::Load(miss) => {
            metrics.miss();
            let span = tracing::debug_span!("cache.miss", prefix = spec.prefix, key = %key);
            let result = match call.policy.soft_timeout {
                Some(soft) if miss.expired.is_some() => {
                    Box::pin(tracing::Instrument::instrument(
                        call.soft_load(miss, soft, loader),
                        span,
                    ))
                    .await
                }
                _ => {
                    Box::pin(tracing::Instrument::instrument(
                        call.after_miss(miss, loader()),
                        span,
                    ))
                    .await
                }
            };
            metrics.finished(started, GetResult::Miss);
            result
        }
    }
}

/// What a load returned, for the fill: borrowing only the value, so that the fill's future
/// does not hold the whole return type (an `Err` need not be `Sync`).
#[derive(Clone, Copy)]
enum Outcome<'a, S> {
    Value(&'a S),
    /// An absence to cache (`cache_none`).
    Absent,
    /// Nothing to cache (`Err`, or `None` without `cache_none`).
    Nothing,
}

/// A call's context, owned, for a load that runs in a task of its own.
struct Parts<S, R, T> {
    engine: Arc<Engine>,
    spec: &'static Spec,
    key: String,
    fields: &'static [&'static str],
    schema: Schema<S>,
    output: Output<S, R>,
    tags: Tags<T>,
    policy: Policy,
}

/// How a background load ended.
enum Background<R, L> {
    /// Loaded (and filled unless an invalidation raced it).
    Loaded(R),
    /// The function failed (`Some`) or timed out (`None`).
    Failed(Option<R>),
    /// Not loaded: another call of this handle, or another process, is loading the entry,
    /// or Redis did not answer. The loader comes back, unused.
    Skipped(L),
}

impl<S, R, T: Clone> Parts<S, R, T> {
    fn of(call: &Call<'_, S, R, T>) -> Self {
        Parts {
            engine: Arc::clone(call.engine),
            spec: call.spec,
            key: call.key.to_owned(),
            fields: call.fields,
            schema: call.schema.clone(),
            output: call.output.clone(),
            tags: call.tags.clone(),
            policy: call.policy,
        }
    }
}

impl<S, R, T: Fn(&S) -> Vec<String>> Parts<S, R, T> {
    /// One load of the entry and its fill, which replaces the entry (a refresh must give it
    /// a new TTL, and a merge never extends one). Only one at a time: single flight in this
    /// handle, the entry's lease across processes (given back if the load fails or the task
    /// ends without a fill, whatever ends it).
    async fn load_in_background<L, Fut>(self, loader: L) -> Background<R, L>
    where
        L: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        let call = Call::with(
            &self.engine,
            self.spec,
            &self.key,
            self.fields,
            (&self.schema, &self.output, &self.tags),
            self.policy,
        );
        let Flight::Leader(_leading) = call.engine.flights().join(call.flight_key()) else {
            return Background::Skipped(loader);
        };
        let mut lease = match call.engine.acquire_lease(call.key).await {
            Ok(Some(lease)) => Some(lease),
            Ok(None) | Err(_) => return Background::Skipped(loader),
        };
        let read_at = Instant::now();
        let Ok(seen) = call.engine.clock(call.key, call.spec.tagged).await else {
            return Background::Skipped(loader);
        };
        match call.load(loader()).await {
            Ok(result) => {
                let outcome = call.outcome(&result);
                if call
                    .fill_loaded(outcome, seen, read_at, true, &mut lease)
                    .await
                {
                    call.engine.count_refresh();
                }
                Background::Loaded(result)
            }
            Err(failed) => Background::Failed(failed),
        }
    }
}

/// What a miss loaded and stores, for [`Call::store`] (the store's own `Fill` adds the keys).
struct Loaded<'a> {
    body: FillBody<'a>,
    ttl: Duration,
    seen: ClockRead,
    read_at: Instant,
    tags: &'a [String],
    /// The entry's tags went stale: replace it rather than merge.
    replace: bool,
    /// Record the entry's fresh time, and keep it this long after as an expired copy.
    grace: Option<Duration>,
}

/// How one function meets a failing or slow database: its attribute arguments over the
/// handle's defaults.
#[derive(Clone, Copy)]
struct Policy {
    /// `Some`: fills record when the entry stops being fresh and keep it this long after
    /// (the fail-safe's grace; zero when only a refresh needs the fresh time).
    grace: Option<Duration>,
    /// A failed or timed-out load returns the expired copy, if one is left.
    fail_safe: bool,
    /// After a fail-safe answer, this process answers the entry's misses with the copy for
    /// this long without calling the function.
    throttle: Duration,
    /// The longest the function may run; then the call returns the copy or the user's
    /// timeout error (only when the return type converts [`LoadTimeout`]).
    hard_timeout: Option<Duration>,
    /// How long a miss that found an expired copy waits for the load before returning the
    /// copy (`get_or_fill_detached` only).
    soft_timeout: Option<Duration>,
    /// `refresh_after`: how long before the end of its fresh time a hit starts a refresh
    /// (the TTL times one minus the fraction; `get_or_fill_detached` only).
    refresh_window: Option<Duration>,
}

impl Policy {
    fn of<S, R>(engine: &Engine, spec: &Spec, output: &Output<S, R>) -> Policy {
        let ms = |ms: Option<u64>| ms.map(Duration::from_millis);
        let resilience = &spec.resilience;
        let fail_safe = engine.fail_safe_for(ms(resilience.fail_safe_ms));
        let ttl = engine.ttl_or_default(spec.ttl_secs.map(Duration::from_secs));
        let refresh_window = resilience
            .refresh_after
            .filter(|fraction| (0.0..1.0).contains(fraction))
            .map(|fraction| ttl.mul_f64(1.0 - fraction));
        Policy {
            // A refresh needs the fresh time recorded, with or without a fail-safe.
            grace: fail_safe.or(refresh_window.map(|_| Duration::ZERO)),
            fail_safe: fail_safe.is_some(),
            throttle: engine.fail_safe_throttle_for(ms(resilience.fail_safe_throttle_ms)),
            hard_timeout: ms(resilience.hard_timeout_ms).filter(|_| output.timed_out.is_some()),
            soft_timeout: ms(resilience.soft_timeout_ms).filter(|_| fail_safe.is_some()),
            refresh_window,
        }
    }
}

/// One `cached_get` call's context, shared by its steps.
struct Call<'a, S, R, T> {
    engine: &'a Arc<Engine>,
    spec: &'static Spec,
    key: &'a str,
    fields: &'static [&'static str],
    schema: &'a Schema<S>,
    output: &'a Output<S, R>,
    tags: &'a Tags<T>,
    policy: Policy,
    /// A hit found the entry past its refresh point (`refresh_after`).
    refresh_due: AtomicBool,
}

impl<'a, S, R, T> Call<'a, S, R, T> {
    /// The call's context, or `None` when the schema cannot be cached (the call runs the
    /// function).
    fn prepare(
        engine: &'a Arc<Engine>,
        spec: &'static Spec,
        key: &'a str,
        schema: &'a Schema<S>,
        output: &'a Output<S, R>,
        tags: &'a Tags<T>,
    ) -> Option<Self> {
        let fields = fields_to_read(engine, spec, schema)?;
        let policy = Policy::of(engine, spec, output);
        Some(Call::with(
            engine,
            spec,
            key,
            fields,
            (schema, output, tags),
            policy,
        ))
    }

    fn with(
        engine: &'a Arc<Engine>,
        spec: &'static Spec,
        key: &'a str,
        fields: &'static [&'static str],
        (schema, output, tags): (&'a Schema<S>, &'a Output<S, R>, &'a Tags<T>),
        policy: Policy,
    ) -> Self {
        Call {
            engine,
            spec,
            key,
            fields,
            schema,
            output,
            tags,
            policy,
            refresh_due: AtomicBool::new(false),
        }
    }
}

enum Step<R> {
    /// Answered from the cache.
    Done(R),
    /// Do not use the cache for this call.
    Bypass,
    /// Missed: load, then fill.
    Load(Miss<R>),
}

/// What a miss read: the fill passes `seen` back and must start before the lease time ends.
struct Miss<R> {
    seen: u64,
    read_at: Instant,
    contention: Contention,
    /// The entry's tags went stale: the fill replaces it.
    stale: bool,
    /// This call's lease on the entry, given back on drop unless the fill went in.
    lease: Option<Lease>,
    /// The entry's expired copy, as the function would return it, if the read found one
    /// that no invalidation removed (what the fail-safe may answer with).
    expired: Option<R>,
}

/// How a miss looked to other processes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contention {
    /// Absent or incomplete: load.
    None,
    /// Freshly invalidated, nobody loading yet: take the lease, then load.
    Tombstone,
    /// Another caller holds the lease: wait for its fill.
    Leased,
}

/// How often a caller waiting for another process's fill reads the entry again.
const LEASE_POLL: Duration = Duration::from_millis(5);

impl<S, R, T: Fn(&S) -> Vec<String>> Call<'_, S, R, T> {
    async fn lookup(&self) -> Step<R> {
        self.look_up(true).await
    }

    /// [`lookup`](Self::lookup); `count_misses` off while polling for another's fill.
    /// A bypass is counted for the call's first lookup only (`count_misses`): one call
    /// counts once, however often it polls.
    async fn look_up(&self, count_misses: bool) -> Step<R> {
        let bypass = || {
            if count_misses {
                self.engine.count_bypass();
            }
            Step::Bypass
        };
        if self.engine.reads_blocked(self.key, &[]).await {
            return bypass();
        }
        let tag_mark = self.engine.tag_delivery_mark();
        // Taken before the read is sent: an invalidation arriving meanwhile keeps the reply
        // out of the near cache.
        let ticket = self.near_ticket();
        let read_at = Instant::now();
        match self
            .engine
            .read_entry(
                self.key,
                self.fields,
                self.schema.decode,
                count_misses,
                &self.tags.from_parameters,
            )
            .await
        {
            Ok(Lookup::Hit(value, copyable)) => {
                // An undelivered tag invalidation may concern this entry: check its tags. A
                // delivery that completed after the read began (in the background, or the one
                // `reads_blocked` itself may run) may have been one of them, and the entry was
                // read before it: then the read is not trusted either.
                if (tag_mark.is_some() || self.engine.tag_invalidations_pending())
                    && !self.tag_checked(&value, &copyable.tags, tag_mark).await
                {
                    return bypass();
                }
                if let (Some(window), Some(fresh)) = (self.policy.refresh_window, copyable.fresh_ms)
                {
                    if u128::from(fresh) < window.as_millis() {
                        self.refresh_due.store(true, Ordering::Relaxed);
                    }
                }
                if let (Some(ticket), 1..) = (ticket, copyable.ttl_ms) {
                    self.keep_near(ticket, &value, copyable);
                }
                Step::Done((self.output.from_hit)(value))
            }
            Ok(Lookup::Absent { seen }) => match &self.output.absent {
                Some(absence) => {
                    self.engine.count_hit();
                    Step::Done((absence.value)())
                }
                // Another function caches absence here; this one loads and overwrites it.
                None => {
                    if count_misses {
                        self.engine.count_miss();
                    }
                    let contention = Contention::None;
                    Step::Load(Miss {
                        seen,
                        read_at,
                        contention,
                        stale: false,
                        lease: None,
                        expired: None,
                    })
                }
            },
            Ok(Lookup::Miss {
                seen,
                tombstone,
                leased,
                stale,
                expired,
            }) => {
                let contention = match (leased, tombstone) {
                    (true, _) => Contention::Leased,
                    (false, true) => Contention::Tombstone,
                    (false, false) => Contention::None,
                };
                let expired = match expired {
                    Some((value, copyable)) if self.policy.fail_safe => {
                        // As for a hit: an undelivered tag invalidation may concern it.
                        if (tag_mark.is_some() || self.engine.tag_invalidations_pending())
                            && !self.tag_checked(&value, &copyable.tags, tag_mark).await
                        {
                            None
                        } else if !self.policy.throttle.is_zero()
                            && self.engine.is_throttled(self.key)
                        {
                            self.engine.served_stale(
                                self.spec.prefix,
                                self.key,
                                StaleBecause::Throttled,
                            );
                            return Step::Done((self.output.from_hit)(value));
                        } else {
                            Some((self.output.from_hit)(value))
                        }
                    }
                    _ => None,
                };
                Step::Load(Miss {
                    seen,
                    read_at,
                    contention,
                    stale,
                    lease: None,
                    expired,
                })
            }
            // Redis did not answer: filling would most likely fail too.
            Err(Error::CircuitOpen) => bypass(),
            Err(_) => {
                self.spec.metrics().error();
                Step::Bypass
            }
        }
    }

    /// Whether a value read while tag invalidations were undelivered (or delivered during
    /// the read, after `tag_mark`) may be trusted: none of them concerns its tags.
    async fn tag_checked(&self, value: &S, entry_tags: &[String], tag_mark: Option<u64>) -> bool {
        let mut tags = self.tags.of(value);
        merge_tags(&mut tags, entry_tags);
        if self.engine.reads_blocked(self.key, &tags).await {
            return false;
        }
        // Not counted here: the caller counts the call's bypass once.
        if tag_mark.is_some_and(|mark| self.engine.delivered_since(mark)) {
            return false;
        }
        true
    }

    /// The near cache's ticket for this call's read, if the near cache may hold its schema.
    fn near_ticket(&self) -> Option<Ticket> {
        self.schema.near.as_ref()?;
        self.engine.near()?.ticket(self.key)
    }

    /// Keeps a value read from Redis in the near cache, if `ticket` says no invalidation
    /// crossed the read.
    fn keep_near(&self, ticket: Ticket, value: &S, copyable: Copyable) {
        if let Some(ops) = self.schema.near.as_ref() {
            let tags = self.tags.of(value);
            keep_near(
                self.engine,
                ops,
                ticket,
                self.key,
                value,
                copyable,
                &tags,
                self.policy.refresh_window,
            );
        }
    }

    /// Herds form where a hot entry was just invalidated. There, the first miss takes a lease
    /// and loads; the others, in any process, see the lease and wait (bounded by the lease
    /// wait) for its fill instead of all querying the database.
    async fn across_processes(&self, mut miss: Miss<R>) -> Step<R> {
        match miss.contention {
            Contention::None => return Step::Load(miss),
            Contention::Tombstone => match self.engine.acquire_lease(self.key).await {
                Ok(None) => {}
                Ok(Some(lease)) => {
                    miss.lease = Some(lease);
                    return Step::Load(miss);
                }
                // Redis did not answer: load.
                Err(_) => return Step::Load(miss),
            },
            Contention::Leased => {}
        }
        self.engine.record(self.spec.metrics(), Seen::Coalesced);
        let deadline = Instant::now() + self.engine.lease_wait();
        while Instant::now() < deadline {
            tokio::time::sleep(LEASE_POLL).await;
            match self.look_up(false).await {
                Step::Load(next) if next.contention == Contention::Leased => miss = next,
                // Filled, failed, or the lease ended without a fill: stop waiting.
                step => return step,
            }
        }
        Step::Load(miss)
    }

    /// The single flight's key: this entry and schema.
    fn flight_key(&self) -> String {
        format!("{}\u{0}{}", self.key, std::any::type_name::<S>())
    }

    /// Concurrent misses of this entry and schema through this handle load once; the one that
    /// loads first defers to another process that holds the entry's lease.
    async fn after_miss(&self, miss: Miss<R>, body: impl Future<Output = R>) -> R {
        let flight = self.engine.flights().join(self.flight_key());
        let result = match flight {
            // The guard lives until the fill is done: followers wake to a filled entry.
            Flight::Leader(_leading) => self.finish(self.across_processes(miss).await, body).await,
            Flight::Follower(done) => {
                self.engine.record(self.spec.metrics(), Seen::Coalesced);
                wait_for_leader(done, self.engine.flight_wait()).await;
                self.finish(self.lookup().await, body).await
            }
        };
        result
    }

    async fn finish(&self, step: Step<R>, body: impl Future<Output = R>) -> R {
        match step {
            Step::Done(result) => result,
            Step::Bypass => body.await,
            Step::Load(miss) => self.load_and_fill(body, miss).await,
        }
    }

    async fn load_and_fill(&self, body: impl Future<Output = R>, miss: Miss<R>) -> R {
        let Miss {
            seen,
            read_at,
            stale,
            mut lease,
            ..
        } = miss;
        // The fill is checked against every stamp that may concern the entry: its own, its
        // bucket's in the clock (which outlives an evicted tombstone) and its tags'. Those
        // given before this load began are at most the clock's `now`, read here, before
        // loading; so only invalidations that came after the read refuse the fill.
        let Ok(clock) = self.engine.clock(self.key, self.spec.tagged).await else {
            // Without the clock a fill could not be checked: load, and leave the cache be.
            return body.await;
        };
        let seen = ClockRead {
            entry: clock.entry.max(seen),
            tags: clock.tags,
        };
        let result = match self.load(body).await {
            Ok(result) => result,
            Err(failed) => return self.after_failure(failed).await,
        };
        let outcome = self.outcome(&result);
        self.fill_loaded(outcome, seen, read_at, stale, &mut lease)
            .await;
        result
    }

    /// What a load returned, as far as the cache is concerned.
    fn outcome<'r>(&self, result: &'r R) -> Outcome<'r, S> {
        match (self.output.to_fill)(result) {
            Some(value) => Outcome::Value(value),
            None if self
                .output
                .absent
                .as_ref()
                .is_some_and(|absence| (absence.is)(result)) =>
            {
                Outcome::Absent
            }
            None => Outcome::Nothing,
        }
    }

    /// Caches what a load returned (a value, or an absence with `cache_none`), checked
    /// against the clock read `seen` before the load; `true` if it went in. `replace`: the
    /// entry's other fields are dropped (its tags went stale, or a refresh gives it a new
    /// TTL).
    async fn fill_loaded(
        &self,
        loaded: Outcome<'_, S>,
        seen: ClockRead,
        read_at: Instant,
        replace: bool,
        lease: &mut Option<Lease>,
    ) -> bool {
        if self.policy.fail_safe {
            self.engine.end_throttle(self.key);
        }
        let stale = replace;
        let ttl = self.spec.ttl_secs.map(Duration::from_secs);
        // Failures are logged and counted inside; the caller gets its value regardless.
        if let Outcome::Value(value) = loaded {
            match (self.schema.encode)(value) {
                Ok(fields) if self.engine.check_size(&fields).is_err() => {
                    if self.spec.learned.first_warning() {
                        tracing::warn!(
                            key = self.key,
                            "value over max_value_size is not cached (said once for this function)"
                        );
                    }
                }
                Ok(fields) => {
                    self.learn_from(&fields);
                    let ttl = self.engine.ttl_or_default(ttl);
                    let tags = self.tags.of(value);
                    let body = FillBody::Fields(&fields);
                    let fill = Loaded {
                        body,
                        ttl,
                        seen,
                        read_at,
                        tags: &tags,
                        replace: stale,
                        grace: self.policy.grace,
                    };
                    return self.store(fill, lease).await;
                }
                Err(error) => {
                    if self.spec.learned.first_warning() {
                        tracing::warn!(key = self.key, %error, "value cannot be cached (said once for this function)");
                    }
                }
            }
        } else if let (Outcome::Absent, Some(_)) = (loaded, &self.output.absent) {
            {
                let ttl = self
                    .spec
                    .none_ttl_secs
                    .map_or_else(|| self.engine.negative_ttl(), Duration::from_secs);
                let tags = &self.tags.from_parameters;
                let fill = Loaded {
                    body: FillBody::Absent,
                    ttl,
                    seen,
                    read_at,
                    tags,
                    replace: stale,
                    // Absences are not kept for the fail-safe: a copy is a value.
                    grace: None,
                };
                return self.store(fill, lease).await;
            }
        }
        false
    }
}

impl<S, R, T: Fn(&S) -> Vec<String>> Call<'_, S, R, T> {
    /// Runs the function, within `hard_timeout` if it has one. `Err`: it failed (`Err`
    /// inside, or `None`: it timed out), and the fail-safe may answer instead.
    async fn load(&self, body: impl Future<Output = R>) -> Result<R, Option<R>> {
        let result = match self.policy.hard_timeout {
            Some(limit) => match tokio::time::timeout(limit, body).await {
                Ok(result) => result,
                Err(_) => {
                    self.engine.count_loader_timeout();
                    return Err(None);
                }
            },
            None => body.await,
        };
        if (self.output.failed)(&result) {
            return Err(Some(result));
        }
        Ok(result)
    }

    /// After the function failed (`Some(error)`) or timed out (`None`): the entry's expired
    /// copy if the fail-safe is on and one is left, read again now, so that an invalidation
    /// that came during the load is never undone; else the failure (for a timeout, the
    /// user's conversion of [`LoadTimeout`]).
    async fn after_failure(&self, failed: Option<R>) -> R {
        if self.policy.fail_safe {
            let because = if failed.is_some() {
                StaleBecause::Failed
            } else {
                StaleBecause::TimedOut
            };
            if let Some(answer) = self.copy_now(because).await {
                self.engine.throttle(self.key, self.policy.throttle);
                return answer;
            }
        }
        match failed {
            Some(failure) => failure,
            None => {
                let after = self.policy.hard_timeout.unwrap_or_default();
                // `hard_timeout` is only in the policy when the conversion is there.
                let timed_out = self
                    .output
                    .timed_out
                    .expect("hard_timeout has a conversion");
                timed_out(LoadTimeout { after })
            }
        }
    }
}

impl<S, R, T: Fn(&S) -> Vec<String>> Call<'_, S, R, T> {
    /// What the entry answers now, read again: a value filled meanwhile (by another call or
    /// process), a cached absence, or the expired copy (counted as served `because`); `None`
    /// when it holds none of them, e.g. because an invalidation removed the copy.
    async fn copy_now(&self, because: StaleBecause) -> Option<R> {
        match self.look_up(false).await {
            // The throttle's copy is counted where it was found.
            Step::Done(result) => Some(result),
            Step::Load(Miss {
                expired: Some(copy),
                ..
            }) => {
                self.engine
                    .served_stale(self.spec.prefix, self.key, because);
                Some(copy)
            }
            Step::Load(_) | Step::Bypass => None,
        }
    }

    /// A miss that found an expired copy, with `soft_timeout`: the load runs in a task of its
    /// own (filling when it completes, whoever waits), and the call waits `soft` for it.
    /// Then it returns the copy as Redis holds it now; if an invalidation removed it, it
    /// waits for the load after all. Another call or process already loading the entry: the
    /// copy at once.
    async fn soft_load<L, Fut>(&self, miss: Miss<R>, soft: Duration, loader: L) -> R
    where
        S: Send + Sync + 'static,
        R: Send + 'static,
        T: Clone + Send + Sync + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let mut task = tokio::spawn(Parts::of(self).load_in_background(loader));
        let ended = match tokio::time::timeout(soft, &mut task).await {
            Ok(ended) => ended,
            Err(_) => {
                self.engine.count_loader_timeout();
                if let Some(answer) = self.copy_now(StaleBecause::TimedOut).await {
                    return answer;
                }
                task.await
            }
        };
        match ended {
            Ok(Background::Loaded(result)) => result,
            Ok(Background::Failed(failed)) => self.after_failure(failed).await,
            Ok(Background::Skipped(loader)) => match miss.expired {
                Some(copy) => {
                    self.engine
                        .served_stale(self.spec.prefix, self.key, StaleBecause::Loading);
                    copy
                }
                None => self.after_miss(miss, loader()).await,
            },
            // The function panicked in the task: the caller sees the panic, as without it.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => panic!("the runtime shut down while the function ran"),
        }
    }
}

impl<S, R, T> Call<'_, S, R, T> {
    /// Stores a loaded value (or absence), counts how it went, and keeps the lease's promise
    /// when the value went in.
    async fn store(&self, fill: Loaded<'_>, lease: &mut Option<Lease>) -> bool {
        let span = tracing::debug_span!("cache.fill", prefix = self.spec.prefix, key = self.key);
        let filled = tracing::Instrument::instrument(
            self.engine.fill_after_miss(
                self.key,
                fill.body,
                fill.ttl,
                fill.seen,
                fill.read_at,
                fill.tags,
                fill.replace,
                fill.grace,
            ),
            span,
        )
        .await;
        match filled {
            Ok(stored) => {
                self.spec.metrics().fill(stored);
                if let (true, Some(lease)) = (stored, lease) {
                    lease.filled();
                }
                stored
            }
            Err(Error::CircuitOpen) => false,
            Err(_) => {
                self.spec.metrics().error();
                false
            }
        }
    }

    /// See [`learn_from`].
    fn learn_from(&self, encoded: &[EncodedField]) {
        learn_from(self.spec, self.fields, self.schema, encoded);
    }
}

/// After the first encoding of the schema: the fields worth reading are those it writes
/// (serde's list also holds aliases), and the value must decode back from what it wrote,
/// or no read of this function could ever hit (a field skipped without `default`): then
/// calls skip the cache instead of paying a read and a fill each, and it is said once.
pub(crate) fn learn_from<S>(
    spec: &'static Spec,
    asked: &'static [&'static str],
    schema: &Schema<S>,
    encoded: &[EncodedField],
) {
    let learned = &spec.learned;
    if learned.fields.get().is_some() {
        return;
    }
    let written: Vec<&'static str> = asked
        .iter()
        .copied()
        .filter(|field| encoded.iter().any(|(name, _)| name == field))
        .collect();
    let fields: &'static [&'static str] = if written.len() == asked.len() {
        asked
    } else {
        // Once per function and process: a few names.
        Box::leak(written.into_boxed_slice())
    };
    let mut values: Vec<FieldValue> = fields
        .iter()
        .filter_map(|field| {
            encoded
                .iter()
                .find(|(name, _)| name == field)
                .map(|(_, value)| value.clone())
        })
        .collect();
    let mut stored = values.iter_mut().map(FieldValue::as_stored);
    if let Err(error) = (schema.decode)(fields, &mut stored) {
        learned.uncacheable.store(true, Ordering::Relaxed);
        if learned.first_warning() {
            tracing::warn!(
                prefix = spec.prefix,
                schema = std::any::type_name::<S>(),
                %error,
                "the schema does not decode from what it stores (a field skipped by `skip_serializing_if` needs `#[serde(default)]`), so it could never be a hit; this function now skips the cache"
            );
        }
    }
    let _ = learned.fields.set(fields);
}

/// Keeps `value`, read from Redis at `key`, in the near cache if `ticket` says no
/// invalidation crossed the read: with the entry's tags and the function's (`tags`, which
/// its fills register too), never past the entry's fresh time, nor past the refresh point
/// (`refresh_window` before it), so that a hot entry's reads reach Redis, where one of them
/// starts the refresh.
#[allow(clippy::too_many_arguments)]
pub(crate) fn keep_near<S>(
    engine: &Engine,
    ops: &NearOps<S>,
    ticket: Ticket,
    key: &str,
    value: &S,
    copyable: Copyable,
    tags: &[String],
    refresh_window: Option<Duration>,
) {
    let Some(near) = engine.near() else {
        return;
    };
    let mut copy_tags = copyable.tags;
    merge_tags(&mut copy_tags, tags);
    // After the fresh time only the fail-safe may read the entry.
    let window_ms = refresh_window.map_or(0, |window| {
        u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
    });
    let ttl_ms = copyable.fresh_ms.map_or(copyable.ttl_ms, |fresh| {
        fresh.saturating_sub(window_ms).min(copyable.ttl_ms)
    });
    if ttl_ms == 0 {
        return;
    }
    let copy = NearCopy {
        ttl: Duration::from_millis(ttl_ms),
        bytes: copyable.bytes,
        tags: copy_tags,
    };
    (ops.insert)(near, ticket, key, value, copy);
}

/// Adds to `tags` those of `more` it lacks (a handful each: a scan beats a set).
pub(crate) fn merge_tags(tags: &mut Vec<String>, more: &[String]) {
    for tag in more {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
}
