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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::adapt::{Output, Schema, Tags};
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
    if spec.learned.uncacheable.load(Ordering::Relaxed) {
        engine.record(metrics, Seen::Uncacheable);
        return body.await;
    }
    let fields = match spec.learned.fields.get() {
        Some(fields) => fields,
        None => match (schema.fields)() {
            Ok(fields) => fields,
            Err(error) => {
                if spec.learned.first_warning() {
                    tracing::warn!(prefix = spec.prefix, %error, "schema cannot be cached; this function always runs");
                }
                spec.learned.uncacheable.store(true, Ordering::Relaxed);
                engine.record(metrics, Seen::Uncacheable);
                return body.await;
            }
        },
    };
    let policy = Policy::of(engine, spec, &output);
    let call = Call {
        engine,
        spec,
        key: &key,
        fields,
        schema: &schema,
        output: &output,
        tags: &tags,
        policy,
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
}

impl Policy {
    fn of<S, R>(engine: &Engine, spec: &Spec, output: &Output<S, R>) -> Policy {
        let ms = |ms: Option<u64>| ms.map(Duration::from_millis);
        let resilience = &spec.resilience;
        let fail_safe = engine.fail_safe_for(ms(resilience.fail_safe_ms));
        Policy {
            grace: fail_safe,
            fail_safe: fail_safe.is_some(),
            throttle: engine.fail_safe_throttle_for(ms(resilience.fail_safe_throttle_ms)),
            hard_timeout: ms(resilience.hard_timeout_ms).filter(|_| output.timed_out.is_some()),
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
        if let (Some(near), Some(ops)) = (self.engine.near(), self.schema.near.as_ref()) {
            // The entry's tags, and this function's (which its fills register too).
            let mut tags = copyable.tags;
            merge_tags(&mut tags, &self.tags.of(value));
            // Never past the entry's fresh time: after it, only the fail-safe may read it.
            let ttl_ms = copyable
                .fresh_ms
                .map_or(copyable.ttl_ms, |fresh| fresh.min(copyable.ttl_ms));
            let copy = NearCopy {
                ttl: Duration::from_millis(ttl_ms),
                bytes: copyable.bytes,
                tags,
            };
            (ops.insert)(near, ticket, self.key, value, copy);
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

    /// Concurrent misses of this entry and schema through this handle load once; the one that
    /// loads first defers to another process that holds the entry's lease.
    async fn after_miss(&self, miss: Miss<R>, body: impl Future<Output = R>) -> R {
        let flight_key = format!("{}\u{0}{}", self.key, std::any::type_name::<S>());
        let flight = self.engine.flights().join(flight_key);
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
        if self.policy.fail_safe {
            self.engine.end_throttle(self.key);
        }
        let ttl = self.spec.ttl_secs.map(Duration::from_secs);
        // Failures are logged and counted inside; the caller gets its value regardless.
        if let Some(value) = (self.output.to_fill)(&result) {
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
                    self.store(fill, &mut lease).await;
                }
                Err(error) => {
                    if self.spec.learned.first_warning() {
                        tracing::warn!(key = self.key, %error, "value cannot be cached (said once for this function)");
                    }
                }
            }
        } else if let Some(absence) = &self.output.absent {
            if (absence.is)(&result) {
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
                self.store(fill, &mut lease).await;
            }
        }
        result
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
            match self.look_up(false).await {
                // Filled meanwhile (by another process), a cached absence, or the throttle's
                // copy (counted where it was found).
                Step::Done(result) => return result,
                Step::Load(Miss {
                    expired: Some(copy),
                    ..
                }) => {
                    self.engine
                        .served_stale(self.spec.prefix, self.key, because);
                    self.engine.throttle(self.key, self.policy.throttle);
                    return copy;
                }
                Step::Load(_) | Step::Bypass => {}
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

impl<S, R, T> Call<'_, S, R, T> {
    /// Stores a loaded value (or absence), counts how it went, and keeps the lease's promise
    /// when the value went in.
    async fn store(&self, fill: Loaded<'_>, lease: &mut Option<Lease>) {
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
            }
            Err(Error::CircuitOpen) => {}
            Err(_) => self.spec.metrics().error(),
        }
    }

    /// After the first encoding of the schema: the fields worth reading are those it writes
    /// (serde's list also holds aliases), and the value must decode back from what it wrote,
    /// or no read of this function could ever hit (a field skipped without `default`): then
    /// calls skip the cache instead of paying a read and a fill each, and it is said once.
    fn learn_from(&self, encoded: &[EncodedField]) {
        let learned = &self.spec.learned;
        if learned.fields.get().is_some() {
            return;
        }
        let written: Vec<&'static str> = self
            .fields
            .iter()
            .copied()
            .filter(|field| encoded.iter().any(|(name, _)| name == field))
            .collect();
        let fields: &'static [&'static str] = if written.len() == self.fields.len() {
            self.fields
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
        if let Err(error) = (self.schema.decode)(fields, &mut stored) {
            learned.uncacheable.store(true, Ordering::Relaxed);
            if learned.first_warning() {
                tracing::warn!(
                    prefix = self.spec.prefix,
                    schema = std::any::type_name::<S>(),
                    %error,
                    "the schema does not decode from what it stores (a field skipped by `skip_serializing_if` needs `#[serde(default)]`), so it could never be a hit; this function now skips the cache"
                );
            }
        }
        let _ = learned.fields.set(fields);
    }
}

/// Adds to `tags` those of `more` it lacks (a handful each: a scan beats a set).
fn merge_tags(tags: &mut Vec<String>, more: &[String]) {
    for tag in more {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
}
