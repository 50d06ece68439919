use cache_core::cached_update;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
    version: u64,
}

#[cached_update(prefix = "user", key = "id", schema = User)]
async fn update(id: i64) -> Result<User, String> {
    Ok(User { id, version: 2 })
}

fn main() {}
