//! When the database fails or is slow (`fail_safe`, `fail_safe_throttle`, `hard_timeout`), on
//! every backend: an expired copy answers a failed or timed-out load, and never a copy that a
//! write invalidated, whether before the load or during it; the throttle spares the
//! database; near copies never outlive the fresh time. Each test fails without the mechanism
//! it names (the control functions show what happens without it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{cached_delete, cached_get, Cache, LoadTimeout};
use cache_integration_tests::Backend;
use serde::{Deserialize, Serialize};

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Redis(cache_integration_tests::RedisServer::start())).await;
            })*
        }
        /// As a user with exactly the README's ACL rule (the scripts call `TIME`, `PTTL`).
        mod on_redis_as_acl_user {
            $(#[tokio::test]
            async fn $test() {
                let mut server = cache_integration_tests::RedisServer::start();
                server.add_cache_user(&["price:*", "__cache::*"]);
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
    a_failed_load_returns_the_expired_copy,
    without_fail_safe_a_failed_load_is_the_error,
    fresh_entries_are_hits_and_expired_ones_are_not,
    an_invalidation_destroys_the_copy,
    an_invalidation_during_the_failing_load_destroys_the_copy,
    a_tag_invalidation_destroys_the_copy,
    the_throttle_spares_the_database_and_a_success_ends_it,
    hard_timeout_returns_the_copy_or_the_timeout_error,
    a_near_copy_never_outlives_the_fresh_time,
    the_handles_default_applies_and_zero_turns_it_off,
    refresh_after_refreshes_a_hot_entry_before_it_expires,
    concurrent_hits_past_the_refresh_point_refresh_once,
    a_write_during_a_refresh_refuses_its_fill,
    soft_timeout_returns_the_copy_and_the_load_fills_later,
    soft_timeout_waits_for_the_load_when_a_write_removed_the_copy,
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Price {
    id: i64,
    cents: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum DbError {
    Down,
    TimedOut(LoadTimeout),
}

impl From<LoadTimeout> for DbError {
    fn from(timeout: LoadTimeout) -> Self {
        DbError::TimedOut(timeout)
    }
}

/// A database that can be made to fail or to stall, counting its calls.
#[derive(Default)]
struct Db {
    prices: Mutex<HashMap<i64, i64>>,
    failing: AtomicBool,
    stalling: AtomicBool,
    /// How long a stalled load sleeps.
    stall: Mutex<Duration>,
    calls: AtomicUsize,
    /// Reprices (id, cents) through this catalog inside the next load, before it answers:
    /// a write that completes meanwhile.
    during_load: Mutex<Option<(Catalog, i64, i64)>>,
}

#[derive(Clone)]
struct Catalog {
    cache: Cache,
    db: Arc<Db>,
}

impl Catalog {
    fn new(cache: Cache) -> Catalog {
        Catalog {
            cache,
            db: Arc::default(),
        }
    }

    fn set(&self, id: i64, cents: i64) {
        self.db.prices.lock().unwrap().insert(id, cents);
    }

    fn calls(&self) -> usize {
        self.db.calls.load(Ordering::SeqCst)
    }

    fn fail(&self, failing: bool) {
        self.db.failing.store(failing, Ordering::SeqCst);
    }

    /// Reads the row, then runs `during_load` (a write completing after the read), stalls
    /// if asked, and answers (or fails).
    async fn load(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.db.calls.fetch_add(1, Ordering::SeqCst);
        let cents = self.db.prices.lock().unwrap().get(&id).copied();
        let during = self.db.during_load.lock().unwrap().take();
        if let Some((writer, id, cents)) = during {
            Box::pin(writer.reprice(id, cents)).await.unwrap();
        }
        if self.db.stalling.load(Ordering::SeqCst) {
            let stall = *self.db.stall.lock().unwrap();
            tokio::time::sleep(if stall.is_zero() {
                Duration::from_secs(30)
            } else {
                stall
            })
            .await;
        }
        if self.db.failing.load(Ordering::SeqCst) {
            return Err(DbError::Down);
        }
        Ok(cents.map(|cents| Price { id, cents }))
    }

    fn stall_for(&self, stall: Duration) {
        *self.db.stall.lock().unwrap() = stall;
        self.db.stalling.store(true, Ordering::SeqCst);
    }

    /// A hit past half the TTL returns at once and refreshes in the background.
    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, refresh_after = 0.5,
        cache = self.cache)]
    async fn price_refreshed(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    /// A miss with an expired copy waits 200 ms for the database, then returns the copy.
    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, fail_safe = "1m",
        fail_safe_throttle = "0s", soft_timeout = "200ms", cache = self.cache)]
    async fn price_soft(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, fail_safe = "1m",
        fail_safe_throttle = "0s", tags = ["catalog"], cache = self.cache)]
    async fn price(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    /// With the default throttle (30 s).
    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, fail_safe = "1m",
        tags = ["catalog"], cache = self.cache)]
    async fn price_throttled(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    /// The control: no fail-safe.
    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, tags = ["catalog"],
        cache = self.cache)]
    async fn price_plain(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    /// Whatever the handle says (`fail_safe` on the builder).
    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, fail_safe_throttle = "0s",
        cache = self.cache)]
    async fn price_by_handle(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    /// The handle's fail-safe turned off for this function.
    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, fail_safe = "0s",
        cache = self.cache)]
    async fn price_opted_out(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, fail_safe = "1m",
        fail_safe_throttle = "0s", hard_timeout = "300ms", cache = self.cache)]
    async fn price_bounded(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    #[cached_get(prefix = "price", key = "id", schema = Price, ttl = 1, hard_timeout = "300ms",
        cache = self.cache)]
    async fn price_bounded_without_copy(&self, id: i64) -> Result<Option<Price>, DbError> {
        self.load(id).await
    }

    #[cached_delete(prefix = "price", key = "id", cache = self.cache)]
    async fn reprice(&self, id: i64, cents: i64) -> Result<(), DbError> {
        self.set(id, cents);
        Ok(())
    }

    #[cached_delete(prefix = "price", key = "id", tags = ["catalog"], cache = self.cache)]
    async fn reprice_all(&self, id: i64, cents: i64) -> Result<(), DbError> {
        self.set(id, cents);
        Ok(())
    }
}

/// Long enough for a `ttl = 1` entry to be past its fresh time (and its near copy gone).
async fn expire() {
    tokio::time::sleep(Duration::from_millis(1_300)).await;
}

fn price(id: i64, cents: i64) -> Option<Price> {
    Some(Price { id, cents })
}

async fn a_failed_load_returns_the_expired_copy(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.fail(true);
    assert_eq!(
        catalog.price(1).await,
        Ok(price(1, 100)),
        "the expired copy"
    );
    let stats = catalog.cache.stats();
    assert_eq!(stats.stale_served, 1);
    assert_eq!(catalog.calls(), 2, "the function was asked first");
    // Once it answers again, its value is cached and returned.
    catalog.fail(false);
    catalog.set(1, 150);
    assert_eq!(catalog.price(1).await, Ok(price(1, 150)));
    assert_eq!(catalog.price(1).await, Ok(price(1, 150)));
    assert_eq!(catalog.calls(), 3, "the second read is a hit");
}

async fn without_fail_safe_a_failed_load_is_the_error(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.fail(true);
    assert_eq!(catalog.price_plain(1).await, Err(DbError::Down));
    assert_eq!(catalog.cache.stats().stale_served, 0);
    // Nothing was ever cached for a key whose first load fails: the error, with fail-safe.
    assert_eq!(catalog.price(2).await, Err(DbError::Down));
}

async fn fresh_entries_are_hits_and_expired_ones_are_not(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    catalog.set(1, 120); // Changed behind the cache's back: the TTL bounds how long it shows.
    assert_eq!(
        catalog.price(1).await,
        Ok(price(1, 100)),
        "a hit while fresh"
    );
    assert_eq!(catalog.calls(), 1);
    expire().await;
    // Kept in Redis for the fail-safe, but past its fresh time: every function loads, the
    // ones without fail-safe too.
    assert_eq!(catalog.price_plain(1).await, Ok(price(1, 120)));
    assert_eq!(catalog.calls(), 2);
    assert_eq!(catalog.cache.stats().stale_served, 0);
}

async fn an_invalidation_destroys_the_copy(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.reprice(1, 200).await.unwrap();
    catalog.fail(true);
    assert_eq!(
        catalog.price(1).await,
        Err(DbError::Down),
        "the copy a write invalidated must never come back"
    );
    assert_eq!(catalog.cache.stats().stale_served, 0);
    // Also when the write came while the entry was still fresh.
    catalog.fail(false);
    assert_eq!(catalog.price(1).await, Ok(price(1, 200)));
    catalog.reprice(1, 300).await.unwrap();
    expire().await;
    catalog.fail(true);
    assert_eq!(catalog.price(1).await, Err(DbError::Down));
}

async fn an_invalidation_during_the_failing_load_destroys_the_copy(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    expire().await;
    // Another process's write completes while this call's load is running, then the load
    // fails: the copy it read before the load is older than that write.
    let writer = Catalog {
        cache: catalog.cache.clone(),
        db: Arc::clone(&catalog.db),
    };
    *catalog.db.during_load.lock().unwrap() = Some((writer, 1, 200));
    catalog.fail(true);
    assert_eq!(
        catalog.price(1).await,
        Err(DbError::Down),
        "a write completed during the load: the copy is older than it"
    );
    assert_eq!(catalog.cache.stats().stale_served, 0);
}

async fn a_tag_invalidation_destroys_the_copy(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    catalog.set(2, 100);
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    assert_eq!(catalog.price(2).await, Ok(price(2, 100)));
    expire().await;
    // Invalidates entry 3 and the tag `catalog`, which both entries are registered under.
    catalog.reprice_all(3, 1).await.unwrap();
    catalog.fail(true);
    assert_eq!(catalog.price(1).await, Err(DbError::Down));
    assert_eq!(catalog.price(2).await, Err(DbError::Down));
    assert_eq!(catalog.cache.stats().stale_served, 0);
}

async fn the_throttle_spares_the_database_and_a_success_ends_it(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price_throttled(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.fail(true);
    for _ in 0..5 {
        assert_eq!(catalog.price_throttled(1).await, Ok(price(1, 100)));
    }
    assert_eq!(catalog.calls(), 2, "one failure, then the throttle answers");
    assert_eq!(catalog.cache.stats().stale_served, 5);
    // Without a throttle, each call asks the database (and still gets the copy).
    for _ in 0..3 {
        assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    }
    assert_eq!(catalog.calls(), 5);
    // A write ends what the throttle can return: the copy is gone with it.
    catalog.reprice(1, 200).await.unwrap();
    assert_eq!(catalog.price_throttled(1).await, Err(DbError::Down));
    catalog.fail(false);
    assert_eq!(catalog.price_throttled(1).await, Ok(price(1, 200)));
}

async fn hard_timeout_returns_the_copy_or_the_timeout_error(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price_bounded(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.db.stalling.store(true, Ordering::SeqCst);
    let answered = tokio::time::timeout(Duration::from_secs(20), catalog.price_bounded(1))
        .await
        .expect("hard_timeout ends the call long before the stalled load would");
    assert_eq!(answered, Ok(price(1, 100)), "the expired copy");
    let no_copy = tokio::time::timeout(
        Duration::from_secs(20),
        catalog.price_bounded_without_copy(9),
    )
    .await
    .expect("hard_timeout ends the call");
    assert_eq!(
        no_copy,
        Err(DbError::TimedOut(LoadTimeout {
            after: Duration::from_millis(300)
        }))
    );
    let stats = catalog.cache.stats();
    assert_eq!((stats.loader_timeouts, stats.stale_served), (2, 1));
}

async fn a_near_copy_never_outlives_the_fresh_time(backend: Backend) {
    // Entries live a minute in Redis for the fail-safe; their near copies only their TTL.
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    assert_eq!(catalog.price(1).await, Ok(price(1, 100)));
    catalog.set(1, 120);
    expire().await;
    assert_eq!(
        catalog.price(1).await,
        Ok(price(1, 120)),
        "past the TTL the database answers, not a near copy"
    );
    assert_eq!(catalog.calls(), 2);
}

async fn the_handles_default_applies_and_zero_turns_it_off(backend: Backend) {
    let catalog =
        Catalog::new(backend.cache_with(|builder| builder.fail_safe(Duration::from_secs(60))));
    catalog.set(1, 100);
    assert_eq!(catalog.price_by_handle(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.fail(true);
    assert_eq!(catalog.price_opted_out(1).await, Err(DbError::Down));
    assert_eq!(catalog.price_by_handle(1).await, Ok(price(1, 100)));
    assert_eq!(catalog.cache.stats().stale_served, 1);
}

/// Waits (bounded) until `done` holds: for what a background task does.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn refresh_after_refreshes_a_hot_entry_before_it_expires(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price_refreshed(1).await, Ok(price(1, 100)));
    catalog.set(1, 150);
    // Past half the TTL: the hit answers at once, with what the entry holds…
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(catalog.price_refreshed(1).await, Ok(price(1, 100)));
    // …and one background load refreshes it.
    eventually("the refresh", || catalog.calls() == 2).await;
    eventually("the refresh's fill", || {
        catalog.cache.stats().refreshes == 1
    })
    .await;
    backend.settle().await;
    assert_eq!(catalog.price_refreshed(1).await, Ok(price(1, 150)));
    // Past the first fill's TTL the entry is still fresh: the hot key never missed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(catalog.price_refreshed(1).await, Ok(price(1, 150)));
    let stats = catalog.cache.stats();
    assert_eq!(stats.misses, 1, "only the first read missed: {stats:?}");
    assert_eq!(catalog.calls(), 2);
}

async fn concurrent_hits_past_the_refresh_point_refresh_once(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price_refreshed(1).await, Ok(price(1, 100)));
    catalog.stall_for(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(650)).await;
    let reads: Vec<_> = (0..20)
        .map(|_| {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.price_refreshed(1).await })
        })
        .collect();
    for read in reads {
        assert_eq!(
            read.await.unwrap(),
            Ok(price(1, 100)),
            "hits answer at once"
        );
    }
    eventually("the refresh's fill", || {
        catalog.cache.stats().refreshes == 1
    })
    .await;
    // A second handle (another process) sees the lease or the refreshed entry.
    assert_eq!(catalog.calls(), 2, "one refresh for twenty hits");
}

async fn a_write_during_a_refresh_refuses_its_fill(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price_refreshed(1).await, Ok(price(1, 100)));
    tokio::time::sleep(Duration::from_millis(650)).await;
    // The refresh reads 100, then a write of 300 completes, then the refresh would fill.
    let writer = catalog.clone();
    *catalog.db.during_load.lock().unwrap() = Some((writer, 1, 300));
    assert_eq!(catalog.price_refreshed(1).await, Ok(price(1, 100)));
    eventually("the refresh", || catalog.calls() == 2).await;
    eventually("the refused fill", || {
        catalog.cache.stats().refused_fills == 1
    })
    .await;
    backend.settle().await;
    assert_eq!(
        catalog.price_refreshed(1).await,
        Ok(price(1, 300)),
        "the write's value, never the refresh's older one"
    );
    assert_eq!(catalog.cache.stats().refreshes, 0);
}

async fn soft_timeout_returns_the_copy_and_the_load_fills_later(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price_soft(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.set(1, 150);
    catalog.stall_for(Duration::from_secs(1));
    assert_eq!(
        catalog.price_soft(1).await,
        Ok(price(1, 100)),
        "the copy, after 200 ms"
    );
    let stats = catalog.cache.stats();
    assert_eq!((stats.loader_timeouts, stats.stale_served), (1, 1));
    // The load went on without the caller and filled the entry.
    eventually("the background fill", || {
        catalog.cache.stats().refreshes == 1
    })
    .await;
    backend.settle().await;
    assert_eq!(catalog.price_soft(1).await, Ok(price(1, 150)));
    assert_eq!(catalog.calls(), 2);
}

async fn soft_timeout_waits_for_the_load_when_a_write_removed_the_copy(backend: Backend) {
    let catalog = Catalog::new(backend.cache());
    catalog.set(1, 100);
    assert_eq!(catalog.price_soft(1).await, Ok(price(1, 100)));
    expire().await;
    catalog.set(1, 150);
    catalog.stall_for(Duration::from_secs(1));
    // The load reads 150; a write of 300 completes and removes the copy; the load stalls.
    let writer = catalog.clone();
    *catalog.db.during_load.lock().unwrap() = Some((writer, 1, 300));
    let answer = catalog.price_soft(1).await;
    assert_eq!(
        answer,
        Ok(price(1, 150)),
        "not the copy the write removed: the load's value"
    );
    assert_eq!(catalog.cache.stats().stale_served, 0);
    catalog.db.stalling.store(false, Ordering::SeqCst);
    backend.settle().await;
    assert_eq!(catalog.price_soft(1).await, Ok(price(1, 300)));
}
