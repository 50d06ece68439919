//! The Redis store: one multiplexed connection, made lazily and replaced when it breaks, so a
//! hit costs exactly one command and no checkout round trip.
//! Fills and invalidations are Lua scripts: one command each, atomic.

use std::sync::RwLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Client, Value};

use super::meta::{lua_meta, Meta};
use super::{
    parse_stamp, ttl_millis, Absences, ClockRead, Drain, EntryRead, EntryTags, Fill, FillBody,
    Invalidation, StoreResult, TagKeys, WriteThrough,
};
use crate::codec::{EncodedField, FieldValue, META_FIELD};
use crate::key;
use crate::locks::{MutexExt as _, RwLockExt as _};

/// Writes the triples `field, state, value` from `ARGV[first]` on, state `v` (value), `n`
/// (`None`) or `s` (skipped), into the entry and its `meta`. `None` and skipped fields are not
/// stored but listed in the meta, so every value in the hash stays plain text that any client
/// can read. The caller writes the meta afterwards.
macro_rules! lua_write_fields {
    () => {
        r"
local function write_fields(key, meta, first)
  local writes, removals = {}, {}
  for i = first, #ARGV, 3 do
    local field, state = ARGV[i], ARGV[i + 1]
    meta.null[field] = (state == 'n') or nil
    meta.skip[field] = (state == 's') or nil
    if state == 'v' then
      writes[#writes + 1] = field
      writes[#writes + 1] = ARGV[i + 2]
    else
      removals[#removals + 1] = field
    end
  end
  if #removals > 0 then redis.call('HDEL', key, unpack(removals)) end
  if #writes > 0 then redis.call('HSET', key, unpack(writes)) end
end
"
    };
}

/// The namespace's clock, a hash: `now` (the last stamp given), `floor` (the stamp at which
/// it was made) and `b<n>` (the last stamp of an invalidation in bucket `n` of entries).
/// `new_stamp` gives Redis' clock in µs, kept strictly increasing by `now`. A clock that was
/// lost (evicted, flushed) is made again with a `floor` above every stamp given before, so
/// that what it held is not forgotten but taken as "anything up to the floor".
macro_rules! lua_clock {
    () => {
        r"
local function fmt(number) return string.format('%.0f', number) end
local function new_stamp(clock)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local last = tonumber(redis.call('HGET', clock, 'now'))
  local stamp
  if last then
    stamp = math.max(now, last + 1)
  else
    stamp = now + 1000
    redis.call('HSET', clock, 'floor', fmt(stamp))
  end
  redis.call('HSET', clock, 'now', fmt(stamp))
  return stamp
end
"
    };
}

/// `tombstone(entry, stamp, lease)` replaces an entry by `{__meta: inv:<stamp>}` for the lease
/// time; `drain(members, stamp, lease)` tombstones up to 64 entries registered in a tag's
/// member set and answers how many are left; `invalidate_tags(first, stamp, lease)` stamps the
/// tags given as pairs (members, stamp) from `KEYS[first]` on, keeping each stamp at least as
/// long as it lived (it must outlive every entry carrying the tag), drains one batch of each
/// member set, and answers the sets that still hold members. The stamps alone keep reads
/// right (reads check them); tombstoning members makes other clients see the entries gone at
/// once, in bounded batches, so that no call keeps Redis busy whatever a tag's size.
macro_rules! lua_invalidate {
    () => {
        r"
local function tombstone(entry, stamp, lease)
  redis.call('DEL', entry)
  redis.call('HSET', entry, '__meta', 'inv:' .. stamp)
  redis.call('PEXPIRE', entry, lease)
end
local function drain(members, stamp, lease)
  for _, entry in ipairs(redis.call('SPOP', members, 64)) do tombstone(entry, stamp, lease) end
  return redis.call('SCARD', members)
end
local function invalidate_tags(first, stamp, lease)
  local left = {}
  for i = first, #KEYS, 2 do
    redis.call('SET', KEYS[i + 1], stamp, 'PX', math.max(redis.call('PTTL', KEYS[i + 1]), lease))
    if drain(KEYS[i], stamp, lease) > 0 then left[#left + 1] = KEYS[i] end
  end
  return left
end
"
    };
}

/// `KEYS[1]` the entry, `KEYS[2]` the clock, then pairs (tag members, tag stamp).
/// `ARGV[1]` TTL in ms, `ARGV[2]` the stamp the miss read (empty: unconditional), `ARGV[3]`
/// `fields` or `absent`, `ARGV[4]` the lease time in ms, `ARGV[5]` the owner (namespace),
/// `ARGV[6]` the entry's bucket field in the clock, `ARGV[7]` `1` to replace the entry,
/// `ARGV[8]` the tags as `__meta` lists them, `ARGV[9]` the namespace clock's stamp the miss
/// read (`born`: on one server, `ARGV[2]`), then the field triples. On a cluster the tag keys
/// live in other slots: `KEYS` holds none, and `TAG_FILL_SCRIPT` has checked them first.
///
/// A key holding another type (garbage left by someone else) is replaced rather than failing
/// the fill forever with WRONGTYPE, and so is a hash the library did not fill for this
/// namespace. A refused fill leaves a tombstone with the newest stamp it saw, so that the
/// next miss reads that stamp and can fill. A fill merged into an entry holding other values
/// never extends its TTL: each function's TTL bounds the age of the fields it wrote.
const FILL_SCRIPT: &str = concat!(
    lua_meta!(),
    lua_write_fields!(),
    lua_clock!(),
    r"
local key, clock = KEYS[1], KEYS[2]
local kind = redis.call('TYPE', key).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
local meta = read_meta(key)
local ttl, lease = tonumber(ARGV[1]), tonumber(ARGV[4])
if ARGV[2] ~= '' then
  local seen = tonumber(ARGV[2])
  local state = redis.call('HMGET', clock, 'now', 'floor', ARGV[6])
  local now = tonumber(state[1])
  if not now then
    -- The clock was lost: which invalidations came after the read is unknown.
    new_stamp(clock)
    return 0
  end
  local newest = math.max(tonumber(meta.inv) or 0, tonumber(state[2]) or 0, tonumber(state[3]) or 0)
  for i = 3, #KEYS, 2 do
    local stamp = tonumber(redis.call('GET', KEYS[i + 1]))
    if not stamp then
      -- Never invalidated, or its stamp was lost: any invalidation up to now may concern it.
      stamp = now
      redis.call('SET', KEYS[i + 1], fmt(now), 'PX', math.max(ttl, lease))
    end
    newest = math.max(newest, stamp)
  end
  if newest > seen then
    if newest > (tonumber(meta.inv) or 0) then
      redis.call('DEL', key)
      redis.call('HSET', key, '__meta', 'inv:' .. fmt(newest))
      redis.call('PEXPIRE', key, lease)
    end
    return 0
  end
end
local holds_data = has_data(key, meta)
if ARGV[3] == 'absent' or ARGV[7] == '1' or (holds_data and meta.by ~= ARGV[5]) then
  redis.call('DEL', key)
  meta = {inv = meta.inv, null = {}, skip = {}}
elseif holds_data then
  local left = redis.call('PTTL', key)
  if left > 0 and left < ttl then ttl = left end
end
if ARGV[3] == 'absent' then
  meta.none = true
else
  write_fields(key, meta, 10)
  meta.none = nil
end
meta.lease = nil
meta.by = ARGV[5]
if ARGV[8] ~= '' then
  meta.tags = meta.tags or {}
  for tag in string.gmatch(ARGV[8], '[^,]+') do meta.tags[tag] = true end
  local born = tonumber(ARGV[9]) or 0
  if meta.born then born = math.min(born, tonumber(meta.born)) end
  meta.born = fmt(born)
end
write_meta(key, meta)
redis.call('PEXPIRE', key, ttl)
for i = 3, #KEYS, 2 do
  redis.call('SADD', KEYS[i], key)
  -- Members whose entries expired are pruned as fills go: three looked at per fill keep a
  -- set within about one and a half times its live entries, without a scan that grows.
  for _, member in ipairs(redis.call('SRANDMEMBER', KEYS[i], 3)) do
    if redis.call('EXISTS', member) == 0 then redis.call('SREM', KEYS[i], member) end
  end
  for j = i, i + 1 do
    if redis.call('PTTL', KEYS[j]) < ttl then redis.call('PEXPIRE', KEYS[j], ttl) end
  end
end
return 1
"
);

/// `KEYS[1]` the namespace clock, then `ARGV[2]` entries, then pairs (tag members, tag stamp).
/// `ARGV[1]` the lease time in ms, then the entries' bucket fields. Answers the stamp, then
/// the member sets left to drain.
const INVALIDATE_SCRIPT: &str = concat!(
    lua_clock!(),
    lua_invalidate!(),
    r"
local stamp = fmt(new_stamp(KEYS[1]))
local lease = tonumber(ARGV[1])
local entries = tonumber(ARGV[2])
for i = 1, entries do
  tombstone(KEYS[i + 1], stamp, lease)
  redis.call('HSET', KEYS[1], ARGV[i + 2], stamp)
end
local left = invalidate_tags(entries + 2, stamp, lease)
return {stamp, unpack(left)}
"
);

/// `KEYS[1]` the namespace clock, `KEYS[2]` the entry, then pairs (tag members, tag stamp).
/// `ARGV[1]` the lease time in ms, `ARGV[2]` the version field, `ARGV[3]` the new version,
/// `ARGV[4]` the owner, `ARGV[5]` the entry's bucket field, then the field triples.
/// Invalidates the tags; then replaces the entry by the new value if that cannot bring old
/// data back: this namespace's entry holds an older version in the version field and is
/// registered under no tag (whose set the new value might no longer belong to). An entry
/// holding the same or a newer version is kept. Otherwise the entry is invalidated.
/// Answers 1 when written through (else 0), the stamp, then the member sets left to drain.
const WRITE_THROUGH_SCRIPT: &str = concat!(
    lua_clock!(),
    lua_invalidate!(),
    lua_meta!(),
    lua_write_fields!(),
    r"
local key = KEYS[2]
local stamp = fmt(new_stamp(KEYS[1]))
local lease = tonumber(ARGV[1])
local left = invalidate_tags(3, stamp, lease)
redis.call('HSET', KEYS[1], ARGV[5], stamp)
local current = nil
if redis.call('TYPE', key).ok == 'hash' then
  local meta = read_meta(key)
  if not meta.tags and not meta.none and meta.by == ARGV[4] then
    current = tonumber(redis.call('HGET', key, ARGV[2]))
  end
end
local ttl = redis.call('PTTL', key)
if current and ttl > 0 then
  -- Holds a newer version already (a later update wrote through first): keep it.
  if current >= tonumber(ARGV[3]) then return {0, stamp, unpack(left)} end
  redis.call('DEL', key)
  local meta = {inv = stamp, by = ARGV[4], null = {}, skip = {}}
  write_fields(key, meta, 6)
  write_meta(key, meta)
  redis.call('PEXPIRE', key, ttl)
  return {1, stamp, unpack(left)}
end
tombstone(key, stamp, lease)
return {0, stamp, unpack(left)}
"
);

/// `KEYS[1]` a tag's member set, `ARGV[1]` the stamp of its invalidation, `ARGV[2]` the lease
/// time in ms. Tombstones one batch of its members; answers how many are left.
const DRAIN_SCRIPT: &str = concat!(
    lua_invalidate!(),
    r"
return drain(KEYS[1], ARGV[1], tonumber(ARGV[2]))
"
);

/// Redis Cluster only. `KEYS[1]` a tag's member set, `KEYS[2]` its stamp (one slot: see
/// `key::tag_keys`). `ARGV[1]` the entry, `ARGV[2]` the namespace clock's stamp the miss read
/// before loading (`born`; empty: no check), `ARGV[3]` the entry's TTL in ms, `ARGV[4]` the
/// lease time in ms, `ARGV[5]` the stamp to give a missing tag stamp (empty: answer -1 so
/// that the caller reads the namespace clock's `now` and asks again).
/// Answers the tag's stamp; when it is not newer than `born` (the tag was not invalidated
/// since the miss read the clock), the entry is registered under the tag, the tag's keys
/// live at least as long as the entry, and three members follow the stamp: the caller
/// prunes those whose entries are gone (they live in other slots, out of a script's reach).
/// A newer stamp refuses the fill.
const TAG_FILL_SCRIPT: &str = r"
local stamp = tonumber(redis.call('GET', KEYS[2]))
local ttl, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
if not stamp then
  -- Never invalidated, or its stamp was lost: any invalidation up to now may concern it.
  if ARGV[5] == '' then return {-1} end
  stamp = tonumber(ARGV[5])
  redis.call('SET', KEYS[2], ARGV[5], 'PX', math.max(ttl, lease))
end
if ARGV[2] ~= '' and stamp > tonumber(ARGV[2]) then return {stamp} end
redis.call('SADD', KEYS[1], ARGV[1])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
local reply = {stamp}
for _, member in ipairs(redis.call('SRANDMEMBER', KEYS[1], 3)) do
  if member ~= ARGV[1] then reply[#reply + 1] = member end
end
return reply
";

/// Redis Cluster only. `KEYS[1]` the namespace clock: a new stamp for tag invalidations.
const NEW_STAMP_SCRIPT: &str = concat!(
    lua_clock!(),
    r"
return fmt(new_stamp(KEYS[1]))
"
);

/// Redis Cluster only. `KEYS[1]` a tag's member set, `KEYS[2]` its stamp; `ARGV[1]` the
/// invalidation's stamp (from the namespace clock), `ARGV[2]` the lease time in ms. Stamps
/// the tag (never backwards, living at least as long as before) and pops up to 64 members,
/// which the caller invalidates in their own slots; answers them.
const STAMP_TAG_SCRIPT: &str = r"
local old = tonumber(redis.call('GET', KEYS[2])) or 0
local stamp = ARGV[1]
if old > tonumber(stamp) then stamp = string.format('%.0f', old) end
redis.call('SET', KEYS[2], stamp, 'PX', math.max(redis.call('PTTL', KEYS[2]), tonumber(ARGV[2])))
return redis.call('SPOP', KEYS[1], 64)
";

/// `KEYS[1]` the namespace clock. Its `now`, after making the clock if it is gone (first use,
/// or evicted), so that a miss always fills against a clock that existed before it loaded.
const CLOCK_SCRIPT: &str = concat!(
    lua_clock!(),
    r"
local now = redis.call('HGET', KEYS[1], 'now')
if now then return now end
return fmt(new_stamp(KEYS[1]))
"
);

/// `KEYS[1]` the entry, `ARGV[1]` the token, `ARGV[2]` the lease time in ms. Takes the lease
/// unless a live one is held (the deadline is in Redis' clock, so callers' clocks do not
/// matter); a new hash lives as long as its lease.
const LEASE_SCRIPT: &str = concat!(
    lua_meta!(),
    r"
local key = KEYS[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local kind = redis.call('TYPE', key).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
local meta = read_meta(key)
if meta.lease and (tonumber(string.match(meta.lease, '@(%d+)$')) or 0) > now then return 0 end
meta.lease = ARGV[1] .. '@' .. string.format('%.0f', now + tonumber(ARGV[2]) * 1000)
write_meta(key, meta)
if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[2]) end
return 1
"
);

/// `KEYS[1]` the entry, `ARGV[1]` the token. Removes the lease if that token holds it.
const RELEASE_LEASE_SCRIPT: &str = concat!(
    lua_meta!(),
    r"
local key = KEYS[1]
if redis.call('TYPE', key).ok ~= 'hash' then return 0 end
local meta = read_meta(key)
if not meta.lease or string.sub(meta.lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '@' then return 0 end
meta.lease = nil
write_meta(key, meta)
return 1
"
);

/// Where commands go: one server through one multiplexed connection, or a Redis Cluster
/// through redis-rs' cluster connection (which follows `MOVED`/`ASK`, finds promoted
/// replicas and splits multi-slot `MGET`/`UNLINK` by node).
#[derive(Clone)]
pub(crate) enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
    /// The application's own, reconnecting by itself.
    #[cfg(feature = "connection-manager")]
    Manager(redis::aio::ConnectionManager),
}

/// `$body` with `$connection` bound to whichever connection `$link` holds.
macro_rules! on_link {
    ($link:expr, $connection:ident => $body:expr) => {
        match $link {
            Link::Single($connection) => $body,
            Link::Cluster($connection) => $body,
            #[cfg(feature = "connection-manager")]
            Link::Manager($connection) => $body,
        }
    };
}

impl redis::aio::ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        on_link!(self, connection => connection.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        on_link!(self, connection => connection.req_packed_commands(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        on_link!(self, connection => connection.get_db())
    }
}

/// How to make the [`Link`].
enum Opener {
    Single(Client, AsyncConnectionConfig),
    Cluster(ClusterClient),
    /// A connection the application gave: used as it is, never replaced (one that
    /// reconnects by itself does so inside).
    Given(Link),
    /// One connection taken out of the application's pool, and another only after it broke.
    #[cfg(feature = "deadpool")]
    Pool(deadpool_redis::Pool),
}

/// One connection, made on first use and replaced when it breaks or stops answering.
/// Cloning it for a command is one reference count; no lock is held across an await, and no
/// command but the caller's is sent (a pool checkout would add a round trip).
struct Connection {
    opener: Opener,
    current: RwLock<Option<Link>>,
    /// Held while connecting, so that a burst of calls makes one connection, not many; holds
    /// the task making the connection until a call takes its outcome.
    connecting: tokio::sync::Mutex<Option<tokio::task::JoinHandle<StoreResult<Link>>>>,
}

impl Connection {
    async fn get(&self) -> StoreResult<Link> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        // Connecting is rare and its future is large: boxed, it does not weigh on every
        // command's future (each call would copy kilobytes otherwise).
        Box::pin(self.connect()).await
    }

    async fn connect(&self) -> StoreResult<Link> {
        let mut connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let connection = match &self.opener {
            // Made in a task of its own, which the operation timeout of the call that started
            // it does not cancel: a later call takes the connection it made. Made inside the
            // call, a connection that takes longer than one operation timeout (a cluster's
            // nodes over TLS on busy cores: 460-570 ms) was cancelled and started again by
            // every call, which all timed out until the breaker opened.
            Opener::Single(client, config) => {
                let (client, config) = (client.clone(), config.clone());
                in_task(&mut connecting, async move {
                    let connection = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    Ok(Link::Single(connection))
                })
                .await?
            }
            Opener::Cluster(client) => {
                let client = client.clone();
                in_task(&mut connecting, async move {
                    Ok(Link::Cluster(client.get_async_connection().await?))
                })
                .await?
            }
            Opener::Given(link) => link.clone(),
            #[cfg(feature = "deadpool")]
            Opener::Pool(pool) => {
                let connection = pool.get().await.map_err(|error| match error {
                    deadpool_redis::PoolError::Backend(error) => error,
                    other => redis::RedisError::from(std::io::Error::other(format!(
                        "no connection from the pool: {other}"
                    ))),
                })?;
                // Out of the pool for good (it makes room for another): a multiplexed
                // connection serves every call at once.
                Link::Single(deadpool_redis::Connection::take(connection))
            }
        };
        *self.current.write_recovered() = Some(connection.clone());
        Ok(connection)
    }

    fn current(&self) -> Option<Link> {
        self.current.read_recovered().clone()
    }

    /// Forgets the connection, so the next call makes a new one: after an I/O error, and
    /// after a timeout (a connection whose peer vanished may never error by itself). A
    /// cluster connection is kept: it reconnects each node by itself and refreshes the slot
    /// map when a node fails over; making it again would reconnect every node.
    fn discard(&self) {
        if matches!(self.opener, Opener::Cluster(_) | Opener::Given(_)) {
            return;
        }
        *self.current.write_recovered() = None;
    }
}

/// The connection made by the task in `connecting`, which `open` starts if there is none.
/// Awaiting the task does not cancel it: a call whose timeout ends the wait leaves it
/// connecting for the next call. Its outcome, a connection or an error, goes to one call.
async fn in_task(
    connecting: &mut Option<tokio::task::JoinHandle<StoreResult<Link>>>,
    open: impl std::future::Future<Output = StoreResult<Link>> + Send + 'static,
) -> StoreResult<Link> {
    let task = connecting.get_or_insert_with(|| tokio::spawn(open));
    let outcome = task.await;
    *connecting = None;
    outcome.map_err(|error| {
        redis::RedisError::from(std::io::Error::other(format!(
            "the connecting task failed: {error}"
        )))
    })?
}

pub(crate) struct RedisStore {
    connection: Connection,
    cluster: bool,
    /// On a cluster, how many replicas must have an invalidation before it counts as done
    /// (`WAIT`), so that a failover cannot lose it; 0: don't wait.
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
    /// Prepares the connection to one server without connecting: `Cache::build` must not
    /// fail or wait because Redis is down.
    pub(crate) fn new(client: Client, operation_timeout: Duration) -> Self {
        // The caller's timeout bounds every operation; redis-rs' own response timer would be a
        // second timer per command.
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(operation_timeout));
        Self::with(Opener::Single(client, config))
    }

    /// Prepares the connection to a Redis Cluster, without connecting.
    pub(crate) fn cluster(
        client: ClusterClient,
        replica_acks: u32,
        replica_wait: Duration,
    ) -> Self {
        Self::on_cluster(Opener::Cluster(client), replica_acks, replica_wait)
    }

    /// A connection the application gave, to one server.
    pub(crate) fn given(link: Link) -> Self {
        Self::with(Opener::Given(link))
    }

    /// A cluster connection the application gave.
    pub(crate) fn given_cluster(
        connection: ClusterConnection,
        replica_acks: u32,
        replica_wait: Duration,
    ) -> Self {
        let opener = Opener::Given(Link::Cluster(connection));
        Self::on_cluster(opener, replica_acks, replica_wait)
    }

    /// A cluster store: invalidations wait for `replica_acks` replicas, `replica_wait` at most.
    fn on_cluster(opener: Opener, replica_acks: u32, replica_wait: Duration) -> Self {
        // Slot clocks are named by the slot tags: made here, not inside the first operation
        // (whose timeout they would eat into while blocking the runtime's thread).
        key::warm_slot_tags();
        RedisStore {
            replica_acks,
            replica_wait,
            ..Self::with(opener)
        }
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
            connection: Connection {
                opener,
                current: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(None),
            },
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
        // A read lock, no clone: every operation asks.
        self.connection.current.read_recovered().is_some()
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
    /// `Cache::drop_what_redis_allows`).
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
        // Sized up front and sent without `query_async`'s boxed future: this is the hit path,
        // where every allocation shows in the throughput (see BENCHMARKS.md).
        let bytes = "HMGET".len()
            + key.len()
            + fields.iter().map(|field| field.len()).sum::<usize>()
            + META_FIELD.len();
        let mut command = redis::Cmd::with_capacity(fields.len() + 3, bytes);
        command.arg("HMGET").arg(key).arg(fields).arg(META_FIELD);
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
            .arg(fill.seen.map_or(0, |seen| seen.tags));
        if let FillBody::Fields(fields) = fill.body {
            field_triples(&mut invocation, fields);
        }
        let written: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(written == 1)
    }

    /// Checks one tag of a fill on a cluster and registers the entry under it; `false` when
    /// the tag was invalidated after the miss read the namespace clock (`born`).
    async fn tag_fill(
        &self,
        connection: &mut Link,
        tag: &TagKeys,
        fill: &Fill<'_>,
        born: Option<u64>,
    ) -> StoreResult<bool> {
        let mut create = String::new();
        loop {
            let reply: Vec<Value> = self
                .tag_fill_script
                .key(&tag.members)
                .key(&tag.stamp)
                .arg(fill.key)
                .arg(born.map(|born| born.to_string()).unwrap_or_default())
                .arg(ttl_millis(fill.ttl))
                .arg(ttl_millis(fill.lease_time))
                .arg(&create)
                .invoke_async(connection)
                .await?;
            let mut reply = reply.into_iter();
            let stamp = match reply.next() {
                Some(Value::Int(stamp)) => stamp,
                _ => -1,
            };
            if stamp >= 0 || !create.is_empty() {
                let sample: Vec<Vec<u8>> = reply
                    .filter_map(|member| match member {
                        Value::BulkString(member) => Some(member),
                        _ => None,
                    })
                    .collect();
                prune_members(connection.clone(), tag.members.clone(), sample);
                return Ok(born.is_none_or(|born| u64::try_from(stamp).unwrap_or(0) <= born));
            }
            // The tag has no stamp (never invalidated, or lost): it gets the namespace clock's
            // `now`, above any stamp it may have had.
            create = self.clock_now(connection, fill.clock).await?.to_string();
        }
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
        Ok(Drain::from_reply(&mut reply))
    }

    /// Cluster: invalidates entries, one script per slot (the slot's clock and its entries).
    /// `replicate`: wait for replicas (see [`RedisStore::replicated`]); not for the
    /// tombstones of a tag's members, which only clean up (the tag's stamp keeps reads right).
    async fn invalidate_entries(
        &self,
        connection: &mut Link,
        namespace_clock: &str,
        entries: &[&str],
        lease_time: Duration,
        replicate: bool,
    ) -> StoreResult<()> {
        let mut by_slot: Vec<(u16, &str)> = entries
            .iter()
            .map(|entry| (key::slot_of(entry.as_bytes()), *entry))
            .collect();
        by_slot.sort_unstable();
        for group in by_slot.chunk_by(|a, b| a.0 == b.0) {
            let clock = key::slot_clock_key(namespace_clock, group[0].0);
            let mut invocation = self.invalidate_script.key(&clock);
            for (_, entry) in group {
                invocation.key(*entry);
            }
            invocation.arg(ttl_millis(lease_time)).arg(group.len());
            for (_, entry) in group {
                invocation.arg(key::bucket_field(entry, key::SLOT_CLOCK_BUCKETS));
            }
            invocation.invoke_async::<Vec<String>>(connection).await?;
            if replicate {
                self.replicated(connection, group[0].0).await?;
            }
        }
        Ok(())
    }

    /// Cluster: stamps tags with one new stamp of the namespace clock (tag stamps are
    /// comparable with the `born` of entries because they all come from that one clock),
    /// then each tag in its own slot. The members popped with it are invalidated here; the
    /// sets that may hold more are left to drain.
    async fn stamp_tags(
        &self,
        connection: &mut Link,
        namespace_clock: &str,
        tags: &[TagKeys],
        lease_time: Duration,
    ) -> StoreResult<Drain> {
        let stamp: String = self
            .new_stamp_script
            .key(namespace_clock)
            .invoke_async(connection)
            .await?;
        let mut drain = Drain {
            stamp: stamp.clone(),
            sets: Vec::new(),
        };
        for tag in tags {
            let popped: Vec<String> = self
                .stamp_tag_script
                .key(&tag.members)
                .key(&tag.stamp)
                .arg(&stamp)
                .arg(ttl_millis(lease_time))
                .invoke_async(connection)
                .await?;
            self.replicated(connection, key::slot_of(tag.stamp.as_bytes()))
                .await?;
            // The tag is stamped (and replicated): reads are right from here on. Tombstoning
            // the popped members only cleans up, and does not fail the invalidation.
            let entries: Vec<&str> = popped.iter().map(String::as_str).collect();
            let cleanup =
                self.invalidate_entries(connection, namespace_clock, &entries, lease_time, false);
            if let Err(error) = cleanup.await {
                tracing::debug!(%error, "could not tombstone a tag's members; they expire with their TTL");
            }
            if popped.len() == DRAIN_BATCH {
                drain.sets.push(tag.members.clone());
            }
        }
        Ok(drain)
    }
}

impl RedisStore {
    /// Cluster: waits until `replica_acks` replicas of the primary serving `slot` have what
    /// this connection wrote there (`WAIT`), at most `replica_wait`. Replication is
    /// asynchronous: without this, a primary killed right after acknowledging an
    /// invalidation could take it along, and its promoted replica would serve the old entry
    /// until its TTL. Replicas that do not acknowledge in time fail the step (the
    /// invalidation stays pending and is delivered again); a primary without replicas is
    /// not waited for.
    async fn replicated(&self, connection: &mut Link, slot: u16) -> StoreResult<()> {
        let Link::Cluster(connection) = connection else {
            return Ok(());
        };
        if self.replica_acks == 0 {
            return Ok(());
        }
        let now = std::time::Instant::now();
        {
            let mut unreplicated = self.unreplicated.lock_recovered();
            match unreplicated.get(&slot) {
                Some(until) if *until > now => return Ok(()),
                Some(_) => {
                    unreplicated.remove(&slot);
                }
                None => {}
            }
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replica_acks)
            .arg(ttl_millis(self.replica_wait));
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        let acks = connection
            .route_command(wait, route.clone())
            .await
            .and_then(Value::extract_error)?;
        if matches!(acks, Value::Int(acks) if acks >= i64::from(self.replica_acks)) {
            return Ok(());
        }
        // Too few acknowledgements: a primary without replicas (a replica just promoted by a
        // failover has none) has nothing to wait for, and is not asked again for a while.
        // One whose replicas lag could lose the invalidation if it died now: the step
        // fails, so the invalidation stays pending and is delivered again (to the promoted
        // replica, if it comes to that).
        let role = connection
            .route_command(redis::cmd("ROLE"), route)
            .await
            .and_then(Value::extract_error)?;
        let replicas = match role {
            Value::Array(parts) => match parts.get(2) {
                Some(Value::Array(replicas)) => replicas.len(),
                _ => 0,
            },
            _ => 0,
        };
        if replicas == 0 {
            tracing::debug!(slot, "the primary has no replica to wait for");
            self.unreplicated
                .lock_recovered()
                .insert(slot, now + UNREPLICATED_FOR);
            return Ok(());
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no replica acknowledged the invalidation in time",
        )))
    }
}

/// `command` (an `HMGET`) pipelined with a `PTTL` of `key`: one round trip; the TTL left
/// goes to `ttl_ms` (0 for a key without one, or gone).
/// The entry's `HMGET`, then its `PTTL` (with `with_ttl`) and the `MGET` of `stamps` (if
/// any), in one round trip: the reply, the TTL in ms (0: not asked or none) and the stamps.
/// Without `stamps` the keys are one, hence one slot: a cluster sends it to that slot's node.
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

/// Cluster: removes from a tag's member set those of `sample` whose entries are gone, off the
/// caller's path (as the fill script does on one server, three looked at per fill keep a set
/// within about one and a half times its live entries). Not atomic across the two slots: a
/// member filled again between the check and the removal is unregistered, which costs only
/// the eager cleanup of that entry (reads check the tag's stamp, not the set).
fn prune_members(mut connection: Link, members: String, sample: Vec<Vec<u8>>) {
    if sample.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        for member in sample {
            let exists: StoreResult<i64> = redis::cmd("EXISTS")
                .arg(&member)
                .query_async(&mut connection)
                .await;
            if exists == Ok(0) {
                let _: StoreResult<i64> = redis::cmd("SREM")
                    .arg(&members)
                    .arg(&member)
                    .query_async(&mut connection)
                    .await;
            }
        }
    });
}

/// How long a slot whose primary had no replica to acknowledge is not waited for.
const UNREPLICATED_FOR: Duration = Duration::from_secs(10);

/// How many members one drain step tombstones (as `lua_invalidate!`'s `drain`).
const DRAIN_BATCH: usize = 64;

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
    }
}
