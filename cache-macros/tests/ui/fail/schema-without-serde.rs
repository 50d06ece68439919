use cache_core::cached_get;

struct User {
    id: i64,
}

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn get_user(id: i64) -> Option<User> {
    Some(User { id })
}

fn main() {}
