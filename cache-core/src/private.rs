//! What the macros expand to. Not public API: hidden from the docs, outside semver.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::{schema_field_names, Copyable, Lease, Lookup};
use crate::codec::{self, DecodeFn, EncodedField, FieldValue};
use crate::flight::{wait_for_leader, Flight};
use crate::metrics::{GetResult, PrefixMetrics};
use crate::near::{Near, NearCopy, Ticket};
use crate::store::{ClockRead, FillBody};
use crate::{Cache, Error};

/// The constant part of one annotated function.
#[derive(Debug)]
pub struct Spec {
    /// The entry prefix (checked by the macro: non-empty, no `:`, no leading `__`).
    pub prefix: &'static str,
    /// `ttl = …` in seconds, if given.
    pub ttl_secs: Option<u64>,
    /// `none_ttl = …` in seconds, if given: the TTL of cached absences.
    pub none_ttl_secs: Option<u64>,
    /// `tags = […]` is not empty.
    pub tagged: bool,
    /// What the runtime learns about the function as it runs (see [`Learned`]).
    pub learned: Learned,
}

/// What one annotated function's calls learn about its schema, once per process: the field
/// list worth reading, whether the schema can ever be a hit, and whether its misuse was
/// already reported. Lives in the function's `static` [`Spec`].
#[derive(Debug)]
pub struct Learned {
    /// The schema's fields that its `Serialize` writes: serde's list of a struct's fields
    /// (from `Deserialize`) also holds every `#[serde(alias)]`, which is never stored, so a
    /// read of the whole list could never be complete.
    fields: OnceLock<&'static [&'static str]>,
    /// The schema's own fill does not decode back (a field skipped by `skip_serializing_if`
    /// without `default`, …): reading it would never hit, so calls skip the cache.
    uncacheable: AtomicBool,
    /// Set once this function's misuse was logged: one warning per function per process.
    warned: AtomicBool,
    /// This prefix's metrics, registered on the first call.
    #[cfg(feature = "metrics")]
    metrics: OnceLock<PrefixMetrics>,
}

impl Learned {
    /// Nothing learnt yet.
    #[allow(clippy::new_without_default)] // used in a `static`: must be `const`
    pub const fn new() -> Self {
        Learned {
            fields: OnceLock::new(),
            uncacheable: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            #[cfg(feature = "metrics")]
            metrics: OnceLock::new(),
        }
    }

    /// Whether this is the first warning of this function in this process.
    fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

impl Spec {
    /// This function's metrics (feature `metrics`; nothing without it).
    #[cfg(feature = "metrics")]
    fn metrics(&self) -> &PrefixMetrics {
        self.learned
            .metrics
            .get_or_init(|| PrefixMetrics::new(self.prefix))
    }

    #[cfg(not(feature = "metrics"))]
    #[inline(always)]
    fn metrics(&self) -> &'static PrefixMetrics {
        &PrefixMetrics
    }
}

/// The handle a call uses when the macro has no `cache = …`: the installed one.
pub fn installed() -> Option<Cache> {
    crate::cache::installed()
}

/// A value an entry key is made of (a parameter, or a field of one), for the choice
/// [`OptionalKey`] and [`PlainKey`] make by autoref specialization.
#[derive(Debug)]
pub struct KeyPart<'a, T>(pub &'a T);

/// An `Option` in a key: `None` bypasses the cache.
pub trait OptionalKey<'a> {
    /// The value to display in the key, `None` for `None`.
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)>;
}

impl<'a, T: Display> OptionalKey<'a> for &&KeyPart<'a, Option<T>> {
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)> {
        self.0.as_ref().map(|value| value as &dyn Display)
    }
}

impl<'a, 'b: 'a, T: Display> OptionalKey<'a> for &&KeyPart<'a, &'b Option<T>> {
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)> {
        self.0.as_ref().map(|value| value as &dyn Display)
    }
}

/// Any other value in a key: as it displays.
#[diagnostic::on_unimplemented(
    message = "a cache key is made of values that implement `Display` (or `Option`s of them)",
    label = "this key reads a value that does not implement `Display`"
)]
pub trait PlainKey<'a> {
    /// The value to display in the key.
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)>;
}

impl<'a, T: Display> PlainKey<'a> for &KeyPart<'a, T> {
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)> {
        Some(self.0)
    }
}

/// Builds the entry key before the body takes ownership of the parameters.
pub fn entry_key<K: Display + ?Sized>(
    cache: Option<&Cache>,
    spec: &Spec,
    key: &K,
) -> Option<String> {
    cache.map(|cache| cache.key(spec.prefix, key))
}

/// The return types a `cached_get` function may have, for its schema `S`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not carry the schema `{S}`",
    label = "a `#[cached_get(schema = {S})]` function must return `{S}`, `Option<{S}>`, `Result<{S}, E>` or `Result<Option<{S}>, E>`"
)]
pub trait CachedOutput<S>: Sized {
    /// The value to return on a hit.
    fn from_hit(value: S) -> Self;
    /// The value to cache, if this outcome is cacheable (`None` and `Err` are not).
    fn to_fill(&self) -> Option<&S>;
}

/// The return types that can say "absent", for `cache_none = true`.
#[diagnostic::on_unimplemented(
    message = "`cache_none` needs a return type that can be absent, not `{Self}`",
    label = "with `cache_none = true` the function must return `Option<{S}>` or `Result<Option<{S}>, E>`"
)]
pub trait AbsentOutput<S>: CachedOutput<S> {
    /// The value to return on a cached absence.
    fn absent() -> Self;
    /// Whether this outcome is an absence worth caching (`None`, not `Err`).
    fn is_absent(&self) -> bool;
}

impl<S> CachedOutput<S> for S {
    fn from_hit(value: S) -> Self {
        value
    }
    fn to_fill(&self) -> Option<&S> {
        Some(self)
    }
}

impl<S> CachedOutput<S> for Option<S> {
    fn from_hit(value: S) -> Self {
        Some(value)
    }
    fn to_fill(&self) -> Option<&S> {
        self.as_ref()
    }
}

impl<S> AbsentOutput<S> for Option<S> {
    fn absent() -> Self {
        None
    }
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

impl<S, E> CachedOutput<S> for Result<S, E> {
    fn from_hit(value: S) -> Self {
        Ok(value)
    }
    fn to_fill(&self) -> Option<&S> {
        self.as_ref().ok()
    }
}

impl<S, E> CachedOutput<S> for Result<Option<S>, E> {
    fn from_hit(value: S) -> Self {
        Ok(Some(value))
    }
    fn to_fill(&self) -> Option<&S> {
        self.as_ref().ok().and_then(Option::as_ref)
    }
}

impl<S, E> AbsentOutput<S> for Result<Option<S>, E> {
    fn absent() -> Self {
        Ok(None)
    }
    fn is_absent(&self) -> bool {
        matches!(self, Ok(None))
    }
}

/// How to store one schema type. Only constructible when the schema has serde's traits:
/// that bound is checked once, where the macro names the schema, and nowhere else, so a
/// schema without serde gives one error per missing trait, at the schema.
#[derive(Debug)]
pub struct Schema<S> {
    fields: fn() -> Result<&'static [&'static str], Error>,
    decode: DecodeFn<S>,
    encode: fn(&S) -> Result<Vec<EncodedField>, Error>,
    /// How to keep values of `S` in the near cache; `None` when `S` cannot be (not `Clone`,
    /// `Send`, `Sync` and `'static`): its calls then always ask Redis.
    near: Option<NearOps<S>>,
}

/// The codec of schema `S`.
pub fn schema<S: Serialize + DeserializeOwned>() -> Schema<S> {
    Schema {
        fields: schema_field_names::<S>,
        decode: codec::decode::<S>,
        encode: codec::encode::<S>,
        near: None,
    }
}

impl<S> Schema<S> {
    /// The near cache's operations for `S`, as [`NearProbe`] found them.
    #[must_use]
    pub fn with_near(mut self, near: Option<NearOps<S>>) -> Self {
        self.near = near;
        self
    }
}

/// The near cache's operations on values of one schema type, monomorphized where the type
/// is known to be `Clone + Send + Sync + 'static`.
#[derive(Debug)]
pub struct NearOps<S> {
    get: fn(&Near, &str) -> Option<S>,
    insert: fn(&Near, Ticket, &str, &S, NearCopy),
}

/// Finds, at the macro's call site where the schema type is concrete, whether its values can
/// live in the near cache: `(&&NearProbe::<S>::NEW).near_ops()` picks [`NearCapable`] when
/// `S: Clone + Send + Sync + 'static`, else [`NearIncapable`] (autoref specialization).
#[derive(Debug)]
pub struct NearProbe<S>(std::marker::PhantomData<S>);

impl<S> NearProbe<S> {
    /// The probe.
    pub const NEW: Self = NearProbe(std::marker::PhantomData);
}

/// [`NearProbe`]'s case for types the near cache can hold.
pub trait NearCapable<S> {
    /// The operations.
    fn near_ops(&self) -> Option<NearOps<S>>;
}

impl<S: Clone + Send + Sync + 'static> NearCapable<S> for &NearProbe<S> {
    fn near_ops(&self) -> Option<NearOps<S>> {
        Some(NearOps {
            get: |near, key| near.get::<S>(key, S::clone),
            insert: |near, ticket, key, value, copy| {
                near.insert(ticket, key, value.clone(), copy);
            },
        })
    }
}

/// [`NearProbe`]'s fallback: the near cache cannot hold this type.
pub trait NearIncapable<S> {
    /// `None`.
    fn near_ops(&self) -> Option<NearOps<S>>;
}

impl<S> NearIncapable<S> for NearProbe<S> {
    fn near_ops(&self) -> Option<NearOps<S>> {
        None
    }
}

/// How a return type carries the schema; only constructible when it does (see [`Schema`]).
#[derive(Debug)]
pub struct Output<S, R> {
    from_hit: fn(S) -> R,
    to_fill: fn(&R) -> Option<&S>,
    /// Set with `cache_none = true`.
    absent: Option<Absence<R>>,
}

/// How to return and recognise an absence, for `cache_none = true`.
#[derive(Debug)]
struct Absence<R> {
    value: fn() -> R,
    is: fn(&R) -> bool,
}

/// The adapters of return type `R` for schema `S`.
pub fn output<S, R: CachedOutput<S>>() -> Output<S, R> {
    Output {
        from_hit: R::from_hit,
        to_fill: R::to_fill,
        absent: None,
    }
}

/// The adapters of return type `R` for schema `S`, caching absences too.
pub fn output_caching_absence<S, R: AbsentOutput<S>>() -> Output<S, R> {
    Output {
        from_hit: R::from_hit,
        to_fill: R::to_fill,
        absent: Some(Absence {
            value: R::absent,
            is: R::is_absent,
        }),
    }
}

/// The tags of one `cached_get` call: those known from the parameters, rendered before the
/// call, and a function rendering those that name fields of the value.
#[derive(Debug)]
pub struct Tags<T> {
    /// Tags made of parameters only.
    pub from_parameters: Vec<String>,
    /// Tags that name fields of the returned value.
    pub from_value: T,
}

impl<T> Tags<T> {
    fn of<S>(&self, value: &S) -> Vec<String>
    where
        T: Fn(&S) -> Vec<String>,
    {
        let mut tags = self.from_parameters.clone();
        tags.extend((self.from_value)(value));
        tags
    }
}

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
    let near = cache.near()?;
    match (ops.get)(near, key) {
        Some(value) => {
            cache.count_near_hit();
            spec.metrics().near_hit();
            Some((output.from_hit)(value))
        }
        None => {
            cache.count_near_miss();
            spec.metrics().near_miss();
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
    let (Some(cache), Some(key)) = (cache.filter(Cache::is_enabled), key) else {
        return body.await;
    };
    let metrics = spec.metrics();
    if spec.learned.uncacheable.load(Ordering::Relaxed) {
        cache.count_bypass();
        metrics.bypass();
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
                cache.count_bypass();
                metrics.bypass();
                return body.await;
            }
        },
    };
    let call = Call {
        cache: &cache,
        spec,
        key: &key,
        fields,
        schema: &schema,
        output: &output,
        tags: &tags,
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

/// What a miss stores, for [`Call::store`].
struct Fill<'a> {
    body: FillBody<'a>,
    ttl: Duration,
    seen: ClockRead,
    read_at: Instant,
    tags: &'a [String],
    /// The entry's tags went stale: replace it rather than merge.
    replace: bool,
}

impl<'a> Fill<'a> {
    fn new(
        body: FillBody<'a>,
        ttl: Duration,
        seen: ClockRead,
        read_at: Instant,
        tags: &'a [String],
        replace: bool,
    ) -> Self {
        Fill {
            body,
            ttl,
            seen,
            read_at,
            tags,
            replace,
        }
    }
}

/// One `cached_get` call's context, shared by its steps.
struct Call<'a, S, R, T> {
    cache: &'a Cache,
    spec: &'static Spec,
    key: &'a str,
    fields: &'static [&'static str],
    schema: &'a Schema<S>,
    output: &'a Output<S, R>,
    tags: &'a Tags<T>,
}

enum Step<R> {
    /// Answered from the cache.
    Done(R),
    /// Do not use the cache for this call.
    Bypass,
    /// Missed: load, then fill.
    Load(Miss),
}

/// What a miss read: the fill passes `seen` back and must start before the lease time ends.
struct Miss {
    seen: u64,
    read_at: Instant,
    contention: Contention,
    /// The entry's tags went stale: the fill replaces it.
    stale: bool,
    /// This call's lease on the entry, given back on drop unless the fill went in.
    lease: Option<Lease>,
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
    async fn look_up(&self, count_misses: bool) -> Step<R> {
        if self.cache.reads_blocked(self.key, &[]).await {
            return Step::Bypass;
        }
        let tag_mark = self.cache.tag_delivery_mark();
        // Taken before the read is sent: an invalidation arriving meanwhile keeps the reply
        // out of the near cache.
        let ticket = self.near_ticket();
        let read_at = Instant::now();
        match self
            .cache
            .read_entry(self.key, self.fields, self.schema.decode, count_misses)
            .await
        {
            Ok(Lookup::Hit(value, copyable)) => {
                // An undelivered tag invalidation may concern this entry: check its tags. A
                // delivery that completed after the read began (in the background, or the one
                // `reads_blocked` itself may run) may have been one of them, and the entry was
                // read before it: then the read is not trusted either.
                if tag_mark.is_some() || self.cache.tag_invalidations_pending() {
                    let tags = self.tags.of(&value);
                    if self.cache.reads_blocked(self.key, &tags).await {
                        return Step::Bypass;
                    }
                    if tag_mark.is_some_and(|mark| self.cache.delivered_since(mark)) {
                        self.cache.count_bypass();
                        return Step::Bypass;
                    }
                }
                if let (Some(ticket), 1..) = (ticket, copyable.ttl_ms) {
                    self.keep_near(ticket, &value, copyable);
                }
                Step::Done((self.output.from_hit)(value))
            }
            Ok(Lookup::Absent { seen }) => match &self.output.absent {
                Some(absence) => {
                    self.cache.count_hit();
                    Step::Done((absence.value)())
                }
                // Another function caches absence here; this one loads and overwrites it.
                None => {
                    if count_misses {
                        self.cache.count_miss();
                    }
                    let contention = Contention::None;
                    Step::Load(Miss {
                        seen,
                        read_at,
                        contention,
                        stale: false,
                        lease: None,
                    })
                }
            },
            Ok(Lookup::Miss {
                seen,
                tombstone,
                leased,
                stale,
            }) => {
                let contention = match (leased, tombstone) {
                    (true, _) => Contention::Leased,
                    (false, true) => Contention::Tombstone,
                    (false, false) => Contention::None,
                };
                Step::Load(Miss {
                    seen,
                    read_at,
                    contention,
                    stale,
                    lease: None,
                })
            }
            // Redis did not answer: filling would most likely fail too.
            Err(error) => {
                if !matches!(error, Error::CircuitOpen) {
                    self.spec.metrics().error();
                }
                Step::Bypass
            }
        }
    }

    /// The near cache's ticket for this call's read, if the near cache may hold its schema.
    fn near_ticket(&self) -> Option<Ticket> {
        self.schema.near.as_ref()?;
        self.cache.near()?.ticket(self.key)
    }

    /// Keeps a value read from Redis in the near cache, if `ticket` says no invalidation
    /// crossed the read.
    fn keep_near(&self, ticket: Ticket, value: &S, copyable: Copyable) {
        if let (Some(near), Some(ops)) = (self.cache.near(), self.schema.near.as_ref()) {
            let copy = NearCopy {
                ttl: Duration::from_millis(copyable.ttl_ms),
                bytes: copyable.bytes,
                tags: self.tags.of(value),
            };
            (ops.insert)(near, ticket, self.key, value, copy);
        }
    }

    /// Herds form where a hot entry was just invalidated. There, the first miss takes a lease
    /// and loads; the others, in any process, see the lease and wait (bounded by the lease
    /// wait) for its fill instead of all querying the database.
    async fn across_processes(&self, mut miss: Miss) -> Step<R> {
        match miss.contention {
            Contention::None => return Step::Load(miss),
            Contention::Tombstone => match self.cache.acquire_lease(self.key).await {
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
        self.cache.count_coalesced();
        self.spec.metrics().coalesced();
        let deadline = Instant::now() + self.cache.lease_wait();
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
    async fn after_miss(&self, miss: Miss, body: impl Future<Output = R>) -> R {
        let flight_key = format!("{}\u{0}{}", self.key, std::any::type_name::<S>());
        let flight = self.cache.flights().join(flight_key);
        let result = match flight {
            // The guard lives until the fill is done: followers wake to a filled entry.
            Flight::Leader(_leading) => self.finish(self.across_processes(miss).await, body).await,
            Flight::Follower(done) => {
                self.cache.count_coalesced();
                self.spec.metrics().coalesced();
                wait_for_leader(done, self.cache.flight_wait()).await;
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

    async fn load_and_fill(&self, body: impl Future<Output = R>, miss: Miss) -> R {
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
        let Ok(clock) = self.cache.clock(self.key, self.spec.tagged).await else {
            // Without the clock a fill could not be checked: load, and leave the cache be.
            return body.await;
        };
        let seen = ClockRead {
            entry: clock.entry.max(seen),
            tags: clock.tags,
        };
        let result = body.await;
        let ttl = self.spec.ttl_secs.map(Duration::from_secs);
        // Failures are logged and counted inside; the caller gets its value regardless.
        if let Some(value) = (self.output.to_fill)(&result) {
            match (self.schema.encode)(value) {
                Ok(fields) if self.cache.check_size(&fields).is_err() => {
                    if self.spec.learned.first_warning() {
                        tracing::warn!(
                            key = self.key,
                            "value over max_value_size is not cached (said once for this function)"
                        );
                    }
                }
                Ok(fields) => {
                    self.learn_from(&fields);
                    let ttl = self.cache.ttl_or_default(ttl);
                    let tags = self.tags.of(value);
                    let body = FillBody::Fields(&fields);
                    let fill = Fill::new(body, ttl, seen, read_at, &tags, stale);
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
                    .map_or_else(|| self.cache.negative_ttl(), Duration::from_secs);
                let tags = &self.tags.from_parameters;
                let fill = Fill::new(FillBody::Absent, ttl, seen, read_at, tags, stale);
                self.store(fill, &mut lease).await;
            }
        }
        result
    }
}

impl<S, R, T> Call<'_, S, R, T> {
    /// Stores a loaded value (or absence), counts how it went, and keeps the lease's promise
    /// when the value went in.
    async fn store(&self, fill: Fill<'_>, lease: &mut Option<Lease>) {
        let span = tracing::debug_span!("cache.fill", prefix = self.spec.prefix, key = self.key);
        let filled = tracing::Instrument::instrument(
            self.cache.fill_after_miss(
                self.key,
                fill.body,
                fill.ttl,
                fill.seen,
                fill.read_at,
                fill.tags,
                fill.replace,
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

/// `cached_update` / `cached_delete`: drop the entry and the tags after the function succeeded.
pub async fn invalidate(
    cache: Option<Cache>,
    spec: &'static Spec,
    key: Option<String>,
    tags: Vec<String>,
) {
    let Some(cache) = cache else {
        return;
    };
    let keys: Vec<String> = key.into_iter().collect();
    if keys.is_empty() && tags.is_empty() {
        return;
    }
    let span = tracing::debug_span!("cache.invalidate", prefix = spec.prefix, ?keys, ?tags);
    // An undelivered invalidation is remembered and retried inside, and it runs to the end
    // even if our caller stops waiting; never the caller's problem.
    let outcome = tracing::Instrument::instrument(cache.invalidate_all(keys, tags), span).await;
    count_write(spec, &outcome, PrefixMetrics::invalidation);
}

/// Counts a write's cache step: `counted` when it went through, an error when Redis failed
/// it (it is then pending, delivered later).
fn count_write<T>(spec: &Spec, outcome: &Result<T, Error>, counted: fn(&PrefixMetrics)) {
    match outcome {
        Ok(_) => counted(spec.metrics()),
        Err(Error::CircuitOpen) => {}
        Err(_) => spec.metrics().error(),
    }
}

/// `cached_update` with `schema` and `version`: after the function succeeded, write its
/// value through where that cannot bring old data back (the entry holds an older version and
/// no tag registration), else invalidate; the tags are invalidated either way.
#[allow(clippy::too_many_arguments)]
pub async fn write_through<S, R>(
    cache: Option<Cache>,
    spec: &'static Spec,
    key: Option<String>,
    tags: Vec<String>,
    schema: Schema<S>,
    output: Output<S, R>,
    version_field: &'static str,
    result: &R,
) {
    let (Some(cache), Some(key)) = (cache.clone().filter(Cache::is_enabled), key.clone()) else {
        return invalidate(cache, spec, key, tags).await;
    };
    let fields = match (output.to_fill)(result).map(schema.encode) {
        // Too large to cache: the entry is dropped instead.
        Some(Ok(fields)) if cache.check_size(&fields).is_err() => {
            return invalidate(Some(cache), spec, Some(key), tags).await
        }
        Some(Ok(fields)) => fields,
        Some(Err(error)) => {
            if spec.learned.first_warning() {
                tracing::warn!(%key, %error, "updated value cannot be cached; invalidating instead (said once for this function)");
            }
            return invalidate(Some(cache), spec, Some(key), tags).await;
        }
        // `None` from an update: nothing to write, the entry goes.
        None => return invalidate(Some(cache), spec, Some(key), tags).await,
    };
    let Some(version) = version_of(&fields, version_field) else {
        // Most often the field is renamed by serde: `version` names the stored field.
        if spec.learned.first_warning() {
            let stored: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            tracing::warn!(%key, version_field, ?stored, "the version field is not among the stored fields (renamed by serde?) or is not a whole number; this function invalidates instead of writing through (said once)");
        }
        return invalidate(Some(cache), spec, Some(key), tags).await;
    };
    // Failures are remembered and delivered later as an invalidation.
    let span = tracing::debug_span!("cache.write_through", prefix = spec.prefix, %key, version);
    let outcome = tracing::Instrument::instrument(
        cache.write_through(key, fields, version_field, version, tags),
        span,
    )
    .await;
    count_write(spec, &outcome, PrefixMetrics::written_through);
}

fn version_of(fields: &[EncodedField], version_field: &str) -> Option<u64> {
    let (_, value) = fields.iter().find(|(name, _)| *name == version_field)?;
    value.whole_number()
}

/// Tells a failed write (`Err`) from a successful one, for any return type: `Result`s by
/// their variant, everything else counts as success. Chosen by autoref at the call site.
#[derive(Debug)]
pub struct Outcome<'a, T>(pub &'a T);

/// The `Result` case of [`Outcome`].
pub trait ResultOutcome {
    /// Whether the write failed.
    fn is_failure(&self) -> bool;
}

impl<T, E> ResultOutcome for Outcome<'_, Result<T, E>> {
    fn is_failure(&self) -> bool {
        self.0.is_err()
    }
}

/// The fallback case of [`Outcome`]: not a `Result`, so it cannot have failed.
pub trait AnyOutcome {
    /// Always `false`.
    fn is_failure(&self) -> bool;
}

impl<T> AnyOutcome for &Outcome<'_, T> {
    fn is_failure(&self) -> bool {
        false
    }
}
