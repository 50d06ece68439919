use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

#[cached_get(prefix = "user", key = "id", schema = User, cache_none = true)]
async fn get_user(id: i64) -> Result<User, String> {
    Ok(User { id })
}

fn main() {}
