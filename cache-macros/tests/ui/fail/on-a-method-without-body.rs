use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct User {
    id: i64,
}

pub trait Repo {
    #[cached_get(prefix = "user", key = "id", schema = User)]
    async fn get(&self, id: i64) -> Option<User>;
}

fn main() {}
