//! The in-process store behind `mem://`: the same hash semantics as Redis (merge, TTL, fields
//! read by name), for tests and for running without Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::FieldValues;
use crate::codec::EncodedField;

/// Expired entries are swept at most this often on writes; reads ignore them at once.
const SWEEP_EVERY_WRITES: u32 = 1024;

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    writes_since_sweep: u32,
}

#[derive(Debug)]
struct Entry {
    fields: HashMap<String, Vec<u8>>,
    expires_at: Instant,
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written entry that matters:
        // every mutation below is a single map operation.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn read_fields(&self, key: &str, fields: &[&str]) -> FieldValues {
        let state = self.state();
        match state.entries.get(key) {
            Some(entry) if entry.expires_at > Instant::now() => fields
                .iter()
                .map(|name| entry.fields.get(*name).cloned())
                .collect(),
            _ => vec![None; fields.len()],
        }
    }

    pub(crate) fn write_fields(&self, key: &str, fields: &[EncodedField], ttl: Duration) {
        let now = Instant::now();
        let mut state = self.state();
        state.writes_since_sweep += 1;
        if state.writes_since_sweep >= SWEEP_EVERY_WRITES {
            state.writes_since_sweep = 0;
            state.entries.retain(|_, entry| entry.expires_at > now);
        }
        let entry = state.entries.entry(key.to_owned()).or_insert_with(|| Entry {
            fields: HashMap::new(),
            expires_at: now,
        });
        if entry.expires_at <= now {
            entry.fields.clear();
        }
        for (name, value) in fields {
            entry.fields.insert((*name).to_owned(), value.clone());
        }
        entry.expires_at = now + ttl.max(Duration::from_millis(1));
    }

    pub(crate) fn delete(&self, keys: &[&str]) {
        let mut state = self.state();
        for key in keys {
            state.entries.remove(*key);
        }
    }
}
