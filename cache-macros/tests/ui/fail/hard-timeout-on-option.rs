use cache_core::cached_get;

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    id: i64,
}

// An `Option` has no error to return when the function outlasts the timeout.
#[cached_get(prefix = "user", key = "id", schema = User, hard_timeout = "2s")]
async fn get(id: i64) -> Option<User> {
    Some(User { id })
}

fn main() {}
