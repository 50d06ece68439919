//! The Redis store: one multiplexed connection, made lazily and replaced when it breaks, so a
//! hit costs exactly one command and no checkout round trip.
//! Fills and invalidations are Lua scripts: one command each, atomic.
//! This module holds [`RedisStore`] and its operations as one server runs them; the scripts,
//! the connection and the cluster's own steps live in the modules below.

mod cluster;
mod link;
mod scripts;
mod sentinel;

use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncConnectionConfig, Client, Value};

pub(crate) use self::link::Link;
use self::link::{Connection, Opener};
use self::scripts::{
    CLOCK_SCRIPT, DRAIN_BATCH, DRAIN_SCRIPT, FILL_SCRIPT, INVALIDATE_SCRIPT, LEASE_SCRIPT,
    NEW_STAMP_SCRIPT, RELEASE_LEASE_SCRIPT, STAMP_TAG_SCRIPT, TAG_FILL_SCRIPT,
    WRITE_THROUGH_SCRIPT,
};
pub(crate) use self::sentinel::{at_tcp_address, is_primary, Sentinels};
use super::meta::Meta;
use super::{
    parse_stamp, ttl_millis, Absences, ClockRead, Drain, EntryRead, EntryTags, Fill, FillBody,
    Invalidation, StoreResult, WriteThrough,
};
use crate::codec::{EncodedField, FieldValue, META_FIELD};
use crate::key;

pub(crate) struct RedisStore {
    connection: Connection,
    cluster: bool,
    /// On a cluster or behind Sentinel, how many replicas must have an invalidation before
    /// it counts as done (`WAIT`), so that a failover cannot lose it; 0: don't wait.
    replica_acks: u32,
    /// The longest `WAIT` for them: past it, the invalidation is done all the same.
    replica_wait: Duration,
    /// Slots whose primary lately had no replica to acknowledge (a replica promoted by a
    /// failover has none until one is added): not waited for until the instant given, so
    /// that every write does not wait out `replica_wait`.
    unreplicated: std::sync::Mutex<std::collections::HashMap<u16, std::time::Instant>>,
    fill_script: redis::Script,
    invalidate_script: redis::Script,
    write_through_script: redis::Script,
    lease_script: redis::Script,
    clock_script: redis::Script,
    release_lease_script: redis::Script,
    drain_script: redis::Script,
    tag_fill_script: redis::Script,
    new_stamp_script: redis::Script,
    stamp_tag_script: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares the connection to one server without connecting: `CacheBuilder::build` must not
    /// fail or wait because Redis is down.
    pub(crate) fn new(client: Client, operation_timeout: Duration) -> Self {
        // The caller's timeout bounds every operation; redis-rs' own response timer would be a
        // second timer per command.
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(operation_timeout));
        Self::with(Opener::Single(client, config))
    }

    /// The primary named by Redis Sentinel, asked of the sentinels for every connection;
    /// invalidations wait for `replica_acks` replicas, `replica_wait` at most.
    pub(crate) fn sentinel(
        sentinels: Arc<Sentinels>,
        operation_timeout: Duration,
        replica_acks: u32,
        replica_wait: Duration,
    ) -> Self {
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(operation_timeout));
        RedisStore {
            replica_acks,
            replica_wait,
            ..Self::with(Opener::Sentinel(sentinels, config))
        }
    }

    /// A connection the application gave, to one server.
    pub(crate) fn given(link: Link) -> Self {
        Self::with(Opener::Given(link))
    }

    /// The application's pool, to take one connection from.
    #[cfg(feature = "deadpool")]
    pub(crate) fn pool(pool: deadpool_redis::Pool) -> Self {
        Self::with(Opener::Pool(pool))
    }

    fn with(opener: Opener) -> Self {
        RedisStore {
            cluster: matches!(opener, Opener::Cluster(_) | Opener::Given(Link::Cluster(_))),
            replica_acks: 0,
            replica_wait: Duration::ZERO,
            unreplicated: std::sync::Mutex::default(),
            connection: Connection::new(opener),
            fill_script: redis::Script::new(FILL_SCRIPT),
            invalidate_script: redis::Script::new(INVALIDATE_SCRIPT),
            write_through_script: redis::Script::new(WRITE_THROUGH_SCRIPT),
            lease_script: redis::Script::new(LEASE_SCRIPT),
            clock_script: redis::Script::new(CLOCK_SCRIPT),
            release_lease_script: redis::Script::new(RELEASE_LEASE_SCRIPT),
            drain_script: redis::Script::new(DRAIN_SCRIPT),
            tag_fill_script: redis::Script::new(TAG_FILL_SCRIPT),
            new_stamp_script: redis::Script::new(NEW_STAMP_SCRIPT),
            stamp_tag_script: redis::Script::new(STAMP_TAG_SCRIPT),
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Whether a connection is made (a broken one is forgotten: see `connection_failed`).
    pub(crate) fn is_connected(&self) -> bool {
        self.connection.is_made()
    }

    /// Makes the connection, if there is none.
    pub(crate) async fn connect(&self) -> StoreResult<()> {
        self.connection.get().await.map(drop)
    }

    /// Drops the connection after a failure; the next command connects anew.
    pub(crate) fn connection_failed(&self) {
        self.connection.discard();
    }

    /// The clock an entry's fills and invalidations go through, and the entry's bucket in
    /// it: the namespace's clock on one server; on a cluster the clock of the entry's slot,
    /// so that each script touches one slot.
    fn entry_clock(&self, namespace_clock: &str, key: &str) -> (String, String) {
        if self.cluster {
            let slot = key::slot_of(key.as_bytes());
            (
                key::slot_clock_key(namespace_clock, slot),
                key::bucket_field(key, key::SLOT_CLOCK_BUCKETS),
            )
        } else {
            (
                namespace_clock.to_owned(),
                key::bucket_field(key, key::CLOCK_BUCKETS),
            )
        }
    }

    /// The clocks whose loss refuses the fills racing an invalidation of `keys` (see
    /// `Engine::drop_what_redis_allows`).
    pub(crate) fn clocks_of(&self, namespace_clock: &str, keys: &[&str]) -> Vec<String> {
        let mut clocks = vec![namespace_clock.to_owned()];
        if self.cluster {
            clocks.extend(
                keys.iter()
                    .map(|key| self.entry_clock(namespace_clock, key).0),
            );
            clocks.sort_unstable();
            clocks.dedup();
        }
        clocks
    }

    /// One `HMGET` of `fields` and `__meta`; with `with_ttl`, pipelined with a `PTTL` (one
    /// round trip still), for the near cache, whose copy must not outlive the entry; with
    /// `stamps` (tag stamp keys known before the read), on one server pipelined with their
    /// `MGET` too, so that a tagged hit is one round trip instead of two (on a cluster they
    /// live in other slots and are read after, if the entry has tags).
    pub(crate) async fn read(
        &self,
        key: &str,
        fields: &[&str],
        owner: &str,
        with_ttl: bool,
        stamps: &[String],
    ) -> StoreResult<EntryRead> {
        // Sent without `query_async`'s boxed future: this is the hit path, where every
        // allocation shows in the throughput (see BENCHMARKS.md).
        let command = entry_hmget(key, fields);
        let mut ttl_ms = 0;
        let mut fetched = None;
        let reply = match self.connection.get().await? {
            // Boxed: the near cache's and tagged reads pay for its size, not every read's
            // future.
            connection if with_ttl || !stamps.is_empty() => {
                let pipelined = read_pipelined(connection, command, key, with_ttl, stamps);
                Box::pin(pipelined).await.map(|(reply, ttl, read_stamps)| {
                    ttl_ms = ttl;
                    fetched = read_stamps;
                    reply
                })
            }
            Link::Single(mut connection) => connection.send_packed_command(&command).await,
            mut connection => {
                redis::aio::ConnectionLike::req_packed_command(&mut connection, &command).await
            }
        };
        let reply = match reply.and_then(Value::extract_error) {
            Ok(reply) => reply,
            // Someone stored another type under our key: that is garbage, hence a miss.
            Err(error) if error.code() == Some("WRONGTYPE") => Value::Nil,
            Err(error) => return Err(error),
        };
        let mut read = entry_read(reply, fields, owner);
        read.ttl_ms = ttl_ms;
        read.stamps = fetched;
        Ok(read)
    }

    /// [`read`](Self::read) for many entries: one pipeline of `HMGET`s (each with a `PTTL`
    /// when `with_ttl`). On a cluster, a pipeline goes to one node, so the keys are grouped
    /// by slot and each group's pipeline is sent at the same time (the multiplexed
    /// connections put those for one node on the wire together).
    pub(crate) async fn read_many(
        &self,
        keys: &[&str],
        fields: &[&str],
        owner: &str,
        with_ttl: bool,
    ) -> StoreResult<Vec<EntryRead>> {
        let connection = self.connection.get().await?;
        if !self.cluster {
            return read_group(connection, keys, fields, owner, with_ttl).await;
        }
        let mut groups: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
        for (at, key) in keys.iter().enumerate() {
            groups
                .entry(key::slot_of(key.as_bytes()))
                .or_default()
                .push(at);
        }
        let reads = groups.into_values().map(|positions| {
            let connection = connection.clone();
            async move {
                let group: Vec<&str> = positions.iter().map(|&at| keys[at]).collect();
                let reads = read_group(connection, &group, fields, owner, with_ttl).await?;
                Ok::<_, redis::RedisError>(positions.into_iter().zip(reads))
            }
        });
        let mut found: Vec<Option<EntryRead>> = keys.iter().map(|_| None).collect();
        for group in futures_util::future::try_join_all(reads).await? {
            for (at, read) in group {
                found[at] = Some(read);
            }
        }
        Ok(found
            .into_iter()
            .map(|read| read.unwrap_or_else(|| EntryRead::missing(fields.len())))
            .collect())
    }

    /// [`clock`](Self::clock) for many entries: the namespace clock once on one server; on a
    /// cluster the clock of each slot among them once, and the namespace clock for tags.
    pub(crate) async fn clock_many(
        &self,
        namespace_clock: &str,
        keys: &[&str],
        tagged: bool,
    ) -> StoreResult<Vec<ClockRead>> {
        let connection = self.connection.get().await?;
        if !self.cluster {
            let now = self
                .clock_now(&mut connection.clone(), namespace_clock)
                .await?;
            let read = ClockRead {
                entry: now,
                tags: now,
            };
            return Ok(vec![read; keys.len()]);
        }
        let clocks: Vec<String> = keys
            .iter()
            .map(|key| self.entry_clock(namespace_clock, key).0)
            .collect();
        let mut distinct: Vec<&str> = clocks.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let reads = distinct.iter().map(|clock| {
            let mut connection = connection.clone();
            async move { self.clock_now(&mut connection, clock).await }
        });
        let tags = async {
            if tagged {
                self.clock_now(&mut connection.clone(), namespace_clock)
                    .await
            } else {
                Ok(0)
            }
        };
        let (nows, tags) = tokio::join!(futures_util::future::try_join_all(reads), tags);
        let (nows, tags) = (nows?, tags?);
        Ok(clocks
            .iter()
            .map(|clock| {
                let at = distinct.binary_search(&clock.as_str()).unwrap_or(0);
                ClockRead {
                    entry: nows[at],
                    tags,
                }
            })
            .collect())
    }

    pub(crate) async fn release_lease(&self, key: &str, token: &str) -> StoreResult<()> {
        self.release_lease_script
            .key(key)
            .arg(token)
            .invoke_async::<i64>(&mut self.connection.get().await?)
            .await?;
        Ok(())
    }

    /// One `UNLINK`; on a cluster, redis-rs sends one per node.
    pub(crate) async fn unlink(&self, keys: &[String]) -> StoreResult<()> {
        redis::cmd("UNLINK")
            .arg(keys)
            .query_async::<i64>(&mut self.connection.get().await?)
            .await?;
        Ok(())
    }

    /// One `MGET`; on a cluster, redis-rs sends one per node.
    pub(crate) async fn tag_stamps(&self, stamps: &[String]) -> StoreResult<Vec<Option<u64>>> {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(stamps)
            .query_async(&mut self.connection.get().await?)
            .await?;
        Ok(values
            .into_iter()
            .map(|value| value.map(|bytes| parse_stamp(&bytes)))
            .collect())
    }

    pub(crate) async fn fill(&self, fill: Fill<'_>) -> StoreResult<bool> {
        let mut connection = self.connection.get().await?;
        if self.cluster && !fill.tags.is_empty() {
            // The tags live in other slots: each is checked and registered first, in its own
            // slot. A tag invalidated after this check is caught by every read of the entry
            // (its stamp is then newer than the entry's `born`).
            let born = fill.seen.map(|seen| seen.tags);
            for tag in fill.tags {
                if !self.tag_fill(&mut connection, tag, &fill, born).await? {
                    return Ok(false);
                }
            }
        }
        let (clock, bucket) = self.entry_clock(fill.clock, fill.key);
        let mut invocation = self.fill_script.key(fill.key);
        invocation.key(&clock);
        if !self.cluster {
            for tag in fill.tags {
                invocation.key(&tag.members).key(&tag.stamp);
            }
        }
        invocation.arg(ttl_millis(fill.ttl));
        match fill.seen {
            Some(seen) => invocation.arg(seen.entry),
            None => invocation.arg(""),
        };
        let kind = match fill.body {
            FillBody::Absent => "absent",
            FillBody::Fields(_) => "fields",
        };
        invocation
            .arg(kind)
            .arg(ttl_millis(fill.lease_time))
            .arg(fill.owner)
            .arg(bucket)
            .arg(if fill.replace { "1" } else { "" })
            .arg(fill.tag_names)
            .arg(fill.seen.map_or(0, |seen| seen.tags))
            .arg(
                fill.grace
                    .map_or_else(String::new, |grace| ttl_millis(grace).to_string()),
            );
        if let FillBody::Fields(fields) = fill.body {
            field_triples(&mut invocation, fields);
        }
        let written: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(written == 1)
    }

    pub(crate) async fn write_through(
        &self,
        write: WriteThrough<'_>,
    ) -> StoreResult<(bool, Drain)> {
        let mut connection = self.connection.get().await?;
        let mut drain = Drain::default();
        if self.cluster && !write.tags.is_empty() {
            drain = self
                .stamp_tags(&mut connection, write.clock, write.tags, write.lease_time)
                .await?;
        }
        let (clock, bucket) = self.entry_clock(write.clock, write.key);
        let mut invocation = self.write_through_script.key(&clock);
        invocation.key(write.key);
        if !self.cluster {
            for tag in write.tags {
                invocation.key(&tag.members).key(&tag.stamp);
            }
        }
        invocation
            .arg(ttl_millis(write.lease_time))
            .arg(write.version_field)
            .arg(write.version)
            .arg(write.owner)
            .arg(bucket);
        field_triples(&mut invocation, write.fields);
        let mut reply: Vec<String> = invocation.invoke_async(&mut connection).await?;
        let written = !reply.is_empty() && reply.remove(0) == "1";
        if self.cluster {
            self.replicated(&mut connection, key::slot_of(write.key.as_bytes()))
                .await?;
            return Ok((written, drain));
        }
        // Behind Sentinel: the one primary's replicas (nothing to wait for on one server).
        self.replicated(&mut connection, 0).await?;
        Ok((written, Drain::from_reply(&mut reply)))
    }

    pub(crate) async fn acquire_lease(
        &self,
        key: &str,
        token: &str,
        lease_time: Duration,
    ) -> StoreResult<bool> {
        let acquired: i64 = self
            .lease_script
            .key(key)
            .arg(token)
            .arg(ttl_millis(lease_time))
            .invoke_async(&mut self.connection.get().await?)
            .await?;
        Ok(acquired == 1)
    }

    /// What a miss reads before loading: the `now` of the entry's clock and, for a
    /// function with tags on a cluster, of the namespace clock that stamps tags.
    pub(crate) async fn clock(
        &self,
        namespace_clock: &str,
        key: &str,
        tagged: bool,
    ) -> StoreResult<ClockRead> {
        let mut connection = self.connection.get().await?;
        if !self.cluster {
            let now = self.clock_now(&mut connection, namespace_clock).await?;
            return Ok(ClockRead {
                entry: now,
                tags: now,
            });
        }
        let (clock, _) = self.entry_clock(namespace_clock, key);
        let mut second = connection.clone();
        let (entry, tags) = tokio::join!(self.clock_now(&mut connection, &clock), async {
            if tagged {
                self.clock_now(&mut second, namespace_clock).await
            } else {
                Ok(0)
            }
        });
        Ok(ClockRead {
            entry: entry?,
            tags: tags?,
        })
    }

    /// The `now` of a clock: one `HGET`, or the clock script when the clock is gone.
    async fn clock_now(&self, connection: &mut Link, clock: &str) -> StoreResult<u64> {
        let value: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(clock)
            .arg("now")
            .query_async(connection)
            .await?;
        if let Some(bytes) = value {
            return Ok(parse_stamp(&bytes));
        }
        // Rare: the namespace's first miss, or the clock was evicted.
        let made: Vec<u8> = self
            .clock_script
            .key(clock)
            .invoke_async(connection)
            .await?;
        Ok(parse_stamp(&made))
    }

    pub(crate) async fn drain(
        &self,
        namespace_clock: &str,
        members: &str,
        stamp: &str,
        lease_time: Duration,
    ) -> StoreResult<u64> {
        let mut connection = self.connection.get().await?;
        if !self.cluster {
            return self
                .drain_script
                .key(members)
                .arg(stamp)
                .arg(ttl_millis(lease_time))
                .invoke_async(&mut connection)
                .await;
        }
        // The members live in other slots: popped here, invalidated in their own.
        let popped: Vec<String> = redis::cmd("SPOP")
            .arg(members)
            .arg(DRAIN_BATCH)
            .query_async(&mut connection)
            .await?;
        let entries: Vec<&str> = popped.iter().map(String::as_str).collect();
        self.invalidate_entries(
            &mut connection,
            namespace_clock,
            &entries,
            lease_time,
            false,
        )
        .await?;
        Ok(u64::from(popped.len() == DRAIN_BATCH))
    }

    pub(crate) async fn invalidate(&self, invalidation: Invalidation<'_>) -> StoreResult<Drain> {
        let mut connection = self.connection.get().await?;
        if self.cluster {
            let drain = if invalidation.tags.is_empty() {
                Drain::default()
            } else {
                self.stamp_tags(
                    &mut connection,
                    invalidation.clock,
                    invalidation.tags,
                    invalidation.lease_time,
                )
                .await?
            };
            self.invalidate_entries(
                &mut connection,
                invalidation.clock,
                invalidation.entries,
                invalidation.lease_time,
                true,
            )
            .await?;
            return Ok(drain);
        }
        let mut invocation = self.invalidate_script.key(invalidation.clock);
        for entry in invalidation.entries {
            invocation.key(*entry);
        }
        for tag in invalidation.tags {
            invocation.key(&tag.members).key(&tag.stamp);
        }
        invocation
            .arg(ttl_millis(invalidation.lease_time))
            .arg(invalidation.entries.len());
        for entry in invalidation.entries {
            invocation.arg(key::bucket_field(entry, key::CLOCK_BUCKETS));
        }
        let mut reply: Vec<String> = invocation.invoke_async(&mut connection).await?;
        self.replicated(&mut connection, 0).await?;
        Ok(Drain::from_reply(&mut reply))
    }
}

/// `command` (an `HMGET`) pipelined with a `PTTL` of `key`: one round trip; the TTL left
/// goes to `ttl_ms` (0 for a key without one, or gone).
/// The entry's `HMGET`, then its `PTTL` (with `with_ttl`) and the `MGET` of `stamps` (if
/// any), in one round trip: the reply, the TTL in ms (0: not asked or none) and the stamps.
/// Without `stamps` the keys are one, hence one slot: a cluster sends it to that slot's node.
/// One pipeline of `HMGET`s of `fields` and `__meta`, each followed by a `PTTL` when
/// `with_ttl`; replies that are not hashes (another type under our key) are garbage: misses.
/// The `HMGET` of an entry's `fields` and its `__meta`, sized up front: grown argument by
/// argument, a command's buffers are reallocated four times, and a batch of 50 pays that
/// 50 times (allocations per batch: BENCHMARKS.md, "Batch reads").
fn entry_hmget(key: &str, fields: &[&str]) -> redis::Cmd {
    let bytes = "HMGET".len()
        + key.len()
        + fields.iter().map(|field| field.len()).sum::<usize>()
        + META_FIELD.len();
    let mut command = redis::Cmd::with_capacity(fields.len() + 3, bytes);
    command.arg("HMGET").arg(key).arg(fields).arg(META_FIELD);
    command
}

async fn read_group(
    mut connection: impl redis::aio::ConnectionLike,
    keys: &[&str],
    fields: &[&str],
    owner: &str,
    with_ttl: bool,
) -> StoreResult<Vec<EntryRead>> {
    let mut pipeline = redis::Pipeline::with_capacity(keys.len() * (1 + usize::from(with_ttl)));
    for key in keys {
        pipeline.add_command(entry_hmget(key, fields));
        if with_ttl {
            pipeline.cmd("PTTL").arg(*key);
        }
    }
    let per_key = 1 + usize::from(with_ttl);
    let replies = connection
        .req_packed_commands(&pipeline, 0, keys.len() * per_key)
        .await?;
    let mut replies = replies.into_iter();
    let mut reads = Vec::with_capacity(keys.len());
    for _ in keys {
        let reply = match replies.next().unwrap_or(Value::Nil).extract_error() {
            Ok(reply) => reply,
            Err(error) if error.code() == Some("WRONGTYPE") => Value::Nil,
            Err(error) => return Err(error),
        };
        let mut read = entry_read(reply, fields, owner);
        if with_ttl {
            if let Some(Value::Int(millis)) = replies.next() {
                read.ttl_ms = u64::try_from(millis).unwrap_or(0);
            }
        }
        reads.push(read);
    }
    Ok(reads)
}

async fn read_pipelined(
    mut connection: impl redis::aio::ConnectionLike,
    command: redis::Cmd,
    key: &str,
    with_ttl: bool,
    stamps: &[String],
) -> StoreResult<(Value, u64, Option<Vec<Option<u64>>>)> {
    let mut pipeline = redis::pipe();
    pipeline.add_command(command);
    if with_ttl {
        pipeline.cmd("PTTL").arg(key);
    }
    if !stamps.is_empty() {
        pipeline.cmd("MGET").arg(stamps);
    }
    let count = 1 + usize::from(with_ttl) + usize::from(!stamps.is_empty());
    let mut replies = connection
        .req_packed_commands(&pipeline, 0, count)
        .await?
        .into_iter();
    let reply = replies.next().unwrap_or(Value::Nil);
    let mut ttl_ms = 0;
    if with_ttl {
        if let Some(Value::Int(millis)) = replies.next() {
            ttl_ms = u64::try_from(millis).unwrap_or(0);
        }
    }
    let fetched = match replies.next() {
        Some(Value::Array(values)) if values.len() == stamps.len() => Some(
            values
                .into_iter()
                .map(|value| match value {
                    Value::BulkString(bytes) => Some(parse_stamp(&bytes)),
                    Value::SimpleString(text) => Some(parse_stamp(text.as_bytes())),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    };
    Ok((reply, ttl_ms, fetched))
}

/// The script arguments of encoded fields: triples `field, state, value`.
fn field_triples(invocation: &mut redis::ScriptInvocation<'_>, fields: &[EncodedField]) {
    for (name, value) in fields {
        invocation.arg(*name);
        match value {
            FieldValue::Text(text) => invocation.arg("v").arg(text.as_slice()),
            FieldValue::Null => invocation.arg("n").arg(""),
            FieldValue::Skipped => invocation.arg("s").arg(""),
        };
    }
}

/// The entry in an `HMGET` reply of `fields` plus `__meta`: the values stay in the reply as
/// they came, the meta is parsed.
fn entry_read(reply: Value, fields: &[&str], owner: &str) -> EntryRead {
    let Value::Array(mut values) = reply else {
        return EntryRead::missing(fields.len());
    };
    if values.len() != fields.len() + 1 {
        return EntryRead::missing(fields.len());
    }
    let text = match values.pop() {
        Some(Value::BulkString(text)) => text,
        _ => Vec::new(),
    };
    let meta = Meta::parse(&text);
    let owned = meta
        .owner
        .is_some_and(|owner_range| text[owner_range] == *owner.as_bytes());
    let tags = meta
        .tags
        .and_then(|tags_range| EntryTags::parse(&text[tags_range]));
    EntryRead {
        values,
        absences: Absences::within(text, meta.null, meta.skip),
        stamp: meta.stamp,
        absent: meta.absent && owned,
        leased: meta.leased,
        owned,
        tags,
        ttl_ms: 0,
        stamps: None,
        fresh_left_ms: meta
            .fresh
            .map(|deadline| deadline.saturating_sub(super::meta::now_micros()) / 1000),
    }
}
