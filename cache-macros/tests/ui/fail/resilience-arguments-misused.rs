use cache_core::{cached_delete, cached_get};

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    id: i64,
}

#[cached_get(prefix = "user", key = "id", schema = User, fail_safe = "10 minutes")]
async fn unit_spelled_out(id: i64) -> Option<User> {
    Some(User { id })
}

#[cached_get(prefix = "user", key = "id", schema = User, fail_safe = "10", fail_safe_throttle = "1y")]
async fn no_unit_and_unknown_unit(id: i64) -> Option<User> {
    Some(User { id })
}

#[derive(Debug)]
struct Timeout;

impl From<cache_core::LoadTimeout> for Timeout {
    fn from(_: cache_core::LoadTimeout) -> Self {
        Timeout
    }
}

#[cached_get(prefix = "user", key = "id", schema = User, hard_timeout = "0ms")]
async fn zero_timeout(id: i64) -> Result<Option<User>, Timeout> {
    Ok(Some(User { id }))
}

#[cached_get(prefix = "user", key = "id", schema = User, fail_safe = "3651d")]
async fn beyond_ten_years(id: i64) -> Option<User> {
    Some(User { id })
}

#[cached_delete(prefix = "user", key = "id", fail_safe = "10m")]
async fn delete(id: i64) -> Result<(), ()> {
    let _ = id;
    Ok(())
}

fn main() {}
