//! The Redis store: one multiplexed connection, made lazily and replaced when it breaks, so a
//! hit costs exactly one command and no checkout round trip.
//! Fills and invalidations are Lua scripts: one command each, atomic.

use std::ops::Range;
use std::sync::RwLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::{
    parse_stamp, ttl_millis, Absences, EntryRead, Fill, FillBody, Invalidation, StoreResult,
    WriteThrough,
};
use crate::codec::{EncodedField, FieldValue, META_FIELD};

/// The library's state of an entry lives in one hash field, `__meta`, so that a hit reads
/// the schema's fields plus one: space-separated tokens `inv:<stamp>` (last invalidation),
/// `null:<a,b>` (fields that are `None`), `skip:<c>` (fields skipped by
/// `skip_serializing_if`), `none` (a cached absence), `lease:<token>@<deadline µs>` and
/// `tagged` (registered under a tag). `read_meta` / `write_meta` parse and write it.
macro_rules! lua_meta {
    () => {
        r"
local function read_meta(key)
  local meta = {null = {}, skip = {}}
  local text = redis.call('HGET', key, '__meta')
  if text then
    for token in string.gmatch(text, '%S+') do
      local name, value = string.match(token, '^(%a+):(.*)$')
      if name == 'null' or name == 'skip' then
        for field in string.gmatch(value, '[^,]+') do meta[name][field] = true end
      elseif name == 'inv' or name == 'lease' then
        meta[name] = value
      elseif token == 'none' or token == 'tagged' then
        meta[token] = true
      end
    end
  end
  return meta
end
local function write_meta(key, meta)
  local parts = {}
  if meta.inv then parts[#parts + 1] = 'inv:' .. meta.inv end
  if meta.none then parts[#parts + 1] = 'none' end
  for _, name in ipairs({'null', 'skip'}) do
    local items = {}
    for field in pairs(meta[name]) do items[#items + 1] = field end
    if #items > 0 then
      table.sort(items)
      parts[#parts + 1] = name .. ':' .. table.concat(items, ',')
    end
  end
  if meta.lease then parts[#parts + 1] = 'lease:' .. meta.lease end
  if meta.tagged then parts[#parts + 1] = 'tagged' end
  if #parts > 0 then
    redis.call('HSET', key, '__meta', table.concat(parts, ' '))
  else
    redis.call('HDEL', key, '__meta')
  end
end
"
    };
}

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

/// Takes a new stamp from the clock `KEYS[1]`: Redis' clock in µs, kept strictly increasing
/// by the clock key, so stamps stay ordered even if that key is lost. `ARGV[1]` is the lease
/// time in ms: how long tombstones and tag stamps live. `invalidate_tags(first)` stamps the
/// tags given as pairs (members, stamp) from `KEYS[first]` on and tombstones their members.
macro_rules! lua_stamp {
    () => {
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local stamp = string.format('%.0f', math.max(now, (tonumber(redis.call('GET', KEYS[1])) or 0) + 1))
redis.call('SET', KEYS[1], stamp)
local lease = ARGV[1]
local function tombstone(entry)
  redis.call('DEL', entry)
  redis.call('HSET', entry, '__meta', 'inv:' .. stamp)
  redis.call('PEXPIRE', entry, lease)
end
local function invalidate_tags(first)
  for i = first, #KEYS, 2 do
    redis.call('SET', KEYS[i + 1], stamp, 'PX', lease)
    for _, entry in ipairs(redis.call('SMEMBERS', KEYS[i])) do tombstone(entry) end
    redis.call('DEL', KEYS[i])
  end
end
"
    };
}

/// `KEYS[1]` the entry, then pairs (tag members, tag stamp). `ARGV[1]` TTL in ms, `ARGV[2]`
/// the stamp the miss read (empty: unconditional), `ARGV[3]` `fields` or `absent`, `ARGV[4]`
/// the lease time in ms, then the field triples.
///
/// A key holding another type (garbage left by someone else) is replaced rather than failing
/// the fill forever with WRONGTYPE. A refused fill leaves a tombstone with the newest stamp
/// it saw, so that the next miss reads that stamp and can fill. A successful fill clears the
/// lease and, with tags, marks the entry `tagged` (which rules out write-through for it).
const FILL_SCRIPT: &str = concat!(
    lua_meta!(),
    lua_write_fields!(),
    r"
local key = KEYS[1]
local kind = redis.call('TYPE', key).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
local meta = read_meta(key)
if ARGV[2] ~= '' then
  local seen = tonumber(ARGV[2])
  local stamp = tonumber(meta.inv) or 0
  local newest = stamp
  for i = 3, #KEYS, 2 do newest = math.max(newest, tonumber(redis.call('GET', KEYS[i])) or 0) end
  if newest > seen then
    if newest > stamp then
      redis.call('DEL', key)
      redis.call('HSET', key, '__meta', 'inv:' .. string.format('%.0f', newest))
      redis.call('PEXPIRE', key, ARGV[4])
    end
    return 0
  end
end
if ARGV[3] == 'absent' then
  redis.call('DEL', key)
  meta = {inv = meta.inv, none = true, null = {}, skip = {}}
else
  write_fields(key, meta, 5)
  meta.none = nil
end
meta.lease = nil
if #KEYS > 1 then meta.tagged = true end
write_meta(key, meta)
local ttl = tonumber(ARGV[1])
redis.call('PEXPIRE', key, ttl)
for i = 2, #KEYS, 2 do
  redis.call('SADD', KEYS[i], key)
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"
);

/// `KEYS[1]` the namespace clock, then `ARGV[2]` entries, then pairs (tag members, tag stamp).
/// `ARGV[1]` the lease time in ms.
const INVALIDATE_SCRIPT: &str = concat!(
    lua_stamp!(),
    r"
local entries = tonumber(ARGV[2])
for i = 2, entries + 1 do tombstone(KEYS[i]) end
invalidate_tags(entries + 2)
return stamp
"
);

/// `KEYS[1]` the namespace clock, `KEYS[2]` the entry, then pairs (tag members, tag stamp).
/// `ARGV[1]` the lease time in ms, `ARGV[2]` the version field, `ARGV[3]` the new version,
/// then the field triples. Invalidates the tags; then replaces the entry by the new value if
/// that cannot bring old data back: the entry holds an older version in the version field
/// and is registered under no tag (whose set the new value might no longer belong to). An
/// entry holding the same or a newer version is kept. Otherwise the entry is invalidated.
/// Returns 1 when written through.
const WRITE_THROUGH_SCRIPT: &str = concat!(
    lua_stamp!(),
    lua_meta!(),
    lua_write_fields!(),
    r"
local key = KEYS[2]
invalidate_tags(3)
local current = nil
if redis.call('TYPE', key).ok == 'hash' then
  local meta = read_meta(key)
  if not meta.tagged and not meta.none then current = tonumber(redis.call('HGET', key, ARGV[2])) end
end
local ttl = redis.call('PTTL', key)
if current and ttl > 0 then
  -- Holds a newer version already (a later update wrote through first): keep it.
  if current >= tonumber(ARGV[3]) then return 0 end
  redis.call('DEL', key)
  local meta = {inv = stamp, null = {}, skip = {}}
  write_fields(key, meta, 4)
  write_meta(key, meta)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
tombstone(key)
return 0
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

/// One multiplexed connection, made on first use and replaced when it breaks or stops
/// answering. Cloning it for a command is one reference count; no lock is held across an
/// await, and no command but the caller's is sent (a pool checkout would add a round trip).
struct Connection {
    client: Client,
    config: AsyncConnectionConfig,
    current: RwLock<Option<MultiplexedConnection>>,
    /// Held while connecting, so that a burst of calls makes one connection, not many.
    connecting: tokio::sync::Mutex<()>,
}

impl Connection {
    async fn get(&self) -> StoreResult<MultiplexedConnection> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        // Connecting is rare and its future is large: boxed, it does not weigh on every
        // command's future (each call would copy kilobytes otherwise).
        Box::pin(self.connect()).await
    }

    async fn connect(&self) -> StoreResult<MultiplexedConnection> {
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Forgets the connection, so the next call makes a new one: after an I/O error, and
    /// after a timeout (a connection whose peer vanished may never error by itself).
    fn discard(&self) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

pub(crate) struct RedisStore {
    connection: Connection,
    fill_script: redis::Script,
    invalidate_script: redis::Script,
    write_through_script: redis::Script,
    lease_script: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares the connection without connecting: `Cache::build` must not fail or wait
    /// because Redis is down. Must run inside a Tokio runtime.
    pub(crate) fn new(client: Client, operation_timeout: Duration) -> StoreResult<Self> {
        // The caller's timeout bounds every operation; redis-rs' own response timer would be a
        // second timer per command.
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(operation_timeout));
        let connection = Connection {
            client,
            config,
            current: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
        };
        Ok(RedisStore {
            connection,
            fill_script: redis::Script::new(FILL_SCRIPT),
            invalidate_script: redis::Script::new(INVALIDATE_SCRIPT),
            write_through_script: redis::Script::new(WRITE_THROUGH_SCRIPT),
            lease_script: redis::Script::new(LEASE_SCRIPT),
        })
    }

    /// Drops the connection after a failure; the next command connects anew.
    pub(crate) fn connection_failed(&self) {
        self.connection.discard();
    }

    pub(crate) async fn read(&self, key: &str, fields: &[&str]) -> StoreResult<EntryRead> {
        // Sized up front and sent without `query_async`'s boxed future: this is the hit path,
        // where every allocation shows in the throughput (see BENCHMARKS.md).
        let bytes = "HMGET".len()
            + key.len()
            + fields.iter().map(|field| field.len()).sum::<usize>()
            + META_FIELD.len();
        let mut command = redis::Cmd::with_capacity(fields.len() + 3, bytes);
        command.arg("HMGET").arg(key).arg(fields).arg(META_FIELD);
        let reply = match self
            .connection
            .get()
            .await?
            .send_packed_command(&command)
            .await
            .and_then(Value::extract_error)
        {
            Ok(reply) => reply,
            // Someone stored another type under our key: that is garbage, hence a miss.
            Err(error) if error.code() == Some("WRONGTYPE") => Value::Nil,
            Err(error) => return Err(error),
        };
        Ok(entry_read(reply, fields))
    }

    pub(crate) async fn fill(&self, fill: Fill<'_>) -> StoreResult<bool> {
        let mut invocation = self.fill_script.key(fill.key);
        for tag in fill.tags {
            invocation.key(&tag.members).key(&tag.stamp);
        }
        invocation.arg(ttl_millis(fill.ttl));
        match fill.seen {
            Some(stamp) => invocation.arg(stamp),
            None => invocation.arg(""),
        };
        let kind = match fill.body {
            FillBody::Absent => "absent",
            FillBody::Fields(_) => "fields",
        };
        invocation.arg(kind).arg(ttl_millis(fill.lease_time));
        if let FillBody::Fields(fields) = fill.body {
            field_triples(&mut invocation, fields);
        }
        let written: i64 = invocation
            .invoke_async(&mut self.connection.get().await?)
            .await?;
        Ok(written == 1)
    }

    pub(crate) async fn write_through(&self, write: WriteThrough<'_>) -> StoreResult<bool> {
        let mut invocation = self.write_through_script.key(write.clock);
        invocation.key(write.key);
        for tag in write.tags {
            invocation.key(&tag.members).key(&tag.stamp);
        }
        invocation
            .arg(ttl_millis(write.lease_time))
            .arg(write.version_field)
            .arg(write.version);
        field_triples(&mut invocation, write.fields);
        let written: i64 = invocation
            .invoke_async(&mut self.connection.get().await?)
            .await?;
        Ok(written == 1)
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

    pub(crate) async fn clock(&self, clock: &str) -> StoreResult<Option<u64>> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(clock)
            .query_async(&mut self.connection.get().await?)
            .await?;
        Ok(value.map(|bytes| parse_stamp(&bytes)))
    }

    pub(crate) async fn invalidate(&self, invalidation: Invalidation<'_>) -> StoreResult<()> {
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
        invocation
            .invoke_async::<Value>(&mut self.connection.get().await?)
            .await?;
        Ok(())
    }
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
fn entry_read(reply: Value, fields: &[&str]) -> EntryRead {
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
    EntryRead {
        values,
        absences: Absences::within(text, meta.null, meta.skip),
        stamp: meta.stamp,
        absent: meta.absent,
        leased: meta.leased,
    }
}

/// The parts of `__meta` a read needs (see `lua_meta!`); the lists as ranges of the text.
#[derive(Debug, Default)]
struct Meta {
    stamp: u64,
    absent: bool,
    leased: bool,
    null: Range<usize>,
    skip: Range<usize>,
}

impl Meta {
    fn parse(text: &[u8]) -> Meta {
        let mut meta = Meta::default();
        let mut start = 0;
        for token in text.split(|&byte| byte == b' ') {
            let at = start;
            start += token.len() + 1;
            match token.iter().position(|&byte| byte == b':') {
                Some(colon) => {
                    let value = at + colon + 1..at + token.len();
                    match &token[..colon] {
                        b"inv" => meta.stamp = parse_stamp(&text[value]),
                        b"null" => meta.null = value,
                        b"skip" => meta.skip = value,
                        b"lease" => meta.leased = true,
                        _ => {}
                    }
                }
                None => meta.absent |= token == b"none",
            }
        }
        meta
    }
}
