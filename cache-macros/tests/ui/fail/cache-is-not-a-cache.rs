use cache_core::cached_delete;

struct Repo {
    pool: u32,
}

impl Repo {
    #[cached_delete(prefix = "user", key = "id", cache = self.pool)]
    async fn delete(&self, id: i64) {
        let _ = id;
    }
}

fn main() {}
