use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

struct Request {
    id: i64,
}

#[cached_get(prefix = "user", key = "req.user_id", schema = User)]
async fn get_user(req: Request) -> Option<User> {
    Some(User { id: req.id })
}

fn main() {}
