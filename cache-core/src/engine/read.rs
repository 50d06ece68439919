//! Reading an entry: one `HMGET` of a schema's fields (with the stamps of the tags known
//! beforehand, on one server), the check of its tags' stamps, the clock a miss reads before
//! loading, and the entry's lease that makes herds of misses wait for one load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Engine;
use crate::codec;
use crate::stats::Counter;
use crate::store::{ClockRead, EntryRead, EntryTags};
use crate::Error;

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
    /// How long the entry stays fresh, in ms, when its fill recorded it (`fail_safe`): a
    /// near copy must not outlive it.
    pub(crate) fresh_ms: Option<u64>,
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
        /// The entry was complete and not invalidated, but past its fresh time: the copy the
        /// fail-safe may return if the load fails.
        expired: Option<(S, Copyable)>,
    },
}

impl Engine {
    /// What a miss of the entry at `key` reads before loading: the stamps its fill will be
    /// checked against (see [`ClockRead`]). `tagged`: the function registers entries under
    /// tags.
    pub(crate) async fn clock(&self, key: &str, tagged: bool) -> Result<ClockRead, Error> {
        let clock = self.store.clock(&self.clock_key, key, tagged);
        self.guarded("clock", clock).await
    }

    /// Takes the entry's lease; `Ok(None)` when another caller holds it. The lease is given
    /// back when the returned [`Lease`] is dropped without [`Lease::filled`]: the load
    /// failed, found nothing, panicked or was cancelled, and other readers must not wait for
    /// a fill that will never come.
    pub(crate) async fn acquire_lease(self: &Arc<Self>, key: &str) -> Result<Option<Lease>, Error> {
        let token = lease_token();
        let lease = self.store.acquire_lease(key, &token, self.lease_time);
        let acquired = self.guarded("lease", lease).await?;
        Ok(acquired.then(|| Lease {
            engine: Arc::clone(self),
            key: key.to_owned(),
            token,
            filled: false,
        }))
    }

    /// One read of an entry: one `HMGET` of the schema's fields, decoded straight from the
    /// reply by `decode`. `count_misses` is off for the reads of a caller waiting for
    /// another's fill: one miss is one call, however often it looks. `known_tags`: the tags
    /// the caller knows the entry is registered under before reading it (rendered from
    /// parameters), whose stamps are read in the same round trip; other tags the entry names
    /// are checked after.
    pub(crate) async fn read_entry<S>(
        &self,
        key: &str,
        fields: &'static [&'static str],
        decode: codec::DecodeFn<S>,
        count_misses: bool,
        known_tags: &[String],
    ) -> Result<Lookup<S>, Error> {
        // Only where the store reads them in the read's round trip (one server); elsewhere
        // they are read after, and only if the entry has tags.
        let stamp_keys = if self.store.pipelines_tag_stamps() {
            self.stamp_keys(known_tags)
        } else {
            Vec::new()
        };
        let read = self
            .guarded(
                "read",
                self.store
                    .read(key, fields, &self.owner, self.near.is_some(), &stamp_keys),
            )
            .await?;
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
        Ok(self.classify(key, read, fields, decode, count_misses, stale))
    }

    /// [`read_entry`](Self::read_entry) for many entries in one round trip (see
    /// [`Store::read_many`](crate::store::Store::read_many)), and the stamps of every tag
    /// they name in one more, only if one has tags. Each entry's outcome, in the order of
    /// `keys`; misses counted with `count_misses` (as for [`read_entry`](Self::read_entry)).
    pub(crate) async fn read_entries<S>(
        &self,
        keys: &[&str],
        fields: &'static [&'static str],
        decode: codec::DecodeFn<S>,
        count_misses: bool,
    ) -> Result<Vec<Lookup<S>>, Error> {
        let reads = self
            .guarded(
                "read many",
                self.store
                    .read_many(keys, fields, &self.owner, self.near.is_some()),
            )
            .await?;
        let checked = |read: &EntryRead| read.absent || read.is_complete(fields);
        let mut names: Vec<String> = Vec::new();
        for tags in reads
            .iter()
            .filter(|read| checked(read))
            .filter_map(|read| read.tags.as_ref())
        {
            for name in &tags.names {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        let stamps = if names.is_empty() {
            Vec::new()
        } else {
            let stamp_keys = self.stamp_keys(&names);
            self.guarded("tag stamps", self.store.tag_stamps(&stamp_keys))
                .await?
        };
        Ok(keys
            .iter()
            .zip(reads)
            .map(|(key, read)| {
                let stale = match &read.tags {
                    Some(tags) if checked(&read) => {
                        // Every name is among those fetched: `Some`.
                        Self::stale_by_fetched(tags, &names, Some(&stamps)).unwrap_or(true)
                    }
                    _ => false,
                };
                self.classify(key, read, fields, decode, count_misses, stale)
            })
            .collect())
    }

    /// What a read found, once its tags were checked (`stale`: one was invalidated after
    /// some of its fields were loaded).
    fn classify<S>(
        &self,
        key: &str,
        mut read: EntryRead,
        fields: &'static [&'static str],
        decode: codec::DecodeFn<S>,
        count_misses: bool,
        stale: bool,
    ) -> Lookup<S> {
        let counters = &self.counters;
        let expired = read.is_expired();
        if read.absent && !stale && !expired {
            return Lookup::Absent { seen: read.stamp };
        }
        let mut copy = None;
        if read.is_complete(fields) && !stale {
            let copyable = Copyable {
                ttl_ms: read.ttl_ms,
                bytes: read.value_bytes(),
                tags: read.tags.take().map(|tags| tags.names).unwrap_or_default(),
                fresh_ms: read.fresh_left_ms,
            };
            let decoded = decode(fields, &mut read.stored(fields));
            match decoded {
                // Past its fresh time: a miss, which keeps the value for the fail-safe.
                Ok(value) if expired => copy = Some((value, copyable)),
                Ok(value) => {
                    counters.bump(Counter::Hits);
                    return Lookup::Hit(value, copyable);
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
        Lookup::Miss {
            seen: read.stamp,
            // A herd forms where a hot entry expires as where it was invalidated.
            tombstone: read.is_tombstone(fields) || copy.is_some(),
            leased: read.leased,
            stale,
            expired: copy,
        }
    }

    /// The clocks misses of many entries read before loading (see [`Engine::clock`]): one
    /// read on one server, one per slot on a cluster. In the order of `keys`.
    pub(crate) async fn clocks(
        &self,
        keys: &[&str],
        tagged: bool,
    ) -> Result<Vec<ClockRead>, Error> {
        let clocks = self.store.clock_many(&self.clock_key, keys, tagged);
        self.guarded("clock", clocks).await
    }

    /// [`Engine::tags_stale`]'s answer from stamps read with the entry, when they cover every tag
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
        let stamp_keys = self.stamp_keys(&tags.names);
        let stamps = self
            .guarded("tag stamps", self.store.tag_stamps(&stamp_keys))
            .await?;
        Ok(stamps
            .iter()
            .any(|stamp| stamp.is_none_or(|stamp| stamp > tags.born)))
    }
}

/// A lease this handle holds on an entry (see [`Engine::acquire_lease`]).
#[derive(Debug)]
pub(crate) struct Lease {
    engine: Arc<Engine>,
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
        let (engine, key, token) = (
            Arc::clone(&self.engine),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let release = engine.store.release_lease(&key, &token);
            let _ = engine.guarded("release lease", release).await;
        });
    }
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
