//! Writing entries: fills after a miss (refused when an invalidation raced the load), the
//! direct API's `put`, and the writes a database write owes Redis — invalidations and
//! write-through — which all run on one skeleton ([`Engine::owed_write`]): detached from the
//! caller, evicting near copies before and after, remembering what Redis did not take.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{is_outage, Engine, INVALIDATION_BATCH};
use crate::codec;
use crate::key::encode_tag;
use crate::stats::Counter;
use crate::store::{self, ClockRead, Fill, FillBody, Invalidation, WriteThrough};
use crate::time::millis;
use crate::Error;

/// What an owed write's step returns: a boxed future, as the step borrows the engine and
/// what is owed from the task that runs it (a write is a round trip; one allocation is
/// nothing beside it).
type OwedWrite<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

impl Engine {
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
        grace: Option<Duration>,
    ) -> Result<bool, Error> {
        if read_at.elapsed() >= self.lease_time {
            tracing::debug!(
                key,
                "load took longer than the lease time; not caching its value"
            );
            self.counters.bump(Counter::RefusedFills);
            return Ok(false);
        }
        let mut tag_names = String::new();
        for tag in tags {
            if !tag_names.is_empty() {
                tag_names.push(',');
            }
            encode_tag(tag, &mut tag_names);
        }
        let tags = self.tag_keys(tags);
        let lease_time = self.lease_time;
        self.write_fill(Fill {
            key,
            clock: &self.clock_key,
            owner: &self.owner,
            body,
            ttl,
            seen: Some(seen),
            tags: &tags,
            tag_names: &tag_names,
            replace,
            lease_time,
            grace,
        })
        .await
    }

    async fn write_fill(&self, fill: Fill<'_>) -> Result<bool, Error> {
        self.longest_ttl_ms
            .fetch_max(millis(fill.life()), Ordering::Relaxed);
        let written = self.guarded("fill", self.store.fill(fill)).await?;
        let counter = if written {
            Counter::Fills
        } else {
            Counter::RefusedFills
        };
        self.counters.bump(counter);
        Ok(written)
    }

    /// Merges `fields` into the entry at `key` unconditionally, with the default TTL (the
    /// direct API's [`Cache::put`](crate::Cache::put)).
    pub(crate) async fn put(&self, key: &str, fields: &[codec::EncodedField]) -> Result<(), Error> {
        let fill = Fill {
            key,
            clock: &self.clock_key,
            owner: &self.owner,
            body: FillBody::Fields(fields),
            ttl: self.default_ttl,
            seen: None,
            tags: &[],
            tag_names: "",
            replace: false,
            lease_time: self.lease_time,
            grace: None,
        };
        self.write_fill(fill).await.map(drop)
    }

    /// Invalidates entries and tags together; what cannot be delivered now is kept and
    /// delivered later. Runs to the end even if the caller stops waiting (see
    /// [`owed_write`](Self::owed_write)): a write that committed must never lose its
    /// invalidation.
    pub(crate) async fn invalidate_all(
        self: &Arc<Self>,
        keys: Vec<String>,
        tags: Vec<String>,
    ) -> Result<(), Error> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.owed_write(keys, tags, |engine, keys, tags| {
            Box::pin(engine.store_invalidation(keys, tags))
        })
        .await
    }

    /// Writes a value through after an update: `Ok(true)` when the entry now holds it,
    /// `Ok(false)` when the entry was invalidated instead (see [`store::WriteThrough`]).
    /// What cannot be delivered now is kept as an invalidation and delivered later; like
    /// [`invalidate_all`](Self::invalidate_all), it runs to the end without the caller.
    pub(crate) async fn write_through(
        self: &Arc<Self>,
        key: String,
        fields: Vec<codec::EncodedField>,
        version_field: &'static str,
        version: u64,
        tags: Vec<String>,
    ) -> Result<bool, Error> {
        self.owed_write(vec![key], tags, move |engine, keys, tags| {
            Box::pin(async move {
                let tag_keys = engine.tag_keys(tags);
                let write = WriteThrough {
                    clock: &engine.clock_key,
                    key: keys[0],
                    owner: &engine.owner,
                    fields: &fields,
                    version_field,
                    version,
                    tags: &tag_keys,
                    lease_time: engine.lease_time,
                };
                let (written, drain) = engine
                    .guarded("write through", engine.store.write_through(write))
                    .await?;
                engine.drain_in_background(drain);
                let invalidated = tags.len() + usize::from(!written);
                engine
                    .counters
                    .add(Counter::Invalidations, invalidated as u64);
                if written {
                    engine.counters.bump(Counter::WrittenThrough);
                }
                Ok(written)
            })
        })
        .await
    }

    /// The skeleton of every write a database write owes Redis: `write` runs detached from
    /// the caller (see [`detached`](Self::detached)), between two evictions of the near
    /// copies it concerns (before: no read of this process finds the old value; after: no
    /// read that fetched it from Redis before the write inserts it). What `write` could not
    /// deliver is remembered as pending, and what Redis still allows is unlinked now; what it
    /// could not even try (a panic, a runtime shutting down) is remembered by [`Owed`].
    async fn owed_write<T: Send + 'static>(
        self: &Arc<Self>,
        keys: Vec<String>,
        tags: Vec<String>,
        write: impl for<'a> FnOnce(&'a Arc<Engine>, &'a [&'a str], &'a [String]) -> OwedWrite<'a, T>
            + Send
            + 'static,
    ) -> Result<T, Error> {
        let owed = Owed::new(self, keys, tags);
        self.detached(async move {
            let engine = &owed.engine;
            let keys = owed.keys();
            engine.evict_near(&keys, &owed.tags);
            let outcome = match write(engine, &keys, &owed.tags).await {
                Ok(value) => Ok(value),
                Err(error) => {
                    engine.remember_undelivered(&keys, &owed.tags);
                    engine
                        .drop_what_redis_allows(&error, &keys, &owed.tags)
                        .await;
                    Err(error)
                }
            };
            engine.evict_near(&keys, &owed.tags);
            drop(keys);
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
        let mut doomed = self.store.clocks_of(&self.clock_key, keys);
        doomed.extend(keys.iter().map(|key| (*key).to_owned()));
        doomed.extend(self.tag_keys(tags).into_iter().map(|keys| keys.stamp));
        let mut unlinked = true;
        for batch in doomed.chunks(INVALIDATION_BATCH) {
            unlinked &= self
                .guarded("unlink", self.store.unlink(batch))
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

    /// Invalidates `keys` and `tags`, in scripts of at most [`INVALIDATION_BATCH`] targets
    /// each, so that no call keeps Redis busy for long however many are pending (a delivery
    /// after an outage may carry a hundred thousand). Each batch is complete in itself:
    /// stamped, tombstoned, recorded in the clock.
    pub(super) async fn store_invalidation(
        self: &Arc<Self>,
        keys: &[&str],
        tags: &[String],
    ) -> Result<(), Error> {
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
            let tag_keys = self.tag_keys(batch_tags);
            let invalidation = Invalidation {
                clock: &self.clock_key,
                entries: batch_keys,
                tags: &tag_keys,
                lease_time: self.lease_time,
            };
            let drain = self
                .guarded("invalidate", self.store.invalidate(invalidation))
                .await?;
            self.drain_in_background(drain);
            let targets = (batch_keys.len() + batch_tags.len()) as u64;
            self.counters.add(Counter::Invalidations, targets);
        }
    }

    /// Tombstones, batch by batch, the rest of the entries registered under tags that an
    /// invalidation stamped. Reads are already right (they check the tags' stamps); this only
    /// makes other clients of the hashes see them gone, without blocking Redis for long.
    fn drain_in_background(self: &Arc<Self>, drain: store::Drain) {
        if drain.sets.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let engine = Arc::clone(self);
        runtime.spawn(async move {
            for members in &drain.sets {
                loop {
                    let batch = engine.store.drain(
                        &engine.clock_key,
                        members,
                        &drain.stamp,
                        engine.lease_time,
                    );
                    match engine.guarded("drain tag", batch).await {
                        Ok(left) if left > 0 => continue,
                        _ => break,
                    }
                }
            }
        });
    }
}

/// An invalidation a write owes Redis until [`settle`](Owed::settle)d (delivered, or
/// remembered as pending by the code that saw it fail): dropped unsettled (its task panicked,
/// or was dropped with the runtime), it is remembered as pending instead of lost.
struct Owed {
    engine: Arc<Engine>,
    keys: Vec<String>,
    tags: Vec<String>,
    settled: bool,
}

impl Owed {
    fn new(engine: &Arc<Engine>, keys: Vec<String>, tags: Vec<String>) -> Owed {
        Owed {
            engine: Arc::clone(engine),
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
            self.engine.remember_undelivered(&self.keys(), &self.tags);
        }
    }
}
