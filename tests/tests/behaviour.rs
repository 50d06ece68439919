//! The behavioural suite (README, "Correct under concurrency"), run on a real redis-server (as
//! the default user and as a user with exactly the README's ACL rule), on the shared Redis
//! Cluster, behind Redis Sentinel, and on `mem://`.

use std::time::Duration;

use cache_core::Cache;
use cache_integration_tests::fixtures::{Row, UserLogin, UserRead, UserRepo};
use cache_integration_tests::Backend;
use serde::{Deserialize, Serialize};

/// The key patterns of the suite's entries (its prefixes, and namespaces `shop` and `blog`)
/// and of the library's own keys for those namespaces.
const SUITE_KEYS: &[&str] = &[
    "flat:*",
    "other:*",
    "profile:*",
    "rich:*",
    "sparse:*",
    "aliased:*",
    "lossy:*",
    "user:*",
    "shop:*",
    "blog:*",
    "__cache::*",
    "__cache:shop:*",
    "__cache:blog:*",
];

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Redis(cache_integration_tests::RedisServer::start())).await;
            })*
        }
        /// The same suite as a user with exactly the README's ACL rule.
        mod on_redis_as_acl_user {
            $(#[tokio::test]
            async fn $test() {
                let mut server = cache_integration_tests::RedisServer::start();
                server.add_cache_user(super::SUITE_KEYS);
                super::$test(super::Backend::Redis(server)).await;
            })*
        }
        /// With a near cache on every handle: the same behaviour.
        mod on_redis_with_near_cache {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::RedisNear(cache_integration_tests::RedisServer::start())).await;
            })*
        }
        /// The shared cluster, in a namespace of the test's own. Checks of raw keys run on a
        /// redis-server only.
        mod on_cluster {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::shared_cluster(stringify!($test))).await;
            })*
        }
        mod on_cluster_with_near_cache {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::shared_cluster_near(stringify!($test))).await;
            })*
        }
        /// Behind Redis Sentinel (a primary, its replica, three sentinels of the test's own):
        /// invalidations wait for the replica.
        mod on_sentinel {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::sentinel()).await;
            })*
        }
        /// `mem://`: every handle a private store.
        mod on_memory {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Memory(String::new())).await;
            })*
        }
        mod on_memory_with_near_cache {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::MemoryNear(String::new())).await;
            })*
        }
    };
}

on_both_backends!(
    a_hit_does_not_call_the_function,
    a_partial_hash_is_a_miss_and_the_fill_keeps_foreign_fields,
    two_schemas_share_one_hash,
    none_and_err_are_returned_and_not_cached,
    key_zero_and_empty_key_are_ordinary_keys,
    garbage_in_a_field_is_a_miss_and_is_overwritten,
    unusual_keys_do_not_collide,
    namespaces_keep_handles_apart,
    an_update_invalidates_the_entry,
    a_failed_update_leaves_the_entry,
    a_delete_invalidates_the_entry,
    a_none_key_bypasses_the_cache,
    entries_expire_after_their_ttl,
    null_and_empty_string_stay_distinct,
    fields_skipped_by_serde_still_make_a_complete_entry,
    nested_values_enums_and_sequences_round_trip,
    a_schema_that_is_not_a_flat_struct_is_not_cached,
    the_direct_api_gets_puts_and_invalidates,
    a_schema_with_aliases_hits_and_one_that_cannot_decode_skips_the_cache,
);

async fn a_hit_does_not_call_the_function(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(42));
    let first = repo.get_user(42).await.unwrap();
    let second = repo.get_user(42).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.unwrap().name, "user42");
    assert_eq!(repo.loads(), 1, "the second read must be a hit");
    let stats = repo.cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.fills), (1, 1, 1));
}

async fn a_partial_hash_is_a_miss_and_the_fill_keeps_foreign_fields(backend: Backend) {
    let cache = backend.cache();
    let repo = UserRepo::new(cache.clone());
    repo.insert(Row::sample(7));
    // Another schema's fields are already there, plus one of ours: not enough for a hit.
    let login = UserLogin {
        id: 7,
        email: "seven@example.com".into(),
        password: "foreign".into(),
    };
    cache.put("user", &7, &login).await.unwrap();
    assert!(cache.get::<UserRead>("user", &7).await.unwrap().is_none());

    assert_eq!(repo.get_user(7).await.unwrap().unwrap().name, "user7");
    assert_eq!(repo.loads(), 1);
    assert_eq!(
        cache.get::<UserLogin>("user", &7).await.unwrap(),
        Some(login),
        "foreign fields kept"
    );
    assert_eq!(repo.get_user(7).await.unwrap().unwrap().name, "user7");
    assert_eq!(repo.loads(), 1, "now complete: a hit");
}

async fn two_schemas_share_one_hash(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(3));
    let read = repo.get_user(3).await.unwrap().unwrap();
    let login = repo.get_login(3).await.unwrap().unwrap();
    assert_eq!(repo.loads(), 2);
    assert_eq!(repo.get_user(3).await.unwrap().unwrap(), read);
    assert_eq!(repo.get_login(3).await.unwrap().unwrap(), login);
    assert_eq!(repo.loads(), 2, "both schemas hit the shared hash");
    if let Backend::Redis(server) | Backend::RedisNear(server) = &backend {
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg("user:3")
            .query(&mut server.connection())
            .unwrap();
        let mut fields = fields;
        fields.sort();
        // `avatar` is `None`: no field, listed in `__meta`.
        assert_eq!(
            fields,
            ["__meta", "birthday", "email", "id", "name", "password"]
        );
    }
}

async fn none_and_err_are_returned_and_not_cached(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    assert_eq!(repo.get_user(404).await, Ok(None));
    assert_eq!(repo.get_user(404).await, Ok(None));
    assert_eq!(repo.loads(), 2, "None is not cached");

    repo.insert(Row::sample(5));
    *repo.failing.lock().unwrap() = Some("database down".into());
    assert_eq!(repo.get_user(5).await, Err("database down".into()));
    *repo.failing.lock().unwrap() = None;
    assert_eq!(repo.get_user(5).await.unwrap().unwrap().id, 5);
    assert_eq!(repo.loads(), 4, "Err is not cached");
}

async fn key_zero_and_empty_key_are_ordinary_keys(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(0));
    repo.get_user(0).await.unwrap().unwrap();
    repo.get_user(0).await.unwrap().unwrap();
    assert_eq!(repo.loads(), 1, "key 0 is cached");

    let cache = backend.cache();
    let value = UserLogin {
        id: 1,
        email: "".into(),
        password: "".into(),
    };
    cache.put("user", "", &value).await.unwrap();
    assert_eq!(
        cache.get::<UserLogin>("user", "").await.unwrap(),
        Some(value)
    );
}

/// Same field names as [`UserRead`], but text where `id` must be a number.
#[derive(Serialize, Deserialize)]
struct Garbage {
    id: String,
    name: String,
    avatar: String,
    birthday: String,
}

async fn garbage_in_a_field_is_a_miss_and_is_overwritten(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(9));
    let garbage = Garbage {
        id: "not a number".into(),
        name: "x".into(),
        avatar: "y".into(),
        birthday: "z".into(),
    };
    repo.cache.put("user", &9, &garbage).await.unwrap();

    assert_eq!(repo.get_user(9).await.unwrap().unwrap().id, 9);
    assert_eq!(repo.loads(), 1, "garbage is a miss");
    assert_eq!(repo.get_user(9).await.unwrap().unwrap().id, 9);
    assert_eq!(repo.loads(), 1, "the fill overwrote the garbage");
    if let Backend::Redis(server) | Backend::RedisNear(server) = &backend {
        // Also a key of the wrong Redis type, left by someone else.
        redis::cmd("SET")
            .arg("user:10")
            .arg("junk")
            .query::<()>(&mut server.connection())
            .unwrap();
        repo.insert(Row::sample(10));
        assert_eq!(repo.get_user(10).await.unwrap().unwrap().id, 10);
        assert_eq!(repo.get_user(10).await.unwrap().unwrap().id, 10);
        assert_eq!(
            repo.loads(),
            2,
            "a string under the key is replaced by the hash"
        );
    }
}

async fn unusual_keys_do_not_collide(backend: Backend) {
    let cache = backend.cache();
    let long = "k".repeat(10_000);
    let keys = [
        "a:b",
        "a",
        "b",
        ":",
        "::",
        "*",
        "user:*",
        "a b",
        " ",
        "line\nbreak",
        "line",
        "tab\t",
        "ünïcødé ✓ 用户",
        "",
        "0",
        "00",
        long.as_str(),
        "user:1",
    ];
    for (index, key) in keys.iter().enumerate() {
        let value = UserLogin {
            id: index as i64,
            email: format!("{key}@x"),
            password: key.to_string(),
        };
        cache.put("user", key, &value).await.unwrap();
    }
    for (index, key) in keys.iter().enumerate() {
        let value = cache.get::<UserLogin>("user", key).await.unwrap().unwrap();
        assert_eq!(value.id, index as i64, "key {key:?} read another entry");
        assert_eq!(value.password, *key);
    }
    // Another prefix with the same key texts sees nothing.
    for key in keys {
        assert!(cache
            .get::<UserLogin>("other", key)
            .await
            .unwrap()
            .is_none());
    }
}

async fn namespaces_keep_handles_apart(backend: Backend) {
    let shop = backend.cache_with(|builder| builder.namespace("shop"));
    let blog = backend.cache_with(|builder| builder.namespace("blog"));
    let plain = backend.cache();
    let value = |id| UserLogin {
        id,
        email: "e".into(),
        password: "p".into(),
    };
    shop.put("user", &1, &value(1)).await.unwrap();
    blog.put("user", &1, &value(2)).await.unwrap();
    assert_eq!(
        shop.get::<UserLogin>("user", &1).await.unwrap().unwrap().id,
        1
    );
    assert_eq!(
        blog.get::<UserLogin>("user", &1).await.unwrap().unwrap().id,
        2
    );
    if let Backend::Redis(_) = backend {
        assert!(plain.get::<UserLogin>("user", &1).await.unwrap().is_none());
        // The one pair of keys that can be equal (no namespace and prefix `shop`, against
        // namespace `shop`): the entry says whose it is, so the other handle misses.
        let shop_key_as_plain = plain.get::<UserLogin>("shop", "user:1").await.unwrap();
        assert_eq!(
            shop_key_as_plain, None,
            "another namespace's entry is not a hit"
        );
    }
    blog.invalidate("user", &1).await.unwrap();
    assert!(blog.get::<UserLogin>("user", &1).await.unwrap().is_none());
    assert!(shop.get::<UserLogin>("user", &1).await.unwrap().is_some());
}

async fn an_update_invalidates_the_entry(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(1));
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    repo.get_login(1).await.unwrap().unwrap();
    repo.rename(1, "renamed").await.unwrap();
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(repo.loads(), 3, "the whole hash was dropped");
    repo.get_login(1).await.unwrap().unwrap();
    assert_eq!(repo.loads(), 4, "every schema of the entry was dropped");
}

async fn a_failed_update_leaves_the_entry(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    assert_eq!(repo.rename(2, "nobody").await, Err("no such user".into()));
    *repo.failing.lock().unwrap() = Some("write failed".into());
    assert!(repo.rename(1, "x").await.is_err());
    *repo.failing.lock().unwrap() = None;
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    assert_eq!(repo.loads(), 1, "Err does not invalidate");
    assert_eq!(repo.cache.stats().invalidations, 0);
}

async fn a_delete_invalidates_the_entry(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap().unwrap();
    assert_eq!(repo.delete(1).await, Ok(true));
    assert_eq!(repo.get_user(1).await, Ok(None));
    // `Ok(false)` is still not an `Err`: it invalidates too.
    assert_eq!(repo.delete(1).await, Ok(false));
    assert_eq!(repo.cache.stats().invalidations, 2);
}

async fn a_none_key_bypasses_the_cache(backend: Backend) {
    let repo = UserRepo::new(backend.cache());
    repo.insert(Row::sample(1));
    assert_eq!(repo.get_user_maybe(None).await, None);
    assert_eq!(repo.get_user_maybe(Some(1)).await.unwrap().id, 1);
    assert_eq!(repo.get_user_maybe(Some(1)).await.unwrap().id, 1);
    assert_eq!(repo.loads(), 1);
    let stats = repo.cache.stats();
    assert_eq!(
        (stats.hits, stats.misses),
        (1, 1),
        "the None call touched nothing"
    );
}

async fn entries_expire_after_their_ttl(backend: Backend) {
    let cache = backend.cache_with(|builder| builder.default_ttl(Duration::from_millis(300)));
    let repo = UserRepo::new(cache.clone());
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    if let Backend::Redis(server) | Backend::RedisNear(server) = &backend {
        let ttl: i64 = redis::cmd("PTTL")
            .arg("user:1")
            .query(&mut server.connection())
            .unwrap();
        assert!(ttl > 0 && ttl <= 300, "every entry has a TTL, got {ttl}");
        // `ttl = 60` on the macro overrides the default, but merged into the hash it never
        // extends the 300 ms the other schema's fields may live.
        repo.get_login(1).await.unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg("user:1")
            .query(&mut server.connection())
            .unwrap();
        assert!(ttl > 0 && ttl <= 300, "never extended, got {ttl}");
        repo.insert(Row::sample(2));
        repo.get_login(2).await.unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg("user:2")
            .query(&mut server.connection())
            .unwrap();
        assert!(
            ttl > 59_000 && ttl <= 60_000,
            "macro ttl applies, got {ttl}"
        );
        redis::cmd("PEXPIRE")
            .arg("user:1")
            .arg(300)
            .query::<()>(&mut server.connection())
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    repo.get_user(1).await.unwrap();
    assert_eq!(
        repo.loads(),
        if matches!(backend, Backend::Redis(_) | Backend::RedisNear(_)) {
            4
        } else {
            2
        }
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    nickname: Option<String>,
    bio: Option<String>,
    note: String,
}

async fn null_and_empty_string_stay_distinct(backend: Backend) {
    let cache = backend.cache();
    let profile = Profile {
        nickname: None,
        bio: Some(String::new()),
        note: String::new(),
    };
    cache.put("profile", &1, &profile).await.unwrap();
    assert_eq!(
        cache.get::<Profile>("profile", &1).await.unwrap(),
        Some(profile.clone())
    );
    if let Backend::Redis(server) | Backend::RedisNear(server) = &backend {
        let raw: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg("profile:1")
            .query(&mut server.connection())
            .unwrap();
        let expected = [("__meta", "by: null:nickname"), ("bio", ""), ("note", "")]
            .map(|(field, value)| (field.to_owned(), value.to_owned()));
        assert_eq!(
            raw,
            expected.into(),
            "all text; None is an absent field listed in __meta"
        );
    }
    // None → Some → None again, each merge keeps the null list right.
    let some = Profile {
        nickname: Some("nick".into()),
        bio: None,
        ..profile.clone()
    };
    cache.put("profile", &1, &some).await.unwrap();
    assert_eq!(
        cache.get::<Profile>("profile", &1).await.unwrap(),
        Some(some)
    );
    cache.put("profile", &1, &profile).await.unwrap();
    assert_eq!(
        cache.get::<Profile>("profile", &1).await.unwrap(),
        Some(profile)
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sparse {
    id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nickname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
}

async fn fields_skipped_by_serde_still_make_a_complete_entry(backend: Backend) {
    let cache = backend.cache();
    let sparse = Sparse {
        id: 1,
        nickname: None,
        tags: vec![],
    };
    cache.put("sparse", &1, &sparse).await.unwrap();
    assert_eq!(
        cache.get::<Sparse>("sparse", &1).await.unwrap(),
        Some(sparse)
    );
    let full = Sparse {
        id: 1,
        nickname: Some("n".into()),
        tags: vec!["t".into()],
    };
    cache.put("sparse", &1, &full).await.unwrap();
    assert_eq!(cache.get::<Sparse>("sparse", &1).await.unwrap(), Some(full));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Role {
    Admin,
    Member { since: u16 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Address {
    city: String,
    zip: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rich {
    role: Role,
    other_role: Role,
    address: Address,
    tags: Vec<String>,
    scores: std::collections::BTreeMap<String, f64>,
    maybe_maybe: Option<Option<i32>>,
    ratio: f64,
    big: u128,
    flag: bool,
    letter: char,
}

async fn nested_values_enums_and_sequences_round_trip(backend: Backend) {
    let cache = backend.cache();
    for maybe_maybe in [None, Some(None), Some(Some(-3))] {
        let rich = Rich {
            role: Role::Admin,
            other_role: Role::Member { since: 2020 },
            address: Address {
                city: "Taipei".into(),
                zip: None,
            },
            tags: vec!["a".into(), "".into(), "b,c".into()],
            scores: [("x".to_owned(), 1.5), ("y".to_owned(), -0.0)].into(),
            maybe_maybe,
            ratio: f64::MAX,
            big: u128::MAX,
            flag: false,
            letter: '用',
        };
        cache.put("rich", &1, &rich).await.unwrap();
        assert_eq!(cache.get::<Rich>("rich", &1).await.unwrap(), Some(rich));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Flattened {
    id: i64,
    #[serde(flatten)]
    rest: Address,
}

struct FlattenedRepo {
    cache: Cache,
    loads: std::sync::atomic::AtomicUsize,
}

impl FlattenedRepo {
    #[cache_core::cached_get(prefix = "flat", key = "id", schema = Flattened, cache = self.cache)]
    async fn get(&self, id: i64) -> Flattened {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Flattened {
            id,
            rest: Address {
                city: "c".into(),
                zip: None,
            },
        }
    }
}

async fn a_schema_that_is_not_a_flat_struct_is_not_cached(backend: Backend) {
    let repo = FlattenedRepo {
        cache: backend.cache(),
        loads: Default::default(),
    };
    assert_eq!(repo.get(1).await.id, 1);
    assert_eq!(repo.get(1).await.id, 1);
    assert_eq!(
        repo.loads.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "called every time, never failing"
    );
    assert!(matches!(
        repo.cache.get::<Flattened>("flat", &1).await,
        Err(cache_core::Error::UnsupportedSchema { .. })
    ));
}

async fn the_direct_api_gets_puts_and_invalidates(backend: Backend) {
    let cache = backend.cache();
    let login = UserLogin {
        id: 1,
        email: "a@b.c".into(),
        password: "p".into(),
    };
    assert_eq!(cache.get::<UserLogin>("user", &1).await.unwrap(), None);
    cache.put("user", &1, &login).await.unwrap();
    assert_eq!(
        cache.get::<UserLogin>("user", &1).await.unwrap(),
        Some(login)
    );
    cache.invalidate("user", &1).await.unwrap();
    assert_eq!(cache.get::<UserLogin>("user", &1).await.unwrap(), None);
    assert!(matches!(
        cache.get::<UserLogin>("us:er", &1).await,
        Err(cache_core::Error::Config(_))
    ));
}

/// `#[serde(alias)]` puts the alias in serde's list of the struct's fields, which no fill
/// ever stores: the reads learn to leave it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Aliased {
    id: i64,
    #[serde(alias = "full_name")]
    name: String,
}

/// Skipped when empty, but without `default`: what it stores can never decode back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lossy {
    id: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
}

struct LearningRepo {
    cache: Cache,
    loads: std::sync::atomic::AtomicUsize,
}

impl LearningRepo {
    #[cache_core::cached_get(prefix = "aliased", key = "id", schema = Aliased, cache = self.cache)]
    async fn aliased(&self, id: i64) -> Aliased {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Aliased {
            id,
            name: "n".into(),
        }
    }

    #[cache_core::cached_get(prefix = "lossy", key = "id", schema = Lossy, cache = self.cache)]
    async fn lossy(&self, id: i64) -> Lossy {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Lossy {
            id,
            tags: Vec::new(),
        }
    }
}

async fn a_schema_with_aliases_hits_and_one_that_cannot_decode_skips_the_cache(backend: Backend) {
    let repo = LearningRepo {
        cache: backend.cache(),
        loads: Default::default(),
    };
    let loads = || repo.loads.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(repo.aliased(1).await.name, "n");
    }
    assert_eq!(loads(), 1, "hits after the first fill, alias or not");

    for _ in 0..5 {
        assert_eq!(repo.lossy(1).await.id, 1);
    }
    assert_eq!(loads(), 6, "always called, and right");
    let stats = repo.cache.stats();
    assert_eq!(
        (stats.misses, stats.bypassed),
        (2, 4),
        "after its first fill showed it cannot decode, the cache is skipped, not read in vain: {stats:?}"
    );
}
