//! A crate that depends on cache-core under another name, as a user may (`my_cache = {
//! package = "cache-core", … }`): with `crate = "::my_cache"` the macros' expansion names
//! only that path. This crate not compiling is the failure.

use my_cache::{cached_delete, cached_get, cached_update, Cache};
use serde::{Deserialize, Serialize};

/// A cached value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: i64,
}

/// Reads through the cache given.
#[cached_get(crate = "::my_cache", prefix = "user", key = "id", schema = User, cache = cache)]
pub async fn get_user(cache: &Cache, id: i64) -> Option<User> {
    Some(User { id })
}

/// Invalidates after writing.
#[cached_update(crate = "::my_cache", prefix = "user", key = "id", tags = ["user:{id}"], cache = cache)]
pub async fn update_user(cache: &Cache, id: i64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

/// Invalidates after deleting.
#[cached_delete(crate = "my_cache", prefix = "user", key = "id", cache = cache)]
pub async fn delete_user(cache: &Cache, id: i64) -> bool {
    id > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_renamed_crate_caches() {
        let cache = Cache::builder().url("mem://").build().unwrap();
        assert_eq!(get_user(&cache, 1).await, Some(User { id: 1 }));
        assert_eq!(get_user(&cache, 1).await, Some(User { id: 1 }));
        assert_eq!(cache.stats().hits, 1);
        update_user(&cache, 1).await.unwrap();
        assert!(delete_user(&cache, 1).await);
        get_user(&cache, 1).await;
        assert_eq!(cache.stats().misses, 2);
    }
}
