use cache_core::cached_get_many;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    user_id: i64,
}

#[cached_get_many(prefix = "user", keys = "ids", schema = User, key_field = "id")]
async fn users(ids: &[i64]) -> Vec<User> {
    ids.iter().map(|&user_id| User { user_id }).collect()
}

fn main() {}
