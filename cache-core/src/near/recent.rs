//! Each thread's most recent copies: a near hit served from here writes nothing another
//! core reads (the shared store's reference count and lock are written by every get), which
//! measured a fifth of a near hit at 64 tasks on two cores. A copy is served only while its
//! shard's generation is the one read before the shared store gave it (see
//! [`Near::get`](super::Near::get)): every invalidation, deafness and reset changes it.
//! Direct-mapped by key hash, so a thread keeps at most [`SLOTS`] copies (of at most
//! [`LARGEST`] bytes each) across all handles; they may outlive an eviction from the shared
//! store for room, never an invalidation.

use std::cell::RefCell;
use std::sync::Arc;

use super::NearEntry;

/// Copies per thread (a power of two): a hot set of a few hundred entries stays here.
/// 128 measured no better than none (a cyclic walk over 100 keys collides half the time).
const SLOTS: usize = 1024;

/// Larger copies are not kept per thread, so that a thread holds at most 4 MiB here.
pub(super) const LARGEST: u64 = 4 * 1024;

struct Slot {
    near: u64,
    hash: u64,
    generation: u64,
    key: Box<str>,
    entry: Arc<NearEntry>,
}

thread_local! {
    static RECENT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn index(hash: u64) -> usize {
    // Fibonacci hashing: FNV's high bits barely change with a key's last byte (`user:1`,
    // `user:2`, … would share a slot), a product's top bits mix all of them.
    (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// `serve` applied to this thread's copy of `key` in near cache `near`, if it has one
/// remembered under `generation`.
pub(super) fn find<T>(
    near: u64,
    key: &str,
    hash: u64,
    generation: u64,
    serve: impl FnOnce(&NearEntry) -> T,
) -> Option<T> {
    RECENT
        .try_with(|recent| {
            let recent = recent.try_borrow().ok()?;
            let slot = recent.get(index(hash))?.as_ref()?;
            let current = slot.near == near
                && slot.hash == hash
                && slot.generation == generation
                && *slot.key == *key;
            current.then(|| serve(&slot.entry))
        })
        .ok()
        .flatten()
}

/// Forgets this thread's copy of `key` in near cache `near` (one that expired).
pub(super) fn forget(near: u64, key: &str, hash: u64) {
    let _ = RECENT.try_with(|recent| {
        let Ok(mut recent) = recent.try_borrow_mut() else {
            return;
        };
        if let Some(slot) = recent.get_mut(index(hash)) {
            if slot
                .as_ref()
                .is_some_and(|kept| kept.near == near && kept.hash == hash && *kept.key == *key)
            {
                *slot = None;
            }
        }
    });
}

/// Remembers `entry` for `key`, got from the shared store after `generation` was read.
pub(super) fn keep(near: u64, key: &str, hash: u64, generation: u64, entry: Arc<NearEntry>) {
    let _ = RECENT.try_with(|recent| {
        let Ok(mut recent) = recent.try_borrow_mut() else {
            return;
        };
        if recent.is_empty() {
            recent.resize_with(SLOTS, || None);
        }
        recent[index(hash)] = Some(Slot {
            near,
            hash,
            generation,
            key: key.into(),
            entry,
        });
    });
}
