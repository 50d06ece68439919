//! Batch reads (`#[cached_get_many]`, `Cache::get_many`), on every backend: the function is
//! called once with only the ids that missed, duplicates once and an empty list never; rows
//! meet their ids by position, key or field; batch and single reads share entries; an
//! invalidation before or during the load is never undone by the batch's fills; tags, a
//! failing function and Redis going away behave as for single reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{cached_get, cached_get_many, cached_update, Cache};
use cache_integration_tests::{Backend, RedisServer};
use serde::{Deserialize, Serialize};

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Redis(cache_integration_tests::RedisServer::start())).await;
            })*
        }
        /// As a user with exactly the README's ACL rule.
        mod on_redis_as_acl_user {
            $(#[tokio::test]
            async fn $test() {
                let mut server = cache_integration_tests::RedisServer::start();
                server.add_cache_user(&["user:*", "__cache::*"]);
                super::$test(super::Backend::Redis(server)).await;
            })*
        }
        mod on_redis_with_near_cache {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::RedisNear(cache_integration_tests::RedisServer::start())).await;
            })*
        }
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

on_every_backend!(
    the_function_gets_only_the_misses_once,
    all_hits_make_no_call,
    duplicates_are_loaded_once_and_an_empty_list_makes_no_call,
    rows_meet_their_ids_by_position_key_and_field,
    batch_and_single_reads_share_entries,
    an_update_reloads_only_its_entry,
    an_invalidation_during_the_load_refuses_that_fill,
    a_tag_invalidation_reloads_the_tagged_rows,
    a_failing_function_is_the_answer_and_nothing_is_cached,
    more_ids_than_the_batch_size_are_read_in_several_pipelines,
    the_direct_api_reads_and_writes_many_entries,
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
    team: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct DbError;

/// A table of users that records which ids each query asked for.
#[derive(Default)]
struct Db {
    users: Mutex<HashMap<i64, User>>,
    asked: Mutex<Vec<Vec<i64>>>,
    failing: Mutex<bool>,
    /// Queries take 50 ms.
    slow: Mutex<bool>,
    /// Renames this user through the repository inside the next batch query, after the
    /// query read its rows: a write that completes during the load.
    during_load: Mutex<Option<(Repo, i64, String)>>,
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    fn new(cache: Cache) -> Repo {
        let repo = Repo {
            cache,
            db: Arc::default(),
        };
        for id in 1..=200 {
            repo.set(id, &format!("user {id}"));
        }
        repo
    }

    fn set(&self, id: i64, name: &str) {
        let user = User {
            id,
            name: name.to_owned(),
            team: id % 3,
        };
        self.db.users.lock().unwrap().insert(id, user);
    }

    /// The ids each query was given, since the last call.
    fn asked(&self) -> Vec<Vec<i64>> {
        std::mem::take(&mut *self.db.asked.lock().unwrap())
    }

    async fn query(&self, ids: &[i64]) -> Result<Vec<User>, DbError> {
        self.db.asked.lock().unwrap().push(ids.to_vec());
        let slow = *self.db.slow.lock().unwrap();
        if slow {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if *self.db.failing.lock().unwrap() {
            return Err(DbError);
        }
        let rows: Vec<User> = {
            let users = self.db.users.lock().unwrap();
            ids.iter().filter_map(|id| users.get(id).cloned()).collect()
        };
        let during = self.db.during_load.lock().unwrap().take();
        if let Some((repo, id, name)) = during {
            repo.rename(id, &name).await.unwrap();
        }
        Ok(rows)
    }

    #[cached_get_many(prefix = "user", keys = "ids", schema = User, key_field = "id", cache = self.cache)]
    async fn users(&self, ids: &[i64]) -> Result<Vec<User>, DbError> {
        self.query(ids).await
    }

    #[cached_get_many(prefix = "user", keys = "ids", schema = User, cache = self.cache)]
    async fn users_by_position(&self, ids: Vec<i64>) -> Result<Vec<Option<User>>, DbError> {
        let rows = self.query(&ids).await?;
        Ok(ids
            .iter()
            .map(|id| rows.iter().find(|row| row.id == *id).cloned())
            .collect())
    }

    #[cached_get_many(prefix = "user", keys = "ids", schema = User, cache = self.cache)]
    #[allow(clippy::ptr_arg)] // the `&Vec<K>` form, on purpose
    async fn users_by_id(&self, ids: &Vec<i64>) -> HashMap<i64, User> {
        let rows = self.query(ids).await.unwrap();
        rows.into_iter().map(|row| (row.id, row)).collect()
    }

    #[cached_get_many(prefix = "user", keys = "ids", schema = User, key_field = "id", tags = ["team:{team}"], cache = self.cache)]
    async fn users_tagged(&self, ids: &[i64]) -> Result<Vec<User>, DbError> {
        self.query(ids).await
    }

    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)]
    async fn user(&self, id: i64) -> Result<Option<User>, DbError> {
        Ok(self.query(&[id]).await?.pop())
    }

    #[cached_update(prefix = "user", key = "id", cache = self.cache)]
    async fn rename(&self, id: i64, name: &str) -> Result<(), DbError> {
        self.set(id, name);
        Ok(())
    }
}

fn user(id: i64) -> User {
    User {
        id,
        name: format!("user {id}"),
        team: id % 3,
    }
}

fn users(ids: &[i64]) -> Vec<User> {
    ids.iter().copied().map(user).collect()
}

async fn the_function_gets_only_the_misses_once(backend: Backend) {
    let repo = Repo::new(backend.cache());
    assert_eq!(repo.users(&[1, 2, 3]).await, Ok(users(&[1, 2, 3])));
    assert_eq!(repo.asked(), [vec![1, 2, 3]]);
    backend.settle().await;
    assert_eq!(
        repo.users(&[5, 1, 4, 3, 2]).await,
        Ok(users(&[5, 1, 4, 3, 2])),
        "in the caller's order"
    );
    assert_eq!(repo.asked(), [vec![5, 4]], "one call, with the misses only");
    // Ids without a row are left out, asked again next time (nothing to cache).
    assert_eq!(repo.users(&[1, 999]).await, Ok(users(&[1])));
    assert_eq!(repo.users(&[999]).await, Ok(vec![]));
    assert_eq!(repo.asked(), [vec![999], vec![999]]);
}

async fn all_hits_make_no_call(backend: Backend) {
    let repo = Repo::new(backend.cache());
    let ids: Vec<i64> = (1..=50).collect();
    assert_eq!(repo.users(&ids).await, Ok(users(&ids)));
    backend.settle().await;
    let before = repo.cache.stats();
    assert_eq!(repo.users(&ids).await, Ok(users(&ids)));
    assert_eq!(
        repo.asked(),
        std::slice::from_ref(&ids),
        "the second read made no call"
    );
    let after = repo.cache.stats();
    assert_eq!(
        after.hits + after.near_hits - before.hits - before.near_hits,
        50,
        "one hit per entry"
    );
}

async fn duplicates_are_loaded_once_and_an_empty_list_makes_no_call(backend: Backend) {
    let repo = Repo::new(backend.cache());
    assert_eq!(
        repo.users_by_position(vec![3, 1, 3]).await,
        Ok(vec![Some(user(3)), Some(user(1)), Some(user(3))])
    );
    assert_eq!(repo.asked(), [vec![3, 1]]);
    assert_eq!(
        repo.users(&[2, 2]).await,
        Ok(users(&[2])),
        "one row per distinct id"
    );
    assert_eq!(repo.users(&[]).await, Ok(vec![]));
    assert_eq!(repo.users_by_position(vec![]).await, Ok(vec![]));
    assert_eq!(repo.asked(), [vec![2]], "no call for an empty list");
}

async fn rows_meet_their_ids_by_position_key_and_field(backend: Backend) {
    let repo = Repo::new(backend.cache());
    assert_eq!(
        repo.users_by_position(vec![7, 999, 8]).await,
        Ok(vec![Some(user(7)), None, Some(user(8))])
    );
    backend.settle().await;
    let by_id = repo.users_by_id(&vec![8, 9, 999]).await;
    assert_eq!(by_id, HashMap::from([(8, user(8)), (9, user(9))]));
    assert_eq!(repo.asked(), [vec![7, 999, 8], vec![9, 999]]);
    backend.settle().await;
    assert_eq!(repo.users(&[9, 7, 8]).await, Ok(users(&[9, 7, 8])));
    assert_eq!(
        repo.asked(),
        Vec::<Vec<i64>>::new(),
        "all three were filled"
    );
}

async fn batch_and_single_reads_share_entries(backend: Backend) {
    let repo = Repo::new(backend.cache());
    assert_eq!(repo.user(1).await, Ok(Some(user(1))));
    assert_eq!(repo.users(&[1, 2]).await, Ok(users(&[1, 2])));
    assert_eq!(repo.asked(), [vec![1], vec![2]]);
    backend.settle().await;
    assert_eq!(repo.user(2).await, Ok(Some(user(2))), "filled by the batch");
    assert_eq!(repo.asked(), Vec::<Vec<i64>>::new());
}

async fn an_update_reloads_only_its_entry(backend: Backend) {
    let repo = Repo::new(backend.cache());
    assert_eq!(repo.users(&[1, 2, 3]).await, Ok(users(&[1, 2, 3])));
    repo.rename(2, "renamed").await.unwrap();
    backend.settle().await;
    let mut expected = users(&[1, 2, 3]);
    expected[1].name = "renamed".into();
    assert_eq!(repo.users(&[1, 2, 3]).await, Ok(expected));
    assert_eq!(repo.asked(), [vec![1, 2, 3], vec![2]]);
}

async fn an_invalidation_during_the_load_refuses_that_fill(backend: Backend) {
    let repo = Repo::new(backend.cache());
    // The query reads "user 2", then user 2 is renamed (and invalidated) before the batch
    // fills: its fill must be refused, the others' go in.
    *repo.db.during_load.lock().unwrap() = Some((repo.clone(), 2, "renamed".into()));
    assert_eq!(
        repo.users(&[1, 2, 3]).await,
        Ok(users(&[1, 2, 3])),
        "the call returns what it loaded"
    );
    backend.settle().await;
    let mut current = users(&[1, 2, 3]);
    current[1].name = "renamed".into();
    assert_eq!(
        repo.users(&[1, 2, 3]).await,
        Ok(current),
        "never the old name from the cache"
    );
    assert_eq!(repo.asked(), [vec![1, 2, 3], vec![2]]);
}

async fn a_tag_invalidation_reloads_the_tagged_rows(backend: Backend) {
    let repo = Repo::new(backend.cache());
    // Teams: 3 → 0, 4 → 1, 5 → 2, 6 → 0.
    assert_eq!(
        repo.users_tagged(&[3, 4, 5, 6]).await,
        Ok(users(&[3, 4, 5, 6]))
    );
    repo.set(3, "renamed");
    repo.set(6, "renamed too");
    repo.cache.invalidate_tag("team:0").await.unwrap();
    backend.settle().await;
    let mut current = users(&[3, 4, 5, 6]);
    current[0].name = "renamed".into();
    current[3].name = "renamed too".into();
    assert_eq!(repo.users_tagged(&[3, 4, 5, 6]).await, Ok(current));
    assert_eq!(repo.asked(), [vec![3, 4, 5, 6], vec![3, 6]]);
}

async fn a_failing_function_is_the_answer_and_nothing_is_cached(backend: Backend) {
    let repo = Repo::new(backend.cache());
    *repo.db.failing.lock().unwrap() = true;
    assert_eq!(repo.users(&[1, 2]).await, Err(DbError));
    *repo.db.failing.lock().unwrap() = false;
    assert_eq!(repo.users(&[1, 2]).await, Ok(users(&[1, 2])));
    assert_eq!(repo.asked(), [vec![1, 2], vec![1, 2]]);
}

async fn more_ids_than_the_batch_size_are_read_in_several_pipelines(backend: Backend) {
    let repo = Repo::new(backend.cache_with(|builder| builder.batch_size(7)));
    let ids: Vec<i64> = (1..=60).rev().collect();
    assert_eq!(repo.users(&ids[..30]).await, Ok(users(&ids[..30])));
    backend.settle().await;
    assert_eq!(repo.users(&ids).await, Ok(users(&ids)));
    assert_eq!(repo.asked(), [ids[..30].to_vec(), ids[30..].to_vec()]);
}

async fn the_direct_api_reads_and_writes_many_entries(backend: Backend) {
    let cache = backend.cache();
    let written: Vec<(i64, User)> = [4, 5].into_iter().map(|id| (id, user(id))).collect();
    cache.put_many("user", &written).await.unwrap();
    backend.settle().await;
    let read: Vec<Option<User>> = cache.get_many("user", &[5, 6, 4]).await.unwrap();
    assert_eq!(read, [Some(user(5)), None, Some(user(4))]);
    let none: Vec<Option<User>> = cache.get_many("user", &[] as &[i64]).await.unwrap();
    assert!(none.is_empty());
}

/// Redis gone: the function gets every id, as without the cache, and the call succeeds.
#[tokio::test]
async fn with_redis_down_the_function_gets_every_id() {
    let mut server = RedisServer::start();
    let repo = Repo::new(Cache::builder().url(server.url()).build().unwrap());
    assert_eq!(repo.users(&[1, 2]).await, Ok(users(&[1, 2])));
    server.stop();
    // What the function returns for them, as without the cache.
    assert_eq!(repo.users(&[1, 2, 3, 1]).await, Ok(users(&[1, 2, 3, 1])));
    assert_eq!(
        repo.asked(),
        [vec![1, 2], vec![1, 2, 3, 1]],
        "the ids as given"
    );
    assert!(repo.cache.stats().errors >= 1);
}

/// An invalidation that could not reach Redis keeps its entry from being read or filled by
/// a batch, until it is delivered.
#[tokio::test]
async fn a_pending_invalidation_keeps_its_entry_out_of_batches() {
    let mut server = RedisServer::start();
    let repo = Repo::new(Cache::builder().url(server.url()).build().unwrap());
    assert_eq!(repo.users(&[1, 2]).await, Ok(users(&[1, 2])));
    server.stop_keeping_data();
    repo.rename(1, "renamed").await.unwrap();
    server.start_again();
    // Delivered by the next read, which then reads entry 1 afresh.
    let mut current = users(&[1, 2]);
    current[0].name = "renamed".into();
    assert_eq!(repo.users(&[1, 2]).await, Ok(current));
    let asked = repo.asked();
    assert!(asked[1..].iter().any(|ids| ids.contains(&1)), "{asked:?}");
}

/// A repository whose queries take a while, to make calls overlap.
fn slow_repo(cache: Cache) -> Repo {
    let repo = Repo::new(cache);
    *repo.db.slow.lock().unwrap() = true;
    repo
}

/// Concurrent batches and single reads of overlapping ids through one handle load each id
/// once: the single flight is per entry, shared by both kinds of read.
#[tokio::test]
async fn overlapping_calls_through_one_handle_load_each_id_once() {
    let server = RedisServer::start();
    let repo = slow_repo(Cache::builder().url(server.url()).build().unwrap());
    let calls = (0..6).map(|task| {
        let repo = repo.clone();
        tokio::spawn(async move {
            if task % 3 == 2 {
                assert_eq!(repo.user(3).await, Ok(Some(user(3))));
            } else {
                let ids: Vec<i64> = (1..=8).collect();
                assert_eq!(repo.users(&ids).await, Ok(users(&ids)));
            }
        })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap();
    }
    let mut loaded: Vec<i64> = repo.asked().concat();
    loaded.sort_unstable();
    assert_eq!(loaded, (1..=8).collect::<Vec<i64>>(), "each id once");
}

/// Two processes (two handles) read freshly invalidated entries: the first takes their leases
/// and loads; the second, which finds them all leased, waits for its fills and loads none.
/// Two batches that each lease a part load their parts and the rest at once, never waiting
/// for each other.
#[tokio::test]
async fn two_processes_load_invalidated_entries_once() {
    let server = RedisServer::start();
    // Waits long enough for a busy machine: the test is about who loads, not how fast.
    let handle = || {
        Cache::builder()
            .url(server.url())
            .lease_wait(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let first = slow_repo(handle());
    let second = Repo {
        cache: handle(),
        db: Arc::clone(&first.db),
    };
    let ids: Vec<i64> = (1..=6).collect();
    assert_eq!(first.users(&ids).await, Ok(users(&ids)));
    first.asked();
    for &id in &ids {
        first.rename(id, &format!("user {id}")).await.unwrap();
    }
    let loading = {
        let first = first.clone();
        let ids = ids.clone();
        tokio::spawn(async move { first.users(&ids).await })
    };
    // Its query has begun: it holds every lease.
    while first.db.asked.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(second.users(&ids).await, Ok(users(&ids)));
    assert_eq!(loading.await.unwrap(), Ok(users(&ids)));
    assert_eq!(
        first.asked(),
        std::slice::from_ref(&ids),
        "loaded by the first process only"
    );
    assert_eq!(second.cache.stats().coalesced, 1, "the second waited");
    // Both at once: whatever the split of the leases, neither waits out the lease wait.
    for &id in &ids {
        first.rename(id, &format!("user {id}")).await.unwrap();
    }
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(first.users(&ids), second.users(&ids));
    assert_eq!((a, b), (Ok(users(&ids)), Ok(users(&ids))));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "two batches waited for each other's leases"
    );
}

/// A batch dropped during its load (a client gone, a timeout) gives back its flights and
/// leases: the next calls, in this process or another, load at once instead of waiting.
#[tokio::test]
async fn a_cancelled_batch_gives_back_its_flights_and_leases() {
    let server = RedisServer::start();
    // Leases that would outlive the test if they were not given back.
    let handle = || {
        Cache::builder()
            .url(server.url())
            .lease_time(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let first = slow_repo(handle());
    let ids: Vec<i64> = (1..=4).collect();
    assert_eq!(first.users(&ids).await, Ok(users(&ids)));
    for &id in &ids {
        first.rename(id, "renamed").await.unwrap();
    }
    let cancelled = tokio::time::timeout(Duration::from_millis(20), first.users(&ids)).await;
    assert!(cancelled.is_err(), "dropped during its slow load");
    // The leases it took are given back by a task of their own: gone long before their 60 s.
    let mut redis = server.connection();
    let leased = |redis: &mut redis::Connection| {
        ids.iter().any(|id| {
            let meta: Option<String> = redis::cmd("HGET")
                .arg(format!("user:{id}"))
                .arg("__meta")
                .query(redis)
                .unwrap();
            meta.is_some_and(|meta| meta.contains("lease:"))
        })
    };
    let waited = std::time::Instant::now();
    while leased(&mut redis) {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "the leases were not given back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    *first.db.slow.lock().unwrap() = false;
    let second = Repo {
        cache: handle(),
        db: Arc::clone(&first.db),
    };
    let renamed: Vec<User> = ids
        .iter()
        .map(|&id| User {
            name: "renamed".into(),
            ..user(id)
        })
        .collect();
    // Through the same handle (its flights) and another (the leases): nobody waits.
    assert_eq!(first.users(&ids).await, Ok(renamed.clone()));
    assert_eq!(second.users(&ids).await, Ok(renamed));
    assert_eq!(
        (
            first.cache.stats().coalesced,
            second.cache.stats().coalesced
        ),
        (0, 0),
        "nobody waited for the dropped call"
    );
}

/// Garbage under an entry's key (another type, or fields that do not decode) is a miss, and
/// the batch answers right.
#[tokio::test]
async fn garbage_in_redis_is_a_miss() {
    let server = RedisServer::start();
    let repo = Repo::new(Cache::builder().url(server.url()).build().unwrap());
    let mut redis = server.connection();
    redis::cmd("SET")
        .arg("user:2")
        .arg("not a hash")
        .exec(&mut redis)
        .unwrap();
    redis::cmd("HSET")
        .arg("user:3")
        .arg("id")
        .arg("three")
        .arg("name")
        .arg("x")
        .arg("team")
        .arg("0")
        .exec(&mut redis)
        .unwrap();
    assert_eq!(repo.users(&[1, 2, 3]).await, Ok(users(&[1, 2, 3])));
    assert_eq!(repo.asked(), [vec![1, 2, 3]]);
}
