//! Where entries live: Redis, or an in-process map with the same semantics (`mem://`).
//!
//! The two are an enum rather than a trait object so that the hit path pays no boxed future.

mod memory;
mod redis;

use std::time::Duration;

pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::RedisStore;
use crate::codec::EncodedField;

/// The values of the asked-for fields, in order; `None` where the field (or the hash) is absent.
pub(crate) type FieldValues = Vec<Option<Vec<u8>>>;

/// Result of a store operation; errors are what Redis reported.
pub(crate) type StoreResult<T> = Result<T, ::redis::RedisError>;

#[derive(Debug)]
pub(crate) enum Store {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl Store {
    /// Reads `fields` of the hash at `key`: one `HMGET`.
    pub(crate) async fn read_fields(&self, key: &str, fields: &[&str]) -> StoreResult<FieldValues> {
        match self {
            Store::Redis(store) => store.read_fields(key, fields).await,
            Store::Memory(store) => Ok(store.read_fields(key, fields)),
        }
    }

    /// Merges `fields` into the hash at `key` and sets its TTL: one script call.
    pub(crate) async fn write_fields(
        &self,
        key: &str,
        fields: &[EncodedField],
        ttl: Duration,
    ) -> StoreResult<()> {
        match self {
            Store::Redis(store) => store.write_fields(key, fields, ttl).await,
            Store::Memory(store) => {
                store.write_fields(key, fields, ttl);
                Ok(())
            }
        }
    }

    /// Deletes whole entries: one `DEL`.
    pub(crate) async fn delete(&self, keys: &[&str]) -> StoreResult<()> {
        match self {
            Store::Redis(store) => store.delete(keys).await,
            Store::Memory(store) => {
                store.delete(keys);
                Ok(())
            }
        }
    }
}
