use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

#[cached_get(prefix = "user", key = "email", schema = User, tags = ["team:{team}"])]
async fn by_email(email: &str) -> Option<User> {
    let _ = email;
    Some(User { id: 1 })
}

fn main() {}
