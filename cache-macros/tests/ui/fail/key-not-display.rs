use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

struct Request {
    id: Vec<i64>,
}

#[cached_get(prefix = "user", key = "req.id", schema = User)]
async fn get_user(req: Request) -> Option<User> {
    req.id.first().map(|id| User { id: *id })
}

fn main() {}
