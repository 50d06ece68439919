use cache_core::cached_get;

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    id: i64,
}

// `String` has no `From<cache_core::LoadTimeout>`: the call could not return the timeout.
#[cached_get(prefix = "user", key = "id", schema = User, hard_timeout = "2s")]
async fn get(id: i64) -> Result<Option<User>, String> {
    Ok(Some(User { id }))
}

fn main() {}
