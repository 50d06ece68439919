use cache_core::cached_delete;

#[cached_delete(prefix = "app user", key = "id")]
async fn delete(id: i64) {
    let _ = id;
}

fn main() {}
