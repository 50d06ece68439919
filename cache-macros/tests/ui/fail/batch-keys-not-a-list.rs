use cache_core::cached_get_many;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
}

#[cached_get_many(prefix = "user", keys = "id", schema = User, key_field = "id")]
async fn users(id: i64) -> Vec<User> {
    vec![User { id }]
}

#[cached_get_many(prefix = "user", keys = "ids", schema = User, key_field = "id")]
async fn by_set(ids: std::collections::HashSet<i64>) -> Vec<User> {
    ids.into_iter().map(|id| User { id }).collect()
}

#[cached_get_many(prefix = "user", keys = "idz", schema = User, key_field = "id")]
async fn misspelt(ids: &[i64]) -> Vec<User> {
    ids.iter().map(|&id| User { id }).collect()
}

fn main() {}
