//! [`Cache`], the public handle (a clone shares everything: it is an `Arc` over the
//! [`Engine`]), its direct API, and the process-wide handle the macros use when they name
//! none. Handles are made in [`builder`](crate::builder); the protocol is the engine's.

use std::fmt::Display;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, schema_field_names};
use crate::engine::{Engine, Lookup};
use crate::key::check_segment;
use crate::locks::RwLockExt as _;
use crate::stats::Stats;
use crate::Error;

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
    engine: Arc<Engine>,
}

impl Cache {
    /// `false` for a handle made by [`Cache::disabled`].
    pub fn is_enabled(&self) -> bool {
        self.engine.is_enabled()
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
        let key = self.engine.key(prefix, key);
        if self.engine.reads_blocked(&key, &[]).await {
            self.engine.count_bypass();
            return Err(Error::InvalidationPending);
        }
        let read = self
            .engine
            .read_entry(&key, fields, codec::decode::<T>, true, &[])
            .await;
        self.engine.count_if_bypassed(&read);
        match read? {
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
        if let Err(size) = self.engine.check_size(&fields) {
            return Err(Error::TooLarge {
                size,
                limit: self.engine.max_value_size(),
            });
        }
        let key = self.engine.key(prefix, key);
        if self.engine.reads_blocked(&key, &[]).await {
            self.engine.count_bypass();
            return Err(Error::InvalidationPending);
        }
        let put = self.engine.put(&key, &fields).await;
        self.engine.count_if_bypassed(&put);
        put
    }

    /// Reads the entries `{prefix}:{key}` of many keys as `T`, in one round trip (a
    /// pipeline of at most [`batch_size`](crate::CacheBuilder::batch_size) reads; more are
    /// sent as several pipelines at once; on a cluster one per slot). One answer per key, in
    /// order: `Some` where every field of `T` is present and decodes. An entry whose
    /// invalidation still waits for Redis is `None` (this handle does not read it).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), except that a pending invalidation is not one.
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        prefix: &str,
        keys: &[impl Display],
    ) -> Result<Vec<Option<T>>, Error> {
        check_segment("prefix", prefix)?;
        let fields = schema_field_names::<T>()?;
        if !self.is_enabled() || keys.is_empty() {
            return Ok(keys.iter().map(|_| None).collect());
        }
        let keys: Vec<String> = keys
            .iter()
            .map(|key| self.engine.key(prefix, key))
            .collect();
        let blocked = self
            .engine
            .reads_blocked_many(keys.iter().map(String::as_str))
            .await;
        if blocked.iter().any(|&blocked| blocked) {
            self.engine.count_bypass();
        }
        let readable: Vec<&str> = keys
            .iter()
            .zip(&blocked)
            .filter(|(_, &blocked)| !blocked)
            .map(|(key, _)| key.as_str())
            .collect();
        let chunks = readable.chunks(self.engine.batch_size()).map(|chunk| {
            self.engine
                .read_entries(chunk, fields, codec::decode::<T>, true)
        });
        let mut lookups = Vec::with_capacity(readable.len());
        for chunk in futures_util::future::join_all(chunks).await {
            self.engine.count_if_bypassed(&chunk);
            lookups.extend(chunk?);
        }
        let mut lookups = lookups.into_iter().peekable();
        // Blocked entries were not read: they take no lookup.
        Ok(blocked
            .into_iter()
            .map(|blocked| match lookups.next_if(|_| !blocked) {
                Some(Lookup::Hit(value, _)) => Some(value),
                _ => None,
            })
            .collect())
    }

    /// [`put`](Self::put) for many entries, sent together: each `(key, value)` pair's fields
    /// merged into `{prefix}:{key}`, with the default TTL. Unconditional, as `put`.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put): the first error met; the entries before it may be written.
    pub async fn put_many<T: Serialize + DeserializeOwned>(
        &self,
        prefix: &str,
        entries: &[(impl Display, T)],
    ) -> Result<(), Error> {
        check_segment("prefix", prefix)?;
        let puts = entries
            .iter()
            .map(|(key, value)| self.put(prefix, key, value));
        futures_util::future::join_all(puts)
            .await
            .into_iter()
            .collect()
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
        let key = self.engine.key(prefix, key);
        let invalidated = self.engine.invalidate_all(vec![key], Vec::new()).await;
        self.engine.count_if_bypassed(&invalidated);
        invalidated
    }

    /// Drops every entry registered under `tag` (by a `tags = [...]` argument of
    /// `#[cached_get]`), and refuses the fills of reads of such entries already under way.
    ///
    /// # Errors
    ///
    /// As [`invalidate`](Self::invalidate).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), Error> {
        let invalidated = self
            .engine
            .invalidate_all(Vec::new(), vec![tag.to_owned()])
            .await;
        self.engine.count_if_bypassed(&invalidated);
        invalidated
    }

    /// The handle's counters.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// The handle over `engine`.
    pub(crate) fn over(engine: Arc<Engine>) -> Cache {
        Cache { engine }
    }

    /// The engine the macros' calls run on.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
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
