use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

#[derive(Debug)]
struct DbError;

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn plain(id: i64) -> User {
    User { id }
}

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn optional(id: i64) -> Option<User> {
    Some(User { id })
}

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn fallible(id: i64) -> Result<User, DbError> {
    Ok(User { id })
}

#[cached_get(prefix = "user", key = "id", schema = User, ttl = 60)]
async fn fallible_optional(id: i64) -> Result<Option<User>, DbError> {
    if id < 0 {
        return Err(DbError);
    }
    let user = fallible(id).await?;
    Ok(Some(user))
}

type AppResult<T> = std::result::Result<T, DbError>;

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn through_an_alias(id: i64) -> AppResult<Option<User>> {
    Ok(Some(User { id }))
}

fn main() {
    let _ = (plain(1), optional(1), fallible(1), fallible_optional(1), through_an_alias(1));
}
