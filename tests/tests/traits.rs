//! Repositories written as traits, the way services write them, on a real redis-server:
//! an `#[async_trait]` impl used through `Arc<dyn Repo>`, a trait's default method, native
//! `async fn` in a trait, and keys read from fields of a request and of `self`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cache_core::{cached_delete, cached_get, cached_update, Cache, KeySegment};
use cache_integration_tests::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

/// What an axum handler gets from `Path` or `Query`.
struct GetUser {
    id: i64,
}

#[async_trait]
trait UserRepo: Send + Sync {
    fn cache(&self) -> &Cache;

    async fn get(&self, id: i64) -> Result<Option<User>, String>;

    async fn rename(&self, id: i64, name: &str) -> Result<(), String>;

    async fn delete(&self, id: i64) -> Result<bool, String>;

    /// The same entry, keyed by a field of the request; a default method, so every
    /// implementation has it cached.
    #[cached_get(prefix = "user", key = "req.id", schema = User, cache = self.cache())]
    async fn get_by_request(&self, req: GetUser) -> Result<Option<User>, String> {
        self.get_uncached(req.id).await
    }

    async fn get_uncached(&self, id: i64) -> Result<Option<User>, String>;
}

/// A "database" counting its loads, behind a cache, per tenant.
struct MemoryUserRepo {
    cache: Cache,
    tenant: String,
    rows: Mutex<BTreeMap<i64, User>>,
    loads: AtomicUsize,
}

impl MemoryUserRepo {
    fn new(cache: Cache, tenant: &str) -> MemoryUserRepo {
        let rows = (1..=3)
            .map(|id| {
                let name = format!("{tenant}-user{id}");
                (id, User { id, name })
            })
            .collect();
        MemoryUserRepo {
            cache,
            tenant: tenant.into(),
            rows: Mutex::new(rows),
            loads: AtomicUsize::new(0),
        }
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// Keyed by the tenant (a field of `self`) and the id.
    #[cached_get(prefix = "tenant_user", key = "{self.tenant}:{id}", schema = User, cache = self.cache)]
    async fn get_in_tenant(&self, id: i64) -> Result<Option<User>, String> {
        self.get_uncached(id).await
    }

    #[cached_delete(prefix = "tenant_user", key = "{self.tenant}:{id}", cache = self.cache)]
    async fn forget_in_tenant(&self, id: i64) -> Result<(), String> {
        let _ = id;
        Ok(())
    }
}

#[async_trait]
impl UserRepo for MemoryUserRepo {
    fn cache(&self) -> &Cache {
        &self.cache
    }

    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)]
    async fn get(&self, id: i64) -> Result<Option<User>, String> {
        self.get_uncached(id).await
    }

    #[cached_update(prefix = "user", key = "id", cache = self.cache)]
    async fn rename(&self, id: i64, name: &str) -> Result<(), String> {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(&id).ok_or("no such user")?;
        row.name = name.into();
        Ok(())
    }

    #[cached_delete(prefix = "user", key = "id", cache = self.cache)]
    async fn delete(&self, id: i64) -> Result<bool, String> {
        Ok(self.rows.lock().unwrap().remove(&id).is_some())
    }

    async fn get_uncached(&self, id: i64) -> Result<Option<User>, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(self.rows.lock().unwrap().get(&id).cloned())
    }
}

/// Native `async fn` in a trait (no async-trait).
#[allow(async_fn_in_trait)]
trait Counter {
    async fn count(&self, id: i64) -> Option<User>;
}

impl Counter for MemoryUserRepo {
    #[cached_get(prefix = "counted", key = "id", schema = User, cache = self.cache)]
    async fn count(&self, id: i64) -> Option<User> {
        self.get_uncached(id).await.ok().flatten()
    }
}

#[tokio::test]
async fn a_trait_object_repository_is_cached_and_invalidated() {
    let server = RedisServer::start();
    let cache = Cache::builder().url(server.url()).build().unwrap();
    let memory = Arc::new(MemoryUserRepo::new(cache, "a"));
    let repo: Arc<dyn UserRepo> = memory.clone();

    let first = repo.get(1).await.unwrap().unwrap();
    assert_eq!(first.name, "a-user1");
    assert_eq!(repo.get(1).await.unwrap(), Some(first.clone()));
    assert_eq!(memory.loads(), 1, "the second read is a hit");
    // The default method reads the same entry through a field of the request.
    assert_eq!(
        repo.get_by_request(GetUser { id: 1 }).await.unwrap(),
        Some(first)
    );
    assert_eq!(memory.loads(), 1, "the default method hits the same entry");

    repo.rename(1, "renamed").await.unwrap();
    assert_eq!(repo.get(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(memory.loads(), 2, "the update invalidated the entry");

    assert!(repo.delete(1).await.unwrap());
    assert_eq!(repo.get(1).await.unwrap(), None);
    assert_eq!(repo.get_by_request(GetUser { id: 1 }).await.unwrap(), None);
    // A failed write invalidates nothing: the entry of user 2 stays a hit.
    repo.get(2).await.unwrap();
    let loads = memory.loads();
    assert!(repo.rename(9, "nobody").await.is_err());
    repo.get(2).await.unwrap();
    assert_eq!(memory.loads(), loads);

    let stored: Option<String> = redis::cmd("HGET")
        .arg("user:2")
        .arg("name")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("a-user2"),
        "the entry is the usual hash"
    );
}

/// Each hash at `key` holds `name` in its `name` field.
fn assert_stored_names(server: &RedisServer, entries: &[(&str, &str)]) {
    let mut connection = server.connection();
    for (key, name) in entries {
        let stored: Option<String> = redis::cmd("HGET")
            .arg(*key)
            .arg("name")
            .query(&mut connection)
            .unwrap();
        assert_eq!(stored.as_deref(), Some(*name), "{key}");
    }
}

#[tokio::test]
async fn keys_read_from_self_keep_tenants_apart() {
    let server = RedisServer::start();
    let cache = Cache::builder().url(server.url()).build().unwrap();
    let a = MemoryUserRepo::new(cache.clone(), "a");
    let b = MemoryUserRepo::new(cache, "b");

    assert_eq!(a.get_in_tenant(1).await.unwrap().unwrap().name, "a-user1");
    assert_eq!(b.get_in_tenant(1).await.unwrap().unwrap().name, "b-user1");
    a.get_in_tenant(1).await.unwrap();
    b.get_in_tenant(1).await.unwrap();
    assert_eq!((a.loads(), b.loads()), (1, 1), "one load per tenant");

    assert_stored_names(
        &server,
        &[
            ("tenant_user:a:1", "a-user1"),
            ("tenant_user:b:1", "b-user1"),
        ],
    );

    a.forget_in_tenant(1).await.unwrap();
    a.get_in_tenant(1).await.unwrap();
    b.get_in_tenant(1).await.unwrap();
    assert_eq!(
        (a.loads(), b.loads()),
        (2, 1),
        "only tenant a's entry was dropped"
    );
}

#[tokio::test]
async fn native_async_fn_in_a_trait_is_cached() {
    let server = RedisServer::start();
    let cache = Cache::builder().url(server.url()).build().unwrap();
    let repo = MemoryUserRepo::new(cache, "a");
    assert_eq!(repo.count(3).await.unwrap().name, "a-user3");
    assert_eq!(repo.count(3).await.unwrap().name, "a-user3");
    assert_eq!(repo.loads(), 1);
}

/// Members of organisations, keyed by two texts that may hold `:` themselves.
struct Directory {
    cache: Cache,
    loads: AtomicUsize,
}

impl Directory {
    #[cached_get(prefix = "member", key = "{org}:{name}", schema = User, cache = self.cache)]
    async fn member(&self, org: &str, name: &str) -> Result<User, String> {
        let id = self.loads.fetch_add(1, Ordering::SeqCst) as i64;
        Ok(User {
            id,
            name: format!("{org}|{name}"),
        })
    }

    #[cached_delete(prefix = "member", key = "{org}:{name}", cache = self.cache)]
    async fn remove(&self, org: &str, name: &str) -> Result<(), String> {
        let _ = (org, name);
        Ok(())
    }
}

/// `("a:b", "c")` and `("a", "b:c")` joined as they display would be one key, and the
/// second caller would get the first's member: each part's `:` is escaped instead.
#[tokio::test]
async fn composite_keys_never_collide() {
    let server = RedisServer::start();
    let cache = Cache::builder().url(server.url()).build().unwrap();
    let directory = Directory {
        cache: cache.clone(),
        loads: AtomicUsize::new(0),
    };
    let first = directory.member("a:b", "c").await.unwrap();
    assert_eq!(first.name, "a:b|c");
    let second = directory.member("a", "b:c").await.unwrap();
    assert_eq!(second.name, "a|b:c", "another tuple, another entry");
    assert_eq!(directory.member("a:b", "c").await.unwrap(), first);
    assert_eq!(directory.member("a", "b:c").await.unwrap(), second);
    assert_eq!(directory.loads.load(Ordering::SeqCst), 2);

    assert_stored_names(
        &server,
        &[("member:a%3Ab:c", "a:b|c"), ("member:a:b%3Ac", "a|b:c")],
    );
    // The direct API names the same entries with `KeySegment`.
    let key = format!("{}:{}", KeySegment("a:b"), KeySegment("c"));
    assert_eq!(
        cache.get::<User>("member", &key).await.unwrap(),
        Some(first)
    );

    directory.remove("a", "b:c").await.unwrap();
    assert!(cache.get::<User>("member", &key).await.unwrap().is_some());
    directory.member("a", "b:c").await.unwrap();
    assert_eq!(
        directory.loads.load(Ordering::SeqCst),
        3,
        "only the removed member was dropped"
    );
}
