//! The in-process store behind `mem://`: the same protocol as the Redis scripts (merge, TTL,
//! `None` lists, tombstones, tag stamps and registrations), each operation under one lock,
//! as each script is atomic in Redis. `mem://name` stores are shared by every handle of the
//! process that names them, so two handles can play two processes in tests.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use redis::Value;

use super::{Absences, EntryRead, EntryTags, Fill, FillBody, Invalidation, TagKeys, WriteThrough};
use crate::codec::FieldValue;
use crate::locks::MutexExt as _;

/// What hears of every change a store in this process makes (the near cache), so that the
/// store need not know it.
pub(crate) trait ChangeListener: Send + Sync {
    /// It hears every change from now on.
    fn listening(&self);
    /// The keys one operation changed, told after it completed and before it returns.
    fn changed(&self, keys: &[String]);
}

/// Expired entries are swept at most this often on writes; reads ignore them at once.
const SWEEP_EVERY_WRITES: u32 = 1024;

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
    /// The near caches of the handles on this store, told of every change before the
    /// operation that made it returns: what Redis' tracking does, without a connection that
    /// could go deaf.
    near_caches: Mutex<Vec<Weak<dyn ChangeListener>>>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, (Entry, Instant)>,
    tag_members: HashMap<String, Expiring<HashSet<String>>>,
    tag_stamps: HashMap<String, Expiring<u64>>,
    clock: u64,
    writes_since_sweep: u32,
    /// The keys the operation under way changed (entries, tag stamps), for the near caches.
    changed: Vec<String>,
}

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires_at: Instant,
}

impl<T> Expiring<T> {
    fn live(&self, now: Instant) -> Option<&T> {
        (self.expires_at > now).then_some(&self.value)
    }
}

#[derive(Debug, Default)]
struct Entry {
    /// `Null` and `Skipped` are kept as such: what Redis lists in `__meta`.
    fields: HashMap<String, FieldValue>,
    stamp: Option<u64>,
    absent: bool,
    lease: Option<Expiring<String>>,
    /// The namespace that filled it (`by:` in Redis' `__meta`).
    owner: Option<String>,
    /// Registered under tags, by fills whose oldest load read the clock at `born`.
    tags: Option<(u64, BTreeSet<String>)>,
    /// Fresh until then; after, an expired copy kept for the fail-safe (`fresh:` in Redis'
    /// `__meta`). `None`: fresh for as long as it lives.
    fresh_until: Option<Instant>,
}

impl Entry {
    /// The fields kept as `kind` (`Null` or `Skipped`): what Redis lists in `__meta`.
    fn listed<'a>(&'a self, kind: &'a FieldValue) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(_, value)| *value == kind)
            .map(|(name, _)| name.as_str())
    }
}

/// The store named `name`, shared while any handle holds it.
pub(crate) fn shared(name: &str) -> Arc<MemoryStore> {
    static NAMED: OnceLock<Mutex<HashMap<String, Weak<MemoryStore>>>> = OnceLock::new();
    let mut named = NAMED.get_or_init(Default::default).lock_recovered();
    if let Some(store) = named.get(name).and_then(Weak::upgrade) {
        return store;
    }
    named.retain(|_, store| store.strong_count() > 0);
    let store = Arc::new(MemoryStore::default());
    named.insert(name.to_owned(), Arc::downgrade(&store));
    store
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every mutation below is complete before the lock is released, so a panic elsewhere
        // cannot leave a half-written entry behind.
        self.state.lock_recovered()
    }

    /// Tells `near` of every change from now on, for as long as it lives.
    pub(crate) fn track(&self, near: Arc<dyn ChangeListener>) {
        let mut near_caches = self.near_caches.lock_recovered();
        near_caches.retain(|near| near.strong_count() > 0);
        near_caches.push(Arc::downgrade(&near));
        near.listening();
    }

    /// Ends an operation: releases the lock, then tells the near caches what it changed
    /// (before the operation returns, so a write is in every near cache when it completes).
    fn finish(&self, mut state: std::sync::MutexGuard<'_, State>) {
        if state.changed.is_empty() {
            return;
        }
        let changed = std::mem::take(&mut state.changed);
        drop(state);
        let near_caches: Vec<Arc<dyn ChangeListener>> = self
            .near_caches
            .lock_recovered()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for near in near_caches {
            near.changed(&changed);
        }
    }

    pub(crate) fn read(&self, key: &str, fields: &[&str], owner: &str) -> EntryRead {
        let now = Instant::now();
        let state = self.state();
        match state.entries.get(key).filter(|entry| entry.1 > now) {
            Some((entry, expires_at)) => {
                let owned = entry.owner.as_deref() == Some(owner);
                EntryRead {
                    values: fields
                        .iter()
                        .map(|name| match entry.fields.get(*name) {
                            Some(FieldValue::Text(text)) => Value::BulkString(text.clone()),
                            _ => Value::Nil,
                        })
                        .collect(),
                    absences: Absences::listing(
                        entry.listed(&FieldValue::Null),
                        entry.listed(&FieldValue::Skipped),
                    ),
                    stamp: entry.stamp.unwrap_or(0),
                    absent: entry.absent && owned,
                    leased: entry
                        .lease
                        .as_ref()
                        .is_some_and(|lease| lease.live(now).is_some()),
                    owned,
                    tags: entry.tags.as_ref().map(|(born, names)| EntryTags {
                        born: *born,
                        names: names.iter().cloned().collect(),
                    }),
                    ttl_ms: crate::store::ttl_millis(expires_at.saturating_duration_since(now)),
                    stamps: None,
                    fresh_left_ms: entry.fresh_until.map(|until| {
                        u64::try_from(until.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                }
            }
            None => EntryRead::missing(fields.len()),
        }
    }

    pub(crate) fn release_lease(&self, key: &str, token: &str) {
        let mut state = self.state();
        if let Some((entry, _)) = state.entries.get_mut(key) {
            if entry
                .lease
                .as_ref()
                .is_some_and(|lease| lease.value == token)
            {
                entry.lease = None;
            }
        }
    }

    pub(crate) fn unlink(&self, keys: &[String]) {
        let mut state = self.state();
        for key in keys {
            state.entries.remove(key);
            state.tag_stamps.remove(key);
            state.changed.push(key.clone());
        }
        self.finish(state);
    }

    pub(crate) fn tag_stamps(&self, stamps: &[String]) -> Vec<Option<u64>> {
        let now = Instant::now();
        let state = self.state();
        stamps
            .iter()
            .map(|key| {
                state
                    .tag_stamps
                    .get(key)
                    .and_then(|stamp| stamp.live(now))
                    .copied()
            })
            .collect()
    }

    pub(crate) fn fill(&self, fill: Fill<'_>) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        state.sweep(now);
        let ttl = fill.ttl.max(Duration::from_millis(1));
        if let Some(seen) = fill.seen.map(|seen| seen.entry) {
            let entry_stamp = state
                .live_entry(fill.key, now)
                .and_then(|entry| entry.stamp)
                .unwrap_or(0);
            let clock = state.clock;
            let stamp_life = now + fill.life().max(fill.lease_time);
            let mut newest = entry_stamp;
            for tag in fill.tags {
                // Never invalidated: any invalidation up to now may concern it (as in Redis,
                // where the stamp may also have been evicted).
                let stamp = state
                    .tag_stamps
                    .entry(tag.stamp.clone())
                    .and_modify(|stamp| {
                        if stamp.expires_at <= now {
                            *stamp = Expiring {
                                value: clock,
                                expires_at: stamp_life,
                            };
                        }
                    })
                    .or_insert(Expiring {
                        value: clock,
                        expires_at: stamp_life,
                    });
                newest = newest.max(stamp.value);
            }
            if newest > seen {
                if newest > entry_stamp {
                    state.tombstone(fill.key, newest, now + fill.lease_time);
                    self.finish(state);
                }
                return false;
            }
        }
        let previous = state.entries.remove(fill.key).filter(|entry| entry.1 > now);
        // As the script: `life` is how long the entry is kept, `ttl` how long it is fresh.
        let fresh_until = fill.grace.map(|_| now + ttl);
        let mut life = ttl.saturating_add(fill.grace.unwrap_or_default());
        let (mut entry, expires_at) = match previous {
            Some((mut entry, expires_at)) => {
                let holds_data = entry.absent || !entry.fields.is_empty();
                let foreign = entry.owner.as_deref() != Some(fill.owner);
                let expired = entry.fresh_until.is_some_and(|until| until <= now);
                if matches!(fill.body, FillBody::Absent)
                    || fill.replace
                    || expired
                    || (holds_data && foreign)
                {
                    let kept = Entry {
                        stamp: entry.stamp,
                        fresh_until,
                        ..Entry::default()
                    };
                    (kept, now + life)
                } else if holds_data {
                    // Merged into other values: never extend their TTL.
                    let left = expires_at.saturating_duration_since(now);
                    life = life.min(left);
                    entry.fresh_until = entry.fresh_until.map(|until| until.min(now + ttl));
                    (entry, now + life)
                } else {
                    entry.fresh_until = fresh_until;
                    (entry, now + life)
                }
            }
            None => (
                Entry {
                    fresh_until,
                    ..Entry::default()
                },
                now + life,
            ),
        };
        match fill.body {
            FillBody::Absent => entry.absent = true,
            FillBody::Fields(fields) => {
                entry.absent = false;
                for (name, value) in fields {
                    entry.fields.insert((*name).to_owned(), value.clone());
                }
            }
        }
        entry.lease = None;
        entry.owner = Some(fill.owner.to_owned());
        if !fill.tag_names.is_empty() {
            let born = fill.seen.map_or(0, |seen| seen.tags);
            let names = fill
                .tag_names
                .split(',')
                .filter_map(|name| crate::key::decode_tag(name.as_bytes()));
            let (old_born, tags) = entry.tags.get_or_insert_with(|| (born, BTreeSet::new()));
            *old_born = (*old_born).min(born);
            tags.extend(names);
        }
        state
            .entries
            .insert(fill.key.to_owned(), (entry, expires_at));
        for tag in fill.tags {
            let members = state
                .tag_members
                .entry(tag.members.clone())
                .or_insert_with(|| Expiring {
                    value: HashSet::new(),
                    expires_at,
                });
            if members.expires_at <= now {
                members.value.clear();
            }
            members.value.insert(fill.key.to_owned());
            members.expires_at = members.expires_at.max(expires_at);
            if let Some(stamp) = state.tag_stamps.get_mut(&tag.stamp) {
                stamp.expires_at = stamp.expires_at.max(expires_at);
            }
        }
        state.changed.push(fill.key.to_owned());
        self.finish(state);
        true
    }

    pub(crate) fn clock(&self) -> u64 {
        self.state().clock
    }

    pub(crate) fn invalidate(&self, invalidation: Invalidation<'_>) {
        let now = Instant::now();
        let mut state = self.state();
        let stamp = state.invalidate_tags(invalidation.tags, invalidation.lease_time, now);
        for entry in invalidation.entries {
            state.tombstone(entry, stamp, now + invalidation.lease_time);
        }
        self.finish(state);
    }

    pub(crate) fn write_through(&self, write: WriteThrough<'_>) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let written = state.write_through(&write, now);
        self.finish(state);
        written
    }
}

impl State {
    fn write_through(&mut self, write: &WriteThrough<'_>, now: Instant) -> bool {
        let stamp = self.invalidate_tags(write.tags, write.lease_time, now);
        let current_version = |entry: &Entry| {
            entry
                .fields
                .get(write.version_field)
                .and_then(FieldValue::whole_number)
        };
        match self.entries.get_mut(write.key) {
            Some((entry, expires_at))
                if *expires_at > now
                    && entry.tags.is_none()
                    && !entry.absent
                    && entry.owner.as_deref() == Some(write.owner) =>
            {
                match current_version(entry) {
                    // Holds a newer version already (a later update wrote through first).
                    Some(current) if current >= write.version => return false,
                    Some(_) => {}
                    None => {
                        self.tombstone(write.key, stamp, now + write.lease_time);
                        return false;
                    }
                }
                *entry = Entry {
                    fields: write
                        .fields
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), value.clone()))
                        .collect(),
                    stamp: Some(stamp),
                    owner: Some(write.owner.to_owned()),
                    // No longer fresh than the value it replaces would have been.
                    fresh_until: entry.fresh_until,
                    ..Entry::default()
                };
                self.changed.push(write.key.to_owned());
                true
            }
            _ => {
                self.tombstone(write.key, stamp, now + write.lease_time);
                false
            }
        }
    }
}

impl MemoryStore {
    pub(crate) fn acquire_lease(&self, key: &str, token: &str, lease_time: Duration) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let slot = state
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| (Entry::default(), now + lease_time));
        if slot.1 <= now {
            *slot = (Entry::default(), now + lease_time);
        }
        let entry = &mut slot.0;
        if entry
            .lease
            .as_ref()
            .is_some_and(|lease| lease.live(now).is_some())
        {
            return false;
        }
        entry.lease = Some(Expiring {
            value: token.to_owned(),
            expires_at: now + lease_time,
        });
        true
    }
}

impl State {
    /// A new stamp; stamps the tags and tombstones their members with it.
    fn invalidate_tags(&mut self, tags: &[TagKeys], lease_time: Duration, now: Instant) -> u64 {
        self.clock += 1;
        let stamp = self.clock;
        let expires_at = now + lease_time;
        for tag in tags {
            // A tag's stamp must outlive every entry carrying it.
            let lives_until = self
                .tag_stamps
                .get(&tag.stamp)
                .map_or(expires_at, |old| old.expires_at.max(expires_at));
            let stamped = Expiring {
                value: stamp,
                expires_at: lives_until,
            };
            self.tag_stamps.insert(tag.stamp.clone(), stamped);
            self.changed.push(tag.stamp.clone());
            if let Some(members) = self.tag_members.remove(&tag.members) {
                if members.expires_at > now {
                    for entry in members.value {
                        self.tombstone(&entry, stamp, expires_at);
                    }
                }
            }
        }
        stamp
    }

    fn tombstone(&mut self, key: &str, stamp: u64, expires_at: Instant) {
        let tombstone = Entry {
            stamp: Some(stamp),
            ..Entry::default()
        };
        self.entries.insert(key.to_owned(), (tombstone, expires_at));
        self.changed.push(key.to_owned());
    }

    fn live_entry(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.entries
            .get(key)
            .filter(|entry| entry.1 > now)
            .map(|entry| &entry.0)
    }

    fn sweep(&mut self, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep < SWEEP_EVERY_WRITES {
            return;
        }
        self.writes_since_sweep = 0;
        self.entries.retain(|_, entry| entry.1 > now);
        self.tag_members
            .retain(|_, members| members.expires_at > now);
        self.tag_stamps.retain(|_, stamp| stamp.expires_at > now);
    }
}

#[cfg(test)]
impl MemoryStore {
    /// The entry's state as Redis' scripts would write it in `__meta` (`meta.rs`), for the
    /// test that keeps the two stores alike; `None` when nothing would be written.
    pub(crate) fn meta_text(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let state = self.state();
        let (entry, _) = state.entries.get(key).filter(|entry| entry.1 > now)?;
        let mut parts = Vec::new();
        if let Some(owner) = &entry.owner {
            parts.push(format!("by:{owner}"));
        }
        if let Some(stamp) = entry.stamp {
            parts.push(format!("inv:{stamp}"));
        }
        if entry.absent {
            parts.push("none".to_owned());
        }
        for (name, kind) in [("null", FieldValue::Null), ("skip", FieldValue::Skipped)] {
            let mut listed: Vec<&str> = entry.listed(&kind).collect();
            listed.sort_unstable();
            if !listed.is_empty() {
                parts.push(format!("{name}:{}", listed.join(",")));
            }
        }
        if let Some(token) = entry.lease.as_ref().and_then(|lease| lease.live(now)) {
            parts.push(format!("lease:{token}@0"));
        }
        if let Some((born, names)) = &entry.tags {
            let mut encoded: Vec<String> = names
                .iter()
                .map(|name| {
                    let mut text = String::new();
                    crate::key::encode_tag(name, &mut text);
                    text
                })
                .collect();
            encoded.sort_unstable();
            if !encoded.is_empty() {
                parts.push(format!("tags:{born}:{}", encoded.join(",")));
            }
        }
        if entry.fresh_until.is_some() {
            parts.push("fresh:0".to_owned());
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}
