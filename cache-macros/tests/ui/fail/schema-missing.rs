use cache_core::cached_get;

#[cached_get(prefix = "user", key = "id")]
async fn get_user(id: i64) -> Option<i64> {
    Some(id)
}

fn main() {}
