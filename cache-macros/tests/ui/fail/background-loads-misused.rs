use cache_core::cached_get;

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    id: i64,
}

/// Not `Clone`: the background load could not run on a copy of it.
struct Repo;

impl Repo {
    #[cached_get(prefix = "user", key = "id", schema = User, refresh_after = 0.8)]
    async fn not_clone(&self, id: i64) -> Option<User> {
        Some(User { id })
    }
}

#[derive(Clone)]
struct Counter(u64);

impl Counter {
    #[cached_get(prefix = "user", key = "id", schema = User, refresh_after = 0.8)]
    async fn mutable(&mut self, id: i64) -> Option<User> {
        self.0 += 1;
        Some(User { id })
    }
}

#[cached_get(prefix = "user", key = "id", schema = User, refresh_after = 1.5)]
async fn beyond_the_ttl(id: i64) -> Option<User> {
    Some(User { id })
}

#[cached_get(prefix = "user", key = "id", schema = User, soft_timeout = "100ms")]
async fn soft_without_copies(id: i64) -> Option<User> {
    Some(User { id })
}

#[cached_get(prefix = "user", key = "id", schema = User, refresh_after = 0.8)]
async fn mutable_parameter(id: i64, seen: &mut Vec<i64>) -> Option<User> {
    seen.push(id);
    Some(User { id })
}

fn main() {}
