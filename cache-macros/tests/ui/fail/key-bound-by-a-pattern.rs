use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

pub struct Path<T>(pub T);

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn get_user(Path(id): Path<i64>) -> Option<User> {
    Some(User { id })
}

fn main() {}
