//! Trait repositories as services write them: `#[async_trait]` impls and default methods,
//! native `async fn` in traits, `-> impl Future + Send` methods, and a trait object.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use cache_core::{cached_delete, cached_get, cached_update, Cache};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    id: i64,
    email: String,
}

#[async_trait]
pub trait Repo: Send + Sync {
    fn cache(&self) -> &Cache;

    async fn get(&self, id: i64) -> Result<Option<User>, std::io::Error>;

    async fn rename(&self, id: i64, email: String) -> Result<(), std::io::Error>;

    async fn remove(&mut self, id: i64) -> Result<bool, std::io::Error>;

    // A default method, cached where it is written: every impl gets it.
    #[cached_get(prefix = "user_email", key = "email", schema = User, cache = self.cache())]
    async fn by_email(&self, email: String) -> Option<User> {
        Some(User { id: 0, email })
    }
}

pub struct PgRepo {
    cache: Cache,
}

#[async_trait]
impl Repo for PgRepo {
    fn cache(&self) -> &Cache {
        &self.cache
    }

    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)]
    async fn get(&self, id: i64) -> Result<Option<User>, std::io::Error> {
        #![allow(clippy::unnecessary_wraps)]
        Ok(Some(User { id, email: String::new() }))
    }

    #[cached_update(prefix = "user", key = "id", tags = ["user:{id}"], cache = self.cache)]
    async fn rename(&self, id: i64, email: String) -> Result<(), std::io::Error> {
        let _ = (id, email);
        Ok(())
    }

    // `&mut self`, and the installed handle.
    #[cached_delete(prefix = "user", key = "id")]
    async fn remove(&mut self, id: i64) -> Result<bool, std::io::Error> {
        self.cache = Cache::disabled();
        Ok(id > 0)
    }
}

// Native `async fn` in a trait, a default method, and a method promising `Send`.
#[allow(async_fn_in_trait)]
pub trait NativeRepo {
    async fn get(&self, id: i64) -> Option<User>;

    #[cached_get(prefix = "user_native", key = "id", schema = User)]
    async fn get_default(&self, id: i64) -> Option<User> {
        Some(User { id, email: String::new() })
    }

    fn get_send(&self, id: i64) -> impl Future<Output = Option<User>> + Send;
}

impl NativeRepo for PgRepo {
    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)]
    async fn get(&self, id: i64) -> Option<User> {
        Some(User { id, email: String::new() })
    }

    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)]
    fn get_send(&self, id: i64) -> impl Future<Output = Option<User>> + Send {
        async move { Some(User { id, email: String::new() }) }
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let repo: Arc<dyn Repo> = Arc::new(PgRepo {
        cache: Cache::disabled(),
    });
    assert_send(repo.get(1));
    assert_send(repo.by_email(String::new()));
    let native = PgRepo {
        cache: Cache::disabled(),
    };
    assert_send(native.get_send(1));
    let _ = NativeRepo::get(&native, 1);
    let _ = native.get_default(1);
}
