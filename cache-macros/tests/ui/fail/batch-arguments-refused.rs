use cache_core::{cached_get, cached_get_many};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
}

#[cached_get_many(prefix = "user", key = "ids", keys = "ids", schema = User, key_field = "id", cache_none = true, fail_safe = "10m")]
async fn users(ids: &[i64]) -> Vec<User> {
    ids.iter().map(|&id| User { id }).collect()
}

#[cached_get_many(prefix = "user", schema = User)]
async fn without_keys(ids: &[i64]) -> Vec<Option<User>> {
    ids.iter().map(|&id| Some(User { id })).collect()
}

#[cached_get(prefix = "user", key = "id", keys = "id", key_field = "id", schema = User)]
async fn user(id: i64) -> Option<User> {
    Some(User { id })
}

fn main() {}
