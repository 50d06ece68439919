//! Correct under concurrency (README, "Correct under concurrency"): tags, no stale set across handles, single flight,
//! negative caching, write-through. Every test runs on Redis, on the shared Redis Cluster (in
//! a namespace of its own), on `mem://`, and on Redis, the cluster and `mem://` with near caches on both
//! handles; the randomized checker is in `checker.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::{cached_delete, cached_get, cached_update, Cache};
use cache_integration_tests::fixtures::Account;
use cache_integration_tests::{unique_namespace, Backend};
use tokio::sync::Semaphore;

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(super::Backend::Redis(cache_integration_tests::RedisServer::start())).await;
            })*
        }
        mod on_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(super::Backend::shared_cluster(stringify!($test))).await;
            })*
        }
        mod on_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let name = cache_integration_tests::unique_namespace(stringify!($test));
                super::$test(super::Backend::Memory(name)).await;
            })*
        }
        mod on_redis_with_near_caches {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(super::Backend::RedisNear(cache_integration_tests::RedisServer::start())).await;
            })*
        }
        mod on_cluster_with_near_caches {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(super::Backend::shared_cluster_near(stringify!($test))).await;
            })*
        }
        mod on_memory_with_near_caches {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let name = cache_integration_tests::unique_namespace(stringify!($test));
                super::$test(super::Backend::MemoryNear(name)).await;
            })*
        }
    };
}

on_both_backends!(
    a_slow_read_racing_an_update_does_not_fill_old_data,
    a_slow_read_racing_a_tag_invalidation_does_not_fill_old_data,
    a_tag_invalidation_drops_entries_keyed_by_something_else,
    concurrent_misses_through_one_handle_load_once,
    absences_are_cached_only_when_asked_and_invalidated_by_writes,
    after_an_invalidation_other_processes_wait_for_the_lease_holder,
    a_lease_holder_that_dies_delays_others_only_by_the_lease_wait,
    an_update_writes_a_newer_version_through,
    a_write_through_never_overwrites_a_newer_version,
    a_write_through_onto_a_tagged_or_invalidated_entry_only_invalidates,
    a_slow_read_racing_a_write_through_does_not_fill_old_data,
);

/// A database of accounts whose loads can be held at a gate after reading, so a test can
/// line a write up between a load's read and its return.
#[derive(Default)]
struct Database {
    rows: Mutex<HashMap<i64, Account>>,
    loads: AtomicUsize,
    /// When set, each load waits for one permit after reading its row.
    gate: Mutex<Option<Arc<Semaphore>>>,
}

impl Database {
    fn insert(&self, id: i64) {
        let account = Account {
            id,
            email: format!("user{id}@example.com"),
            password: "old".into(),
            version: 1,
            deleted: false,
        };
        self.rows.lock().unwrap().insert(id, account);
    }

    async fn load(&self, pick: impl Fn(&Account) -> bool) -> Option<Account> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let row = self
            .rows
            .lock()
            .unwrap()
            .values()
            .find(|row| pick(row))
            .cloned();
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        row
    }

    fn write(&self, id: i64, change: impl FnOnce(&mut Account)) -> u64 {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(&id).expect("row exists");
        change(row);
        row.version += 1;
        row.version
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

/// The repository of one process: its own cache handle over the shared backend.
struct Repo {
    cache: Cache,
    db: Arc<Database>,
}

impl Repo {
    #[cached_get(prefix = "account", key = "id", schema = Account, cache = self.cache)]
    async fn get(&self, id: i64) -> Option<Account> {
        self.db.load(|row| row.id == id).await
    }

    #[cached_get(
        prefix = "account",
        key = "email",
        schema = Account,
        cache = self.cache,
        tags = ["account:{id}"]
    )]
    async fn by_email(&self, email: &str) -> Option<Account> {
        self.db.load(|row| row.email == email).await
    }

    #[cached_get(prefix = "maybe", key = "id", schema = Account, cache = self.cache, cache_none = true)]
    async fn maybe(&self, id: i64) -> Result<Option<Account>, String> {
        Ok(self.db.load(|row| row.id == id && !row.deleted).await)
    }

    #[cached_update(prefix = "account", key = "id", cache = self.cache, tags = ["account:{id}"])]
    async fn set_password(&self, id: i64, password: &str) -> Result<u64, String> {
        Ok(self.db.write(id, |row| row.password = password.to_owned()))
    }

    #[cached_delete(prefix = "account", key = "id", cache = self.cache, tags = ["account:{id}"])]
    async fn delete(&self, id: i64) -> Result<u64, String> {
        Ok(self.db.write(id, |row| row.deleted = true))
    }

    #[cached_get(prefix = "account", key = "id", schema = Account, cache = self.cache, tags = ["team:{id}"])]
    async fn get_tagged(&self, id: i64) -> Option<Account> {
        self.db.load(|row| row.id == id).await
    }

    /// Changes the password and writes the new row through.
    #[cached_update(
        prefix = "account",
        key = "id",
        cache = self.cache,
        tags = ["account:{id}"],
        schema = Account,
        version = "version"
    )]
    async fn set_password_through(&self, id: i64, password: &str) -> Result<Account, String> {
        self.db.write(id, |row| row.password = password.to_owned());
        Ok(self.db.rows.lock().unwrap()[&id].clone())
    }

    /// Writes a given row through, as an update that committed it would: lets a test deliver
    /// write-throughs out of order.
    #[cached_update(prefix = "account", key = "id", cache = self.cache, schema = Account, version = "version")]
    async fn deliver_row(&self, id: i64, row: Account) -> Result<Option<Account>, String> {
        let _ = id;
        Ok(Some(row))
    }

    #[cached_update(prefix = "maybe", key = "id", cache = self.cache)]
    async fn create(&self, id: i64) -> Result<(), String> {
        self.db.insert(id);
        Ok(())
    }
}

fn two_processes(backend: &Backend) -> (Repo, Repo, Arc<Database>) {
    let db = Arc::new(Database::default());
    let a = Repo {
        cache: backend.cache(),
        db: db.clone(),
    };
    let b = Repo {
        cache: backend.cache(),
        db: db.clone(),
    };
    (a, b, db)
}

fn close_gate(db: &Database) -> Arc<Semaphore> {
    let gate = Arc::new(Semaphore::new(0));
    *db.gate.lock().unwrap() = Some(gate.clone());
    gate
}

/// Lets new loads through, and the `waiting` ones stopped at `gate`.
fn open_gate(db: &Database, gate: &Semaphore, waiting: usize) {
    *db.gate.lock().unwrap() = None;
    gate.add_permits(waiting);
}

/// Waits until `count` loads have read their rows (and wait at the gate).
async fn loads_reached(db: &Database, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.loads() < count {
        assert!(Instant::now() < deadline, "loads did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn a_slow_read_racing_an_update_does_not_fill_old_data(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    db.insert(1);
    let a = Arc::new(a);
    let gate = close_gate(&db);

    // A misses and reads the old row from the database, then stalls.
    let slow_read = tokio::spawn({
        let a = a.clone();
        async move { a.get(1).await }
    });
    loads_reached(&db, 1).await;
    // B writes and invalidates while A's stale value is in flight.
    b.set_password(1, "new").await.unwrap();
    backend.settle().await;
    open_gate(&db, &gate, 1);
    let stale = slow_read.await.unwrap().unwrap();
    assert_eq!(stale.password, "old", "A's own call returns what it loaded");

    // Its fill was refused: nobody is served the old password afterwards.
    assert_eq!(a.get(1).await.unwrap().password, "new");
    assert_eq!(b.get(1).await.unwrap().password, "new");
    assert_eq!(a.cache.stats().refused_fills, 1, "{:?}", a.cache.stats());
    let loads = db.loads();
    assert_eq!(a.get(1).await.unwrap().password, "new");
    assert_eq!(db.loads(), loads, "the fresh value is cached");
}

async fn a_slow_read_racing_a_tag_invalidation_does_not_fill_old_data(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    db.insert(7);
    let email = "user7@example.com";
    let a = Arc::new(a);
    let gate = close_gate(&db);

    // A logs in by email: the entry's tag `account:7` is only known after the load.
    let slow_login = tokio::spawn({
        let a = a.clone();
        async move { a.by_email(email).await }
    });
    loads_reached(&db, 1).await;
    // B changes the password by id: it knows the tag, not the email.
    b.set_password(7, "new").await.unwrap();
    backend.settle().await;
    open_gate(&db, &gate, 1);
    assert_eq!(slow_login.await.unwrap().unwrap().password, "old");

    assert_eq!(
        a.by_email(email).await.unwrap().password,
        "new",
        "the old password never comes back"
    );
    assert_eq!(b.by_email(email).await.unwrap().password, "new");
    assert_eq!(a.cache.stats().refused_fills, 1);
}

async fn a_tag_invalidation_drops_entries_keyed_by_something_else(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    db.insert(3);
    let email = "user3@example.com";
    assert_eq!(a.by_email(email).await.unwrap().password, "old");
    assert_eq!(a.by_email(email).await.unwrap().password, "old");
    assert_eq!(db.loads(), 1, "cached by email");

    b.set_password(3, "new").await.unwrap();
    backend.settle().await;
    assert_eq!(
        a.by_email(email).await.unwrap().password,
        "new",
        "the tag dropped the email entry"
    );
    assert_eq!(db.loads(), 2);

    // The direct API does the same.
    assert_eq!(a.by_email(email).await.unwrap().password, "new");
    b.cache.invalidate_tag("account:3").await.unwrap();
    backend.settle().await;
    a.by_email(email).await.unwrap();
    assert_eq!(db.loads(), 3);
}

async fn concurrent_misses_through_one_handle_load_once(backend: Backend) {
    let (a, _b, db) = two_processes(&backend);
    db.insert(1);
    let a = Arc::new(a);
    let gate = close_gate(&db);
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.get(1).await })
        })
        .collect();
    loads_reached(&db, 1).await;
    // Give the other nineteen every chance to start a load of their own.
    tokio::time::sleep(Duration::from_millis(50)).await;
    open_gate(&db, &gate, 20);
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap().id, 1);
    }
    assert_eq!(db.loads(), 1, "one load for twenty concurrent misses");
    let stats = a.cache.stats();
    assert_eq!(stats.coalesced, 19, "{stats:?}");
}

async fn absences_are_cached_only_when_asked_and_invalidated_by_writes(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    assert_eq!(a.maybe(5).await, Ok(None));
    assert_eq!(a.maybe(5).await, Ok(None));
    assert_eq!(b.maybe(5).await, Ok(None));
    assert_eq!(db.loads(), 1, "the absence is cached for every handle");

    // Not cached without `cache_none`.
    assert_eq!(a.get(5).await, None);
    assert_eq!(a.get(5).await, None);
    assert_eq!(db.loads(), 3);

    // A create invalidates the key: the absence is gone at once.
    b.create(5).await.unwrap();
    backend.settle().await;
    assert_eq!(a.maybe(5).await.unwrap().unwrap().id, 5);
    assert_eq!(a.maybe(5).await.unwrap().unwrap().id, 5);
    assert_eq!(db.loads(), 4);
}

/// Entry 1 cached, then invalidated by B; A misses on the fresh tombstone, takes the lease
/// and loads, held at the gate. Returns B, the database, the gate, A's call, and the number
/// of loads before A's.
async fn a_holds_the_lease(
    backend: &Backend,
) -> (
    Repo,
    Arc<Database>,
    Arc<Semaphore>,
    tokio::task::JoinHandle<Option<Account>>,
    usize,
) {
    let (a, b, db) = two_processes(backend);
    db.insert(1);
    a.get(1).await.unwrap();
    b.set_password(1, "new").await.unwrap();
    backend.settle().await;
    let loads = db.loads();
    let gate = close_gate(&db);
    let holder = tokio::spawn(async move { a.get(1).await });
    loads_reached(&db, loads + 1).await;
    (b, db, gate, holder, loads)
}

async fn after_an_invalidation_other_processes_wait_for_the_lease_holder(backend: Backend) {
    let (b, db, gate, holder, loads) = a_holds_the_lease(&backend).await;
    // B, another process, misses too: it sees the lease and waits instead of loading.
    let waiter = tokio::spawn(async move {
        let account = b.get(1).await;
        (account, b.cache.stats())
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    open_gate(&db, &gate, 1);
    assert_eq!(holder.await.unwrap().unwrap().password, "new");
    let (account, b_stats) = waiter.await.unwrap();
    assert_eq!(account.unwrap().password, "new");
    assert_eq!(
        db.loads(),
        loads + 1,
        "B got A's fill: one database query for both"
    );
    assert_eq!(b_stats.coalesced, 1, "{b_stats:?}");
    assert_eq!(
        b_stats.misses, 1,
        "one call, one miss, however often it looked for the fill: {b_stats:?}"
    );
}

async fn a_lease_holder_that_dies_delays_others_only_by_the_lease_wait(backend: Backend) {
    let (b, db, gate, holder, loads) = a_holds_the_lease(&backend).await;
    holder.abort();
    open_gate(&db, &gate, 1);
    // B waits for the dead holder at most the lease wait (300 ms), then loads itself.
    let started = Instant::now();
    assert_eq!(b.get(1).await.unwrap().password, "new");
    assert_eq!(db.loads(), loads + 2);
    println!(
        "waited {:?} for a lease holder that died",
        started.elapsed()
    );
    assert_eq!(b.get(1).await.unwrap().password, "new");
    assert_eq!(db.loads(), loads + 2, "and filled the cache");
}

async fn an_update_writes_a_newer_version_through(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    db.insert(1);
    a.get(1).await.unwrap();
    let email = "user1@example.com";
    a.by_email(email).await.unwrap();
    assert_eq!(db.loads(), 2);
    b.set_password_through(1, "new").await.unwrap();
    backend.settle().await;
    assert_eq!(a.get(1).await.unwrap().password, "new");
    assert_eq!(db.loads(), 2, "served the written-through row, no load");
    assert_eq!(b.cache.stats().written_through, 1);
    // The tag still drops what is keyed by something else.
    assert_eq!(a.by_email(email).await.unwrap().password, "new");
    assert_eq!(db.loads(), 3);
}

async fn a_write_through_never_overwrites_a_newer_version(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    db.insert(1);
    let v1 = a.get(1).await.unwrap();
    let v2 = Account {
        password: "two".into(),
        version: 2,
        ..v1.clone()
    };
    let v3 = Account {
        password: "three".into(),
        version: 3,
        ..v1
    };
    // Two updates committed v2 then v3; their write-throughs arrive in the other order.
    db.rows.lock().unwrap().insert(1, v3.clone());
    b.deliver_row(1, v3.clone()).await.unwrap();
    backend.settle().await;
    a.deliver_row(1, v2).await.unwrap();
    assert_eq!(
        a.get(1).await.unwrap(),
        v3,
        "the late, older value was not written"
    );
    assert_eq!(db.loads(), 1);
    assert_eq!(
        a.cache.stats().written_through + b.cache.stats().written_through,
        1
    );
}

async fn a_write_through_onto_a_tagged_or_invalidated_entry_only_invalidates(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    db.insert(1);
    // Registered under a tag: the new value might belong to other tags; not written.
    a.get_tagged(1).await.unwrap();
    b.set_password_through(1, "new").await.unwrap();
    backend.settle().await;
    assert_eq!(b.cache.stats().written_through, 0);
    assert_eq!(a.get(1).await.unwrap().password, "new");
    assert_eq!(db.loads(), 2, "loaded afresh");

    // After a plain invalidation the entry is a tombstone: a late write-through of an older
    // row must not revive it.
    let current = a.get(1).await.unwrap();
    b.set_password(1, "newer").await.unwrap();
    backend.settle().await;
    a.deliver_row(1, current).await.unwrap();
    assert_eq!(a.get(1).await.unwrap().password, "newer");
    assert_eq!(a.cache.stats().written_through, 0);
}

async fn a_slow_read_racing_a_write_through_does_not_fill_old_data(backend: Backend) {
    let (a, b, db) = two_processes(&backend);
    db.insert(1);
    a.get(1).await.unwrap();
    b.cache.invalidate("account", &1).await.unwrap();
    backend.settle().await;
    let a = Arc::new(a);
    let gate = close_gate(&db);
    let slow_read = tokio::spawn({
        let a = a.clone();
        async move { a.get(1).await }
    });
    loads_reached(&db, 2).await;
    // The entry is a tombstone, so the update invalidates; either way the slow read's fill
    // of the old row must be refused.
    b.set_password_through(1, "new").await.unwrap();
    backend.settle().await;
    open_gate(&db, &gate, 1);
    assert_eq!(slow_read.await.unwrap().unwrap().password, "old");
    assert_eq!(a.get(1).await.unwrap().password, "new");
    assert_eq!(b.get(1).await.unwrap().password, "new");
}

#[test]
fn namespaces_are_unique_per_call() {
    assert_ne!(unique_namespace("a"), unique_namespace("a"));
}
