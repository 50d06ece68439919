use std::collections::HashMap;

use cache_core::cached_get_many;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
}

// A `Vec<User>` does not say which id each row answers.
#[cached_get_many(prefix = "user", keys = "ids", schema = User)]
async fn users(ids: &[i64]) -> Result<Vec<User>, String> {
    Ok(ids.iter().map(|&id| User { id }).collect())
}

// Rows by position or key take no `key_field`.
#[cached_get_many(prefix = "user", keys = "ids", schema = User, key_field = "id")]
async fn by_id(ids: &[i64]) -> HashMap<i64, User> {
    ids.iter().map(|&id| (id, User { id })).collect()
}

// One value is no batch.
#[cached_get_many(prefix = "user", keys = "ids", schema = User, key_field = "id")]
async fn first(ids: &[i64]) -> Option<User> {
    ids.first().map(|&id| User { id })
}

fn main() {}
