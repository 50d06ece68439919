use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn get_user(id: i64) -> impl Into<Option<User>> {
    Some(User { id })
}

fn main() {}
