//! How a [`Cache`] is made: [`CacheBuilder`] (every option, its default, and the checks that
//! make a bad configuration a typed error at `build`, never a panic or a late failure), and
//! the handle's constructors (`Cache::builder`, `Cache::disabled`, `Cache::from_env`).
//! Connecting is [`connect`](crate::connect)'s; the state the options configure is the
//! [`Engine`]'s.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;
use crate::connect::{cluster_store, redis_store, require_runtime, sentinel_store, TlsOptions};
use crate::engine::{Engine, Settings};
use crate::key::check_segment;
use crate::near::{self, Near};
use crate::redact::redact_url;
use crate::source::{RedisSource, Source};
use crate::store::{self, Link, MemoryStore, RedisStore, Store};
use crate::Error;

/// `mem://` selects a private in-process store, `mem://name` one shared by name.
const MEMORY_SCHEME: &str = "mem://";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
const DEFAULT_MAX_PENDING_INVALIDATIONS: usize = 100_000;
const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;
const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(10);
const DEFAULT_LEASE_WAIT: Duration = Duration::from_millis(300);
/// The most entries per pipeline of a batch read.
const DEFAULT_BATCH_SIZE: usize = 128;
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);
const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(30);
const DEFAULT_NEAR_MAX_AGE: Duration = Duration::from_secs(60);
/// The longest duration any option takes (as the macros' `ttl`): ten years. Longer ones are
/// mistakes, and `Duration::MAX` would overflow every deadline computed from it.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(2);

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
///     .fail_safe(Duration::ZERO)                         // keep expired copies this long, for a failing loader (0: off)
///     .fail_safe_throttle(Duration::from_secs(30))       // after a failure, serve the copy without calling the loader
///     .near_cache(10_000)                                // values kept in process memory (0: off)
///     .near_max_bytes(64 << 20)                          // and at most about this many bytes
///     .near_max_age(Duration::from_secs(60))             // re-read from Redis at least this often
///     .cluster_replica_acks(1)                           // on a cluster or Sentinel: replicas per invalidation
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
///     Cache::builder().sentinel("mymaster", Vec::<String>::new()),
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
    /// The master's name and the sentinels' URLs.
    sentinel: Option<(String, Vec<String>)>,
    sentinel_primary_url: Option<String>,
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
    batch_size: usize,
    negative_ttl: Duration,
    fail_safe: Duration,
    fail_safe_throttle: Duration,
    tls: TlsOptions,
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
            .field(
                "sentinel",
                &self.sentinel.as_ref().map(|(master, sentinels)| {
                    let urls: Vec<String> = sentinels.iter().map(|url| redact_url(url)).collect();
                    (master, urls)
                }),
            )
            .field(
                "sentinel_primary_url",
                &self.sentinel_primary_url.as_deref().map(redact_url),
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
            .field("batch_size", &self.batch_size)
            .field("negative_ttl", &self.negative_ttl)
            .field("fail_safe", &self.fail_safe)
            .field("fail_safe_throttle", &self.fail_safe_throttle)
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
            sentinel: None,
            sentinel_primary_url: None,
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
            batch_size: DEFAULT_BATCH_SIZE,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            fail_safe: Duration::ZERO,
            fail_safe_throttle: DEFAULT_FAIL_SAFE_THROTTLE,
            tls: TlsOptions::default(),
        }
    }
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

    /// Builds a handle from the environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `REDIS_URL` | as [`CacheBuilder::url`] | `redis://127.0.0.1:6379` |
    /// | `REDIS_CLUSTER_NODES` | comma-separated node URLs, as [`CacheBuilder::cluster_nodes`] (instead of `REDIS_URL`) | none |
    /// | `REDIS_SENTINEL_NODES` + `REDIS_SENTINEL_MASTER` | comma-separated sentinel URLs and the master's name, as [`CacheBuilder::sentinel`] (instead of `REDIS_URL`) | none |
    /// | `REDIS_SENTINEL_PRIMARY_URL` | as [`CacheBuilder::sentinel_primary_url`] | `redis://` without credentials |
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
        CacheBuilder::from_env()?.build()
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
    /// [`Stats::near_evictions`](crate::Stats::near_evictions). Off by default: the entry
    /// count only.
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

    /// Redis Sentinel instead of [`url`](Self::url): the name of the master the sentinels
    /// monitor, and the URLs of some sentinels (`redis://` or `rediss://`, with
    /// `user:password@` where the sentinels ask for one). Every connection asks them where
    /// the primary is (and checks its `ROLE`), so that after a failover the next connection
    /// goes to the promoted replica; how the data nodes are reached (their credentials,
    /// database and TLS) is [`sentinel_primary_url`](Self::sentinel_primary_url).
    /// Invalidations wait for [`cluster_replica_acks`](Self::cluster_replica_acks) replicas.
    pub fn sentinel<I, S>(mut self, master_name: impl Into<String>, sentinel_urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls = sentinel_urls.into_iter().map(Into::into).collect();
        self.sentinel = Some((master_name.into(), urls));
        self
    }

    /// Behind [`sentinel`](Self::sentinel), how the primary is reached: the scheme
    /// (`rediss://` for TLS), `user:password@` and `/db` of this URL, its host and port
    /// replaced by those the sentinels name (`rediss://cache:secret@primary/0`).
    /// Default: `redis://`, no credentials, database 0.
    pub fn sentinel_primary_url(mut self, url: impl Into<String>) -> Self {
        self.sentinel_primary_url = Some(url.into());
        self
    }

    /// On a Redis Cluster or behind [`sentinel`](Self::sentinel), how many replicas must hold
    /// an invalidation before the write that made it returns (Redis `WAIT`, for at most a
    /// quarter of the operation timeout), so that a
    /// primary failing over right after it cannot lose it. Default 1; 0 for a primary
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

    /// The most entries one round trip of a batch read (`#[cached_get_many]`,
    /// [`Cache::get_many`](crate::Cache::get_many)) carries: more ids are read in several
    /// pipelines, sent together, so that no single reply grows without bound. Default: 128;
    /// at least 1.
    pub fn batch_size(mut self, entries: usize) -> Self {
        self.batch_size = entries;
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

    /// Fail-safe for every function that does not set `fail_safe` itself: entries stay in
    /// Redis this long after their TTL as expired copies, which are never hits; when a
    /// miss's load fails (`Err`) or times out (`hard_timeout`), the call
    /// returns the expired copy instead, if no invalidation removed it. An invalidation
    /// removes the copy with the entry, so nothing a write replaced comes back. Zero (the
    /// default) turns it off. See the README's "When the database is down or slow".
    pub fn fail_safe(mut self, keep_expired_for: Duration) -> Self {
        self.fail_safe = keep_expired_for;
        self
    }

    /// After a fail-safe answer, how long this process answers the entry's misses with its
    /// expired copy without calling the function again, so that a database that is down is
    /// not asked by every request (functions may set `fail_safe_throttle` themselves).
    /// Default: 30 s; zero asks the function on every miss.
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = throttle;
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
        if self.batch_size == 0 {
            return Err(Error::Config(
                "batch_size is 0; a batch read needs at least 1 entry per round trip".into(),
            ));
        }
        for (option, duration) in [
            ("default_ttl", self.default_ttl),
            ("operation_timeout", self.operation_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
            ("lease_time", self.lease_time),
            ("lease_wait", self.lease_wait),
            ("negative_ttl", self.negative_ttl),
            ("near_max_age", self.near_max_age),
            ("fail_safe", self.fail_safe),
            ("fail_safe_throttle", self.fail_safe_throttle),
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
            let near = self.near(near::ListenTo::Cluster(seeds));
            return Ok(self.assemble(Store::Redis(Box::new(store)), true, near));
        }
        if let Some((master, sentinels)) = &self.sentinel {
            let (store, sentinels) = sentinel_store(
                master,
                sentinels,
                self.sentinel_primary_url.as_deref(),
                self.operation_timeout,
                &self.tls,
                self.cluster_replica_acks,
            )?;
            let near = self.near(near::ListenTo::Sentinel(sentinels));
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
                let near = self.near(near::ListenTo::Server(Box::new(client)));
                (Store::Redis(Box::new(store)), near)
            }
        };
        Ok(self.assemble(store, true, near))
    }

    /// The store over a connection the application gave, and its near cache when it can
    /// have one.
    fn given_store(&self, source: Source) -> Result<(RedisStore, Option<Arc<Near>>), Error> {
        require_runtime()?;
        let kind = source.kind();
        let store = match source {
            Source::Client(client) => {
                let near = self.near(near::ListenTo::Server(Box::new(client.clone())));
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
    fn near(&self, listen_to: near::ListenTo) -> Option<Arc<Near>> {
        let near = self.new_near()?;
        near::listen(
            &near,
            listen_to,
            self.namespace.as_deref(),
            self.operation_timeout,
        );
        Some(near)
    }

    /// The handle from checked settings.
    fn assemble(self, store: Store, enabled: bool, near: Option<Arc<Near>>) -> Cache {
        let settings = Settings {
            namespace: self.namespace,
            default_ttl: self.default_ttl,
            operation_timeout: self.operation_timeout,
            breaker_threshold: self.breaker_threshold,
            breaker_cooldown: self.breaker_cooldown,
            max_pending_invalidations: self.max_pending_invalidations,
            max_value_size: self.max_value_size,
            lease_time: self.lease_time,
            lease_wait: self.lease_wait,
            negative_ttl: self.negative_ttl,
            fail_safe: self.fail_safe,
            fail_safe_throttle: self.fail_safe_throttle,
            batch_size: self.batch_size,
        };
        Cache::over(Arc::new(Engine::new(settings, store, enabled, near)))
    }

    /// A builder with what the environment sets (see [`Cache::from_env`]).
    fn from_env() -> Result<CacheBuilder, Error> {
        let mut builder = CacheBuilder::default();
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
        match (
            std::env::var("REDIS_SENTINEL_MASTER"),
            std::env::var("REDIS_SENTINEL_NODES"),
        ) {
            (Ok(master), Ok(nodes)) => {
                let nodes = nodes
                    .split(',')
                    .map(str::trim)
                    .filter(|node| !node.is_empty());
                builder =
                    builder.sentinel(master.trim(), nodes.map(str::to_owned).collect::<Vec<_>>());
            }
            (Err(_), Err(_)) => {}
            _ => {
                return Err(Error::Config(
                    "REDIS_SENTINEL_NODES and REDIS_SENTINEL_MASTER go together: set both".into(),
                ))
            }
        }
        if let Ok(url) = std::env::var("REDIS_SENTINEL_PRIMARY_URL") {
            builder = builder.sentinel_primary_url(url);
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
        Ok(builder)
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
