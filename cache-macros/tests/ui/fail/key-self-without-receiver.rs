use cache_core::cached_delete;

#[cached_delete(prefix = "user", key = "{self.tenant}:{id}")]
async fn delete_user(id: i64) -> Result<(), ()> {
    let _ = id;
    Ok(())
}

fn main() {}
