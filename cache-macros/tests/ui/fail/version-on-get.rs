use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
    version: u64,
}

#[cached_get(prefix = "user", key = "id", schema = User, version = "version")]
async fn get(id: i64) -> Option<User> {
    Some(User { id, version: 1 })
}

fn main() {}
