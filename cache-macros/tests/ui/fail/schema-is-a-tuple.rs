use cache_core::cached_get;

#[cached_get(prefix = "pair", key = "id", schema = (i64, String))]
async fn pair(id: i64) -> Option<(i64, String)> {
    Some((id, id.to_string()))
}

fn main() {}
