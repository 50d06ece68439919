use std::sync::{Arc, LazyLock};

use cache_core::{cached_delete, cached_get, cached_update, Cache};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
    email: String,
}

static CACHE: LazyLock<Cache> = LazyLock::new(|| Cache::builder().url("mem://").build().unwrap());

struct Repo {
    cache: Cache,
    shared: Arc<Cache>,
}

impl Repo {
    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)]
    pub async fn by_id(&self, id: i64) -> Option<User> {
        Some(User { id, email: String::new() })
    }

    // A `&str` key, a user parameter called `key`, and a `cache` from an `Arc`.
    #[cached_get(prefix = "user", key = "email", schema = User, cache = self.shared)]
    async fn by_email(&self, email: &str, key: u8) -> Option<User> {
        let _ = key;
        Some(User { id: 1, email: email.to_owned() })
    }

    // `&mut self` with the handle in `self`: the macro's borrow of the handle ends before
    // the body takes `self`; a body that mutates it and a temporary handle expression.
    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)]
    async fn by_id_mut(&mut self, id: i64) -> Option<User> {
        self.cache = Cache::disabled();
        Some(User { id, email: String::new() })
    }

    #[cached_get(prefix = "user", key = "id", schema = User, cache = Cache::disabled())]
    async fn with_a_temporary_handle(&self, id: i64) -> Option<User> {
        Some(User { id, email: String::new() })
    }

    // An `Option` key: `None` bypasses the cache.
    #[cached_get(prefix = "user", key = "id", schema = User, cache = &CACHE)]
    async fn maybe(&self, id: Option<i64>) -> Option<User> {
        id.map(|id| User { id, email: String::new() })
    }

    // An owned `String` key moved into the body.
    #[cached_get(prefix = "user", key = "email", schema = User)]
    async fn owned(self: &Self, email: String) -> Option<User> {
        Some(User { id: 1, email })
    }

    #[cached_update(prefix = "user", key = "id", cache = self.cache, tags = ["user:{id}"])]
    async fn update(&self, id: i64, mut name: String) -> Result<(), std::io::Error> {
        name.push('!');
        Ok(())
    }

    #[cached_delete(prefix = "user", key = "id", cache = self.cache)]
    async fn delete(&self, id: i64) -> bool {
        id > 0
    }

    #[cached_delete(prefix = "user", key = "id")]
    async fn delete_quietly(&self, id: i64) {
        let _ = id;
    }
}

// A generic schema, with a where clause and attributes kept as written.
#[cached_get(prefix = "any", key = "id", schema = T, tags = ["user:{id}"])]
#[allow(clippy::needless_pass_by_value)]
pub async fn generic<T>(id: u32, make: impl Fn(u32) -> T) -> Option<T>
where
    T: Serialize + DeserializeOwned + Send,
{
    Some(make(id))
}

fn main() {}

#[derive(Serialize, Deserialize)]
struct Login {
    id: i64,
    team: String,
    password: String,
}

// Tags from a parameter, from fields of the value, and both in one tag; absences cached.
#[cached_get(
    prefix = "login",
    key = "email",
    schema = Login,
    tags = ["email:{email}", "user:{id}", "team:{team}:{email}"],
    cache_none = true,
    none_ttl = 5
)]
async fn login(email: String) -> Result<Option<Login>, std::io::Error> {
    Ok(Some(Login { id: 1, team: email.clone(), password: email }))
}
