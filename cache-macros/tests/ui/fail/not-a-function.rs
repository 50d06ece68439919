use cache_core::cached_get;

#[cached_get(prefix = "user", key = "id", schema = String)]
struct User {
    id: i64,
}

fn main() {}
