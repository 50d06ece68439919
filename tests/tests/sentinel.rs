//! Redis Sentinel: a handle that finds the primary through the sentinels, on a group of its
//! own (a primary, its replica, three sentinels on loopback, `tests/src/sentinel.rs`): the
//! basic behaviour, invalidations that wait for the replica, the primary killed with
//! `SIGKILL` (the handle follows the promoted replica, no read after an acknowledged
//! invalidation returns the old value, the near cache serves no stale copy), a failover with
//! the old primary alive, credentials and TLS for sentinels and data nodes apart,
//! configuration errors and the environment. The behaviour
//! suite and the randomized checker also run behind Sentinel (`on_sentinel` in
//! `behaviour.rs`, `checker_on_sentinel_*` in `checker.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached_get, Cache, CacheBuilder};
use cache_integration_tests::fixtures::{Row, UserRepo};
use cache_integration_tests::sentinel::{RedisSentinel, MASTER_NAME};
use cache_integration_tests::CapturedLog;
use serde::{Deserialize, Serialize};

fn builder(group: &RedisSentinel) -> CacheBuilder {
    Cache::builder()
        .sentinel(MASTER_NAME, group.sentinel_urls())
        // Room for a busy machine: a timed-out operation is a bypass, not an error.
        .operation_timeout(Duration::from_secs(1))
        .breaker_cooldown(Duration::from_millis(100))
}

/// How many times the primary ran `command` (`INFO commandstats`).
fn calls_of(connection: &mut redis::Connection, command: &str) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(connection)
        .expect("INFO commandstats");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hit_miss_and_invalidation_go_to_the_primary_the_sentinels_name() {
    let group = RedisSentinel::start();
    let repo = UserRepo::new(builder(&group).build().unwrap());
    repo.insert(Row::sample(1));
    let first = repo.get_user(1).await.unwrap().unwrap();
    assert_eq!(repo.loads(), 1, "a miss loads");
    assert_eq!(repo.get_user(1).await.unwrap().unwrap(), first);
    assert_eq!(repo.loads(), 1, "a hit does not load");
    let mut primary = group.primary();
    let stored: Option<String> = redis::cmd("HGET")
        .arg("user:1")
        .arg("name")
        .query(&mut primary)
        .unwrap();
    assert_eq!(stored.as_deref(), Some("user1"), "filled on the primary");
    let waits_before = calls_of(&mut primary, "wait");
    repo.rename(1, "renamed").await.unwrap();
    assert!(
        calls_of(&mut primary, "wait") > waits_before,
        "the invalidation waited for the replica (WAIT)"
    );
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(repo.loads(), 2, "the invalidation made it a miss");
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(repo.loads(), 2);
    let stats = repo.cache.stats();
    assert_eq!((stats.errors, stats.pending_invalidations), (0, 0));
}

/// A row whose version every write bumps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Versioned {
    id: i64,
    version: u64,
}

/// Reads through the cache; the "database" is one counter.
struct Reader {
    cache: Cache,
    db: Arc<AtomicU64>,
}

impl Reader {
    #[cached_get(prefix = "row", key = "id", schema = Versioned, cache = self.cache)]
    async fn get(&self, id: i64) -> Versioned {
        Versioned {
            id,
            version: self.db.load(Ordering::SeqCst),
        }
    }
}

/// Writes the counter and invalidates through a writer while a reader reads, kills the
/// primary a second in, and goes on until the failover is over and both handles work again
/// on the promoted replica (bounded: 90 s). Every read that started after an acknowledged
/// invalidation (the writer's `invalidate` answered `Ok`) must see at least that version.
async fn run_through_a_failover(near: bool) {
    let mut group = RedisSentinel::start();
    let db = Arc::new(AtomicU64::new(1));
    let reader = Reader {
        cache: builder(&group)
            .near_cache(if near { 100 } else { 0 })
            .build()
            .unwrap(),
        db: db.clone(),
    };
    // With a near cache the reader writes too: its own writes evict its copies before they
    // return, so every read is held to every acknowledged write with no window (another
    // handle's would reach it by Redis' push, up to 5 ms late: the checker measures that
    // one, and `the_near_cache_tracks_the_promoted_primary` the push after a failover).
    let writer = if near {
        reader.cache.clone()
    } else {
        builder(&group).build().unwrap()
    };
    // Acknowledged: the newest version whose invalidation Redis took, and when.
    let mut acknowledged: Vec<(u64, Instant)> = Vec::new();
    let mut stale = Vec::new();
    let mut reads = 0u64;
    let started = Instant::now();
    let mut killed = None;
    let mut killed_at = None;
    let mut promoted = None;
    let (mut acks_after, mut hits_after) = (0u64, 0u64);
    let deadline = started + Duration::from_secs(90);
    while Instant::now() < deadline {
        if killed.is_none() && started.elapsed() > Duration::from_secs(1) {
            killed = Some(group.kill_primary());
            killed_at = Some(Instant::now());
        }
        if let (Some(old), None) = (killed, promoted) {
            if group.primary_port().is_some_and(|port| port != old) {
                promoted = Some(Instant::now());
            }
        }
        // A write: the database first, then the invalidation.
        let version = db.fetch_add(1, Ordering::SeqCst) + 1;
        if writer.invalidate("row", &7).await.is_ok() {
            acknowledged.push((version, Instant::now()));
            if promoted.is_some() {
                acks_after += 1;
            }
        }
        // A few reads, each checked against what was acknowledged before it started.
        for _ in 0..3 {
            let read_started = Instant::now();
            let (floor, acked_at) = acknowledged.last().copied().unwrap_or((0, started));
            let hits_before = reader.cache.stats().hits;
            let near_before = reader.cache.stats().near_hits;
            let read = reader.get(7).await;
            reads += 1;
            if read.version < floor {
                stale.push((
                    read.version,
                    floor,
                    read_started - acked_at,
                    reader.cache.stats().near_hits > near_before,
                    started.elapsed(),
                ));
            }
            if promoted.is_some() && reader.cache.stats().hits > hits_before {
                hits_after += 1;
            }
        }
        if promoted.is_some() && acks_after >= 20 && hits_after >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_port = killed.expect("the primary was killed");
    assert!(
        promoted.is_some(),
        "the sentinels promoted the replica of {killed_port}"
    );
    assert!(
        acks_after >= 20,
        "the writer's invalidations reach the promoted primary ({acks_after})"
    );
    assert!(
        hits_after >= 20,
        "the reader hits again after the failover ({hits_after})"
    );
    println!(
        "{reads} reads, {} acknowledged invalidations, {} stale; promoted {:.2?} after the kill, \
         {acks_after} acknowledged invalidations and {hits_after} hits {:.2?} after that",
        acknowledged.len(),
        stale.len(),
        promoted
            .map(|at| at - killed_at.unwrap())
            .unwrap_or_default(),
        promoted.map(|at| at.elapsed()).unwrap_or_default(),
    );
    assert!(
        stale.is_empty(),
        "stale reads (read, acknowledged): {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_is_killed_the_handle_follows_the_promoted_replica_and_reads_no_stale_value(
) {
    run_through_a_failover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_is_killed_the_near_cache_serves_no_stale_copy() {
    run_through_a_failover(true).await;
}

/// The near cache, step by step: a copy served from memory before the kill; after the
/// failover, a copy filled from the promoted primary is dropped by a write through another
/// handle, so the listener tracks the new primary (a listener left on the dead one would
/// serve the old copy forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_tracks_the_promoted_primary() {
    let mut group = RedisSentinel::start();
    let db = Arc::new(AtomicU64::new(1));
    let writer = builder(&group).build().unwrap();
    let reader = Reader {
        cache: builder(&group).near_cache(100).build().unwrap(),
        db: db.clone(),
    };
    // Bounded waits for conditions, never a timed assertion.
    async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }
    until("a near hit before the kill", async || {
        let before = reader.cache.stats().near_hits;
        reader.get(1).await.version == 1 && reader.cache.stats().near_hits > before
    })
    .await;
    let old = group.kill_primary();
    group.wait_for_failover(old);
    until("a near hit from the promoted primary", async || {
        let before = reader.cache.stats().near_hits;
        reader.get(1).await.version == 1 && reader.cache.stats().near_hits > before
    })
    .await;
    db.store(2, Ordering::SeqCst);
    until("the writer's invalidation to be acknowledged", async || {
        writer.invalidate("row", &1).await.is_ok()
    })
    .await;
    // The push takes well under 5 ms on loopback; a listener that does not track the new
    // primary would never drop the copy, so a generous bound cannot hide that.
    until("the reader to see version 2", async || {
        reader.get(1).await.version == 2
    })
    .await;
    for _ in 0..20 {
        assert_eq!(reader.get(1).await.version, 2, "no stale copy comes back");
    }
}

/// A failover with the old primary alive (`SENTINEL FAILOVER`). For a moment the old
/// primary still takes writes but has lost its replica (promoted): an invalidation written
/// there would be wiped when it is made a replica of the new one, so it must not be
/// acknowledged (its `WAIT` gets no ack, and the sentinels no longer vouch for the node:
/// it stays pending). Then the old primary kills its clients' connections or answers
/// `READONLY`, and the handle asks the sentinels again and goes to the new primary. The
/// reader's near cache drops what it held, and no read after the acknowledged invalidation
/// returns the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_with_the_old_primary_alive_no_invalidation_is_lost_and_the_handle_follows(
) {
    let group = RedisSentinel::start();
    let db = Arc::new(AtomicU64::new(1));
    let writer = builder(&group).build().unwrap();
    let reader = Reader {
        cache: builder(&group).near_cache(100).build().unwrap(),
        db: db.clone(),
    };
    assert_eq!(reader.get(1).await.version, 1);
    writer.invalidate("row", &2).await.unwrap();
    let old = group.fail_over();
    let new = group.wait_for_failover(old);
    assert_ne!(old, new);
    db.store(2, Ordering::SeqCst);
    // The writer's connection may still go to the old primary: not acknowledged there,
    // then a connection to the new one. Bounded, never timed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    loop {
        match writer.invalidate("row", &1).await {
            Ok(()) => break,
            Err(error) if Instant::now() < deadline => {
                println!("not acknowledged: {error}");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("the writer never reached the new primary: {error}"),
        }
    }
    let tombstone: Option<String> = redis::cmd("HGET")
        .arg("row:1")
        .arg("__meta")
        .query(&mut group.primary())
        .unwrap();
    assert!(
        tombstone
            .as_deref()
            .is_some_and(|meta| meta.contains("inv:")),
        "the invalidation is on the new primary: {tombstone:?}"
    );
    // The push reaches the reader's listener once it tracks the new primary; until then it
    // serves nothing from memory, so no wait is needed for the reads to be right.
    for _ in 0..50 {
        assert_eq!(
            reader.get(1).await.version,
            2,
            "no stale read after the ack"
        );
    }
    println!(
        "the writer's invalidation was not acknowledged {refused} times before it reached port {new}"
    );
}

#[tokio::test]
async fn sentinels_and_data_nodes_take_credentials_apart() {
    let group = RedisSentinel::start_with_passwords("data-secret", "sentinel-secret");
    let sentinels: Vec<String> = group
        .sentinel_urls()
        .iter()
        .map(|url| url.replace("redis://", "redis://:sentinel-secret@"))
        .collect();
    let build = |sentinels: Vec<String>, primary: Option<&str>| {
        let builder = Cache::builder()
            .sentinel(MASTER_NAME, sentinels)
            .operation_timeout(Duration::from_secs(1));
        let builder = match primary {
            Some(url) => builder.sentinel_primary_url(url),
            None => builder,
        };
        UserRepo::new(builder.build().unwrap())
    };
    // Both right: a hit.
    let repo = build(sentinels.clone(), Some("redis://:data-secret@primary/0"));
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    repo.get_user(1).await.unwrap();
    assert_eq!(repo.loads(), 1, "a hit with both passwords");
    // The data nodes' password missing, or the sentinels': the function answers, uncached.
    let (log, _guard) = CapturedLog::start();
    for repo in [
        build(sentinels, None),
        build(
            group.sentinel_urls(),
            Some("redis://:data-secret@primary/0"),
        ),
    ] {
        repo.insert(Row::sample(1));
        repo.get_user(1).await.unwrap();
        repo.get_user(1).await.unwrap();
        assert_eq!(repo.loads(), 2, "without a password every call loads");
    }
    let lines = log.lines();
    assert!(
        !lines.iter().any(|line| line.contains("secret")),
        "no password is logged: {lines:?}"
    );
}

/// TLS on one side only: the sentinels plain, the data nodes TLS-only with a private CA
/// (`sentinel_primary_url("rediss://…")` and `tls_ca_pem`); a plain primary URL fails open.
#[tokio::test]
async fn the_data_nodes_speak_tls_and_the_sentinels_plain() {
    let group = RedisSentinel::start_with_tls_data_nodes();
    let build = |primary: &str| {
        UserRepo::new(
            Cache::builder()
                .sentinel(MASTER_NAME, group.sentinel_urls())
                .sentinel_primary_url(primary)
                .tls_ca_pem(group.ca_pem())
                .operation_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
    };
    let repo = build("rediss://primary");
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    repo.get_user(1).await.unwrap();
    assert_eq!(repo.loads(), 1, "a hit over TLS to the primary");
    repo.rename(1, "renamed").await.unwrap();
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(repo.cache.stats().errors, 0);
    let plain = build("redis://primary");
    plain.insert(Row::sample(1));
    plain.get_user(1).await.unwrap();
    plain.get_user(1).await.unwrap();
    assert_eq!(
        plain.loads(),
        2,
        "plain connections to TLS-only nodes fail open"
    );
}

#[tokio::test]
async fn unreachable_sentinels_fail_open() {
    let repo = UserRepo::new(
        Cache::builder()
            .sentinel(MASTER_NAME, [cache_integration_tests::refused_url()])
            .build()
            .unwrap(),
    );
    repo.insert(Row::sample(1));
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    assert_eq!(repo.loads(), 2);
    assert!(repo.cache.stats().errors > 0);
}

#[tokio::test]
async fn sentinel_configuration_errors_are_typed_and_hide_passwords() {
    let error = |builder: CacheBuilder| match builder.build() {
        Err(cache_core::Error::Config(message)) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let no_sentinels = error(Cache::builder().sentinel(MASTER_NAME, Vec::<String>::new()));
    assert!(
        no_sentinels.contains("at least one sentinel"),
        "{no_sentinels}"
    );
    let no_name = error(Cache::builder().sentinel(" ", ["redis://127.0.0.1:26379"]));
    assert!(no_name.contains("master's name"), "{no_name}");
    let bad = error(Cache::builder().sentinel(MASTER_NAME, ["http://:pw-123@host:26379"]));
    assert!(
        bad.contains("unsupported sentinel URL") && !bad.contains("pw-123"),
        "{bad}"
    );
    let bad_primary = error(
        Cache::builder()
            .sentinel(MASTER_NAME, ["redis://127.0.0.1:26379"])
            .sentinel_primary_url("memcache://:pw-456@primary"),
    );
    assert!(
        bad_primary.contains("primary URL") && !bad_primary.contains("pw-456"),
        "{bad_primary}"
    );
    let builder = Cache::builder()
        .sentinel(MASTER_NAME, ["redis://:pw-789@127.0.0.1:26379"])
        .sentinel_primary_url("redis://:pw-000@primary");
    let debug = format!("{builder:?}");
    assert!(
        debug.contains(MASTER_NAME) && !debug.contains("pw-789") && !debug.contains("pw-000"),
        "{debug}"
    );
}

#[tokio::test]
async fn from_env_reads_the_sentinel_variables() {
    let group = RedisSentinel::start();
    // Each test runs in a process of its own (nextest): the variables stay here.
    std::env::set_var("REDIS_SENTINEL_MASTER", MASTER_NAME);
    std::env::remove_var("REDIS_SENTINEL_NODES");
    assert!(
        matches!(Cache::from_env(), Err(cache_core::Error::Config(message)) if message.contains("REDIS_SENTINEL_NODES")),
        "one of the two variables alone is an error"
    );
    std::env::set_var("REDIS_SENTINEL_NODES", group.sentinels_variable());
    let repo = UserRepo::new(Cache::from_env().unwrap());
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    repo.get_user(1).await.unwrap();
    assert_eq!(
        repo.loads(),
        1,
        "a hit through the sentinels the environment names"
    );
}
