//! The near cache: decoded values in process memory, kept coherent with Redis.
//!
//! Coherence comes from Redis' server-assisted client-side caching: the listener ([`listen`])
//! holds RESP3 connections of its own (one to a server, one to every primary of a cluster)
//! with `CLIENT TRACKING ON BCAST` over the handle's keys, and Redis pushes the name of
//! every key that changes, whoever changed it. (On `mem://` the store itself tells the near
//! caches of its changes, [`Near::changed`], before each operation returns.) Three rules make
//! that a guarantee rather than a hope:
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
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ProtocolVersion, PushInfo, PushKind, Value,
};

use crate::metrics::HandleMetrics;
use crate::store::ChangeListener;

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
    /// ([`clock::now`]).
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
            entry_prefix: namespace.map(|ns| format!("{ns}:")).unwrap_or_default(),
            stamp_prefix: format!("__cache:{}:stamp{{:", namespace.unwrap_or_default()),
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
            // A recent copy that expired: so did the shared one.
            Some(None) if expired => {
                self.entries.remove(key);
                return None;
            }
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
        if clock::now() >= entry.expires_at {
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
        let mut expires_at = clock::expiry(copy.ttl.min(self.max_age));
        let mut value_bytes = copy.bytes as u64;
        if let Some(current) = self.entries.get(key) {
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
            if let Some(rest) = key.strip_prefix(self.stamp_prefix.as_str()) {
                if let Some(tag) = rest.strip_suffix('}') {
                    tags.push(tag.to_owned());
                }
            } else if !key.starts_with("__cache:") && key.starts_with(self.entry_prefix.as_str()) {
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

/// Where the listener's connections go.
#[derive(Debug)]
pub(crate) enum Sources {
    /// One server: one connection.
    Server(Box<Client>),
    /// A Redis Cluster, given by the clients of its seed nodes: one connection per primary,
    /// found with `CLUSTER SLOTS` (every write, ours or another client's, lands on a primary,
    /// and a primary's tracking names every key it changes).
    Cluster(Vec<Client>),
}

/// Listens for Redis' invalidations on connections of its own, for as long as the handle
/// lives; reconnects and turns tracking on again after every failure (and, on a cluster,
/// after every change of its primaries).
pub(crate) fn listen(
    near: &Arc<Near>,
    sources: Sources,
    namespace: Option<&str>,
    operation_timeout: Duration,
) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let sources = match sources {
        Sources::Server(client) => match resp3(&client, None) {
            Some(client) => Sources::Server(Box::new(client)),
            None => return,
        },
        Sources::Cluster(seeds) => Sources::Cluster(seeds),
    };
    let tracked = Tracked {
        prefixes: match namespace {
            Some(namespace) => vec![
                format!("{namespace}:"),
                format!("__cache:{namespace}:stamp{{:"),
            ],
            // Entries of a handle without namespace can have any prefix: every key.
            None => Vec::new(),
        },
        // Under the first prefix, where no entry can be (`__` starts no prefix the
        // library writes for itself there, and a user's prefix would need the same name).
        probe: match namespace {
            Some(namespace) => format!("{namespace}:__near-probe"),
            None => "__cache::near-probe".to_owned(),
        },
    };
    // Holds the near cache weakly: when the handle is dropped, the listener and its
    // connections go too, at the next push or health check.
    let weak = Arc::downgrade(near);
    let listening = async move {
        let mut wait = Duration::from_millis(50);
        loop {
            let heard = hear(&weak, &sources, &tracked, operation_timeout).await;
            let Some(near) = weak.upgrade() else { return };
            near.reset(false);
            drop(near);
            if heard {
                wait = Duration::from_millis(50);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    };
    // On a thread and runtime of its own (its connections' tasks too): behind the
    // application's tasks in a busy runtime's queues, a push waited long enough to break
    // the 5 ms promise (the checker under load on two cores saw 7 ms). It logs through the
    // subscriber of whoever built the handle.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let spawned = std::thread::Builder::new()
        .name("cache-near-listener".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    tracing::dispatcher::with_default(&dispatch, || runtime.block_on(listening));
                }
                Err(error) => {
                    tracing::warn!(%error, "the near cache's listener could not start its runtime; running without it");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "the near cache's listener could not start its thread; running without it");
    }
}

/// `client` speaking RESP3 (push messages), at `address` instead of its own if given.
fn resp3(client: &Client, address: Option<(&str, u16)>) -> Option<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    let info = match address {
        None => info,
        Some((host, port)) => {
            let addr = match info.addr().clone() {
                ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.to_owned(), port),
                ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure,
                    tls_params,
                },
                // A Unix socket (or anything newer) is not a cluster node's address.
                _ => return None,
            };
            info.set_addr(addr)
        }
    };
    Client::open(info).ok()
}

/// The host `client` connects to, if it is a TCP address.
fn host_of(client: &Client) -> Option<String> {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => Some(host.clone()),
        _ => None,
    }
}

/// The primaries of a cluster, as the first seed that answers tells (`CLUSTER SLOTS`), with
/// the seed's credentials and TLS settings; sorted, so that two answers compare.
async fn primaries(seeds: &[Client], operation_timeout: Duration) -> Option<Vec<Primary>> {
    for seed in seeds {
        let Some(client) = resp3(seed, None) else {
            continue;
        };
        let connect = client.get_multiplexed_async_connection();
        let Ok(Ok(mut connection)) = tokio::time::timeout(operation_timeout, connect).await else {
            continue;
        };
        let Some(seed_host) = host_of(&client) else {
            continue;
        };
        if let Some(found) = cluster_primaries(&mut connection, &seed_host, operation_timeout).await
        {
            return Some(found);
        }
    }
    None
}

/// The primaries `CLUSTER SLOTS` names, on a connection to a node at `node_host`.
async fn cluster_primaries(
    connection: &mut MultiplexedConnection,
    node_host: &str,
    operation_timeout: Duration,
) -> Option<Vec<Primary>> {
    let mut command = redis::cmd("CLUSTER");
    command.arg("SLOTS");
    let slots = command.query_async::<Value>(connection);
    let Ok(Ok(Value::Array(ranges))) = tokio::time::timeout(operation_timeout, slots).await else {
        return None;
    };
    let mut found: Vec<Primary> = ranges
        .iter()
        .filter_map(|range| {
            // [start, end, [host, port, id, …] of the primary, replicas…]
            let Value::Array(range) = range else {
                return None;
            };
            let Some(Value::Int(start)) = range.first() else {
                return None;
            };
            let Some(Value::Array(primary)) = range.get(2) else {
                return None;
            };
            let host = match primary.first()? {
                Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
                Value::SimpleString(host) => host.clone(),
                _ => return None,
            };
            let Value::Int(port) = primary.get(1)? else {
                return None;
            };
            // An empty or unknown endpoint means "the node you asked".
            let host = if host.is_empty() || host == "?" {
                node_host.to_owned()
            } else {
                host
            };
            Some(Primary {
                address: (host, u16::try_from(*port).ok()?),
                slot: u16::try_from(*start).ok()?,
            })
        })
        .collect();
    found.sort_by(|a, b| (&a.address, a.slot).cmp(&(&b.address, b.slot)));
    found.dedup_by(|later, first| later.address == first.address);
    (!found.is_empty()).then_some(found)
}

/// A primary of a cluster, and one slot it serves (where its probe key goes).
#[derive(Debug, Clone)]
struct Primary {
    address: (String, u16),
    slot: u16,
}

/// Whether two answers of `CLUSTER SLOTS` name the same primaries (slots moving between
/// them change nothing for tracking: each primary's tracking covers whatever it serves).
fn same_primaries(a: &[Primary], b: &[Primary]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.address == b.address)
}

/// One life of the listener's connections: connect to every server, turn tracking on,
/// apply invalidations and check health until one fails, the cluster's primaries change or
/// the near cache is dropped. Answers whether tracking was on at all. The near cache serves
/// only while every connection hears: a write can land on any primary.
async fn hear(
    near: &Weak<Near>,
    sources: &Sources,
    tracked: &Tracked,
    operation_timeout: Duration,
) -> bool {
    let prefixes = &tracked.prefixes;
    let (clients, cluster) = match sources {
        Sources::Server(client) => (vec![Client::clone(client)], None),
        Sources::Cluster(seeds) => {
            let Some(found) = primaries(seeds, operation_timeout).await else {
                return false;
            };
            let Some(seed) = seeds.first() else {
                return false;
            };
            let clients: Option<Vec<Client>> = found
                .iter()
                .map(|primary| resp3(seed, Some((&primary.address.0, primary.address.1))))
                .collect();
            let Some(clients) = clients else { return false };
            (clients, Some(found))
        }
    };
    let (sender, mut pushes) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
    let mut connections = Vec::with_capacity(clients.len());
    for client in &clients {
        match track(near, client, prefixes, sender.clone(), operation_timeout).await {
            Some(connection) => connections.push(connection),
            None => return false,
        }
    }
    drop(sender);
    // Redis accepted tracking; whether its pushes reach us (a proxy may drop them) is
    // another matter: a key of ours written on every connection must come back as a push.
    let probes: Vec<String> = match &cluster {
        None => vec![tracked.probe.clone()],
        Some(found) => found
            .iter()
            .map(|primary| {
                format!(
                    "{}{{{}}}",
                    tracked.probe,
                    crate::key::slot_tag(primary.slot)
                )
            })
            .collect(),
    };
    if !heard_probes(
        near,
        &mut connections,
        &probes,
        &mut pushes,
        operation_timeout,
    )
    .await
    {
        return false;
    }
    match near.upgrade() {
        Some(alive) => alive.reset(true),
        None => return false,
    }
    // Health is checked beside the pushes, not between them: a push must never wait for a
    // round of PINGs (and `CLUSTER SLOTS`), which on a loaded machine took longer than the
    // 5 ms a push may take.
    let (sick, mut fell_sick) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(check_health(
        near.clone(),
        connections,
        cluster.map(|known| (known, host_of(&clients[0]).unwrap_or_default())),
        operation_timeout,
        sick,
    ));
    let _health = AbortOnDrop(health);
    loop {
        tokio::select! {
            biased;
            push = pushes.recv() => {
                let Some(push) = push else { return true };
                match push.kind {
                    PushKind::Invalidate => {
                        let keys = invalidated_keys(push.data);
                        let Some(near) = near.upgrade() else { return true };
                        near.invalidated(keys);
                    }
                    PushKind::Disconnection => return true,
                    _ => {}
                }
            }
            _ = &mut fell_sick => return true,
        }
    }
}

/// Aborts a task when dropped: the health check ends with the connections' life.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every [`HEALTH_CHECK`], that every connection answers a `PING` within the timeout and (on
/// a cluster) that the primaries are those it connected to; says `sick` when not, or when
/// the near cache was dropped.
async fn check_health(
    near: Weak<Near>,
    mut connections: Vec<MultiplexedConnection>,
    cluster: Option<(Vec<Primary>, String)>,
    operation_timeout: Duration,
    sick: tokio::sync::oneshot::Sender<()>,
) {
    let mut every = tokio::time::interval(HEALTH_CHECK);
    loop {
        every.tick().await;
        if near.strong_count() == 0 {
            break;
        }
        let mut answering = true;
        for connection in &mut connections {
            answering = answering && answers(connection, operation_timeout).await;
        }
        if !answering {
            break;
        }
        // A failover or a new primary: connect to the primaries as they are now. (Until
        // then a demoted primary, as a replica, still names the keys its new primary
        // changes: tracking covers replicated writes.)
        if let (Some((known, node_host)), Some(first)) = (&cluster, connections.first_mut()) {
            match cluster_primaries(first, node_host, operation_timeout).await {
                Some(now) if same_primaries(&now, known) => {}
                _ => break,
            }
        }
    }
    let _ = sick.send(());
}

/// What the listener tracks: the key prefixes, and the key it writes to check that pushes
/// arrive.
#[derive(Debug)]
struct Tracked {
    prefixes: Vec<String>,
    probe: String,
}

/// Writes `probes[i]` on `connections[i]` and waits (up to the operation timeout) for the
/// pushes that name them all, applying any other invalidation that arrives meanwhile.
/// `false`, said once, when a probe cannot be written or its push never comes.
async fn heard_probes(
    near: &Weak<Near>,
    connections: &mut [MultiplexedConnection],
    probes: &[String],
    pushes: &mut tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
    operation_timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + operation_timeout;
    for (connection, probe) in connections.iter_mut().zip(probes) {
        let mut write = redis::cmd("SET");
        write
            .arg(probe)
            .arg("1")
            .arg("PX")
            .arg(crate::time::millis(operation_timeout).max(1) * 4);
        let written = write.query_async::<()>(connection);
        match tokio::time::timeout_at(deadline, written).await {
            Ok(Ok(())) => {}
            // Refused (an ACL user without `set` on it, a full Redis under `noeviction`, a
            // replica): said once. A timeout or a broken connection is just a failed try.
            Ok(Err(error)) if !error.is_io_error() && !error.is_timeout() => {
                if let Some(near) = near.upgrade() {
                    near.unavailable(&format!(
                        "it could not write the probe key {probe}: {error}"
                    ));
                }
                return false;
            }
            Ok(Err(_)) | Err(_) => return false,
        }
    }
    let mut unheard: Vec<&str> = probes.iter().map(String::as_str).collect();
    while !unheard.is_empty() {
        let push = match tokio::time::timeout_at(deadline, pushes.recv()).await {
            Ok(Some(push)) => push,
            Ok(None) => return false,
            Err(_) => {
                if let Some(near) = near.upgrade() {
                    near.unavailable(&"redis accepted CLIENT TRACKING, but the push naming the probe key did not arrive within the operation timeout (a proxy that drops pushes?)");
                }
                return false;
            }
        };
        match push.kind {
            PushKind::Invalidate => {
                let keys = invalidated_keys(push.data);
                if let Some(keys) = &keys {
                    unheard.retain(|probe| !keys.iter().any(|key| key == probe.as_bytes()));
                }
                let Some(near) = near.upgrade() else {
                    return false;
                };
                near.invalidated(keys);
            }
            PushKind::Disconnection => return false,
            _ => {}
        }
    }
    true
}

/// A connection to `client`'s server with tracking on, its pushes sent to `sender`; `None`
/// when it cannot be had (said once if Redis refuses RESP3 or tracking).
async fn track(
    near: &Weak<Near>,
    client: &Client,
    prefixes: &[String],
    sender: tokio::sync::mpsc::UnboundedSender<PushInfo>,
    operation_timeout: Duration,
) -> Option<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(operation_timeout))
        .set_response_timeout(Some(operation_timeout))
        .set_push_sender(sender);
    let connect = client.get_multiplexed_async_connection_with_config(&config);
    let mut connection = match tokio::time::timeout(operation_timeout, connect).await {
        Ok(Ok(connection)) => connection,
        // A server that does not speak RESP3 (before Redis 6) refuses `HELLO 3` here.
        Ok(Err(error)) if error.kind() != redis::ErrorKind::Io => {
            if let Some(near) = near.upgrade() {
                near.unavailable(&error);
            }
            return None;
        }
        _ => return None,
    };
    let mut tracking = redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in prefixes {
        tracking.arg("PREFIX").arg(prefix);
    }
    let enabled = tracking.query_async::<()>(&mut connection);
    match tokio::time::timeout(operation_timeout, enabled).await {
        Ok(Ok(())) => Some(connection),
        Ok(Err(error)) => {
            if let Some(near) = near.upgrade() {
                near.unavailable(&error);
            }
            None
        }
        Err(_) => None,
    }
}

/// Whether the connection answers a `PING` within the timeout.
async fn answers(connection: &mut MultiplexedConnection, timeout: Duration) -> bool {
    let ping = redis::cmd("PING");
    let reply = tokio::time::timeout(timeout, ping.query_async::<Value>(connection)).await;
    matches!(reply, Ok(Ok(_)))
}

/// The keys of an `invalidate` push: an array of keys, or nil for "everything".
fn invalidated_keys(data: Vec<Value>) -> Option<Vec<Vec<u8>>> {
    match data.into_iter().next() {
        Some(Value::Array(keys)) => Some(
            keys.into_iter()
                .filter_map(|key| match key {
                    Value::BulkString(key) => Some(key),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Each thread's most recent copies: a near hit served from here writes nothing another
/// core reads (the shared store's reference count and lock are written by every get), which
/// measured a fifth of a near hit at 64 tasks on two cores. A copy is served only while its
/// shard's generation is the one read before the shared store gave it (see [`Near::get`]):
/// every invalidation, deafness and reset changes it. Direct-mapped by key hash, so a
/// thread keeps at most [`SLOTS`] copies (of at most [`LARGEST`] bytes each) across all
/// handles; they may outlive an eviction from the shared store for room, never an
/// invalidation.
mod recent {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::NearEntry;

    /// Copies per thread (a power of two): a hot set of a few hundred entries stays here.
    /// 128 measured no better than none (a cyclic walk over 100 keys collides half the time).
    const SLOTS: usize = 1024;

    /// Larger copies are not kept per thread, so that a thread holds at most 4 MiB here.
    pub(super) const LARGEST: u64 = 4 * 1024;

    struct Slot {
        near: u64,
        hash: u64,
        generation: u64,
        key: Box<str>,
        entry: Arc<NearEntry>,
    }

    thread_local! {
        static RECENT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
    }

    fn index(hash: u64) -> usize {
        // Fibonacci hashing: FNV's high bits barely change with a key's last byte (`user:1`,
        // `user:2`, … would share a slot), a product's top bits mix all of them.
        (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// `serve` applied to this thread's copy of `key` in near cache `near`, if it has one
    /// remembered under `generation`.
    pub(super) fn find<T>(
        near: u64,
        key: &str,
        hash: u64,
        generation: u64,
        serve: impl FnOnce(&NearEntry) -> T,
    ) -> Option<T> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let slot = recent.get(index(hash))?.as_ref()?;
                let current = slot.near == near
                    && slot.hash == hash
                    && slot.generation == generation
                    && *slot.key == *key;
                current.then(|| serve(&slot.entry))
            })
            .ok()
            .flatten()
    }

    /// Remembers `entry` for `key`, got from the shared store after `generation` was read.
    pub(super) fn keep(near: u64, key: &str, hash: u64, generation: u64, entry: Arc<NearEntry>) {
        let _ = RECENT.try_with(|recent| {
            let Ok(mut recent) = recent.try_borrow_mut() else {
                return;
            };
            if recent.is_empty() {
                recent.resize_with(SLOTS, || None);
            }
            recent[index(hash)] = Some(Slot {
                near,
                hash,
                generation,
                key: key.into(),
                entry,
            });
        });
    }
}

/// The clock copies expire by, read on every near hit: `Instant::now()` was a fifth of a near
/// hit's own work (measured with `perf`). Where the kernel has a coarse monotonic clock
/// (Linux: a few nanoseconds, no hardware counter read, ticking every 1–4 ms) it is used,
/// and a copy's life is shortened by one tick so that the clock's lag never serves it past
/// the entry's expiry in Redis.
mod clock {
    use std::time::Duration;

    /// Now, in nanoseconds of a monotonic clock.
    #[cfg(target_os = "linux")]
    pub(super) fn now() -> u64 {
        read(libc::CLOCK_MONOTONIC_COARSE)
    }

    #[cfg(target_os = "linux")]
    fn read(clock: libc::clockid_t) -> u64 {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `time` is a valid, writable timespec; the clock id is a constant the
        // kernel knows (since Linux 2.6.32).
        let failed = unsafe { libc::clock_gettime(clock, &mut time) } != 0;
        if failed {
            return 0;
        }
        let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(time.tv_nsec).unwrap_or(0);
        seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
    }

    /// How far [`now`] may lag behind the true time.
    #[cfg(target_os = "linux")]
    fn lag() -> u64 {
        static LAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *LAG.get_or_init(|| {
            let mut resolution = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: as in `read`.
            let failed =
                unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut resolution) } != 0;
            if failed {
                // Not knowing the tick, assume the coarsest kernel's (100 Hz).
                return 10_000_000;
            }
            let seconds = u64::try_from(resolution.tv_sec).unwrap_or(0);
            let nanos = u64::try_from(resolution.tv_nsec).unwrap_or(0);
            seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn now() -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    #[cfg(not(target_os = "linux"))]
    fn lag() -> u64 {
        0
    }

    /// When a copy that may live `life` from now expires, on [`now`]'s scale.
    pub(super) fn expiry(life: Duration) -> u64 {
        let life = u64::try_from(life.as_nanos()).unwrap_or(u64::MAX);
        now().saturating_add(life.saturating_sub(lag()))
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
