use cache_core::cached_delete;

// U+00A0, a no-break space: whitespace to the runtime as any other.
#[cached_delete(prefix = "app\u{a0}user", key = "id")]
async fn delete(id: i64) {
    let _ = id;
}

fn main() {}
