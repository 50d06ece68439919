use cache_core::cached_get_many;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Hash)]
struct UserId(i64);

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
}

#[cached_get_many(prefix = "user", keys = "ids", schema = User)]
async fn users(ids: &[UserId]) -> Vec<Option<User>> {
    ids.iter().map(|id| Some(User { id: id.0 })).collect()
}

fn main() {}
