use cache_core::cached_update;

#[cached_update(prefix = "user", key = "id", tags = ["user:{id"])]
async fn update(id: i64) -> Result<(), ()> {
    let _ = id;
    Ok(())
}

fn main() {}
