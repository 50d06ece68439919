use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

#[cached_get(prefix = "user", key = "id", schema = Option<User>)]
async fn user(id: i64) -> Option<User> {
    Some(User { id })
}

#[cached_get(prefix = "name", key = "id", schema = String)]
async fn name(id: i64) -> String {
    id.to_string()
}

fn main() {}
