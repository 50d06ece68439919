//! The near cache: decoded values in process memory, kept coherent with Redis.
//!
//! Coherence comes from Redis' server-assisted client-side caching: the listener
//! ([`listen`](fn@listen)) holds RESP3 connections of its own (one to a server, one to every
//! primary of a cluster) with `CLIENT TRACKING ON BCAST` over the handle's keys, and Redis
//! pushes the name of every key that changes, whoever changed it. (On `mem://` the store
//! itself tells the near caches of its changes, [`Near::changed`], before each operation
//! returns.) Three rules make that a guarantee rather than a hope:
//!
//! * **The in-flight race.** A reply read from Redis is inserted only if no invalidation of
//!   its shard arrived since just before the read was sent: the reader takes a [`Ticket`]
//!   (the shard's generation) before sending, and inserts only while it is unchanged and
//!   the listener hears, checking again after inserting (an invalidation bumps the
//!   generation *then* removes, so one that lands between the check and the insert removes
//!   what was inserted).
//! * **Own writes** evict locally before they return ([`Near::evict`]), without waiting for
//!   the push.
//! * **Deafness.** A listener that cannot hear (any of its connections closed or reset; a
//!   `PING` not answered within the operation timeout, checked every [`HEALTH_CHECK`]; a
//!   cluster whose primaries changed) clears the near cache and serves nothing from memory
//!   until tracking is on again everywhere; bumping every generation turns away inserts
//!   that were in flight across the gap.
//!
//! Library keys change all the time (clocks, stamps) and say nothing about entries, except a
//! tag's stamp: its push evicts the near entries carrying that tag.

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::key::{entry_prefix, is_library_key, stamped_tag, tag_stamp_prefix};
use crate::metrics::HandleMetrics;
use crate::store::ChangeListener;
use crate::time::{coarse_expiry, coarse_now};

mod listen;
mod recent;
mod topology;

pub(crate) use listen::{listen, ListenTo};

/// How many generation counters reads and invalidations share, by key hash.
const SHARDS: usize = 256;

/// How often the listener checks that its connection still answers.
pub(crate) const HEALTH_CHECK: Duration = Duration::from_millis(500);

/// One entry key's values in memory, one per schema type read through it, and the tags its
/// fills registered it under.
struct NearEntry {
    values: Vec<(TypeId, Arc<dyn Any + Send + Sync>)>,
    tags: Vec<String>,
    /// The bytes its values were read from (the largest read, as several schemas' copies
    /// share fields); with the key and the tags, its weight under `near_max_bytes`.
    value_bytes: u64,
    /// The entry's expiry in Redis, or the near cache's max age, whichever comes first
    /// ([`coarse_now`]).
    expires_at: u64,
}

/// What a copy of a value read from Redis is kept with.
#[derive(Debug)]
pub(crate) struct NearCopy {
    /// The entry's TTL left in Redis when it was read.
    pub(crate) ttl: Duration,
    /// The bytes of the value's fields as read.
    pub(crate) bytes: usize,
    /// The tags the value carries (a tag invalidation evicts it).
    pub(crate) tags: Vec<String>,
}

/// How much room an entry takes in the near cache: one unit per entry when only the entry
/// count bounds it; with a byte budget, its bytes, but never less than the budget's share
/// of one entry (`max_bytes / entries`), so that the count bound holds as well.
#[derive(Debug, Clone)]
struct Weigher {
    per_entry_floor: Option<u64>,
}

impl quick_cache::Weighter<String, Arc<NearEntry>> for Weigher {
    fn weight(&self, key: &String, entry: &Arc<NearEntry>) -> u64 {
        let Some(floor) = self.per_entry_floor else {
            return 1;
        };
        let tags: usize = entry.tags.iter().map(String::len).sum();
        (entry.value_bytes + (key.len() + tags) as u64).max(floor)
    }
}

/// Counts the copies the near cache dropped for room (not those invalidated or expired).
#[derive(Debug, Clone)]
struct Evictions(Arc<AtomicU64>, HandleMetrics);

impl quick_cache::Lifecycle<String, Arc<NearEntry>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, (): &mut (), _key: String, _entry: Arc<NearEntry>) {
        self.0.fetch_add(1, Ordering::Relaxed);
        self.1.near_eviction();
    }
}

/// The in-process store the copies live in.
type Entries = quick_cache::sync::Cache<
    String,
    Arc<NearEntry>,
    Weigher,
    quick_cache::DefaultHashBuilder,
    Evictions,
>;

/// What a reader holds from before it sent its read until it inserts the reply.
/// The shard (low 8 bits) and its generation (the rest), plus one: a reader's future holds
/// it across the read, so it is one word, and `Option<Ticket>` too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(std::num::NonZeroU64);

impl Ticket {
    fn new(shard: u16, generation: u64) -> Ticket {
        let packed = (generation << 8 | u64::from(shard)).wrapping_add(1);
        Ticket(std::num::NonZeroU64::new(packed).unwrap_or(std::num::NonZeroU64::MIN))
    }

    fn shard(self) -> u16 {
        ((self.0.get() - 1) & 0xff) as u16
    }

    fn generation(self) -> u64 {
        (self.0.get() - 1) >> 8
    }
}

/// The values in memory and the state that keeps them right.
pub(crate) struct Near {
    /// Tells this near cache's copies apart from other handles' in [`recent`].
    id: u64,
    entries: Entries,
    /// Copies dropped for room.
    evictions: Evictions,
    generations: Box<[AtomicU64]>,
    /// Whether the listener hears invalidations now; nothing is served or inserted while not.
    /// Every shard's generation is bumped whenever hearing starts or stops.
    listening: AtomicBool,
    max_age: Duration,
    /// `{namespace}:` (empty without one): the entries' key prefix.
    entry_prefix: String,
    /// `__cache:{namespace}:stamp{:`: the prefix of tag stamp keys.
    stamp_prefix: String,
    /// Keys named by the invalidations Redis pushed (or the in-process store told).
    pub(crate) invalidations_received: AtomicU64,
    /// Whether it was said that Redis refuses what the near cache needs.
    said_unavailable: AtomicBool,
}

impl std::fmt::Debug for Near {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Near")
            .field("entries", &self.entries.len())
            .field("listening", &self.listening.load(Ordering::Relaxed))
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl Near {
    /// A near cache of at most `capacity` entries and, if given, about `max_bytes` bytes.
    pub(crate) fn new(
        capacity: usize,
        max_bytes: Option<u64>,
        max_age: Duration,
        namespace: Option<&str>,
    ) -> Near {
        let capacity = capacity.max(1);
        let (weight_capacity, per_entry_floor) = match max_bytes {
            None => (capacity as u64, None),
            Some(max_bytes) => (max_bytes.max(1), Some((max_bytes / capacity as u64).max(1))),
        };
        // quick_cache splits the budget over its shards (up to 4 per core) and keeps a shard
        // at 32 estimated items or more; a copy heavier than its shard's part is not kept.
        // Estimating one item per KiB of a byte budget keeps each shard's part at 32 KiB or
        // more, so that values of that size always fit.
        let estimated_items = match max_bytes {
            None => capacity,
            Some(max_bytes) => {
                capacity.min(usize::try_from(max_bytes / 1024).unwrap_or(usize::MAX))
            }
        };
        let metrics = HandleMetrics::new(namespace);
        let evictions = Evictions(Arc::default(), metrics.clone());
        let entries = Entries::with(
            estimated_items.max(1),
            weight_capacity,
            Weigher { per_entry_floor },
            quick_cache::DefaultHashBuilder::default(),
            evictions.clone(),
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Near {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            entries,
            evictions,
            generations: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            listening: AtomicBool::new(false),
            max_age,
            entry_prefix: entry_prefix(namespace),
            stamp_prefix: tag_stamp_prefix(namespace),
            invalidations_received: AtomicU64::new(0),
            said_unavailable: AtomicBool::new(false),
        }
    }

    /// FNV-1a: short keys, no allocation, the same in every process.
    fn hash(key: &str) -> u64 {
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn shard_of(hash: u64) -> u16 {
        (hash % SHARDS as u64) as u16
    }

    fn shard(key: &str) -> u16 {
        Near::shard_of(Near::hash(key))
    }

    fn generation(&self, shard: u16) -> &AtomicU64 {
        &self.generations[usize::from(shard)]
    }

    /// The value of schema `S` of the entry at `key`, if memory holds one and may serve it.
    ///
    /// First from this thread's recent copies ([`recent`]), which cost no write to memory
    /// another core reads; then from the shared store, remembering the copy in this thread
    /// under the shard's generation read *before* the store was asked. An invalidation bumps
    /// the generation before and after it removes the copy, so a copy remembered under either
    /// side of its first bump is never served once it has completed.
    pub(crate) fn get<S: 'static>(&self, key: &str, clone: fn(&S) -> S) -> Option<S> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let hash = Near::hash(key);
        let generation = self
            .generation(Near::shard_of(hash))
            .load(Ordering::Acquire);
        let mut expired = false;
        let recent = recent::find(self.id, key, hash, generation, |entry| {
            Near::serve(entry, clone, &mut expired)
        });
        match recent {
            Some(Some(value)) => return Some(value),
            // A recent copy that expired: forgotten, and the shared store asked, which may
            // hold a fresh copy read since (removing that one instead, as this did, made
            // every later get of the key a miss while the thread remembered the old copy).
            Some(None) if expired => recent::forget(self.id, key, hash),
            _ => {}
        }
        let entry = self.entries.get(key)?;
        let value = Near::serve(&entry, clone, &mut expired);
        if expired {
            self.entries.remove(key);
        }
        if value.is_some() && entry.value_bytes <= recent::LARGEST {
            recent::keep(self.id, key, hash, generation, entry);
        }
        value
    }

    /// A clone of the value of schema `S` in `entry`, unless it expired (then `expired`).
    fn serve<S: 'static>(entry: &NearEntry, clone: fn(&S) -> S, expired: &mut bool) -> Option<S> {
        if coarse_now() >= entry.expires_at {
            *expired = true;
            return None;
        }
        let type_id = TypeId::of::<S>();
        let value = entry
            .values
            .iter()
            .find(|(id, _)| *id == type_id)?
            .1
            .downcast_ref::<S>()?;
        Some(clone(value))
    }

    /// Taken before a read is sent; see [`Near::insert`].
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let shard = Near::shard(key);
        Some(Ticket::new(
            shard,
            self.generation(shard).load(Ordering::Acquire),
        ))
    }

    fn still_valid(&self, ticket: Ticket) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.generation(ticket.shard()).load(Ordering::Acquire) & ((1 << 56) - 1)
                == ticket.generation()
    }

    /// Keeps `value` (schema `S`) of the entry at `key`, read from Redis after `ticket` was
    /// taken with `ttl` left, unless an invalidation of its shard (or deafness) came in
    /// between. Redis may expire a key some time after its TTL (and only then push its
    /// invalidation): the copy expires by the TTL it read.
    pub(crate) fn insert<S: Send + Sync + 'static>(
        &self,
        ticket: Ticket,
        key: &str,
        value: S,
        copy: NearCopy,
    ) {
        if !self.still_valid(ticket) {
            return;
        }
        let type_id = TypeId::of::<S>();
        let mut values: Vec<(TypeId, Arc<dyn Any + Send + Sync>)> = Vec::with_capacity(1);
        let mut all_tags = copy.tags;
        let mut expires_at = coarse_expiry(copy.ttl.min(self.max_age));
        let mut value_bytes = copy.bytes as u64;
        // Another schema's copy of the entry is merged in, unless it expired: a fresh copy
        // must not inherit its expiry (and be born expired).
        let current = self
            .entries
            .get(key)
            .filter(|current| coarse_now() < current.expires_at);
        if let Some(current) = current {
            expires_at = expires_at.min(current.expires_at);
            values.extend(
                current
                    .values
                    .iter()
                    .filter(|(id, _)| *id != type_id)
                    .cloned(),
            );
            for tag in &current.tags {
                if !all_tags.contains(tag) {
                    all_tags.push(tag.clone());
                }
            }
            value_bytes = value_bytes.max(current.value_bytes);
        }
        values.push((type_id, Arc::new(value)));
        let entry = Arc::new(NearEntry {
            values,
            tags: all_tags,
            value_bytes,
            expires_at,
        });
        self.entries.insert(key.to_owned(), entry);
        // An invalidation may have bumped the generation between the check and the insert,
        // and removed the key before the insert: then the insert is taken back, and the
        // generation bumped once more, since a thread may have remembered the copy meanwhile
        // (under the generation the invalidation left).
        if !self.still_valid(ticket) {
            self.entries.remove(key);
            self.generation(ticket.shard())
                .fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Evicts entries and every entry carrying one of `tags`: for this handle's own writes,
    /// before they return, and for invalidations pushed by Redis.
    ///
    /// Each removal is wrapped in two bumps of its shard's generation: the first turns away
    /// inserts of reads in flight, the second the copies threads remembered while it ran.
    pub(crate) fn evict(&self, keys: &[&str], tags: &[String]) {
        for key in keys {
            let generation = self.generation(Near::shard(key));
            generation.fetch_add(1, Ordering::AcqRel);
            self.entries.remove(*key);
            generation.fetch_add(1, Ordering::AcqRel);
        }
        if !tags.is_empty() {
            // Every shard: an entry carrying the tag may live in any of them.
            self.bump_all();
            self.entries
                .retain(|_, entry| !entry.tags.iter().any(|tag| tags.contains(tag)));
            self.bump_all();
        }
    }

    fn bump_all(&self) {
        for generation in self.generations.iter() {
            generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Forgets everything and turns away reads in flight: hearing started or stopped.
    fn reset(&self, listening: bool) {
        self.listening.store(false, Ordering::Release);
        self.bump_all();
        self.entries.clear();
        self.bump_all();
        if listening {
            self.listening.store(true, Ordering::Release);
        }
    }

    /// Redis refused RESP3 or `CLIENT TRACKING` (too old, a proxy, an ACL user without
    /// `client|tracking`), or its pushes do not arrive: said once; the handle runs without
    /// the near cache meanwhile and the listener keeps trying, in case it was passing.
    fn unavailable(&self, why: &dyn std::fmt::Display) {
        if !self.said_unavailable.swap(true, Ordering::Relaxed) {
            tracing::warn!(%why, "the near cache cannot hear redis' invalidations (it needs RESP3, CLIENT TRACKING and their pushes); running without it");
        }
    }

    /// Copies dropped for room since the handle was built.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.0.load(Ordering::Relaxed)
    }

    /// Whether values are served from memory now.
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Applies one invalidation pushed by Redis.
    fn invalidated(&self, keys: Option<Vec<Vec<u8>>>) {
        let Some(keys) = keys else {
            // `FLUSHALL` / `FLUSHDB`: everything.
            self.invalidations_received.fetch_add(1, Ordering::Relaxed);
            self.evictions.1.near_invalidations(1);
            self.reset(self.is_listening());
            return;
        };
        self.changed(keys.iter().filter_map(|key| std::str::from_utf8(key).ok()));
    }

    /// Evicts what changes of these keys (any namespace's, entries and library keys alike)
    /// concern: entries of this namespace by name, and for a tag's stamp every entry
    /// carrying the tag.
    pub(crate) fn changed<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        let mut tags = Vec::new();
        let mut entries = Vec::new();
        let mut named = 0;
        for key in keys {
            named += 1;
            if let Some(tag) = stamped_tag(&self.stamp_prefix, key) {
                tags.push(tag.to_owned());
            } else if !is_library_key(key) && key.starts_with(self.entry_prefix.as_str()) {
                entries.push(key);
            }
        }
        self.invalidations_received
            .fetch_add(named, Ordering::Relaxed);
        self.evictions.1.near_invalidations(named);
        self.evict(&entries, &tags);
    }

    /// For a store in this process, which tells the near cache of every change itself
    /// (`mem://`): it always hears.
    fn hear_in_process(&self) {
        self.reset(true);
    }
}

/// A store in this process (`mem://`) tells the near cache of every change itself.
impl ChangeListener for Near {
    fn listening(&self) {
        self.hear_in_process();
    }

    fn changed(&self, keys: &[String]) {
        Near::changed(self, keys.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a read of a small value with `ttl` left and `tags` keeps.
    fn copy(ttl: Duration, tags: Vec<String>) -> NearCopy {
        NearCopy {
            ttl,
            bytes: 16,
            tags,
        }
    }

    /// A read of `key` that found `value` (60 s left) and keeps it.
    fn read_into<S: Send + Sync + 'static>(near: &Near, key: &str, value: S) {
        let ticket = near.ticket(key).unwrap();
        near.insert(
            ticket,
            key,
            value,
            copy(Duration::from_secs(60), Vec::new()),
        );
    }

    fn listening() -> Near {
        let near = Near::new(100, None, Duration::from_secs(60), Some("shop"));
        near.reset(true);
        near
    }

    /// A copy outlives its max age in a thread's recent memory (nothing changes its shard's
    /// generation): once it expired, the fresh copy a new read keeps must be served, not
    /// removed by the expired one (every get missed until an invalidation happened to touch
    /// the shard: a near handle that served nothing from memory for seconds under load).
    #[test]
    fn a_fresh_copy_replaces_one_that_expired() {
        let near = Near::new(100, None, Duration::from_millis(30), Some("shop"));
        near.reset(true);
        read_into(&near, "shop:user:1", 1_u32);
        // Served, and so remembered by this thread.
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(1));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), None, "expired");
        read_into(&near, "shop:user:1", 2_u32);
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(2));
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(2));
        // A fresh copy kept while the expired one is still in the shared store (not read
        // since it expired) is not born expired either.
        read_into(&near, "shop:user:2", 1_u32);
        std::thread::sleep(Duration::from_millis(80));
        read_into(&near, "shop:user:2", 2_u32);
        assert_eq!(near.get::<u32>("shop:user:2", u32::clone), Some(2));
    }

    #[test]
    fn a_reply_that_crossed_an_invalidation_is_not_inserted() {
        let near = listening();
        let ticket = near.ticket("shop:user:1").unwrap();
        // The invalidation arrives while the read's reply is in flight.
        near.invalidated(Some(vec![b"shop:user:1".to_vec()]));
        near.insert(
            ticket,
            "shop:user:1",
            1_u32,
            copy(Duration::from_secs(60), Vec::new()),
        );
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), None);
        // A read sent after it inserts.
        read_into(&near, "shop:user:1", 2_u32);
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(2));
    }

    #[test]
    fn deafness_clears_memory_and_turns_away_reads_in_flight() {
        let near = listening();
        read_into(&near, "shop:user:1", 1_u32);
        let in_flight = near.ticket("shop:user:2").unwrap();
        near.reset(false);
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), None);
        assert!(
            near.ticket("shop:user:1").is_none(),
            "no reads for memory while deaf"
        );
        near.reset(true);
        near.insert(
            in_flight,
            "shop:user:2",
            2_u32,
            copy(Duration::from_secs(60), Vec::new()),
        );
        assert_eq!(
            near.get::<u32>("shop:user:2", u32::clone),
            None,
            "a read sent before the gap is not trusted after it"
        );
    }

    #[test]
    fn tag_stamps_evict_what_carries_the_tag_and_other_library_keys_nothing() {
        let near = listening();
        for (key, tags) in [
            ("shop:login:a", vec!["user:1".to_owned()]),
            ("shop:user:2", vec![]),
        ] {
            let ticket = near.ticket(key).unwrap();
            near.insert(ticket, key, 7_u32, copy(Duration::from_secs(60), tags));
        }
        near.invalidated(Some(vec![
            b"__cache:shop:clock".to_vec(),
            b"__cache:shop:tag{:user:1}".to_vec(),
        ]));
        assert_eq!(
            near.get::<u32>("shop:login:a", u32::clone),
            Some(7),
            "bookkeeping flushes nothing"
        );
        near.invalidated(Some(vec![b"__cache:shop:stamp{:user:1}".to_vec()]));
        assert_eq!(near.get::<u32>("shop:login:a", u32::clone), None);
        assert_eq!(near.get::<u32>("shop:user:2", u32::clone), Some(7));
    }

    #[test]
    fn a_copy_expires_with_the_entry_it_was_read_from() {
        let near = listening();
        let ticket = near.ticket("shop:user:1").unwrap();
        near.insert(
            ticket,
            "shop:user:1",
            1_u32,
            copy(Duration::from_millis(20), Vec::new()),
        );
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(1));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), None);
    }

    #[test]
    fn schemas_of_one_entry_live_side_by_side() {
        let near = listening();
        read_into(&near, "shop:user:1", 1_u32);
        read_into(&near, "shop:user:1", "one".to_owned());
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(1));
        assert_eq!(
            near.get::<String>("shop:user:1", String::clone).as_deref(),
            Some("one")
        );
        near.evict(&["shop:user:1"], &[]);
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), None);
    }

    /// With a byte budget, large copies take the room of many small ones, and the entry
    /// count still bounds small ones.
    #[test]
    fn a_byte_budget_bounds_memory_and_the_entry_count_still_holds() {
        let near = Near::new(100, Some(100_000), Duration::from_secs(60), Some("shop"));
        near.reset(true);
        let keep = |key: &str, bytes: usize| {
            let ticket = near.ticket(key).unwrap();
            let copy = NearCopy {
                ttl: Duration::from_secs(60),
                bytes,
                tags: Vec::new(),
            };
            near.insert(ticket, key, 1_u8, copy);
        };
        for id in 0..50 {
            keep(&format!("shop:big:{id}"), 10_000);
        }
        let big = (0..50)
            .filter(|id| {
                near.get::<u8>(&format!("shop:big:{id}"), u8::clone)
                    .is_some()
            })
            .count();
        assert!(big <= 10, "{big} copies of 10 kB in a 100 kB budget");
        assert!(near.entries.weight() <= 100_000);
        for id in 0..1_000 {
            keep(&format!("shop:small:{id}"), 10);
        }
        assert!(near.entries.len() <= 100, "{} entries", near.entries.len());
        assert!(near.evictions() >= 900, "{}", near.evictions());
        // Without a byte budget, only the count.
        let counted = Near::new(100, None, Duration::from_secs(60), Some("shop"));
        counted.reset(true);
        for id in 0..50 {
            let key = format!("shop:big:{id}");
            let ticket = counted.ticket(&key).unwrap();
            let copy = NearCopy {
                ttl: Duration::from_secs(60),
                bytes: 10_000,
                tags: Vec::new(),
            };
            counted.insert(ticket, &key, 1_u8, copy);
        }
        assert!(counted.entries.len() > 40, "{}", counted.entries.len());
    }

    /// A copy this thread remembers is not served once an invalidation, a deafness or a tag
    /// changed its shard, and never by another handle's near cache.
    #[test]
    fn copies_a_thread_remembers_follow_every_invalidation() {
        let near = listening();
        read_into(&near, "shop:user:1", 1_u32);
        // Twice: the second get is served from this thread's copy.
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(1));
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), Some(1));
        near.invalidated(Some(vec![b"shop:user:1".to_vec()]));
        assert_eq!(near.get::<u32>("shop:user:1", u32::clone), None);

        let ticket = near.ticket("shop:user:2").unwrap();
        near.insert(
            ticket,
            "shop:user:2",
            2_u32,
            copy(Duration::from_secs(60), vec!["team:1".to_owned()]),
        );
        assert_eq!(near.get::<u32>("shop:user:2", u32::clone), Some(2));
        near.invalidated(Some(vec![b"__cache:shop:stamp{:team:1}".to_vec()]));
        assert_eq!(near.get::<u32>("shop:user:2", u32::clone), None);

        read_into(&near, "shop:user:3", 3_u32);
        assert_eq!(near.get::<u32>("shop:user:3", u32::clone), Some(3));
        near.reset(false);
        near.reset(true);
        assert_eq!(near.get::<u32>("shop:user:3", u32::clone), None);

        let other = listening();
        read_into(&near, "shop:user:4", 4_u32);
        assert_eq!(near.get::<u32>("shop:user:4", u32::clone), Some(4));
        assert_eq!(other.get::<u32>("shop:user:4", u32::clone), None);
    }
}
