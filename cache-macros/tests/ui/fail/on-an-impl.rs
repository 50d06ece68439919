use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

struct Repo;

#[cached_get(prefix = "user", key = "id", schema = User)]
impl Repo {
    async fn get(&self, id: i64) -> Option<User> {
        Some(User { id })
    }
}

fn main() {}
