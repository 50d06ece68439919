//! Where entries live: Redis, or an in-process map with the same semantics (`mem://`).
//!
//! Both implement the same protocol, which is what keeps the cache correct under concurrency:
//!
//! * **Read**: one `HMGET` of the schema's fields plus the library's `__meta`, which holds
//!   the entry's state: `by:<namespace>` (the library filled it, for this namespace),
//!   `null:`/`skip:` lists, `inv:<stamp>` (its last invalidation), `none` (a cached absence),
//!   `lease:…`, `tags:<born>:<tags>` (its tags, and the stamp its oldest load read); the
//!   format is described once, in `meta.rs`. An
//!   entry without this handle's `by:` is not a hit. An entry with tags is a hit only when
//!   every tag's stamp still exists and is not newer than `born`: a second command (`MGET`),
//!   so that an evicted tag stamp or member set can never let a stale entry through.
//! * **Invalidate**: take a new stamp from the namespace's clock hash (monotonic, at least
//!   Redis' `TIME` in µs), replace each entry by a tombstone `{__meta: "inv:<stamp>"}` that
//!   lives for the lease time, record the stamp in the clock's bucket of each entry (which
//!   outlives the tombstone), stamp each tag, and tombstone every entry registered under
//!   those tags (eagerly; the stamps alone keep reads right).
//! * **Fill** (after a miss that read the clock): accepted only if nothing that may concern
//!   the entry is newer than the stamp the miss read: the entry's stamp, its bucket's, the
//!   clock's floor, and its tags' stamps (a missing one counts as the clock's `now`). An
//!   invalidation that happened after the read, i.e. possibly after the loader read the
//!   database, makes the fill a no-op: no stale set. A lost clock refuses the fill and is
//!   made again above every stamp it gave. Check, merge, TTL and tag registration happen in
//!   one atomic script. A refused fill tombstones the entry with the newest stamp it saw, so
//!   the next miss can fill again. A successful fill clears the lease; it replaces (rather
//!   than merges into) an entry of another namespace or client, or one whose tags went
//!   stale; merged into a live entry it never extends the entry's TTL.
//! * **Lease** (after a miss on a tombstone, where herds form): `lease:<token>@<deadline>` is
//!   set unless a live one is there. Other readers see it in their `HMGET` and wait for the
//!   fill instead of loading.
//!
//! On a Redis Cluster the same protocol runs as single-slot steps (`redis/cluster.rs`): each
//! slot has its own clock beside its entries, tags are stamped by the namespace clock and
//! checked in their own slot before the fill; `docs/cluster.md` argues why a racing fill and
//! invalidation still always see each other.
//!
//! The two are an enum rather than a trait object so that the hit path pays no boxed future.

mod memory;
// Before `redis`: it defines the scripts' `lua_meta!`.
mod meta;
mod redis;

use std::ops::Range;
use std::time::Duration;

use ::redis::Value;

pub(crate) use self::memory::{shared as shared_memory, ChangeListener, MemoryStore};
pub(crate) use self::redis::{at_tcp_address, is_primary, Link, RedisStore, Sentinels};
use crate::codec::{EncodedField, Stored};
use crate::key::TagKeys;
use crate::time::millis;

/// Result of a store operation; errors are what Redis reported.
pub(crate) type StoreResult<T> = Result<T, ::redis::RedisError>;

/// What one read found.
#[derive(Debug)]
pub(crate) struct EntryRead {
    /// One per asked-for field, in order, as `HMGET` answers: a bulk string where the hash
    /// has the field, `Nil` where it does not. Kept as the reply came, so that a hit decodes
    /// straight from it without another allocation.
    pub(crate) values: Vec<Value>,
    /// Which absent fields the entry lists as `None` or skipped.
    pub(crate) absences: Absences,
    /// The entry's stamp (0: never invalidated). A fill after this read passes it back.
    pub(crate) stamp: u64,
    /// The entry is a cached absence.
    pub(crate) absent: bool,
    /// Another caller holds a lease: it is loading this entry.
    pub(crate) leased: bool,
    /// The library filled this entry for this handle's namespace (`by:` in `__meta`).
    pub(crate) owned: bool,
    /// The tags the entry is registered under, if any.
    pub(crate) tags: Option<EntryTags>,
    /// How long the entry has left in ms, when the read asked (for the near cache); 0 when
    /// not asked or unknown.
    pub(crate) ttl_ms: u64,
    /// The stamps of the tags the read was asked to fetch with it (`None`: not fetched; a
    /// stamp `None`: gone), in the order asked.
    pub(crate) stamps: Option<Vec<Option<u64>>>,
    /// How long the entry stays fresh, in ms, when a fill with `fail_safe` recorded it (`fresh:` in `__meta`); `Some(0)`: expired, a copy that
    /// only the fail-safe may return. `None`: fresh for as long as it lives.
    pub(crate) fresh_left_ms: Option<u64>,
}

/// The tags of an entry and the stamp its oldest fill read: if any tag's stamp is newer (or
/// gone), some of its fields may predate an invalidation of that tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryTags {
    pub(crate) born: u64,
    pub(crate) names: Vec<String>,
}

impl EntryTags {
    /// Parses `<born>:<encoded tag>,<encoded tag>` (see `key::encode_tag`).
    pub(crate) fn parse(text: &[u8]) -> Option<EntryTags> {
        let colon = text.iter().position(|&byte| byte == b':')?;
        let born = std::str::from_utf8(&text[..colon]).ok()?.parse().ok()?;
        let names = text[colon + 1..]
            .split(|&byte| byte == b',')
            .filter(|name| !name.is_empty())
            .map(crate::key::decode_tag)
            .collect::<Option<Vec<String>>>()?;
        Some(EntryTags { born, names })
    }
}

impl EntryRead {
    /// The bytes of the fields' values as read (what a decoded copy roughly holds).
    pub(crate) fn value_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|value| match value {
                Value::BulkString(bytes) => bytes.len(),
                _ => 0,
            })
            .sum()
    }

    /// No entry at all.
    pub(crate) fn missing(fields: usize) -> Self {
        EntryRead {
            values: vec![Value::Nil; fields],
            absences: Absences::default(),
            stamp: 0,
            absent: false,
            leased: false,
            owned: false,
            tags: None,
            ttl_ms: 0,
            stamps: None,
            fresh_left_ms: None,
        }
    }

    /// The entry's fresh time is over: what it holds is an expired copy.
    pub(crate) fn is_expired(&self) -> bool {
        self.fresh_left_ms == Some(0)
    }

    /// Every field is there, stored or listed as `None` or skipped, in an entry the library
    /// filled for this namespace (a hash written by another client or namespace is a miss).
    pub(crate) fn is_complete(&self, fields: &[&str]) -> bool {
        self.owned
            && self
                .values
                .iter()
                .zip(fields)
                .all(|(value, field)| is_stored(value) || self.absences.of(field).is_some())
    }

    /// An invalidated entry nobody has refilled yet: where a herd of readers would form.
    pub(crate) fn is_tombstone(&self, fields: &[&str]) -> bool {
        self.stamp > 0
            && !self.absent
            && self
                .values
                .iter()
                .zip(fields)
                .all(|(value, field)| !is_stored(value) && self.absences.of(field).is_none())
    }

    /// The fields for the decoder, in order; only meaningful when the entry is complete.
    pub(crate) fn stored<'a>(
        &'a mut self,
        fields: &'a [&'a str],
    ) -> impl Iterator<Item = Stored<'a>> + 'a {
        let absences = &self.absences;
        self.values
            .iter_mut()
            .zip(fields)
            .map(move |(value, field)| match value {
                Value::BulkString(bytes) => Stored::Text(bytes),
                _ => match absences.of(field) {
                    Some(Absence::Skipped) => Stored::Skipped,
                    _ => Stored::Null,
                },
            })
    }
}

fn is_stored(value: &Value) -> bool {
    matches!(value, Value::BulkString(_))
}

/// The fields an entry lists as `None` (`null:a,b` in `__meta`) or skipped (`skip:c`): the
/// comma-separated lists, as ranges of one text (the meta itself, on the hit path).
#[derive(Debug, Default)]
pub(crate) struct Absences {
    text: Vec<u8>,
    null: Range<usize>,
    skip: Range<usize>,
}

/// Why a field is absent from an entry that lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absence {
    Null,
    Skipped,
}

impl Absences {
    /// The lists at `null` and `skip` in `text`.
    pub(crate) fn within(text: Vec<u8>, null: Range<usize>, skip: Range<usize>) -> Self {
        Absences { text, null, skip }
    }

    /// Lists of field names.
    pub(crate) fn listing<'a>(
        null: impl IntoIterator<Item = &'a str>,
        skip: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        fn append<'a>(
            text: &mut Vec<u8>,
            names: impl IntoIterator<Item = &'a str>,
        ) -> Range<usize> {
            let start = text.len();
            for name in names {
                if text.len() > start {
                    text.push(b',');
                }
                text.extend_from_slice(name.as_bytes());
            }
            start..text.len()
        }
        let mut text = Vec::new();
        let null = append(&mut text, null);
        let skip = append(&mut text, skip);
        Absences { text, null, skip }
    }

    /// Whether, and why, the entry lists `field` as absent.
    pub(crate) fn of(&self, field: &str) -> Option<Absence> {
        let lists = |range: &Range<usize>| {
            self.text
                .get(range.clone())
                .unwrap_or_default()
                .split(|&byte| byte == b',')
                .any(|item| item == field.as_bytes())
        };
        if lists(&self.null) {
            Some(Absence::Null)
        } else if lists(&self.skip) {
            Some(Absence::Skipped)
        } else {
            None
        }
    }
}

/// What a fill writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FillBody<'a> {
    /// The schema's fields, merged into the hash.
    Fields(&'a [EncodedField]),
    /// A cached absence: the hash becomes `{__meta: "none"}`.
    Absent,
}

/// What a miss read from the clocks before loading: the stamps its fill is checked against.
/// On one server (and `mem://`) both are the namespace clock's `now`. On a Redis Cluster,
/// `entry` is the `now` of the clock of the entry's slot (entry invalidations), and `tags`
/// the namespace clock's (tag invalidations; 0 when the function has no tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockRead {
    pub(crate) entry: u64,
    pub(crate) tags: u64,
}

/// One fill.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill<'a> {
    pub(crate) key: &'a str,
    /// The namespace's clock hash (the store finds the entry's clock and bucket from it).
    pub(crate) clock: &'a str,
    /// The namespace, recorded in the entry as its owner (`by:`).
    pub(crate) owner: &'a str,
    pub(crate) body: FillBody<'a>,
    pub(crate) ttl: Duration,
    /// What the miss read; `None` writes unconditionally (the direct API's `put`).
    pub(crate) seen: Option<ClockRead>,
    /// Tags to register the entry under (and whose stamps are checked), with their names
    /// as `__meta` lists them.
    pub(crate) tags: &'a [TagKeys],
    pub(crate) tag_names: &'a str,
    /// Drop what the entry holds instead of merging into it (its tags went stale).
    pub(crate) replace: bool,
    /// How long the tombstone left by a refused fill lives.
    pub(crate) lease_time: Duration,
    /// `Some`: record when the entry stops being fresh (`ttl` from now), and keep it this
    /// much longer as an expired copy for the fail-safe (`fail_safe`). `None`: the entry is fresh until Redis drops it at `ttl`.
    pub(crate) grace: Option<Duration>,
}

impl Fill<'_> {
    /// How long the entry lives in the store: its fresh time and the fail-safe's grace.
    pub(crate) fn life(&self) -> Duration {
        self.ttl.saturating_add(self.grace.unwrap_or_default())
    }
}

/// A write-through after a successful update: invalidate the tags, and replace the entry by
/// the new value where that cannot bring old data back, else invalidate it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteThrough<'a> {
    pub(crate) clock: &'a str,
    pub(crate) key: &'a str,
    pub(crate) owner: &'a str,
    pub(crate) fields: &'a [EncodedField],
    /// The schema field holding a version that grows with every write.
    pub(crate) version_field: &'a str,
    pub(crate) version: u64,
    pub(crate) tags: &'a [TagKeys],
    pub(crate) lease_time: Duration,
}

/// Tag member sets an invalidation left to drain (see `lua_invalidate!`): tombstoning every
/// registered entry in one script would keep Redis busy for as long as the tag is large.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Drain {
    /// The invalidation's stamp, for the tombstones.
    pub(crate) stamp: String,
    /// Member sets that still hold entries.
    pub(crate) sets: Vec<String>,
}

impl Drain {
    /// From a script's reply: the stamp, then the sets.
    pub(crate) fn from_reply(reply: &mut Vec<String>) -> Drain {
        if reply.is_empty() {
            return Drain::default();
        }
        let stamp = reply.remove(0);
        Drain {
            stamp,
            sets: std::mem::take(reply),
        }
    }
}

/// One invalidation: entries and tags, stamped together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Invalidation<'a> {
    pub(crate) clock: &'a str,
    pub(crate) entries: &'a [&'a str],
    pub(crate) tags: &'a [TagKeys],
    /// How long tombstones and tag stamps live: the longest a loader may take and still fill.
    pub(crate) lease_time: Duration,
}

#[derive(Debug)]
pub(crate) enum Store {
    Redis(Box<RedisStore>),
    Memory(std::sync::Arc<MemoryStore>),
}

impl Store {
    /// Whether the next operation has to make a connection first (see [`Store::connect`]).
    pub(crate) fn needs_connection(&self) -> bool {
        matches!(self, Store::Redis(store) if !store.is_connected())
    }

    /// Makes the connection the operations use, if there is none.
    pub(crate) async fn connect(&self) -> StoreResult<()> {
        match self {
            Store::Redis(store) => store.connect().await,
            Store::Memory(_) => Ok(()),
        }
    }

    /// Forgets a connection that failed or stopped answering.
    pub(crate) fn connection_failed(&self) {
        if let Store::Redis(store) = self {
            store.connection_failed();
        }
    }

    /// Reads `fields` of the entry at `key`: one `HMGET`. `owner` is the namespace whose
    /// entries count as this handle's.
    pub(crate) async fn read(
        &self,
        key: &str,
        fields: &[&str],
        owner: &str,
        with_ttl: bool,
        stamps: &[String],
    ) -> StoreResult<EntryRead> {
        match self {
            Store::Redis(store) => store.read(key, fields, owner, with_ttl, stamps).await,
            Store::Memory(store) => Ok(store.read(key, fields, owner)),
        }
    }

    /// [`read`](Self::read) for many entries in one round trip: a pipeline of `HMGET`s (on
    /// a cluster, one pipeline per slot, all sent at once). In the order of `keys`.
    pub(crate) async fn read_many(
        &self,
        keys: &[&str],
        fields: &[&str],
        owner: &str,
        with_ttl: bool,
    ) -> StoreResult<Vec<EntryRead>> {
        match self {
            Store::Redis(store) => store.read_many(keys, fields, owner, with_ttl).await,
            Store::Memory(store) => Ok(keys
                .iter()
                .map(|key| store.read(key, fields, owner))
                .collect()),
        }
    }

    /// Whether [`read`](Self::read) fetches tag stamps in the same round trip: on one Redis
    /// server (a cluster keeps them in other slots; the in-process store has no round trip).
    pub(crate) fn pipelines_tag_stamps(&self) -> bool {
        matches!(self, Store::Redis(store) if !store.is_cluster())
    }

    /// The current stamps of tags (`None`: gone), one `MGET`.
    pub(crate) async fn tag_stamps(&self, stamps: &[String]) -> StoreResult<Vec<Option<u64>>> {
        match self {
            Store::Redis(store) => store.tag_stamps(stamps).await,
            Store::Memory(store) => Ok(store.tag_stamps(stamps)),
        }
    }

    /// Writes a fill if no invalidation raced it; `Ok(false)` when it was refused.
    pub(crate) async fn fill(&self, fill: Fill<'_>) -> StoreResult<bool> {
        match self {
            Store::Redis(store) => store.fill(fill).await,
            Store::Memory(store) => Ok(store.fill(fill)),
        }
    }

    /// Takes the lease on an entry for `lease_time`, unless someone holds a live one.
    pub(crate) async fn acquire_lease(
        &self,
        key: &str,
        token: &str,
        lease_time: Duration,
    ) -> StoreResult<bool> {
        match self {
            Store::Redis(store) => store.acquire_lease(key, token, lease_time).await,
            Store::Memory(store) => Ok(store.acquire_lease(key, token, lease_time)),
        }
    }

    /// Gives a lease back, if `token` still holds it.
    pub(crate) async fn release_lease(&self, key: &str, token: &str) -> StoreResult<()> {
        match self {
            Store::Redis(store) => store.release_lease(key, token).await,
            Store::Memory(store) => {
                store.release_lease(key, token);
                Ok(())
            }
        }
    }

    /// Writes through; `true` when the entry was replaced, `false` when invalidated.
    pub(crate) async fn write_through(
        &self,
        write: WriteThrough<'_>,
    ) -> StoreResult<(bool, Drain)> {
        match self {
            Store::Redis(store) => store.write_through(write).await,
            Store::Memory(store) => Ok((store.write_through(write), Drain::default())),
        }
    }

    /// Tombstones one batch of a tag's member set; answers how many are left (on a
    /// cluster, 1 while there may be more).
    pub(crate) async fn drain(
        &self,
        clock: &str,
        members: &str,
        stamp: &str,
        lease_time: Duration,
    ) -> StoreResult<u64> {
        match self {
            Store::Redis(store) => store.drain(clock, members, stamp, lease_time).await,
            // The in-process store tombstones every member at once: it blocks no one else.
            Store::Memory(_) => Ok(0),
        }
    }

    /// Unlinks keys: what Redis still allows when it refuses scripts and writes (out of
    /// memory under `noeviction`). One `UNLINK`.
    pub(crate) async fn unlink(&self, keys: &[String]) -> StoreResult<()> {
        match self {
            Store::Redis(store) => store.unlink(keys).await,
            Store::Memory(store) => {
                store.unlink(keys);
                Ok(())
            }
        }
    }

    /// What a miss of the entry at `key` reads before loading (see [`ClockRead`]): one
    /// `HGET` (two, in parallel, for a function with tags on a cluster).
    pub(crate) async fn clock(
        &self,
        clock: &str,
        key: &str,
        tagged: bool,
    ) -> StoreResult<ClockRead> {
        match self {
            Store::Redis(store) => store.clock(clock, key, tagged).await,
            Store::Memory(store) => {
                let now = store.clock();
                Ok(ClockRead {
                    entry: now,
                    tags: now,
                })
            }
        }
    }

    /// [`clock`](Self::clock) for many entries: one `HGET` on one server (every entry has
    /// the namespace clock); on a cluster one per slot among them, in parallel. In the
    /// order of `keys`.
    pub(crate) async fn clock_many(
        &self,
        clock: &str,
        keys: &[&str],
        tagged: bool,
    ) -> StoreResult<Vec<ClockRead>> {
        match self {
            Store::Redis(store) => store.clock_many(clock, keys, tagged).await,
            Store::Memory(store) => {
                let now = store.clock();
                let read = ClockRead {
                    entry: now,
                    tags: now,
                };
                Ok(vec![read; keys.len()])
            }
        }
    }

    /// The clocks whose loss refuses every fill racing an invalidation of `keys`: the
    /// namespace clock, and on a cluster the clocks of the keys' slots.
    pub(crate) fn clocks_of(&self, clock: &str, keys: &[&str]) -> Vec<String> {
        match self {
            Store::Redis(store) => store.clocks_of(clock, keys),
            Store::Memory(_) => vec![clock.to_owned()],
        }
    }

    /// Invalidates entries and tags in one step.
    pub(crate) async fn invalidate(&self, invalidation: Invalidation<'_>) -> StoreResult<Drain> {
        match self {
            Store::Redis(store) => store.invalidate(invalidation).await,
            Store::Memory(store) => {
                store.invalidate(invalidation);
                Ok(Drain::default())
            }
        }
    }
}

/// Milliseconds for `PEXPIRE`, at least 1 (0 would delete the entry at once).
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    millis(ttl).max(1)
}

/// Parses a stamp; anything unreadable counts as "never invalidated".
pub(crate) fn parse_stamp(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}
