use std::future::Future;

use cache_core::cached_delete;

#[cached_delete(prefix = "user", key = "id")]
fn delete_user(id: i64) -> impl Future<Output = Result<(), ()>> {
    std::future::ready(if id > 0 { Ok(()) } else { Err(()) })
}

fn main() {}
