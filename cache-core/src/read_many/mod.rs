//! `#[cached_get_many]`'s call: many entries read at once, the function called once for the
//! ids that missed, each of their entries filled as a `#[cached_get]` miss fills it.
//!
//! ```text
//! distinct ids ─ near cache ─ the rest: one read (pipelined, chunks of `batch_size`)
//!   hits ─────────────────────────────────────────────────────────────▶ answer
//!   misses ─ single flight per entry: followers wait for their leader, read again
//!          ─ leases: a freshly invalidated entry's lease, or wait for another's fill
//!          ─ one clock read (per slot on a cluster) ─ the function, once, with the misses
//!          ─ a stamp-checked fill per row, all sent together ─────────▶ answer
//! ```
//!
//! Every guarantee of a single read holds for each entry: its fill is checked against the
//! clock read before the load (no stale set), tags are checked as for a hit, entries with an
//! undelivered invalidation are neither read nor filled, and a cache failure ends in calling
//! the function with every id, as without the cache.

mod rows;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

pub use self::rows::{rows_by_field, rows_by_ids, BatchOutput, BatchRows, RowsByField, RowsByIds};
use self::rows::{Found, Layout};
use crate::adapt::{KeyValue, Schema, Tags};
use crate::engine::{Copyable, Engine, Lease, Lookup, Seen};
use crate::flight::{wait_for_leader, Flight, LeaderGuard};
use crate::function::Spec;
use crate::metrics::GetResult;
use crate::near::Ticket;
use crate::read_through::{fields_to_read, keep_near, learn_from, merge_tags};
use crate::store::{ClockRead, FillBody};
use crate::{Cache, Error};

/// How often the misses waiting for another process's fills read their entries again.
const LEASE_POLL: Duration = Duration::from_millis(5);

/// `cached_get_many`: the values for `ids` from the cache, and from one call of `loader`
/// (the function's body, given the ids that missed) for the rest, whose rows fill the cache.
///
/// `key_field` reads the id of a row, for return types whose rows do not say it (`Vec<S>`).
/// Never fails because of the cache: a cache problem ends in calling `loader` with `ids` as
/// given, and returning what it returns.
#[allow(clippy::too_many_arguments)]
pub async fn get_many<K, S, R, T, L, Fut>(
    cache: Option<Cache>,
    spec: &'static Spec,
    ids: Ids<'_, K>,
    schema: Schema<S>,
    key_field: Option<fn(&S) -> String>,
    tags: Tags<T>,
    loader: L,
) -> R
where
    R: BatchOutput<K, S>,
    T: Fn(&S) -> Vec<String>,
    L: FnOnce(Vec<K>) -> Fut,
    Fut: Future<Output = R>,
{
    let Some(cache) = cache.filter(Cache::is_enabled) else {
        return loader(ids.to_vec()).await;
    };
    if ids.ids.is_empty() {
        // No ids, no call: neither Redis nor the function.
        let empty = Layout {
            slots: &[],
            firsts: &[],
        };
        return R::from_rows(R::Rows::answer(ids.ids, &empty, Found::new()));
    }
    let engine = cache.engine();
    let Some(fields) = fields_to_read(engine, spec, &schema) else {
        return loader(ids.to_vec()).await;
    };
    let metrics = spec.metrics();
    let started = metrics.start();
    let batch = Batch::new(engine, spec, fields, &schema, &tags, &ids);
    let (answer, result) = match batch.look_up().await {
        Ok(looked) if looked.misses.is_empty() => {
            let found = looked.found;
            (batch.answer(found), GetResult::Hit)
        }
        Ok(looked) => {
            let span = tracing::debug_span!(
                "cache.miss_many",
                prefix = spec.prefix,
                misses = looked.misses.len()
            );
            let answer = Box::pin(tracing::Instrument::instrument(
                batch.after_misses(looked, key_field, loader),
                span,
            ))
            .await;
            (answer, GetResult::Miss)
        }
        // Redis did not answer (or refused): the function, with every id.
        Err(()) => (loader(ids.to_vec()).await, GetResult::Bypass),
    };
    // Once per call, however many of its entries skipped the cache.
    if batch.bypassed.load(Ordering::Relaxed) {
        engine.count_bypass();
        metrics.bypass();
    }
    metrics.finished(started, result);
    answer
}

/// A type that can be an id of a batch read: one that displays (each id keys one entry, by
/// its text, as a single read of the entry displays its key) and clones (the function gets
/// copies of the ids that missed). Asked for by [`ids_of`], at `keys`, in these words.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is an id of a batch read, so it must implement `Display` and `Clone`",
    label = "each id keys one entry by its `Display` text, and the function gets copies of the ids that missed",
    note = "implement `Display` for it as the single reads of these entries display their key, and derive `Clone`"
)]
pub trait BatchId {
    /// Appends the text of its key part to `key`.
    fn write_key(&self, key: &mut String);
    /// A copy for the function.
    fn copied(&self) -> Self;
}

impl<T: KeyValue + Clone> BatchId for T {
    fn write_key(&self, key: &mut String) {
        use std::fmt::Write as _;
        // Writing into a String cannot fail (as `key::entry_key` writes a single read's).
        let _ = write!(key, "{}", self.as_display());
    }
    fn copied(&self) -> Self {
        self.clone()
    }
}

/// A batch call's ids, with what the call does with them: made by [`ids_of`] where the
/// type is checked, so that [`get_many`] asks nothing more of it.
#[derive(Debug)]
pub struct Ids<'a, K> {
    ids: &'a [K],
    write_key: fn(&K, &mut String),
    copied: fn(&K) -> K,
}

/// The ids of a batch call, checked where `keys` names them.
pub fn ids_of<K: BatchId>(ids: &[K]) -> Ids<'_, K> {
    Ids {
        ids,
        write_key: K::write_key,
        copied: K::copied,
    }
}

impl<K> Ids<'_, K> {
    fn to_vec(&self) -> Vec<K> {
        self.ids.iter().map(self.copied).collect()
    }
}

/// A row's id as its key displays it (`key_field`), checked where `key_field` names it.
pub fn key_text<T: KeyValue>(id: &T) -> String {
    id.as_display().to_string()
}

/// One batch call's context.
struct Batch<'a, K, S, T> {
    engine: &'a Arc<Engine>,
    spec: &'static Spec,
    fields: &'static [&'static str],
    schema: &'a Schema<S>,
    tags: &'a Tags<T>,
    /// The caller's ids, and each one's entry key, position by position: one allocation
    /// per id on the hit path, the key part being the key's end (after `head` bytes).
    ids: &'a Ids<'a, K>,
    keys: Vec<String>,
    head: usize,
    /// Each distinct id once, in the order of its first appearance: its first position in
    /// `ids`.
    distinct: Vec<usize>,
    /// For each position in `ids`, its distinct id's place in `distinct`.
    slots: Vec<usize>,
    /// Some entry skipped Redis (an undelivered invalidation, a tag check that failed, the
    /// breaker open): the call counts one bypass.
    bypassed: AtomicBool,
}

/// An entry that missed, to be loaded.
struct Miss {
    /// Its position in [`Batch::distinct`].
    at: usize,
    /// The entry's stamp as the read found it (0: never invalidated).
    seen: u64,
    read_at: Instant,
    /// Fill into it (`false`: an invalidation of it is undelivered, or a tag check failed:
    /// load it, leave the cache be).
    fill: bool,
    /// Its tags went stale: the fill replaces the entry.
    stale: bool,
    /// Freshly invalidated, or another caller holds its lease.
    tombstone: bool,
    leased: bool,
    lease: Option<Lease>,
}

/// What the read found: values by key text, and the misses.
struct Looked<S> {
    found: Found<S>,
    misses: Vec<Miss>,
}

impl<'a, K, S, T: Fn(&S) -> Vec<String>> Batch<'a, K, S, T> {
    fn new(
        engine: &'a Arc<Engine>,
        spec: &'static Spec,
        fields: &'static [&'static str],
        schema: &'a Schema<S>,
        tags: &'a Tags<T>,
        ids: &'a Ids<'a, K>,
    ) -> Self {
        let head = engine.key(spec.prefix, "");
        let keys: Vec<String> = ids
            .ids
            .iter()
            .map(|id| {
                let mut key = String::with_capacity(head.len() + 24);
                key.push_str(&head);
                (ids.write_key)(id, &mut key);
                key
            })
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
        let mut distinct = Vec::with_capacity(keys.len());
        let mut slots = Vec::with_capacity(keys.len());
        for (at, key) in keys.iter().enumerate() {
            let slot = *seen.entry(key).or_insert_with(|| {
                distinct.push(at);
                distinct.len() - 1
            });
            slots.push(slot);
        }
        Batch {
            engine,
            spec,
            fields,
            schema,
            tags,
            ids,
            keys,
            head: head.len(),
            distinct,
            slots,
            bypassed: AtomicBool::new(false),
        }
    }

    /// The caller's answer, from what was found for each distinct id.
    fn answer<R: BatchOutput<K, S>>(&self, found: Found<S>) -> R {
        let layout = Layout {
            slots: &self.slots,
            firsts: &self.distinct,
        };
        R::from_rows(R::Rows::answer(self.ids.ids, &layout, found))
    }

    fn text(&self, at: usize) -> &str {
        &self.keys[self.distinct[at]][self.head..]
    }

    fn key(&self, at: usize) -> &str {
        &self.keys[self.distinct[at]]
    }

    /// The near cache, then one read of the rest. `Err`: Redis did not answer.
    async fn look_up(&self) -> Result<Looked<S>, ()> {
        let mut found: Found<S> = (0..self.distinct.len()).map(|_| None).collect();
        let mut wanted = Vec::with_capacity(self.distinct.len());
        let near = self.schema.near.as_ref().zip(self.engine.near());
        for (at, slot) in found.iter_mut().enumerate() {
            if let Some((ops, near)) = near {
                if let Some(value) = (ops.get)(near, self.key(at)) {
                    self.engine.record(self.spec.metrics(), Seen::NearHit);
                    *slot = Some(value);
                    continue;
                }
                self.engine.record(self.spec.metrics(), Seen::NearMiss);
            }
            wanted.push(at);
        }
        let misses = self.read(&wanted, &mut found, true).await?;
        Ok(Looked { found, misses })
    }

    /// Reads the entries at `wanted` (positions in `distinct`) in chunks of the handle's
    /// batch size, sent together; hits go into `found`, the rest come back as misses.
    /// `first`: the call's first read (counted; later ones are polls).
    async fn read(
        &self,
        wanted: &[usize],
        found: &mut Found<S>,
        first: bool,
    ) -> Result<Vec<Miss>, ()> {
        let mut misses = Vec::new();
        if wanted.is_empty() {
            return Ok(misses);
        }
        let blocked = self
            .engine
            .reads_blocked_many(wanted.iter().map(|&at| self.key(at)))
            .await;
        let mut readable = Vec::with_capacity(wanted.len());
        for (&at, blocked) in wanted.iter().zip(blocked) {
            if blocked {
                self.bypassed.store(true, Ordering::Relaxed);
                misses.push(Miss::unfillable(at));
            } else {
                readable.push(at);
            }
        }
        let tag_mark = self.engine.tag_delivery_mark();
        let tickets: Vec<Option<Ticket>> =
            readable.iter().map(|&at| self.near_ticket(at)).collect();
        let read_at = Instant::now();
        let chunks = readable
            .chunks(self.engine.batch_size())
            .map(|chunk| async move {
                let keys: Vec<&str> = chunk.iter().map(|&at| self.key(at)).collect();
                self.engine
                    .read_entries(&keys, self.fields, self.schema.decode, first)
                    .await
            });
        let mut lookups = Vec::with_capacity(readable.len());
        for chunk in join_all(chunks).await {
            match chunk {
                Ok(chunk) => lookups.extend(chunk),
                // The breaker is open: the call does not touch Redis.
                Err(Error::CircuitOpen) => {
                    self.bypassed.store(true, Ordering::Relaxed);
                    return Err(());
                }
                Err(_) => {
                    self.spec.metrics().error();
                    return Err(());
                }
            }
        }
        let metrics = self.spec.metrics();
        let check_tags = tag_mark.is_some() || self.engine.tag_invalidations_pending();
        for ((at, lookup), ticket) in readable.into_iter().zip(lookups).zip(tickets) {
            match lookup {
                Lookup::Hit(value, copyable) => {
                    if check_tags && !self.tag_checked(at, &value, &copyable.tags, tag_mark) {
                        self.bypassed.store(true, Ordering::Relaxed);
                        misses.push(Miss::unfillable(at));
                        continue;
                    }
                    if first {
                        metrics.hit();
                    }
                    if let (Some(ticket), 1..) = (ticket, copyable.ttl_ms) {
                        self.keep_near(at, ticket, &value, copyable);
                    }
                    found[at] = Some(value);
                }
                // Another function's cached absence: this one loads and overwrites it.
                Lookup::Absent { seen } => {
                    if first {
                        self.engine.count_miss();
                        metrics.miss();
                    }
                    misses.push(Miss::of(at, seen, read_at, false, false, false));
                }
                Lookup::Miss {
                    seen,
                    tombstone,
                    leased,
                    stale,
                    ..
                } => {
                    if first {
                        metrics.miss();
                    }
                    misses.push(Miss::of(at, seen, read_at, stale, tombstone, leased));
                }
            }
        }
        Ok(misses)
    }

    /// Whether a hit read while tag invalidations were undelivered (or delivered during the
    /// read) may be trusted: none of them concerns its tags (as a single read checks it).
    fn tag_checked(
        &self,
        at: usize,
        value: &S,
        entry_tags: &[String],
        tag_mark: Option<u64>,
    ) -> bool {
        let mut tags = self.tags.of(value);
        merge_tags(&mut tags, entry_tags);
        if self.engine.blocks(self.key(at), &tags) {
            return false;
        }
        !tag_mark.is_some_and(|mark| self.engine.delivered_since(mark))
    }

    fn near_ticket(&self, at: usize) -> Option<Ticket> {
        self.schema.near.as_ref()?;
        self.engine.near()?.ticket(self.key(at))
    }

    fn keep_near(&self, at: usize, ticket: Ticket, value: &S, copyable: Copyable) {
        if let Some(ops) = self.schema.near.as_ref() {
            let tags = self.tags.of(value);
            keep_near(
                self.engine,
                ops,
                ticket,
                self.key(at),
                value,
                copyable,
                &tags,
                None,
            );
        }
    }

    /// The single flight's key of the entry at `at`: as a single read's, so that a batch
    /// and single reads of one entry through this handle load it once.
    fn flight_key(&self, at: usize) -> String {
        format!("{}\u{0}{}", self.key(at), std::any::type_name::<S>())
    }

    /// The misses: wait where another call of this handle or another process is loading an
    /// entry, then load the rest with one call of `loader` and fill them.
    async fn after_misses<R, L, Fut>(
        &self,
        looked: Looked<S>,
        key_field: Option<fn(&S) -> String>,
        loader: L,
    ) -> R
    where
        R: BatchOutput<K, S>,
        L: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = R>,
    {
        let Looked { mut found, misses } = looked;
        // This handle's single flight, entry by entry: the guards live until the fills are
        // done, so that followers wake to filled entries.
        let mut leading: Vec<LeaderGuard<'_>> = Vec::with_capacity(misses.len());
        let mut to_load = Vec::with_capacity(misses.len());
        let mut following = Vec::new();
        for miss in misses {
            if !miss.fill {
                to_load.push(miss);
                continue;
            }
            match self.engine.flights().join(self.flight_key(miss.at)) {
                Flight::Leader(guard) => {
                    leading.push(guard);
                    to_load.push(miss);
                }
                Flight::Follower(done) => following.push((miss.at, done)),
            }
        }
        if !following.is_empty() {
            self.engine.record(self.spec.metrics(), Seen::Coalesced);
            let limit = self.engine.flight_wait();
            join_all(
                following
                    .iter()
                    .map(|(_, done)| wait_for_leader(done.clone(), limit)),
            )
            .await;
            let again: Vec<usize> = following.iter().map(|(at, _)| *at).collect();
            match self.read(&again, &mut found, false).await {
                Ok(still) => to_load.extend(still),
                // Redis stopped answering: load them, leave the cache be.
                Err(()) => to_load.extend(again.into_iter().map(Miss::unfillable)),
            }
        }
        let to_load = self.across_processes(to_load, &mut found).await;
        self.load_and_fill(to_load, found, key_field, loader).await
    }

    /// Herds form where hot entries were just invalidated: a freshly invalidated entry's
    /// lease is taken before loading it. When every miss is leased by another caller (in
    /// any process), the call waits for their fills, bounded by the lease wait, reading
    /// those entries again together; what is left is loaded. A call that loads anyway loads
    /// the leased ones too (see below).
    async fn across_processes(&self, misses: Vec<Miss>, found: &mut Found<S>) -> Vec<Miss> {
        let (mut waiting, mut ready): (Vec<Miss>, Vec<Miss>) = misses
            .into_iter()
            .partition(|miss| miss.fill && miss.leased);
        let tombstones = ready.iter_mut().filter(|miss| miss.fill && miss.tombstone);
        let leases = join_all(tombstones.map(|miss| async move {
            let lease = self.engine.acquire_lease(self.key(miss.at)).await;
            (miss, lease)
        }))
        .await;
        for (miss, lease) in leases {
            match lease {
                Ok(Some(lease)) => miss.lease = Some(lease),
                // Another caller took it first: wait for its fill.
                Ok(None) => miss.leased = true,
                // Redis did not answer: load.
                Err(_) => {}
            }
        }
        let (lost, mut ready): (Vec<Miss>, Vec<Miss>) =
            ready.into_iter().partition(|miss| miss.fill && miss.leased);
        waiting.extend(lost);
        if waiting.is_empty() {
            return ready;
        }
        if !ready.is_empty() {
            // This call loads some entries anyway (some under its own leases): it loads the
            // others' too, in the same one call of the function, rather than wait. Waiting
            // while holding leases would deadlock two batches that each hold what the other
            // waits for, until the lease wait ends. Their fills are stamp-checked as any.
            ready.extend(waiting);
            return ready;
        }
        self.engine.record(self.spec.metrics(), Seen::Coalesced);
        let deadline = Instant::now() + self.engine.lease_wait();
        while !waiting.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(LEASE_POLL).await;
            let again: Vec<usize> = waiting.iter().map(|miss| miss.at).collect();
            let Ok(misses) = self.read(&again, found, false).await else {
                // Redis stopped answering: load them, leave the cache be.
                ready.extend(again.into_iter().map(Miss::unfillable));
                return ready;
            };
            waiting.clear();
            for miss in misses {
                if miss.fill && miss.leased {
                    waiting.push(miss);
                } else {
                    // Filled, failed, or the lease ended without a fill: load it.
                    ready.push(miss);
                }
            }
        }
        ready.extend(waiting);
        ready
    }

    /// One call of the function with the ids that missed, and the fills of its rows, each
    /// checked against the clock read before the call (one read for the batch).
    async fn load_and_fill<R, L, Fut>(
        &self,
        mut misses: Vec<Miss>,
        mut found: Found<S>,
        key_field: Option<fn(&S) -> String>,
        loader: L,
    ) -> R
    where
        R: BatchOutput<K, S>,
        L: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = R>,
    {
        if misses.is_empty() {
            return self.answer(found);
        }
        misses.sort_unstable_by_key(|miss| miss.at);
        // The stamps every fill is checked against, read before the load: only invalidations
        // that came after refuse them. Without them no fill could be checked: none is made.
        let keys: Vec<&str> = misses
            .iter()
            .filter(|miss| miss.fill)
            .map(|miss| self.key(miss.at))
            .collect();
        let clocks = if keys.is_empty() {
            Some(Vec::new())
        } else {
            self.engine.clocks(&keys, self.spec.tagged).await.ok()
        };
        let asked: Vec<K> = misses
            .iter()
            .map(|miss| (self.ids.copied)(&self.ids.ids[self.distinct[miss.at]]))
            .collect();
        let asked_texts: Vec<String> = misses
            .iter()
            .map(|miss| self.text(miss.at).to_owned())
            .collect();
        let given = asked.iter().map(self.ids.copied).collect();
        let rows = match loader(given).await.into_rows() {
            Ok(rows) => rows,
            // The function failed: its failure is the answer, as without the cache.
            Err(failed) => return failed,
        };
        // Each row to its miss, by the text of its id (rows for ids not asked are dropped).
        let mut loaded: HashMap<String, S> = rows
            .keyed(&asked, &asked_texts, key_field)
            .into_iter()
            .collect();
        if let Some(clocks) = clocks {
            let mut clocks = clocks.into_iter();
            let fills = misses
                .iter_mut()
                .filter(|miss| miss.fill)
                .filter_map(|miss| {
                    let clock = clocks.next()?;
                    let value = loaded.get(self.text(miss.at))?;
                    let seen = ClockRead {
                        entry: clock.entry.max(miss.seen),
                        tags: clock.tags,
                    };
                    Some(self.fill(miss, value, seen))
                });
            join_all(fills).await;
        }
        for miss in &misses {
            found[miss.at] = loaded.remove(self.text(miss.at));
        }
        self.answer(found)
    }

    /// Fills one entry with a loaded value, stamp-checked; keeps its lease's promise when it
    /// went in. Failures are logged and counted inside; the caller gets its value regardless.
    async fn fill(&self, miss: &mut Miss, value: &S, seen: ClockRead) {
        let key = self.key(miss.at);
        let fields = match (self.schema.encode)(value) {
            Ok(fields) => fields,
            Err(error) => {
                if self.spec.learned.first_warning() {
                    tracing::warn!(key, %error, "value cannot be cached (said once for this function)");
                }
                return;
            }
        };
        if self.engine.check_size(&fields).is_err() {
            if self.spec.learned.first_warning() {
                tracing::warn!(
                    key,
                    "value over max_value_size is not cached (said once for this function)"
                );
            }
            return;
        }
        learn_from(self.spec, self.fields, self.schema, &fields);
        let ttl = self
            .engine
            .ttl_or_default(self.spec.ttl_secs.map(Duration::from_secs));
        let tags = self.tags.of(value);
        let filled = self
            .engine
            .fill_after_miss(
                key,
                FillBody::Fields(&fields),
                ttl,
                seen,
                miss.read_at,
                &tags,
                miss.stale,
                None,
            )
            .await;
        match filled {
            Ok(stored) => {
                self.spec.metrics().fill(stored);
                if let (true, Some(lease)) = (stored, miss.lease.as_mut()) {
                    lease.filled();
                }
            }
            Err(Error::CircuitOpen) => {}
            Err(_) => self.spec.metrics().error(),
        }
    }
}

impl Miss {
    fn of(
        at: usize,
        seen: u64,
        read_at: Instant,
        stale: bool,
        tombstone: bool,
        leased: bool,
    ) -> Miss {
        Miss {
            at,
            seen,
            read_at,
            fill: true,
            stale,
            tombstone,
            leased,
            lease: None,
        }
    }

    /// A miss to load without filling.
    fn unfillable(at: usize) -> Miss {
        Miss {
            fill: false,
            ..Miss::of(at, 0, Instant::now(), false, false, false)
        }
    }
}
