//! Redis as production runs it, and callers as production has them: futures dropped halfway,
//! memory limits that evict or refuse, ACL users, entries written by other clients.

use std::time::{Duration, Instant};

use cache_core::{Cache, Error};
use cache_integration_tests::fixtures::{Row, UserRead, UserRepo};
use cache_integration_tests::{CapturedLog, CuttableProxy, RedisServer};

fn field(server: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut server.connection())
        .unwrap()
}

/// Polls `condition` for up to ten seconds.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

#[tokio::test]
async fn a_write_whose_caller_stops_waiting_still_invalidates() {
    let server = RedisServer::start();
    // Another process filled the entry.
    let other = UserRepo::new(Cache::builder().url(server.url()).build().unwrap());
    other.insert(Row::sample(1));
    assert_eq!(other.get_user(1).await.unwrap().unwrap().name, "user1");

    // This process reaches Redis over a slow link and has not connected yet: its
    // invalidation waits for the connection when the caller gives up (a client that
    // disconnected, a request timeout).
    let proxy = CuttableProxy::start(server.port()).await;
    proxy.set_delay(Duration::from_millis(100));
    let writer = UserRepo::new(
        Cache::builder()
            .url(proxy.url())
            .operation_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    writer.insert(Row::sample(1));
    let gave_up = tokio::time::timeout(Duration::from_millis(20), writer.rename(1, "renamed"))
        .await
        .is_err();
    assert!(
        gave_up,
        "the caller stopped waiting during the invalidation"
    );

    assert!(
        eventually(|| field(&server, "user:1", "name").is_none()).await,
        "the committed write's invalidation reached Redis without its caller"
    );
    other.rename(1, "renamed").await.unwrap();
    assert_eq!(other.get_user(1).await.unwrap().unwrap().name, "renamed");
    proxy.set_delay(Duration::ZERO);
    assert_eq!(writer.get_user(1).await.unwrap().unwrap().name, "renamed");
}

#[tokio::test]
async fn a_direct_invalidation_dropped_by_its_caller_still_happens() {
    let server = RedisServer::start();
    let proxy = CuttableProxy::start(server.port()).await;
    proxy.set_delay(Duration::from_millis(100));
    let direct = Cache::builder().url(server.url()).build().unwrap();
    let user = UserRead {
        id: 2,
        name: "two".into(),
        avatar: None,
        birthday: "2000-01-31".into(),
    };
    direct.put("user", &2, &user).await.unwrap();
    let slow = Cache::builder()
        .url(proxy.url())
        .operation_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let dropped = tokio::time::timeout(Duration::from_millis(20), slow.invalidate("user", &2));
    assert!(dropped.await.is_err());
    assert!(eventually(|| field(&server, "user:2", "name").is_none()).await);
}

/// A repository over a shared in-memory table whose loads can be held at a gate after they
/// read the row: a read that loaded old data before a write, and fills it after.
mod gated {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use cache_core::{cached_get, cached_update, Cache};
    use serde::{Deserialize, Serialize};
    use tokio::sync::Semaphore;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Login {
        pub(crate) id: i64,
        pub(crate) email: String,
        pub(crate) password: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Balance {
        pub(crate) id: i64,
        pub(crate) cents: i64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Holder {
        pub(crate) id: i64,
        pub(crate) name: String,
    }

    #[derive(Default)]
    pub(crate) struct Table {
        pub(crate) rows: Mutex<HashMap<i64, Login>>,
        pub(crate) cents: Mutex<HashMap<i64, i64>>,
        pub(crate) loads: AtomicUsize,
        /// When set, loads wait here after reading their row.
        pub(crate) gate: Mutex<Option<Arc<Semaphore>>>,
    }

    impl Table {
        pub(crate) fn with_user(id: i64, password: &str) -> Arc<Table> {
            let table = Table::default();
            table.rows.lock().unwrap().insert(
                id,
                Login {
                    id,
                    email: format!("u{id}@example.com"),
                    password: password.into(),
                },
            );
            table.cents.lock().unwrap().insert(id, 100);
            Arc::new(table)
        }

        pub(crate) fn close_gate(&self) -> Arc<Semaphore> {
            let gate = Arc::new(Semaphore::new(0));
            *self.gate.lock().unwrap() = Some(gate.clone());
            gate
        }

        pub(crate) fn loads(&self) -> usize {
            self.loads.load(Ordering::SeqCst)
        }

        async fn after_reading(&self) {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let gate = self.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
        }
    }

    pub(crate) struct Repo {
        pub(crate) cache: Cache,
        pub(crate) table: Arc<Table>,
    }

    impl Repo {
        #[cached_get(prefix = "login", key = "email", schema = Login, tags = ["user:{id}"], cache = self.cache)]
        pub(crate) async fn by_email(&self, email: &str) -> Option<Login> {
            let row = self
                .table
                .rows
                .lock()
                .unwrap()
                .values()
                .find(|row| row.email == email)
                .cloned();
            self.table.after_reading().await;
            row
        }

        #[cached_get(prefix = "user", key = "id", schema = Login, cache = self.cache)]
        pub(crate) async fn by_id(&self, id: i64) -> Option<Login> {
            let row = self.table.rows.lock().unwrap().get(&id).cloned();
            self.table.after_reading().await;
            row
        }

        #[cached_get(prefix = "user", key = "id", schema = Login, cache = self.cache)]
        pub(crate) async fn by_id_failing(&self, id: i64) -> Result<Option<Login>, String> {
            self.table.after_reading().await;
            Err(format!("database error reading {id}"))
        }

        #[cached_get(prefix = "user", key = "id", schema = Login, cache = self.cache)]
        pub(crate) async fn by_id_panicking(&self, id: i64) -> Option<Login> {
            self.table.after_reading().await;
            panic!("a bug while loading {id}")
        }

        #[cached_update(prefix = "user", key = "id", tags = ["user:{id}"], cache = self.cache)]
        pub(crate) async fn set_password(&self, id: i64, password: &str) -> Result<(), String> {
            let mut rows = self.table.rows.lock().unwrap();
            rows.get_mut(&id).ok_or("no user")?.password = password.into();
            Ok(())
        }

        #[cached_get(prefix = "acct", key = "id", schema = Balance, ttl = 1, cache = self.cache)]
        pub(crate) async fn balance(&self, id: i64) -> Balance {
            let cents = self.table.cents.lock().unwrap()[&id];
            self.table.after_reading().await;
            Balance { id, cents }
        }

        #[cached_get(prefix = "short", key = "id", schema = Balance, ttl = 1, tags = ["short:all"], cache = self.cache)]
        pub(crate) async fn short_lived(&self, id: i64) -> Balance {
            Balance { id, cents: id }
        }

        #[cached_get(prefix = "big", key = "id", schema = Holder, cache = self.cache)]
        pub(crate) async fn huge(&self, id: i64) -> Holder {
            self.table.after_reading().await;
            Holder {
                id,
                name: "x".repeat(8 << 20),
            }
        }

        #[cached_get(prefix = "acct", key = "id", schema = Holder, cache = self.cache)]
        pub(crate) async fn holder(&self, id: i64) -> Holder {
            self.table.after_reading().await;
            Holder {
                id,
                name: format!("holder{id}"),
            }
        }
    }
}

use gated::{Repo, Table};

fn repo(server: &RedisServer, table: &std::sync::Arc<Table>) -> Repo {
    Repo {
        cache: Cache::builder().url(server.url()).build().unwrap(),
        table: table.clone(),
    }
}

fn delete(server: &RedisServer, key: &str) {
    let deleted: i64 = redis::cmd("DEL")
        .arg(key)
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(deleted, 1, "{key} existed, and is now gone as if evicted");
}

async fn loads_reached(table: &Table, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while table.loads() < count {
        assert!(Instant::now() < deadline, "the load never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn an_evicted_tag_member_set_does_not_keep_the_old_password() {
    let server = RedisServer::start();
    let table = Table::with_user(7, "old");
    let repo = repo(&server, &table);
    assert_eq!(
        repo.by_email("u7@example.com").await.unwrap().password,
        "old"
    );
    // Redis evicted the set of entries registered under `user:7`, not the hot entry.
    delete(&server, "__cache::tag{:user:7}");
    repo.set_password(7, "new").await.unwrap();
    assert!(
        field(&server, "login:u7@example.com", "password").is_some(),
        "nothing could reach the entry itself"
    );
    assert_eq!(
        repo.by_email("u7@example.com").await.unwrap().password,
        "new",
        "the tag's stamp, checked on the read, makes the entry a miss"
    );
    assert_eq!(
        repo.by_email("u7@example.com").await.unwrap().password,
        "new"
    );
    assert_eq!(table.loads(), 2, "and it is cached again");
}

#[tokio::test]
async fn an_evicted_tag_stamp_makes_its_entries_misses_and_refuses_racing_fills() {
    let server = RedisServer::start();
    let table = Table::with_user(7, "old");
    let (reader, writer) = (repo(&server, &table), repo(&server, &table));
    reader.by_email("u7@example.com").await.unwrap();
    delete(&server, "__cache::stamp{:user:7}");
    assert_eq!(
        reader.by_email("u7@example.com").await.unwrap().password,
        "old"
    );
    assert_eq!(
        table.loads(),
        2,
        "without its tag's stamp the entry is a miss"
    );

    // A read loads the old row; the write and its invalidation complete; the tag's stamp is
    // evicted before the read fills.
    delete(&server, "login:u7@example.com");
    let gate = table.close_gate();
    let slow = tokio::spawn(async move { reader.by_email("u7@example.com").await });
    loads_reached(&table, 3).await;
    writer.set_password(7, "new").await.unwrap();
    delete(&server, "__cache::stamp{:user:7}");
    gate.add_permits(1);
    assert_eq!(slow.await.unwrap().unwrap().password, "old");
    *table.gate.lock().unwrap() = None;
    assert_eq!(
        writer.by_email("u7@example.com").await.unwrap().password,
        "new",
        "the racing fill was refused"
    );
}

#[tokio::test]
async fn an_evicted_tombstone_or_clock_does_not_let_a_racing_fill_through() {
    for lost in [&["user:7"][..], &["user:7", "__cache::clock"][..]] {
        let server = RedisServer::start();
        let table = Table::with_user(7, "old");
        let (reader, writer) = (repo(&server, &table), repo(&server, &table));
        let gate = table.close_gate();
        let slow = tokio::spawn(async move { reader.by_id(7).await });
        loads_reached(&table, 1).await;
        writer.set_password(7, "new").await.unwrap();
        for key in lost {
            delete(&server, key);
        }
        gate.add_permits(1);
        assert_eq!(slow.await.unwrap().unwrap().password, "old");
        *table.gate.lock().unwrap() = None;
        assert_eq!(
            writer.by_id(7).await.unwrap().password,
            "new",
            "losing {lost:?} refused the racing fill"
        );
    }
}

#[tokio::test]
async fn a_short_ttl_beside_a_long_one_bounds_its_own_fields() {
    let server = RedisServer::start();
    let table = Table::with_user(1, "x");
    let repo = repo(&server, &table);
    assert_eq!(repo.balance(1).await.cents, 100);
    // The other schema of the same hash has the default TTL (one hour).
    assert_eq!(repo.holder(1).await.name, "holder1");
    table.cents.lock().unwrap().insert(1, 250);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(
        repo.balance(1).await.cents,
        250,
        "the balance's one-second TTL held although another schema filled the hash later"
    );
}

#[tokio::test]
async fn key_text_cannot_reach_the_librarys_keys_or_another_namespace() {
    let server = RedisServer::start();
    let table = Table::with_user(1, "old");
    let shop = Repo {
        cache: Cache::builder()
            .url(server.url())
            .namespace("shop")
            .build()
            .unwrap(),
        table: table.clone(),
    };
    let plain = Cache::builder().url(server.url()).build().unwrap();
    assert_eq!(shop.by_id(1).await.unwrap().password, "old");
    shop.set_password(1, "old").await.unwrap();
    // Key text from a request, through a handle without namespace.
    let intruder = gated::Login {
        id: 1,
        email: "intruder@example.com".into(),
        password: "intruder".into(),
    };
    for key in ["__clock", "__cache:shop:clock", "user:1", "__tag:user:1"] {
        plain.put("shop", key, &intruder).await.unwrap();
    }
    assert!(redis::cmd("HGET")
        .arg("__cache:shop:clock")
        .arg("now")
        .query::<Option<String>>(&mut server.connection())
        .unwrap()
        .is_some());
    shop.set_password(1, "new").await.unwrap();
    assert_eq!(shop.cache.stats().errors, 0, "no WRONGTYPE, no failure");
    assert_eq!(shop.cache.stats().pending_invalidations, 0);
    let read = shop.by_id(1).await.unwrap();
    assert_eq!(
        read.password, "new",
        "never the other handle's value: {read:?}"
    );
    assert_eq!(shop.by_id(1).await.unwrap().password, "new");
}

#[tokio::test]
async fn hashes_written_by_another_client_are_refilled_before_they_are_hits() {
    let server = RedisServer::start();
    let table = Table::with_user(7, "current");
    let repo = repo(&server, &table);
    // What the tutorial's Python service writes: complete hashes, no TTL, no `__meta`.
    redis::cmd("HSET")
        .arg("login:u7@example.com")
        .arg(&["id", "7", "email", "u7@example.com", "password", "stale"])
        .query::<()>(&mut server.connection())
        .unwrap();
    assert_eq!(
        repo.by_email("u7@example.com").await.unwrap().password,
        "current",
        "a hash the library did not fill is a miss"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("login:u7@example.com")
        .query(&mut server.connection())
        .unwrap();
    assert!(ttl > 0, "the refill gave it a TTL");
    assert_eq!(
        field(&server, "login:u7@example.com", "__meta").as_deref(),
        Some(format!("by: tags:{}:user:7", born(&server)).as_str())
    );
    repo.set_password(7, "changed").await.unwrap();
    assert_eq!(
        repo.by_email("u7@example.com").await.unwrap().password,
        "changed",
        "registered under its tag by the refill"
    );
}

/// The `born` stamp the only login fill of a fresh server recorded: the clock's floor.
fn born(server: &RedisServer) -> String {
    redis::cmd("HGET")
        .arg("__cache::clock")
        .arg("floor")
        .query(&mut server.connection())
        .unwrap()
}

fn config_set(server: &RedisServer, name: &str, value: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query::<()>(&mut server.connection())
        .unwrap();
}

fn exists(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query(&mut server.connection())
        .unwrap()
}

#[tokio::test]
async fn out_of_memory_under_noeviction_unlinks_the_entries_and_stamps_them_later() {
    let server = RedisServer::start();
    let table = Table::with_user(7, "old");
    let (reader, writer) = (repo(&server, &table), repo(&server, &table));
    assert_eq!(reader.by_id(7).await.unwrap().password, "old");
    assert_eq!(
        reader.by_email("u7@example.com").await.unwrap().password,
        "old"
    );
    config_set(&server, "maxmemory-policy", "noeviction");
    config_set(&server, "maxmemory", "1");

    writer.set_password(7, "new").await.unwrap();
    assert!(
        writer.cache.stats().pending_invalidations > 0,
        "the refused invalidation is remembered"
    );
    assert!(
        !exists(&server, "user:7"),
        "unlinked, as noeviction still allows"
    );
    assert!(!exists(&server, "__cache::stamp{:user:7}"));
    assert_eq!(
        reader.by_id(7).await.unwrap().password,
        "new",
        "another process does not read the old row"
    );
    assert_eq!(
        reader.by_email("u7@example.com").await.unwrap().password,
        "new",
        "nor the entry carrying the tag, whose stamp is gone"
    );

    config_set(&server, "maxmemory", "0");
    assert!(
        eventually(|| writer.cache.stats().pending_invalidations == 0).await,
        "delivered once Redis takes writes again"
    );
    assert_eq!(reader.by_id(7).await.unwrap().password, "new");
    assert_eq!(reader.by_id(7).await.unwrap().password, "new");
    assert_eq!(
        reader.by_email("u7@example.com").await.unwrap().password,
        "new"
    );
}

#[tokio::test]
async fn a_primary_that_became_a_replica_keeps_the_invalidation_pending() {
    let server = RedisServer::start();
    let table = Table::with_user(7, "old");
    let (reader, writer) = (repo(&server, &table), repo(&server, &table));
    assert_eq!(writer.by_id(7).await.unwrap().password, "old");
    // A failover made it a replica (of a primary that is not reachable from here).
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(cache_integration_tests::free_port())
        .query::<()>(&mut server.connection())
        .unwrap();
    writer.set_password(7, "new").await.unwrap();
    assert!(writer.cache.stats().pending_invalidations > 0);
    assert_eq!(
        writer.by_id(7).await.unwrap().password,
        "new",
        "the writer does not read what it could not invalidate"
    );
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut server.connection())
        .unwrap();
    assert!(eventually(|| writer.cache.stats().pending_invalidations == 0).await);
    assert_eq!(reader.by_id(7).await.unwrap().password, "new");
}

#[tokio::test]
async fn an_acl_user_that_may_not_run_scripts_keeps_invalidations_pending_with_backoff() {
    let mut server = RedisServer::start();
    let table = Table::with_user(7, "old");
    let reader = repo(&server, &table);
    assert_eq!(reader.by_id(7).await.unwrap().password, "old");
    server.add_cache_user(&["user:*", "login:*", "__cache::*"]);
    redis::cmd("ACL")
        .arg(&["SETUSER", "cache", "-evalsha", "-unlink"])
        .query::<()>(&mut server.connection())
        .unwrap();
    let writer = Repo {
        cache: Cache::builder().url(server.cache_url()).build().unwrap(),
        table: table.clone(),
    };
    writer.set_password(7, "new").await.unwrap();
    assert_eq!(
        writer.cache.stats().pending_invalidations,
        2,
        "the entry and its tag"
    );
    assert_eq!(writer.by_id(7).await.unwrap().password, "new");
    // The background delivery backs off instead of hammering a Redis that says no.
    let before = writer.cache.stats().errors;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let attempts = writer.cache.stats().errors - before;
    assert!(
        (1..=8).contains(&attempts),
        "{attempts} attempts in 1.5 s (every 50 ms would be 30)"
    );
    redis::cmd("ACL")
        .arg(&["SETUSER", "cache", "+evalsha", "+unlink"])
        .query::<()>(&mut server.connection())
        .unwrap();
    assert!(eventually(|| writer.cache.stats().pending_invalidations == 0).await);
    assert_eq!(reader.by_id(7).await.unwrap().password, "new");
}

/// A wrong password and a missing permission: the functions answer from the loader, and
/// the log says why in a line that names Redis' reason, once per interval however many calls
/// fail (with the count held back), never with the password.
#[tokio::test(flavor = "current_thread")]
async fn a_wrong_password_or_a_missing_permission_is_one_clear_log_line() {
    let (log, _capturing) = CapturedLog::start();

    let mut server = RedisServer::start();
    server.add_cache_user(&["user:*", "login:*", "__cache::*"]);
    let table = Table::with_user(7, "old");
    let wrong = Repo {
        cache: Cache::builder()
            .url(format!(
                "redis://cache:not-the-password@127.0.0.1:{}",
                server.port()
            ))
            .breaker_threshold(1_000)
            .build()
            .unwrap(),
        table: table.clone(),
    };
    for _ in 0..50 {
        assert_eq!(wrong.by_id(7).await.unwrap().password, "old");
    }
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "rate-limited: {lines:#?}");
    assert!(
        lines[0].contains("cache operation failed")
            && lines[0].contains("Password authentication failed"),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("not-the-password"), "{}", lines[0]);

    // A user that may not read the hash: NOPERM, said once, the calls answer.
    redis::cmd("ACL")
        .arg(&["SETUSER", "cache", "-hmget"])
        .query::<()>(&mut server.connection())
        .unwrap();
    let (log, _capturing) = CapturedLog::start();
    let denied = Repo {
        cache: Cache::builder().url(server.cache_url()).build().unwrap(),
        table,
    };
    for _ in 0..50 {
        assert_eq!(denied.by_id(7).await.unwrap().password, "old");
    }
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "rate-limited: {lines:#?}");
    assert!(
        lines[0].contains("no permissions to run the 'hmget' command"),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("cache-secret"), "{}", lines[0]);
}

fn leased(server: &RedisServer, key: &str) -> bool {
    field(server, key, "__meta").is_some_and(|meta| meta.contains("lease:"))
}

#[tokio::test]
async fn a_lease_is_given_back_on_every_exit_without_a_fill() {
    let server = RedisServer::start();
    for exit in ["none", "err", "panic", "cancelled"] {
        let table = Table::with_user(7, "old");
        let holder = repo(&server, &table);
        holder.by_id(7).await.unwrap();
        // A freshly invalidated entry: the next miss takes the lease.
        holder.set_password(7, "new").await.unwrap();
        match exit {
            "none" => {
                table.rows.lock().unwrap().clear();
                assert_eq!(holder.by_id(7).await, None);
            }
            "err" => assert!(holder.by_id_failing(7).await.is_err()),
            "panic" => {
                let panicked = tokio::spawn(async move { holder.by_id_panicking(7).await }).await;
                assert!(panicked.unwrap_err().is_panic());
            }
            _ => {
                let gate = table.close_gate();
                let loading = tokio::spawn(async move { holder.by_id(7).await });
                loads_reached(&table, 2).await;
                assert!(leased(&server, "user:7"), "the loader holds the lease");
                loading.abort();
                assert!(loading.await.unwrap_err().is_cancelled());
                drop(gate);
            }
        }
        assert!(
            eventually(|| !leased(&server, "user:7")).await,
            "{exit}: the lease was given back, so other processes do not wait for a fill"
        );
        delete(&server, "user:7");
    }
}

#[tokio::test]
async fn a_tags_member_set_stays_near_its_live_entries() {
    let server = RedisServer::start();
    let table = Table::with_user(1, "x");
    let repo = repo(&server, &table);
    // Entries of one second filled steadily under one tag for four seconds.
    let started = Instant::now();
    let mut filled = 0i64;
    while started.elapsed() < Duration::from_secs(4) {
        repo.short_lived(filled).await;
        filled += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let members: i64 = redis::cmd("SCARD")
        .arg("__cache::tag{:short:all}")
        .query(&mut server.connection())
        .unwrap();
    let live: i64 = redis::cmd("EVAL")
        .arg("return #redis.call('KEYS', 'short:*')")
        .arg(0)
        .query(&mut server.connection())
        .unwrap();
    println!("{filled} filled, {live} live, {members} members");
    assert!(
        members <= live * 2 + 50,
        "{members} members for {live} live entries ({filled} filled)"
    );
}

#[tokio::test]
async fn one_oversized_value_does_not_take_the_handle_down() {
    let server = RedisServer::start();
    let table = Table::with_user(1, "x");
    let repo = repo(&server, &table);
    for round in 0..5 {
        assert_eq!(repo.huge(1).await.name.len(), 8 << 20);
        assert_eq!(repo.by_id(1).await.unwrap().password, "x", "round {round}");
    }
    assert!(
        !exists(&server, "big:1"),
        "8 MiB is over max_value_size: not cached"
    );
    let stats = repo.cache.stats();
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert_eq!(
        stats.hits, 4,
        "the small entry is a hit every round after the first"
    );
    // The direct API says why.
    let huge = gated::Holder {
        id: 2,
        name: "x".repeat(2 << 20),
    };
    assert!(matches!(
        repo.cache.put("big", &2, &huge).await,
        Err(Error::TooLarge { .. })
    ));
}

/// Counts the warnings logged on this thread.
#[derive(Default)]
struct WarningCounter(std::sync::atomic::AtomicUsize);

impl tracing::Subscriber for WarningCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

mod misconfigured {
    use cache_core::{cached_get, cached_update, Cache};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Lossy {
        pub(crate) id: i64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub(crate) tags: Vec<String>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Samples {
        pub(crate) id: i64,
        pub(crate) values: Vec<f64>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Versioned {
        pub(crate) id: i64,
        #[serde(rename = "rev")]
        pub(crate) version: u64,
    }

    pub(crate) struct Repo {
        pub(crate) cache: Cache,
    }

    impl Repo {
        #[cached_get(prefix = "lossy", key = "id", schema = Lossy, cache = self.cache)]
        pub(crate) async fn lossy(&self, id: i64) -> Lossy {
            Lossy {
                id,
                tags: Vec::new(),
            }
        }

        #[cached_get(prefix = "samples", key = "id", schema = Samples, cache = self.cache)]
        pub(crate) async fn samples(&self, id: i64) -> Samples {
            Samples {
                id,
                values: vec![f64::NAN],
            }
        }

        #[cached_update(prefix = "versioned", key = "id", schema = Versioned, version = "version", cache = self.cache)]
        pub(crate) async fn update(&self, id: i64) -> Versioned {
            Versioned { id, version: 2 }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn misconfiguration_is_said_once_per_function_not_once_per_call() {
    let counter = std::sync::Arc::new(WarningCounter::default());
    let _guard = tracing::subscriber::set_default(counter.clone());
    let repo = misconfigured::Repo {
        cache: Cache::builder().url("mem://").build().unwrap(),
    };
    for id in 0..2_000 {
        repo.lossy(id % 10).await;
        repo.samples(id % 10).await;
        repo.update(id % 10).await;
    }
    let warnings = counter.0.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(warnings, 3, "one per function for 6 000 calls");
    assert!(
        repo.cache.stats().bypassed >= 1_999,
        "the schema that cannot decode back skips the cache: {:?}",
        repo.cache.stats()
    );
}

#[tokio::test]
async fn a_large_tag_is_stamped_at_once_and_its_entries_tombstoned_in_batches() {
    let server = RedisServer::start();
    let cache = Cache::builder().url(server.url()).build().unwrap();
    let mut connection = server.connection();
    let mut plant = redis::pipe();
    for id in 0..1_000 {
        let key = format!("item:{id}");
        plant
            .cmd("HSET")
            .arg(&key)
            .arg(&["name", "x", "__meta", "by: tags:1:bulk"])
            .ignore();
        plant
            .cmd("SADD")
            .arg("__cache::tag{:bulk}")
            .arg(&key)
            .ignore();
    }
    plant.query::<()>(&mut connection).unwrap();
    cache
        .invalidate_tag("bulk")
        .await
        .expect("the call answers the truth: the tag is stamped");
    assert!(
        redis::cmd("GET")
            .arg("__cache::stamp{:bulk}")
            .query::<Option<String>>(&mut connection)
            .unwrap()
            .is_some(),
        "stamped before the call returned: every entry carrying it is a miss from now on"
    );
    assert!(
        eventually(|| {
            redis::cmd("SCARD")
                .arg("__cache::tag{:bulk}")
                .query::<usize>(&mut server.connection())
                .unwrap()
                == 0
        })
        .await,
        "the registered entries are drained in the background"
    );
    for id in [0, 499, 999] {
        assert_eq!(field(&server, &format!("item:{id}"), "name"), None);
    }
}

/// A function without `cache = …` in a process that never called `cache_core::install`
/// runs uncached, and says so: one `warn` line per function, on its first call, however many
/// calls follow (nextest runs each test in its own process, so nothing is installed here).
#[tokio::test(flavor = "current_thread")]
async fn a_function_without_an_installed_handle_says_once_that_it_runs_uncached() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Item {
        id: i64,
    }
    #[cache_core::cached_get(prefix = "uninstalled", key = "id", schema = Item)]
    async fn item(id: i64) -> Option<Item> {
        Some(Item { id })
    }
    #[cache_core::cached_get(prefix = "uninstalled-too", key = "id", schema = Item)]
    async fn other_item(id: i64) -> Option<Item> {
        Some(Item { id })
    }

    assert!(
        cache_core::installed().is_none(),
        "this test needs a process of its own"
    );
    let (log, _capturing) = CapturedLog::start();
    for id in 0..5 {
        assert_eq!(item(id).await, Some(Item { id }));
    }
    other_item(1).await;
    other_item(2).await;
    let lines = log.lines();
    let uncached: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("runs uncached") && line.contains("cache_core::install"))
        .collect();
    assert_eq!(uncached.len(), 2, "one line per function: {lines:#?}");
    assert!(
        uncached[0].contains("WARN") && uncached[0].contains("prefix=\"uninstalled\""),
        "{}",
        uncached[0]
    );
    assert!(
        uncached[1].contains("prefix=\"uninstalled-too\""),
        "{}",
        uncached[1]
    );
}
