//! The Lua scripts the Redis store runs: each fill, invalidation and lease step is one script,
//! hence one command and atomic. Their texts live apart from the Rust that calls them, so that
//! the Lua pieces they share (`concat!`ed, with `lua_meta!`) read together.

use crate::store::meta::lua_meta;

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
/// read (`born`: on one server, `ARGV[2]`), `ARGV[10]` the fail-safe grace in ms (empty:
/// freshness is not recorded; see `fresh:` in `meta.rs`), then the field triples. On a cluster the tag keys
/// live in other slots: `KEYS` holds none, and `TAG_FILL_SCRIPT` has checked them first.
///
/// A key holding another type (garbage left by someone else) is replaced rather than failing
/// the fill forever with WRONGTYPE, and so is a hash the library did not fill for this
/// namespace. A refused fill leaves a tombstone with the newest stamp it saw, so that the
/// next miss reads that stamp and can fill. A fill merged into an entry holding other values
/// never extends its TTL: each function's TTL bounds the age of the fields it wrote.
pub(super) const FILL_SCRIPT: &str = concat!(
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
-- `life`: how long Redis keeps the key; `ttl`: how long it is fresh. They differ by the
-- fail-safe's grace when the fill records freshness (`fresh:`), so an expired copy outlives
-- its fresh time; only a miss may return it, when its load fails.
local grace = tonumber(ARGV[10])
local now_us = nil
if grace or meta.fresh then
  local time = redis.call('TIME')
  now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local life = ttl + (grace or 0)
local expired = meta.fresh and tonumber(meta.fresh) <= now_us
if ARGV[3] == 'absent' or ARGV[7] == '1' or expired or (holds_data and meta.by ~= ARGV[5]) then
  -- An expired copy is replaced, not merged into: its other fields are past their TTL.
  redis.call('DEL', key)
  meta = {inv = meta.inv, null = {}, skip = {}}
  if grace then meta.fresh = fmt(now_us + ttl * 1000) end
elseif holds_data then
  local left = redis.call('PTTL', key)
  if left > 0 and left < life then life = left end
  if meta.fresh then meta.fresh = fmt(math.min(tonumber(meta.fresh), now_us + ttl * 1000)) end
elseif grace then
  meta.fresh = fmt(now_us + ttl * 1000)
else
  meta.fresh = nil
end
if ARGV[3] == 'absent' then
  meta.none = true
else
  write_fields(key, meta, 11)
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
redis.call('PEXPIRE', key, life)
for i = 3, #KEYS, 2 do
  redis.call('SADD', KEYS[i], key)
  -- Members whose entries expired are pruned as fills go: three looked at per fill keep a
  -- set within about one and a half times its live entries, without a scan that grows.
  for _, member in ipairs(redis.call('SRANDMEMBER', KEYS[i], 3)) do
    if redis.call('EXISTS', member) == 0 then redis.call('SREM', KEYS[i], member) end
  end
  for j = i, i + 1 do
    if redis.call('PTTL', KEYS[j]) < life then redis.call('PEXPIRE', KEYS[j], life) end
  end
end
return 1
"
);

/// `KEYS[1]` the namespace clock, then `ARGV[2]` entries, then pairs (tag members, tag stamp).
/// `ARGV[1]` the lease time in ms, then the entries' bucket fields. Answers the stamp, then
/// the member sets left to drain.
pub(super) const INVALIDATE_SCRIPT: &str = concat!(
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
pub(super) const WRITE_THROUGH_SCRIPT: &str = concat!(
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
local current, fresh = nil, nil
if redis.call('TYPE', key).ok == 'hash' then
  local meta = read_meta(key)
  if not meta.tags and not meta.none and meta.by == ARGV[4] then
    current = tonumber(redis.call('HGET', key, ARGV[2]))
    fresh = meta.fresh
  end
end
local ttl = redis.call('PTTL', key)
if current and ttl > 0 then
  -- Holds a newer version already (a later update wrote through first): keep it.
  if current >= tonumber(ARGV[3]) then return {0, stamp, unpack(left)} end
  redis.call('DEL', key)
  -- The new value keeps the entry's freshness deadline: it lives no longer than the
  -- value it replaces would have.
  local meta = {inv = stamp, by = ARGV[4], null = {}, skip = {}, fresh = fresh}
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
pub(super) const DRAIN_SCRIPT: &str = concat!(
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
pub(super) const TAG_FILL_SCRIPT: &str = r"
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
pub(super) const NEW_STAMP_SCRIPT: &str = concat!(
    lua_clock!(),
    r"
return fmt(new_stamp(KEYS[1]))
"
);

/// Redis Cluster only. `KEYS[1]` a tag's member set, `KEYS[2]` its stamp; `ARGV[1]` the
/// invalidation's stamp (from the namespace clock), `ARGV[2]` the lease time in ms. Stamps
/// the tag (never backwards, living at least as long as before) and pops up to 64 members,
/// which the caller invalidates in their own slots; answers them.
pub(super) const STAMP_TAG_SCRIPT: &str = r"
local old = tonumber(redis.call('GET', KEYS[2])) or 0
local stamp = ARGV[1]
if old > tonumber(stamp) then stamp = string.format('%.0f', old) end
redis.call('SET', KEYS[2], stamp, 'PX', math.max(redis.call('PTTL', KEYS[2]), tonumber(ARGV[2])))
return redis.call('SPOP', KEYS[1], 64)
";

/// `KEYS[1]` the namespace clock. Its `now`, after making the clock if it is gone (first use,
/// or evicted), so that a miss always fills against a clock that existed before it loaded.
pub(super) const CLOCK_SCRIPT: &str = concat!(
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
pub(super) const LEASE_SCRIPT: &str = concat!(
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
pub(super) const RELEASE_LEASE_SCRIPT: &str = concat!(
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

/// How many members one drain step tombstones (as `lua_invalidate!`'s `drain`).
pub(super) const DRAIN_BATCH: usize = 64;
