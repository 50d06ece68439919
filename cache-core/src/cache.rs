//! [`Cache`], its builder, the process-wide handle, and the direct API.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, SchemaFields};
use crate::flight::Flights;
use crate::guard::{
    Admission, Backoff, CircuitBreaker, PendingInvalidations, RateLimiter, Transition,
};
use crate::key::{
    check_segment, clock_key, encode_tag, entry_key, tag_keys, tag_stamp_key, TagKeys,
};
use crate::locks::RwLockExt as _;
use crate::metrics::HandleMetrics;
use crate::near::{self, Near};
use crate::redact::redact_url;
use crate::source::{RedisSource, Source};
use crate::stats::{Counter, Counters, Stats};
use crate::store::{
    self, ClockRead, EntryTags, Fill, FillBody, Invalidation, Link, MemoryStore, RedisStore, Store,
    StoreResult, WriteThrough,
};
use crate::time::millis;
use crate::Error;

/// `mem://` selects a private in-process store, `mem://name` one shared by name.
const MEMORY_SCHEME: &str = "mem://";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
/// The longest a call waits for a connection being made (when the operation timeout is
/// shorter), before its operation's own timeout starts.
const CONNECT_BUDGET: Duration = Duration::from_secs(2);
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(2);
const DEFAULT_MAX_PENDING_INVALIDATIONS: usize = 100_000;
const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;
const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(10);
const DEFAULT_LEASE_WAIT: Duration = Duration::from_millis(300);
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);
const DEFAULT_NEAR_MAX_AGE: Duration = Duration::from_secs(60);
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// The longest duration any option takes (as the macros' `ttl`): ten years. Longer ones are
/// mistakes, and `Duration::MAX` would overflow every deadline computed from it.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
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

/// A handle on one cache: a Redis server (or the in-process store), a namespace and the
/// failure-handling state. Cheap to clone; clones share everything.
///
/// ```no_run
/// # fn main() -> Result<(), cache_core::Error> {
/// # let rt = tokio::runtime::Runtime::new().unwrap(); let _guard = rt.enter();
/// use std::time::Duration;
/// let cache = cache_core::Cache::builder()
///     .url("redis://127.0.0.1:6379/0")
///     .namespace("shop")
///     .default_ttl(Duration::from_secs(3600))
///     .build()?;
/// cache_core::install(cache.clone());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// `false` for [`Cache::disabled`]: every call goes straight to the function.
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
    negative_ttl: Duration,
    clock_key: String,
    flights: Flights,
    counters: Counters,
    /// The near cache, when `near_cache` asked for one and tracking can keep it right.
    near: Option<Arc<Near>>,
    /// The handle's own metrics (feature `metrics`).
    metrics: HandleMetrics,
}

/// Builds a [`Cache`]. Only configuration is checked: connecting is lazy, so `build` neither
/// waits for nor fails because of an unreachable Redis. Its `Debug` output shows the URL
/// without its password.
///
/// Every option, with its default spelled out (the in-process store here, so that the
/// example runs anywhere; a Redis URL takes the same options):
///
/// ```
/// use std::time::Duration;
/// use cache_core::Cache;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_core::Error> {
/// let cache = Cache::builder()
///     .url("mem://")                                     // or redis://, rediss://, cluster_nodes, redis(connection)
///     .namespace("shop")                                 // keys `shop:{prefix}:{key}`
///     .default_ttl(Duration::from_secs(3600))            // entries without `ttl = …`
///     .operation_timeout(Duration::from_millis(250))     // each Redis operation
///     .breaker_threshold(5)                              // failures in a row that open the breaker…
///     .breaker_cooldown(Duration::from_secs(2))          // …for this long
///     .max_value_size(1 << 20)                           // larger values are returned, not cached
///     .max_pending_invalidations(100_000)                // kept while Redis is unreachable
///     .lease_time(Duration::from_secs(10))               // longest load that may still fill
///     .lease_wait(Duration::from_millis(300))            // longest wait for another process's load
///     .negative_ttl(Duration::from_secs(30))             // `cache_none` absences
///     .near_cache(10_000)                                // values kept in process memory (0: off)
///     .near_max_bytes(64 << 20)                          // and at most about this many bytes
///     .near_max_age(Duration::from_secs(60))             // re-read from Redis at least this often
///     .cluster_replica_acks(1)                           // on a cluster: replicas per invalidation
///     .build()?;
/// assert!(cache.is_enabled());
///
/// // Configuration mistakes are typed errors, never panics.
/// for builder in [
///     Cache::builder().url("mem://").namespace("a:b"),
///     Cache::builder().url("mem://").default_ttl(Duration::ZERO),
///     Cache::builder().url("mem://").breaker_threshold(0),
///     Cache::builder().url("postgres://localhost"),
///     Cache::builder().cluster_nodes(Vec::<String>::new()),
/// ] {
///     assert!(matches!(builder.build(), Err(cache_core::Error::Config(_))));
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct CacheBuilder {
    url: String,
    source: Option<RedisSource>,
    cluster_nodes: Option<Vec<String>>,
    cluster_replica_acks: u32,
    near_entries: usize,
    near_max_bytes: Option<u64>,
    near_max_age: Duration,
    namespace: Option<String>,
    default_ttl: Duration,
    operation_timeout: Duration,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    max_pending_invalidations: usize,
    max_value_size: usize,
    lease_time: Duration,
    lease_wait: Duration,
    negative_ttl: Duration,
    tls: TlsOptions,
}

/// What `rediss://` connections trust and present, beyond the system's root certificates.
#[derive(Clone, Default)]
struct TlsOptions {
    /// PEM certificate(s) of a CA to trust instead of the system's roots.
    ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key this client presents (mutual TLS).
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("url", &redact_url(&self.url))
            .field("redis", &self.source)
            .field("cluster_replica_acks", &self.cluster_replica_acks)
            .field("near_entries", &self.near_entries)
            .field("near_max_bytes", &self.near_max_bytes)
            .field("near_max_age", &self.near_max_age)
            .field(
                "cluster_nodes",
                &self.cluster_nodes.as_ref().map(|nodes| {
                    nodes
                        .iter()
                        .map(|node| redact_url(node))
                        .collect::<Vec<_>>()
                }),
            )
            .field("namespace", &self.namespace)
            .field("default_ttl", &self.default_ttl)
            .field("operation_timeout", &self.operation_timeout)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("max_pending_invalidations", &self.max_pending_invalidations)
            .field("max_value_size", &self.max_value_size)
            .field("lease_time", &self.lease_time)
            .field("lease_wait", &self.lease_wait)
            .field("negative_ttl", &self.negative_ttl)
            // Whether they are set, never their bytes (the key is a secret).
            .field("tls_ca", &self.tls.ca_pem.is_some())
            .field("tls_client_identity", &self.tls.identity.is_some())
            .finish()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            url: DEFAULT_URL.to_owned(),
            source: None,
            cluster_nodes: None,
            cluster_replica_acks: 1,
            near_entries: 0,
            near_max_bytes: None,
            near_max_age: DEFAULT_NEAR_MAX_AGE,
            namespace: None,
            default_ttl: DEFAULT_TTL,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            max_pending_invalidations: DEFAULT_MAX_PENDING_INVALIDATIONS,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            lease_time: DEFAULT_LEASE_TIME,
            lease_wait: DEFAULT_LEASE_WAIT,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            tls: TlsOptions::default(),
        }
    }
}

impl CacheBuilder {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS, with the `tls`
    /// feature), `redis+unix:///path.sock`, or `mem://` for a private in-process store
    /// (`mem://name`: one shared by every handle of the process that names it).
    /// Default: `redis://127.0.0.1:6379`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// A connection the application already has instead of [`url`](Self::url) or
    /// [`cluster_nodes`](Self::cluster_nodes): a [`redis::Client`], a
    /// `MultiplexedConnection`, a `ConnectionManager` (feature `connection-manager`), a
    /// `deadpool_redis::Pool` (feature `deadpool`), a `ClusterClient` or a
    /// `ClusterConnection`; see [`RedisSource`] for what each does when Redis breaks. A hit
    /// is one command whatever the source: no pool checkout per call.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379/0")?;
    /// let connection = client.get_multiplexed_async_connection().await?;
    /// let cache = cache_core::Cache::builder().redis(connection).build()?;
    /// # Ok(()) }
    /// ```
    pub fn redis(mut self, source: impl Into<RedisSource>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A Redis Cluster instead of [`url`](Self::url): the URLs of some of its nodes
    /// (`redis://` or `rediss://`, with `user:password@` where the cluster asks for one); one
    /// reachable node is enough, the others are discovered. Entries keep their keys
    /// (`{namespace}:{prefix}:{key}`); the library places its own keys in the slots it needs.
    pub fn cluster_nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cluster_nodes = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Keeps up to `entries` decoded values in process memory: a hit there costs no round
    /// trip and decodes nothing. Kept coherent by Redis' invalidation pushes (RESP3 `CLIENT
    /// TRACKING`, on connections of its own: one to the server, or one to every primary of a
    /// cluster; on `mem://` the store tells it directly): a read never returns data older
    /// than a write completed through this handle before it started, nor than one completed
    /// through another handle more than the push's delay (well under 5 ms on a LAN) before
    /// it; a handle that cannot hear invalidations serves nothing from memory. Schemas that
    /// are `Clone + Send + Sync + 'static` are kept; others always ask Redis. 0 (the
    /// default) turns it off.
    pub fn near_cache(mut self, entries: usize) -> Self {
        self.near_entries = entries;
        self
    }

    /// Bounds the near cache by memory as well: about `bytes` of values (each entry weighs
    /// the bytes its fields were read from, plus its key and tags, and at least
    /// `bytes / entries`, so the entry count still holds). The budget is split over up to
    /// four shards per core of at least 32 KiB each; a value heavier than its shard's part
    /// is not kept (it is still served from Redis). Drops for room are counted in
    /// [`Stats::near_evictions`]. Off by default: the entry count only.
    pub fn near_max_bytes(mut self, bytes: u64) -> Self {
        self.near_max_bytes = Some(bytes);
        self
    }

    /// The longest a value stays in the near cache without being read from Redis again.
    /// Default: one minute.
    pub fn near_max_age(mut self, max_age: Duration) -> Self {
        self.near_max_age = max_age;
        self
    }

    /// On a Redis Cluster, how many replicas must hold an invalidation before the write that
    /// made it returns (Redis `WAIT`, for at most a quarter of the operation timeout), so that a
    /// primary failing over right after it cannot lose it. Default 1; 0 for a cluster
    /// without replicas (each invalidation would otherwise wait out the timeout).
    pub fn cluster_replica_acks(mut self, replicas: u32) -> Self {
        self.cluster_replica_acks = replicas;
        self
    }

    /// Puts every key of this handle under `{namespace}:`. No `:`, whitespace or braces
    /// allowed. Default: none.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// TTL of entries whose macro or call gives none. Default: one hour. Must be positive.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long one Redis operation may take before the call goes on without the cache.
    /// Default: 250 ms. Must be positive. A call that has to connect first waits for the
    /// connection before this starts, at most 2 s (or this timeout, if longer); each attempt
    /// to reach a server is bounded by this timeout.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// After this many consecutive failures Redis is skipped for
    /// [`breaker_cooldown`](Self::breaker_cooldown). Default: 5.
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.breaker_threshold = failures;
        self
    }

    /// How long Redis is skipped once the breaker opened; then one call probes it.
    /// Default: 2 s.
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker_cooldown = cooldown;
        self
    }

    /// The largest value cached, in bytes of its stored fields. Larger ones are returned but
    /// not cached: one huge value read on every call would hold the shared connection for
    /// the whole transfer, time out the reads queued behind it, and open the breaker for
    /// everything. Default: 1 MiB.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// How many undelivered invalidations are remembered key by key. Past that, every read
    /// bypasses the cache until the longest TTL written has passed. Default: 100 000.
    pub fn max_pending_invalidations(mut self, keys: usize) -> Self {
        self.max_pending_invalidations = keys;
        self
    }

    /// The longest a load may take and still fill the cache, and how long the traces of an
    /// invalidation (tombstones, tag stamps) stay to refuse fills that raced it. Also how long
    /// concurrent misses wait for the one that loads. Default: 10 s.
    pub fn lease_time(mut self, lease_time: Duration) -> Self {
        self.lease_time = lease_time;
        self
    }

    /// How long a miss on a freshly invalidated entry waits for another process that holds
    /// the entry's lease (is loading it) before loading itself. Default: 300 ms.
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// Trusts this CA (PEM) for `rediss://` connections instead of the system's root
    /// certificates: a private CA, as managed Redis offerings and self-hosted TLS use.
    #[cfg(feature = "tls")]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// Presents this certificate and key (PEM) on `rediss://` connections, for servers that
    /// authenticate clients by certificate (mutual TLS).
    #[cfg(feature = "tls")]
    pub fn tls_client_identity(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.identity = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// TTL of cached absences (`cache_none = true`) whose macro gives no `ttl`. Default: 30 s.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Checks the configuration and makes the handle. A Redis URL needs a Tokio runtime
    /// (the connection is driven by it), but no connection is made here.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed or unsupported URL, an empty or `:`-containing
    /// namespace, a zero TTL, timeout or breaker threshold, or a Redis URL outside a Tokio
    /// runtime.
    pub fn build(self) -> Result<Cache, Error> {
        if let Some(namespace) = &self.namespace {
            check_segment("namespace", namespace)?;
        }
        for (option, duration) in [
            ("default_ttl", self.default_ttl),
            ("operation_timeout", self.operation_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
            ("lease_time", self.lease_time),
            ("lease_wait", self.lease_wait),
            ("negative_ttl", self.negative_ttl),
            ("near_max_age", self.near_max_age),
        ] {
            if duration > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{option} is {duration:?}; at most ten years is accepted"
                )));
            }
        }
        if self.default_ttl.is_zero() {
            return Err(Error::Config("default_ttl must be positive".into()));
        }
        if self.operation_timeout.is_zero() {
            return Err(Error::Config("operation_timeout must be positive".into()));
        }
        if self.breaker_threshold == 0 {
            return Err(Error::Config("breaker_threshold must be at least 1".into()));
        }
        if self.lease_time.is_zero() || self.negative_ttl.is_zero() {
            return Err(Error::Config(
                "lease_time and negative_ttl must be positive".into(),
            ));
        }
        if let Some(source) = &self.source {
            let (store, near) = self.given_store(source.0.clone())?;
            return Ok(self.assemble(Store::Redis(Box::new(store)), true, near));
        }
        if let Some(nodes) = &self.cluster_nodes {
            let (store, seeds) = cluster_store(
                nodes,
                self.operation_timeout,
                &self.tls,
                self.cluster_replica_acks,
            )?;
            let near = self.near(near::Sources::Cluster(seeds));
            return Ok(self.assemble(Store::Redis(Box::new(store)), true, near));
        }
        let (store, near) = match self.url.strip_prefix(MEMORY_SCHEME) {
            Some(name) => {
                let store: Arc<MemoryStore> = if name.is_empty() {
                    Arc::default()
                } else {
                    store::shared_memory(name)
                };
                // Decoded values without decoding, as on Redis; the store tells the near
                // cache of every change itself.
                let near = self.new_near().inspect(|near| store.track(near.clone()));
                (Store::Memory(store), near)
            }
            None => {
                let (store, client) = redis_store(&self.url, self.operation_timeout, &self.tls)?;
                let near = self.near(near::Sources::Server(Box::new(client)));
                (Store::Redis(Box::new(store)), near)
            }
        };
        Ok(self.assemble(store, true, near))
    }

    /// The store over a connection the application gave, and its near cache when it can
    /// have one.
    fn given_store(&self, source: Source) -> Result<(RedisStore, Option<Arc<Near>>), Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "a Redis cache must be built inside a Tokio runtime".into(),
            ));
        }
        let kind = source.kind();
        let store = match source {
            Source::Client(client) => {
                let near = self.near(near::Sources::Server(Box::new(client.clone())));
                return Ok((RedisStore::new(client, self.operation_timeout), near));
            }
            _ if self.near_entries > 0 => {
                return Err(Error::Config(format!(
                    "the near cache needs a connection of its own that receives Redis' invalidation pushes, which a {kind} cannot open: give `redis(client)` with a redis::Client, or a `url`"
                )));
            }
            Source::Multiplexed(connection) => RedisStore::given(Link::Single(connection)),
            #[cfg(feature = "connection-manager")]
            Source::Manager(manager) => RedisStore::given(Link::Manager(manager)),
            #[cfg(feature = "deadpool")]
            Source::Pool(pool) => RedisStore::pool(pool),
            Source::ClusterClient(client) => RedisStore::cluster(
                client,
                self.cluster_replica_acks,
                self.operation_timeout / 4,
            ),
            Source::ClusterConnection(connection) => RedisStore::given_cluster(
                connection,
                self.cluster_replica_acks,
                self.operation_timeout / 4,
            ),
        };
        Ok((store, None))
    }

    /// The near cache, if asked for.
    fn new_near(&self) -> Option<Arc<Near>> {
        (self.near_entries > 0).then(|| {
            Arc::new(Near::new(
                self.near_entries,
                self.near_max_bytes,
                self.near_max_age,
                self.namespace.as_deref(),
            ))
        })
    }

    /// The near cache over Redis, if asked for, with its listener started.
    fn near(&self, sources: near::Sources) -> Option<Arc<Near>> {
        let near = self.new_near()?;
        near::listen(
            &near,
            sources,
            self.namespace.as_deref(),
            self.operation_timeout,
        );
        Some(near)
    }

    /// The handle from checked settings.
    fn assemble(self, store: Store, enabled: bool, near: Option<Arc<Near>>) -> Cache {
        let clock_key = clock_key(self.namespace.as_deref());
        let metrics = HandleMetrics::new(self.namespace.as_deref());
        Cache {
            inner: Arc::new(Inner {
                store,
                enabled,
                owner: self.namespace.clone().unwrap_or_default(),
                namespace: self.namespace,
                default_ttl: self.default_ttl,
                operation_timeout: self.operation_timeout,
                breaker: CircuitBreaker::new(self.breaker_threshold, self.breaker_cooldown),
                failure_log: RateLimiter::new(LOG_INTERVAL),
                delivery: Backoff::new(DELIVERY_INTERVAL, DELIVERY_BACKOFF_LIMIT),
                delivery_task_running: AtomicBool::new(false),
                pending: PendingInvalidations::new(self.max_pending_invalidations),
                max_value_size: self.max_value_size,
                longest_ttl_ms: AtomicU64::new(millis(self.default_ttl)),
                lease_time: self.lease_time,
                lease_wait: self.lease_wait,
                negative_ttl: self.negative_ttl,
                clock_key,
                flights: Flights::default(),
                counters: Counters::default(),
                near,
                metrics,
            }),
        }
    }
}

/// The store of one Redis server, and its client (for the near cache's own connection).
fn redis_store(
    url: &str,
    operation_timeout: Duration,
    tls: &TlsOptions,
) -> Result<(RedisStore, redis::Client), Error> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "redis+unix" | "unix") => {}
        _ => {
            return Err(Error::Config(format!(
                "unsupported cache URL `{}`: expected redis://, rediss://, redis+unix:// or mem://",
                redact_url(url)
            )))
        }
    }
    let client = open_client(url, scheme == Some("rediss"), tls)?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Config(
            "a Redis cache must be built inside a Tokio runtime".into(),
        ));
    }
    Ok((RedisStore::new(client.clone(), operation_timeout), client))
}

/// The store of a Redis Cluster given by some of its nodes.
fn cluster_store(
    nodes: &[String],
    operation_timeout: Duration,
    tls: &TlsOptions,
    replica_acks: u32,
) -> Result<(RedisStore, Vec<redis::Client>), Error> {
    if nodes.is_empty() {
        return Err(Error::Config(
            "cluster_nodes needs at least one node URL".into(),
        ));
    }
    let mut is_tls = false;
    let mut seeds = Vec::with_capacity(nodes.len());
    for node in nodes {
        match node.split_once("://").map(|(scheme, _)| scheme) {
            Some("redis") => {}
            Some("rediss") => is_tls = true,
            _ => {
                return Err(Error::Config(format!(
                    "unsupported cluster node URL `{}`: expected redis:// or rediss://",
                    redact_url(node)
                )))
            }
        }
        // Each node's URL is checked on its own, so that the error names the bad one; the
        // near cache's listener starts from these clients.
        seeds.push(open_client(node, node.starts_with("rediss://"), tls)?);
    }
    let builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        // The caller's timeout bounds every operation; these bound each attempt inside it, so
        // that a failed-over node is given up in time for a retry on its successor.
        .connection_timeout(operation_timeout)
        .response_timeout(operation_timeout);
    let builder = cluster_tls(builder, is_tls, tls);
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Config(
            "a Redis cache must be built inside a Tokio runtime".into(),
        ));
    }
    let client = builder
        .build()
        .map_err(|error| Error::Config(format!("invalid cluster nodes: {error}")))?;
    // An invalidation may wait for replicas up to three times (its tags, its entries, the
    // members it drains): a quarter of the operation timeout each keeps it within.
    let store = RedisStore::cluster(client, replica_acks, operation_timeout / 4);
    Ok((store, seeds))
}

#[cfg(feature = "tls")]
fn cluster_tls(
    builder: redis::cluster::ClusterClientBuilder,
    is_tls: bool,
    tls: &TlsOptions,
) -> redis::cluster::ClusterClientBuilder {
    if !is_tls || (tls.ca_pem.is_none() && tls.identity.is_none()) {
        return builder;
    }
    builder.certs(tls.certificates())
}

#[cfg(not(feature = "tls"))]
fn cluster_tls(
    builder: redis::cluster::ClusterClientBuilder,
    _: bool,
    _: &TlsOptions,
) -> redis::cluster::ClusterClientBuilder {
    builder
}

/// The redis-rs client of a checked URL. redis-rs' parse errors do not repeat the URL; ours
/// show it without its password.
#[cfg(feature = "tls")]
fn open_client(url: &str, is_tls: bool, tls: &TlsOptions) -> Result<redis::Client, Error> {
    let invalid = |error: redis::RedisError| {
        Error::Config(format!("invalid Redis URL `{}`: {error}", redact_url(url)))
    };
    if !is_tls {
        return redis::Client::open(url).map_err(invalid);
    }
    // rustls needs one process-wide crypto provider; another crate may have installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if tls.ca_pem.is_none() && tls.identity.is_none() {
        return redis::Client::open(url).map_err(invalid);
    }
    redis::Client::build_with_tls(url, tls.certificates()).map_err(invalid)
}

#[cfg(feature = "tls")]
impl TlsOptions {
    /// The CA and client identity in redis-rs' terms.
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.identity.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

#[cfg(not(feature = "tls"))]
fn open_client(url: &str, is_tls: bool, _: &TlsOptions) -> Result<redis::Client, Error> {
    if is_tls {
        return Err(Error::Config(
            "`rediss://` (TLS) needs cache-core's `tls` feature".into(),
        ));
    }
    redis::Client::open(url)
        .map_err(|error| Error::Config(format!("invalid Redis URL `{}`: {error}", redact_url(url))))
}

/// A lease token that no other caller anywhere holds: 128 random bits drawn once per
/// process, then a counter. Not the process id: PIDs repeat across hosts and containers
/// (each container's first process is PID 1), and a token another process also makes could
/// release that process's lease.
fn lease_token() -> String {
    static PROCESS: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness (never seen on a supported platform): std's per-process
            // random hash keys, the time and the process id, which are still unlike another
            // process's.
            use std::hash::{BuildHasher, Hasher};
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos());
            for (half, salt) in bytes.chunks_mut(8).zip([1u8, 2]) {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u128(nanos);
                hasher.write_u32(std::process::id());
                hasher.write_u8(salt);
                half.copy_from_slice(&hasher.finish().to_le_bytes());
            }
        }
        u128::from_le_bytes(bytes)
    });
    format!("{process:032x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What the near cache needs to know of a value read from Redis to keep a copy.
#[derive(Debug, Clone)]
pub(crate) struct Copyable {
    /// The entry's TTL left in ms, when the read asked for it (0: unknown, not kept).
    pub(crate) ttl_ms: u64,
    /// The bytes of the value's fields as read: the copy's weight for `near_max_bytes`.
    pub(crate) bytes: usize,
    /// The tags recorded on the entry (`__meta`): what every fill of it registered, whichever
    /// function reads it now. A copy carries them, so that an invalidation of any of them
    /// evicts it, even when the function reading it names none.
    pub(crate) tags: Vec<String>,
}

/// The outcome of reading an entry.
#[derive(Debug)]
pub(crate) enum Lookup<S> {
    /// Every schema field was there and decoded; with what the near cache needs to keep it.
    Hit(S, Copyable),
    /// A cached absence (negative caching); `seen` as for a miss.
    Absent { seen: u64 },
    /// Absent, incomplete or garbage: the caller may fill, passing `seen` back.
    Miss {
        seen: u64,
        /// Freshly invalidated and not refilled yet.
        tombstone: bool,
        /// Another caller holds the entry's lease.
        leased: bool,
        /// The entry's tags were invalidated (or their stamps lost) after some of its fields
        /// were loaded: the fill replaces the entry instead of merging into it.
        stale: bool,
    },
}

impl Cache {
    /// Starts a builder with the defaults.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// A handle that caches nothing: annotated functions always run, the direct API reads
    /// nothing and writes nothing. A switch to run the same code without the cache (to
    /// measure it, or to rule it out).
    pub fn disabled() -> Cache {
        CacheBuilder::default().assemble(Store::Memory(Arc::default()), false, None)
    }

    /// `false` for a handle made by [`Cache::disabled`].
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Builds a handle from the environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `REDIS_URL` | as [`CacheBuilder::url`] | `redis://127.0.0.1:6379` |
    /// | `REDIS_CLUSTER_NODES` | comma-separated node URLs, as [`CacheBuilder::cluster_nodes`] (instead of `REDIS_URL`) | none |
    /// | `CACHE_NAMESPACE` | as [`CacheBuilder::namespace`] | none |
    /// | `CACHE_DEFAULT_TTL_SECS` | as [`CacheBuilder::default_ttl`] | 3600 |
    /// | `CACHE_TIMEOUT_MS` | as [`CacheBuilder::operation_timeout`] | 250 |
    /// | `CACHE_NEAR_ENTRIES` | as [`CacheBuilder::near_cache`] (0: off) | 0 |
    /// | `CACHE_NEAR_MAX_BYTES` | as [`CacheBuilder::near_max_bytes`] | unbounded |
    ///
    /// # Errors
    ///
    /// As [`CacheBuilder::build`], and [`Error::Config`] for a number that does not parse.
    pub fn from_env() -> Result<Cache, Error> {
        let mut builder = Cache::builder();
        if let Ok(url) = std::env::var("REDIS_URL") {
            builder = builder.url(url);
        }
        if let Ok(nodes) = std::env::var("REDIS_CLUSTER_NODES") {
            let nodes = nodes
                .split(',')
                .map(str::trim)
                .filter(|node| !node.is_empty());
            builder = builder.cluster_nodes(nodes.map(str::to_owned).collect::<Vec<_>>());
        }
        if let Ok(namespace) = std::env::var("CACHE_NAMESPACE") {
            builder = builder.namespace(namespace);
        }
        if let Some(secs) = env_number("CACHE_DEFAULT_TTL_SECS")? {
            builder = builder.default_ttl(Duration::from_secs(secs));
        }
        if let Some(millis) = env_number("CACHE_TIMEOUT_MS")? {
            builder = builder.operation_timeout(Duration::from_millis(millis));
        }
        if let Some(entries) = env_number("CACHE_NEAR_ENTRIES")? {
            builder = builder.near_cache(usize::try_from(entries).unwrap_or(usize::MAX));
        }
        if let Some(bytes) = env_number("CACHE_NEAR_MAX_BYTES")? {
            builder = builder.near_max_bytes(bytes);
        }
        builder.build()
    }

    /// Reads the entry `{prefix}:{key}` as `T`: `Some` only when every field of `T` is
    /// present and decodes.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad prefix, [`Error::UnsupportedSchema`] when `T` is not a
    /// struct with named fields, [`Error::InvalidationPending`] while an invalidation of the
    /// entry waits for Redis, and the Redis failures ([`Error::Redis`], [`Error::Timeout`],
    /// [`Error::CircuitOpen`]). Undecodable data is not an error: `None`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        prefix: &str,
        key: &(impl Display + ?Sized),
    ) -> Result<Option<T>, Error> {
        check_segment("prefix", prefix)?;
        let fields = schema_field_names::<T>()?;
        if !self.is_enabled() {
            return Ok(None);
        }
        let key = self.key(prefix, key);
        if self.reads_blocked(&key, &[]).await {
            return Err(Error::InvalidationPending);
        }
        match self
            .read_entry(&key, fields, codec::decode::<T>, true, &[])
            .await?
        {
            Lookup::Hit(value, _) => Ok(Some(value)),
            Lookup::Absent { .. } | Lookup::Miss { .. } => Ok(None),
        }
    }

    /// Merges the fields of `value` into the entry `{prefix}:{key}` and sets its TTL to the
    /// default TTL, in one round trip. Unconditional: it is the caller's word that `value` is
    /// current (the macros' fills, in contrast, are refused when an invalidation raced them).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), plus [`Error::Encode`] when a field cannot be encoded.
    pub async fn put<T: Serialize + DeserializeOwned>(
        &self,
        prefix: &str,
        key: &(impl Display + ?Sized),
        value: &T,
    ) -> Result<(), Error> {
        check_segment("prefix", prefix)?;
        let fields = codec::encode(value)?;
        if !self.is_enabled() {
            return Ok(());
        }
        if let Err(size) = self.check_size(&fields) {
            return Err(Error::TooLarge {
                size,
                limit: self.inner.max_value_size,
            });
        }
        let key = self.key(prefix, key);
        if self.reads_blocked(&key, &[]).await {
            return Err(Error::InvalidationPending);
        }
        let fill = Fill {
            key: &key,
            clock: &self.inner.clock_key,
            owner: &self.inner.owner,
            body: FillBody::Fields(&fields),
            ttl: self.inner.default_ttl,
            seen: None,
            tags: &[],
            tag_names: "",
            replace: false,
            lease_time: self.inner.lease_time,
        };
        self.write_fill(fill).await.map(drop)
    }

    /// Drops the entry `{prefix}:{key}`. If Redis cannot be reached the invalidation is kept
    /// and delivered once it can, and until then this handle does not read that entry.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad prefix; the Redis failure when it could not be delivered
    /// now (it is still delivered later).
    pub async fn invalidate(
        &self,
        prefix: &str,
        key: &(impl Display + ?Sized),
    ) -> Result<(), Error> {
        check_segment("prefix", prefix)?;
        let key = self.key(prefix, key);
        self.invalidate_all(vec![key], Vec::new()).await
    }

    /// Drops every entry registered under `tag` (by a `tags = [...]` argument of
    /// `#[cached_get]`), and refuses the fills of reads of such entries already under way.
    ///
    /// # Errors
    ///
    /// As [`invalidate`](Self::invalidate).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), Error> {
        self.invalidate_all(Vec::new(), vec![tag.to_owned()]).await
    }

    /// The handle's counters.
    pub fn stats(&self) -> Stats {
        let near = self.inner.near.as_ref().map_or((0, 0), |near| {
            (
                near.invalidations_received.load(Ordering::Relaxed),
                near.evictions(),
            )
        });
        self.inner.counters.snapshot(self.inner.pending.len(), near)
    }

    pub(crate) fn key(&self, prefix: &str, key: &(impl Display + ?Sized)) -> String {
        entry_key(self.inner.namespace.as_deref(), prefix, key)
    }

    pub(crate) fn ttl_or_default(&self, ttl: Option<Duration>) -> Duration {
        ttl.unwrap_or(self.inner.default_ttl)
    }

    pub(crate) fn negative_ttl(&self) -> Duration {
        self.inner.negative_ttl
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
        if size > self.inner.max_value_size {
            Err(size)
        } else {
            Ok(())
        }
    }

    pub(crate) fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    pub(crate) fn flight_wait(&self) -> Duration {
        self.inner.lease_time
    }

    pub(crate) fn lease_wait(&self) -> Duration {
        self.inner.lease_wait
    }

    /// What a miss of the entry at `key` reads before loading: the stamps its fill will be
    /// checked against (see [`ClockRead`]). `tagged`: the function registers entries under
    /// tags.
    pub(crate) async fn clock(&self, key: &str, tagged: bool) -> Result<ClockRead, Error> {
        let clock = self.inner.store.clock(&self.inner.clock_key, key, tagged);
        self.guarded("clock", clock).await
    }

    /// Takes the entry's lease; `Ok(None)` when another caller holds it. The lease is given
    /// back when the returned [`Lease`] is dropped without [`Lease::filled`]: the load
    /// failed, found nothing, panicked or was cancelled, and other readers must not wait for
    /// a fill that will never come.
    pub(crate) async fn acquire_lease(&self, key: &str) -> Result<Option<Lease>, Error> {
        let token = lease_token();
        let lease = self
            .inner
            .store
            .acquire_lease(key, &token, self.inner.lease_time);
        let acquired = self.guarded("lease", lease).await?;
        Ok(acquired.then(|| Lease {
            cache: self.clone(),
            key: key.to_owned(),
            token,
            filled: false,
        }))
    }

    /// The near cache, if on and usable: not while invalidations wait for Redis (a value in
    /// memory may be one of theirs; one atomic load when none do).
    pub(crate) fn near(&self) -> Option<&Near> {
        self.inner
            .near
            .as_deref()
            .filter(|_| self.inner.pending.is_empty())
    }

    pub(crate) fn count_near_hit(&self) {
        self.inner.counters.bump(Counter::NearHits);
    }

    pub(crate) fn count_near_miss(&self) {
        self.inner.counters.bump(Counter::NearMisses);
    }

    /// Evicts what a write of this handle invalidated from its near cache, once Redis has it
    /// (or has it pending): a read after the write returns cannot find the old value in
    /// memory, and a read that fetched it from Redis before the invalidation cannot insert it.
    fn evict_near(&self, keys: &[&str], tags: &[String]) {
        if let Some(near) = &self.inner.near {
            near.evict(keys, tags);
        }
    }

    pub(crate) fn count_hit(&self) {
        self.inner.counters.bump(Counter::Hits);
    }

    pub(crate) fn count_miss(&self) {
        self.inner.counters.bump(Counter::Misses);
    }

    pub(crate) fn count_coalesced(&self) {
        self.inner.counters.bump(Counter::Coalesced);
    }

    pub(crate) fn count_bypass(&self) {
        self.inner.counters.bump(Counter::Bypassed);
    }

    /// Whether any tag invalidation waits for Redis (then every hit's tags must be checked).
    pub(crate) fn tag_invalidations_pending(&self) -> bool {
        self.inner.pending.has_tags()
    }

    /// Taken before a read: `None` when no tag invalidation waits for Redis, else a mark
    /// that [`delivered_since`](Self::delivered_since) compares after the read.
    pub(crate) fn tag_delivery_mark(&self) -> Option<u64> {
        self.inner.pending.tag_delivery_mark()
    }

    /// Whether a delivery of pending invalidations completed since `mark` was taken.
    pub(crate) fn delivered_since(&self, mark: u64) -> bool {
        self.inner.pending.deliveries() != mark
    }

    /// Whether reads of the entry at `key`, carrying `tags`, must skip Redis because an
    /// invalidation of it is undelivered. Tries to deliver pending invalidations first, so
    /// recovery is immediate.
    pub(crate) async fn reads_blocked(&self, key: &str, tags: &[String]) -> bool {
        if self.inner.pending.is_empty() {
            return false;
        }
        if self.inner.delivery.permit() {
            // Rare, and a large future: boxed so that it does not weigh on every read.
            Box::pin(self.deliver_pending()).await;
        }
        let blocked = self.inner.pending.blocks(key, tags);
        if blocked {
            self.count_bypass();
        }
        blocked
    }

    /// Tries to deliver the pending invalidations now.
    async fn deliver_pending(&self) {
        let delivery = self
            .inner
            .pending
            .deliver(|undelivered| async move {
                let keys: Vec<&str> = undelivered.keys.iter().map(String::as_str).collect();
                self.store_invalidation(&keys, &undelivered.tags).await?;
                Ok::<_, Error>(undelivered)
            })
            .await;
        self.inner.metrics.pending(self.inner.pending.len());
        match delivery {
            Ok(()) => {
                self.inner.delivery.succeeded();
                if self.inner.pending.is_empty() {
                    tracing::info!(
                        "delivered the invalidations that Redis missed while unreachable"
                    );
                }
            }
            Err(error) if is_unreachable(&error) => {
                self.inner.delivery.failed_up_to(OUTAGE_BACKOFF_LIMIT);
            }
            Err(_) => self.inner.delivery.failed(),
        }
    }

    /// Keeps trying to deliver pending invalidations in the background, so that other
    /// processes stop seeing the entries soon after Redis is reachable again, even if this
    /// process makes no further calls. Ends when nothing is pending or the handle is dropped.
    fn spawn_delivery(&self) {
        if self
            .inner
            .delivery_task_running
            .swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner
                .delivery_task_running
                .store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                let Some(delay) = weak.upgrade().map(|inner| inner.delivery.delay()) else {
                    return;
                };
                tokio::time::sleep(delay).await;
                let Some(inner) = weak.upgrade() else { return };
                let cache = Cache { inner };
                if cache.inner.delivery.permit() {
                    cache.deliver_pending().await;
                }
                if cache.inner.pending.is_empty() {
                    cache
                        .inner
                        .delivery_task_running
                        .store(false, Ordering::Release);
                    // An invalidation may have failed between the check and the store above.
                    if cache.inner.pending.is_empty() {
                        return;
                    }
                    cache.spawn_delivery();
                    return;
                }
            }
        });
    }

    /// One `HMGET` of the schema's fields, decoded straight from the reply by `decode`.
    /// `count_misses` is off for the reads of a caller waiting for another's fill: one miss
    /// is one call, however often it looks.
    /// One read of an entry. `known_tags`: the tags the caller knows the entry is
    /// registered under before reading it (rendered from parameters), whose stamps are read
    /// in the same round trip; other tags the entry names are checked after.
    pub(crate) async fn read_entry<S>(
        &self,
        key: &str,
        fields: &'static [&'static str],
        decode: codec::DecodeFn<S>,
        count_misses: bool,
        known_tags: &[String],
    ) -> Result<Lookup<S>, Error> {
        let namespace = self.inner.namespace.as_deref();
        // Only where the store reads them in the read's round trip (one server); elsewhere
        // they are read after, and only if the entry has tags.
        let stamp_keys: Vec<String> = if self.inner.store.pipelines_tag_stamps() {
            known_tags
                .iter()
                .map(|tag| tag_stamp_key(namespace, tag))
                .collect()
        } else {
            Vec::new()
        };
        let mut read = self
            .guarded(
                "read",
                self.inner.store.read(
                    key,
                    fields,
                    &self.inner.owner,
                    self.inner.near.is_some(),
                    &stamp_keys,
                ),
            )
            .await?;
        let counters = &self.inner.counters;
        let stale = match &read.tags {
            Some(tags) if read.absent || read.is_complete(fields) => {
                match Self::stale_by_fetched(tags, known_tags, read.stamps.as_deref()) {
                    Some(stale) => stale,
                    // Rare, and a large future: boxed so that it does not weigh on every read.
                    None => Box::pin(self.tags_stale(tags)).await?,
                }
            }
            _ => false,
        };
        if read.absent && !stale {
            return Ok(Lookup::Absent { seen: read.stamp });
        }
        if read.is_complete(fields) && !stale {
            let copyable = Copyable {
                ttl_ms: read.ttl_ms,
                bytes: read.value_bytes(),
                tags: read.tags.take().map(|tags| tags.names).unwrap_or_default(),
            };
            let decoded = decode(fields, &mut read.stored(fields));
            match decoded {
                Ok(value) => {
                    counters.bump(Counter::Hits);
                    return Ok(Lookup::Hit(value, copyable));
                }
                // Garbage is a miss; the fill that follows overwrites it.
                Err(error) => {
                    tracing::debug!(key, %error, "cache entry does not decode; treating it as a miss");
                }
            }
        }
        if count_misses {
            counters.bump(Counter::Misses);
        }
        Ok(Lookup::Miss {
            seen: read.stamp,
            tombstone: read.is_tombstone(fields),
            leased: read.leased,
            stale,
        })
    }

    /// [`Cache::tags_stale`]'s answer from stamps read with the entry, when they cover every tag
    /// the entry names; `None` when one is missing (then they are read after).
    fn stale_by_fetched(
        tags: &EntryTags,
        known: &[String],
        fetched: Option<&[Option<u64>]>,
    ) -> Option<bool> {
        let fetched = fetched?;
        let mut stale = false;
        for name in &tags.names {
            let index = known.iter().position(|known| known == name)?;
            stale |= fetched.get(index)?.is_none_or(|stamp| stamp > tags.born);
        }
        Some(stale)
    }

    /// Whether an entry registered under `tags` may hold fields older than an invalidation
    /// of one of them: a tag stamped after the entry's oldest load read the clock, or whose
    /// stamp is gone (evicted: its last invalidation is unknown). One `MGET`. This, not the
    /// tags' member sets (which Redis may evict), is what keeps tagged entries right.
    async fn tags_stale(&self, tags: &EntryTags) -> Result<bool, Error> {
        let namespace = self.inner.namespace.as_deref();
        let stamp_keys: Vec<String> = tags
            .names
            .iter()
            .map(|tag| tag_stamp_key(namespace, tag))
            .collect();
        let stamps = self
            .guarded("tag stamps", self.inner.store.tag_stamps(&stamp_keys))
            .await?;
        Ok(stamps
            .iter()
            .any(|stamp| stamp.is_none_or(|stamp| stamp > tags.born)))
    }

    /// Fills after a miss that read `seen` at `read_at`. Refused (`Ok(false)`) when an
    /// invalidation of the entry or one of its tags came after the read, and not even tried
    /// when the load took longer than the lease time (its tombstones may be gone by now).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fill_after_miss(
        &self,
        key: &str,
        body: FillBody<'_>,
        ttl: Duration,
        seen: ClockRead,
        read_at: Instant,
        tags: &[String],
        replace: bool,
    ) -> Result<bool, Error> {
        if read_at.elapsed() >= self.inner.lease_time {
            tracing::debug!(
                key,
                "load took longer than the lease time; not caching its value"
            );
            self.inner.counters.bump(Counter::RefusedFills);
            return Ok(false);
        }
        let namespace = self.inner.namespace.as_deref();
        let mut tag_names = String::new();
        for tag in tags {
            if !tag_names.is_empty() {
                tag_names.push(',');
            }
            encode_tag(tag, &mut tag_names);
        }
        let tags: Vec<TagKeys> = tags.iter().map(|tag| tag_keys(namespace, tag)).collect();
        let lease_time = self.inner.lease_time;
        self.write_fill(Fill {
            key,
            clock: &self.inner.clock_key,
            owner: &self.inner.owner,
            body,
            ttl,
            seen: Some(seen),
            tags: &tags,
            tag_names: &tag_names,
            replace,
            lease_time,
        })
        .await
    }

    async fn write_fill(&self, fill: Fill<'_>) -> Result<bool, Error> {
        self.inner
            .longest_ttl_ms
            .fetch_max(millis(fill.ttl), Ordering::Relaxed);
        let written = self.guarded("fill", self.inner.store.fill(fill)).await?;
        let counter = if written {
            Counter::Fills
        } else {
            Counter::RefusedFills
        };
        self.inner.counters.bump(counter);
        Ok(written)
    }

    /// Invalidates entries and tags together; what cannot be delivered now is kept and
    /// delivered later. Runs to the end even if the caller stops waiting (see
    /// [`Cache::detached`]): a write that committed must never lose its invalidation.
    pub(crate) async fn invalidate_all(
        &self,
        keys: Vec<String>,
        tags: Vec<String>,
    ) -> Result<(), Error> {
        if !self.is_enabled() {
            return Ok(());
        }
        let owed = Owed::new(self, keys, tags);
        self.detached(async move {
            let cache = &owed.cache;
            let keys = owed.keys();
            cache.evict_near(&keys, &owed.tags);
            let outcome = match cache.store_invalidation(&keys, &owed.tags).await {
                Ok(()) => Ok(()),
                Err(error) => {
                    cache.remember_undelivered(&keys, &owed.tags);
                    cache
                        .drop_what_redis_allows(&error, &keys, &owed.tags)
                        .await;
                    Err(error)
                }
            };
            cache.evict_near(&keys, &owed.tags);
            drop(keys);
            owed.settle();
            outcome
        })
        .await
    }

    /// Writes a value through after an update: `Ok(true)` when the entry now holds it,
    /// `Ok(false)` when the entry was invalidated instead (see [`store::WriteThrough`]).
    /// What cannot be delivered now is kept as an invalidation and delivered later; like
    /// [`invalidate_all`](Self::invalidate_all), it runs to the end without the caller.
    pub(crate) async fn write_through(
        &self,
        key: String,
        fields: Vec<codec::EncodedField>,
        version_field: &'static str,
        version: u64,
        tags: Vec<String>,
    ) -> Result<bool, Error> {
        let owed = Owed::new(self, vec![key], tags);
        self.detached(async move {
            let (cache, key, tags) = (&owed.cache, owed.keys[0].as_str(), &owed.tags);
            cache.evict_near(&[key], tags);
            let namespace = cache.inner.namespace.as_deref();
            let tag_keys: Vec<TagKeys> = tags.iter().map(|tag| tag_keys(namespace, tag)).collect();
            let write = WriteThrough {
                clock: &cache.inner.clock_key,
                key,
                owner: &cache.inner.owner,
                fields: &fields,
                version_field,
                version,
                tags: &tag_keys,
                lease_time: cache.inner.lease_time,
            };
            let outcome = match cache
                .guarded("write through", cache.inner.store.write_through(write))
                .await
            {
                Ok((written, drain)) => {
                    cache.drain_in_background(drain);
                    let counters = &cache.inner.counters;
                    let invalidated = tags.len() + usize::from(!written);
                    counters.add(Counter::Invalidations, invalidated as u64);
                    if written {
                        counters.bump(Counter::WrittenThrough);
                    }
                    Ok(written)
                }
                Err(error) => {
                    cache.remember_undelivered(&[key], tags);
                    cache.drop_what_redis_allows(&error, &[key], tags).await;
                    Err(error)
                }
            };
            cache.evict_near(&[key], tags);
            owed.settle();
            outcome
        })
        .await
    }

    /// Runs a write's cache work on its own task, so that it finishes even if the caller's
    /// future is dropped at an `.await` (a client that disconnected from axum, a `timeout`,
    /// a `select!`): the database write has committed by then, and an invalidation dropped
    /// halfway would leave the old row cached for a whole TTL, in every process. The caller
    /// still waits for the outcome when it stays. The task holds an [`Owed`]: if it cannot
    /// finish (it panicked, or the runtime is shutting down), what it owed stays pending.
    async fn detached<T: Send + 'static>(
        &self,
        task: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Not on a Tokio runtime (the Redis store needs one; `mem://` does not): run
            // here, with nothing to await that could be cancelled halfway for Redis.
            return task.await;
        };
        runtime
            .spawn(task)
            .await
            .unwrap_or_else(|error| Err(Error::Interrupted(error.to_string())))
    }

    /// After Redis refused an invalidation (out of memory under `noeviction`, an ACL user
    /// without the scripts or keys it needs, a replica answering `READONLY`), it may still
    /// allow `UNLINK`, as `noeviction` does: unlinking the entries, and the tags' stamps
    /// (without which every entry carrying the tag is a miss), stops every process from
    /// serving them now; unlinking the namespace's clock refuses every fill whose load began
    /// before (a lost clock refuses fills, and is made again above every stamp it gave), so
    /// that a load of the old row racing the write cannot put it back once Redis takes
    /// writes again. The invalidation stays pending all the same.
    async fn drop_what_redis_allows(&self, error: &Error, keys: &[&str], tags: &[String]) {
        let Error::Redis(refusal) = error else {
            return;
        };
        if is_outage(refusal) {
            return;
        }
        let namespace = self.inner.namespace.as_deref();
        let mut doomed = self.inner.store.clocks_of(&self.inner.clock_key, keys);
        doomed.extend(keys.iter().map(|key| (*key).to_owned()));
        doomed.extend(tags.iter().map(|tag| tag_keys(namespace, tag).stamp));
        let mut unlinked = true;
        for batch in doomed.chunks(INVALIDATION_BATCH) {
            unlinked &= self
                .guarded("unlink", self.inner.store.unlink(batch))
                .await
                .is_ok();
        }
        if unlinked {
            tracing::warn!(
                error = %refusal,
                "redis refused an invalidation; unlinked the entries instead, and will stamp them when it takes writes again"
            );
        }
    }

    fn remember_undelivered(&self, keys: &[&str], tags: &[String]) {
        let longest_ttl = Duration::from_millis(self.inner.longest_ttl_ms.load(Ordering::Relaxed));
        self.inner.pending.add(keys, tags, longest_ttl);
        self.inner.metrics.pending(self.inner.pending.len());
        self.spawn_delivery();
    }

    /// Invalidates `keys` and `tags`, in scripts of at most [`INVALIDATION_BATCH`] targets
    /// each, so that no call keeps Redis busy for long however many are pending (a delivery
    /// after an outage may carry a hundred thousand). Each batch is complete in itself:
    /// stamped, tombstoned, recorded in the clock.
    async fn store_invalidation(&self, keys: &[&str], tags: &[String]) -> Result<(), Error> {
        let namespace = self.inner.namespace.as_deref();
        let mut keys = keys.chunks(INVALIDATION_BATCH);
        let mut tags = tags.chunks(INVALIDATION_BATCH);
        loop {
            let (batch_keys, batch_tags) = match (keys.next(), tags.next()) {
                (None, None) => return Ok(()),
                (batch_keys, batch_tags) => (
                    batch_keys.unwrap_or_default(),
                    batch_tags.unwrap_or_default(),
                ),
            };
            let tag_keys: Vec<TagKeys> = batch_tags
                .iter()
                .map(|tag| tag_keys(namespace, tag))
                .collect();
            let invalidation = Invalidation {
                clock: &self.inner.clock_key,
                entries: batch_keys,
                tags: &tag_keys,
                lease_time: self.inner.lease_time,
            };
            let drain = self
                .guarded("invalidate", self.inner.store.invalidate(invalidation))
                .await?;
            self.drain_in_background(drain);
            let targets = (batch_keys.len() + batch_tags.len()) as u64;
            self.inner.counters.add(Counter::Invalidations, targets);
        }
    }

    /// Tombstones, batch by batch, the rest of the entries registered under tags that an
    /// invalidation stamped. Reads are already right (they check the tags' stamps); this only
    /// makes other clients of the hashes see them gone, without blocking Redis for long.
    fn drain_in_background(&self, drain: store::Drain) {
        if drain.sets.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cache = self.clone();
        runtime.spawn(async move {
            for members in &drain.sets {
                loop {
                    let batch = cache.inner.store.drain(
                        &cache.inner.clock_key,
                        members,
                        &drain.stamp,
                        cache.inner.lease_time,
                    );
                    match cache.guarded("drain tag", batch).await {
                        Ok(left) if left > 0 => continue,
                        _ => break,
                    }
                }
            }
        });
    }

    /// Runs one store operation under the breaker and the timeout, counting and logging
    /// failures.
    async fn guarded<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = StoreResult<T>>,
    ) -> Result<T, Error> {
        let inner = &*self.inner;
        let admission = inner.breaker.admit();
        if admission == Admission::Rejected {
            self.count_bypass();
            return Err(Error::CircuitOpen);
        }
        let probe = inner.breaker.probe_guard(admission);
        // A connection to make first (the first call, or one after a connection broke) has a
        // budget of its own: connecting to a cluster's nodes (over TLS, on busy cores) takes
        // longer than a command, and inside the operation's timeout every first call of a
        // process failed open without filling. The connection is made in a task of its own
        // (see `store::redis`), which goes on for the next call if this one gives up.
        let mut waited = inner.operation_timeout;
        let outcome = if inner.store.needs_connection() {
            waited = inner.operation_timeout.max(CONNECT_BUDGET);
            match tokio::time::timeout(waited, inner.store.connect()).await {
                Ok(Ok(())) => {
                    waited = inner.operation_timeout;
                    tokio::time::timeout(inner.operation_timeout, future).await
                }
                Ok(Err(error)) => Ok(Err(error)),
                Err(elapsed) => Err(elapsed),
            }
        } else {
            tokio::time::timeout(inner.operation_timeout, future).await
        };
        probe.settle();
        let (error, reachable) = match outcome {
            Ok(Ok(value)) => {
                if inner.breaker.record_success(admission) == Transition::Closed {
                    tracing::info!("redis answers again; circuit breaker closed");
                }
                return Ok(value);
            }
            // redis-rs' own connect/response timeouts mean the same as ours.
            Ok(Err(error)) if error.is_timeout() => {
                (Error::Timeout(inner.operation_timeout), false)
            }
            // Redis answered, so it is reachable: the error is about this request only.
            Ok(Err(error)) => {
                let reachable = !is_outage(&error);
                (Error::Redis(error), reachable)
            }
            Err(_elapsed) => (Error::Timeout(waited), false),
        };
        inner.counters.bump(Counter::Errors);
        let transition = if reachable {
            inner.breaker.record_success(admission)
        } else {
            // A connection that timed out may be dead without knowing it: start afresh.
            inner.store.connection_failed();
            inner.breaker.record_failure(admission)
        };
        if transition == Transition::Opened {
            tracing::warn!(%error, "redis keeps failing; circuit breaker open, calls go straight to the function");
        } else if let Some(suppressed) = inner.failure_log.permit() {
            tracing::warn!(operation, %error, suppressed, "cache operation failed; calling the function instead");
        }
        Err(error)
    }
}

/// An invalidation a write owes Redis until [`settle`](Owed::settle)d (delivered, or
/// remembered as pending by the code that saw it fail): dropped unsettled (its task panicked,
/// or was dropped with the runtime), it is remembered as pending instead of lost.
struct Owed {
    cache: Cache,
    keys: Vec<String>,
    tags: Vec<String>,
    settled: bool,
}

impl Owed {
    fn new(cache: &Cache, keys: Vec<String>, tags: Vec<String>) -> Owed {
        Owed {
            cache: cache.clone(),
            keys,
            tags,
            settled: false,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.keys.iter().map(String::as_str).collect()
    }

    fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if !self.settled {
            self.cache.remember_undelivered(&self.keys(), &self.tags);
        }
    }
}

/// A lease this handle holds on an entry (see [`Cache::acquire_lease`]).
#[derive(Debug)]
pub(crate) struct Lease {
    cache: Cache,
    key: String,
    token: String,
    filled: bool,
}

impl Lease {
    /// The fill went in, and cleared the lease with it.
    pub(crate) fn filled(&mut self) {
        self.filled = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.filled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime left to send it: the lease ends at its deadline.
        };
        let (cache, key, token) = (
            self.cache.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let release = cache.inner.store.release_lease(&key, &token);
            let _ = cache.guarded("release lease", release).await;
        });
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

fn env_number(name: &str) -> Result<Option<u64>, Error> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::Config(format!("{name}=`{text}` is not a whole number"))),
        Err(_) => Ok(None),
    }
}

/// The schema's field names, or why it cannot be cached.
pub(crate) fn schema_field_names<T: DeserializeOwned>() -> Result<&'static [&'static str], Error> {
    match codec::schema_fields::<T>() {
        SchemaFields::Named(fields) => Ok(fields),
        SchemaFields::Unsupported(reason) => Err(Error::UnsupportedSchema {
            type_name: std::any::type_name::<T>(),
            reason,
        }),
    }
}

static INSTALLED: RwLock<Option<Cache>> = RwLock::new(None);

/// Makes `cache` the process-wide handle used by the macros that have no `cache = …`
/// argument. Installing again replaces it. Until a handle is installed, those macros call
/// their function directly (and count nothing).
pub fn install(cache: Cache) {
    *INSTALLED.write_recovered() = Some(cache);
}

/// The installed handle, if any.
pub fn installed() -> Option<Cache> {
    INSTALLED.read_recovered().clone()
}

#[cfg(test)]
mod tests {
    use super::lease_token;

    #[test]
    fn lease_tokens_are_random_per_process_and_counted_within() {
        let (first, second) = (lease_token(), lease_token());
        let (process, count) = first.split_once('-').unwrap();
        assert_eq!(process.len(), 32, "{first}");
        assert!(process.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(process, format!("{:032x}", std::process::id()));
        assert!(count.parse::<u64>().is_ok());
        assert_ne!(first, second);
        assert_eq!(second.split_once('-').unwrap().0, process);
    }
}
