use cache_core::cached_delete;

#[cached_delete(prefix = "user", key = "id", expire = 60)]
async fn delete(id: i64) {
    let _ = id;
}

fn main() {}
