//! "When Redis is down, slow or wrong" (README) with real faults: a refused port, a listener that never answers, a server that
//! is stopped and restarted, a proxy that is cut. The cache must never turn a working call
//! into a failing one, and an invalidation it could not deliver must not be forgotten.

use std::time::{Duration, Instant};

use cache_core::{Cache, Error};
use cache_integration_tests::fixtures::{Row, UserRead, UserRepo};
use cache_integration_tests::{
    refused_url, CapturedLog, CuttableProxy, RedisServer, SilentListener,
};

fn repo_at(
    url: &str,
    configure: impl FnOnce(cache_core::CacheBuilder) -> cache_core::CacheBuilder,
) -> UserRepo {
    let cache = configure(Cache::builder().url(url))
        .build()
        .expect("valid configuration");
    let repo = UserRepo::new(cache);
    for id in 0..10 {
        repo.insert(Row::sample(id));
    }
    repo
}

#[tokio::test]
async fn refused_connections_fall_back_to_the_function() {
    let repo = repo_at(&refused_url(), |builder| builder);
    for round in 0..20 {
        let user = repo
            .get_user(round % 10)
            .await
            .expect("the function's result");
        assert_eq!(user.unwrap().id, round % 10);
    }
    repo.rename(1, "renamed")
        .await
        .expect("a write succeeds without Redis");
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    let stats = repo.cache.stats();
    assert_eq!(repo.loads(), 21, "every read reached the database");
    assert!(stats.errors >= 5, "failures are counted: {stats:?}");
    assert!(stats.bypassed > 0, "the breaker opened: {stats:?}");
    assert_eq!(stats.hits, 0);
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_nothing_once_the_breaker_is_open() {
    let listener = SilentListener::start().await;
    let repo = repo_at(&listener.url(), |builder| {
        builder.breaker_cooldown(Duration::from_secs(60))
    });
    // Each call waits for the operation timeout until the breaker opens (5 failures).
    for id in 0..5 {
        assert_eq!(repo.get_user(id).await.unwrap().unwrap().id, id);
    }
    assert!(
        listener.connections() >= 1,
        "the cache did try the listener"
    );
    let stats_before = repo.cache.stats();
    let bytes_before = listener.bytes_received();

    let calls = 2_000;
    let started = Instant::now();
    for call in 0..calls {
        let id = call % 10;
        assert_eq!(repo.get_user(id).await.unwrap().unwrap().id, id);
    }
    let per_call = started.elapsed() / calls as u32;

    let stats_after = repo.cache.stats();
    assert_eq!(
        listener.bytes_received(),
        bytes_before,
        "nothing is sent while the breaker is open"
    );
    assert_eq!(
        stats_after.bypassed - stats_before.bypassed,
        calls as u64,
        "every call bypassed Redis"
    );
    assert_eq!(
        stats_after.errors, stats_before.errors,
        "bypassed calls are not errors"
    );
    // Printed, not asserted: timing on a shared machine is noise. The structural facts above
    // (no bytes sent, every call bypassed) are what make it fast.
    println!("mean cost of a call with the breaker open (function included): {per_call:?}");
}

#[tokio::test]
async fn the_cache_recovers_when_redis_comes_back() {
    let mut server = RedisServer::start();
    let repo = repo_at(&server.url(), |builder| {
        builder.breaker_cooldown(Duration::from_millis(200))
    });
    repo.get_user(1).await.unwrap();
    repo.get_user(1).await.unwrap();
    assert_eq!(repo.cache.stats().hits, 1);

    server.stop();
    for _ in 0..10 {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().id, 1);
    }
    assert!(repo.cache.stats().errors > 0);

    server.restart();
    // The breaker lets a probe through after its cool-down; a few calls later it is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while repo.cache.stats().hits < 2 && Instant::now() < deadline {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().id, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        repo.cache.stats().hits >= 2,
        "hits again after recovery: {:?}",
        repo.cache.stats()
    );
}

#[tokio::test]
async fn a_probe_whose_caller_stops_waiting_does_not_switch_the_cache_off() {
    let server = RedisServer::start();
    let proxy = CuttableProxy::start(server.port()).await;
    let repo = repo_at(&proxy.url(), |builder| {
        builder
            .breaker_threshold(1)
            .breaker_cooldown(Duration::from_millis(100))
            .operation_timeout(Duration::from_secs(2))
    });
    repo.get_user(1).await.unwrap();
    proxy.cut();
    repo.get_user(1).await.unwrap();
    proxy.restore();
    proxy.set_delay(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The one call allowed to probe is given up by its caller while it waits.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), repo.get_user(1)).await;
    assert!(gave_up.is_err());
    proxy.set_delay(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    while repo.cache.stats().hits == 0 && Instant::now() < deadline {
        repo.get_user(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        repo.cache.stats().hits > 0,
        "a later call probed and the cache works again: {:?}",
        repo.cache.stats()
    );
}

#[tokio::test]
async fn an_invalidation_lost_to_a_cut_connection_is_delivered_before_reading_again() {
    let server = RedisServer::start();
    let proxy = CuttableProxy::start(server.port()).await;
    let repo = repo_at(&proxy.url(), |builder| {
        builder.breaker_cooldown(Duration::from_millis(100))
    });
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");

    proxy.cut();
    repo.rename(1, "renamed")
        .await
        .expect("the write itself succeeds");
    assert_eq!(
        repo.cache.stats().pending_invalidations,
        1,
        "the lost invalidation is remembered"
    );
    assert!(
        redis::cmd("EXISTS")
            .arg("user:1")
            .query::<bool>(&mut server.connection())
            .unwrap(),
        "the stale entry is still in Redis"
    );
    assert_eq!(
        repo.get_user(1).await.unwrap().unwrap().name,
        "renamed",
        "not served while cut"
    );

    proxy.restore();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while repo.cache.stats().pending_invalidations > 0 && Instant::now() < deadline {
        assert_eq!(
            repo.get_user(1).await.unwrap().unwrap().name,
            "renamed",
            "never the old name"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        repo.cache.stats().pending_invalidations,
        0,
        "delivered after recovery"
    );
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    let raw: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("user:1")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(
        raw.get("name").map(String::as_str),
        Some("renamed"),
        "refilled with the new state"
    );
}

#[tokio::test]
async fn a_lost_invalidation_reaches_other_processes_without_further_calls() {
    let server = RedisServer::start();
    let proxy = CuttableProxy::start(server.port()).await;
    let cut_off = repo_at(&proxy.url(), |builder| {
        builder.breaker_cooldown(Duration::from_millis(100))
    });
    let other = repo_at(&server.url(), |builder| builder);
    assert_eq!(other.get_user(1).await.unwrap().unwrap().name, "user1");

    proxy.cut();
    cut_off
        .rename(1, "renamed")
        .await
        .expect("the write itself succeeds");
    // The other process shares no memory with the writer: it still sees the cached entry
    // (the documented window), and its own database is not the writer's here.
    assert!(redis::cmd("EXISTS")
        .arg("user:1")
        .query::<bool>(&mut server.connection())
        .unwrap());

    proxy.restore();
    // The writer makes no call: its background task delivers the invalidation.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delivered = false;
    while Instant::now() < deadline {
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg("user:1")
            .query(&mut server.connection())
            .unwrap();
        if fields == ["__meta"] {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        delivered,
        "the entry became a tombstone without any call by the writer: {:?}",
        cut_off.cache.stats()
    );
    assert_eq!(cut_off.cache.stats().pending_invalidations, 0);
    other.get_user(1).await.unwrap();
    assert_eq!(other.loads(), 2, "the other process loads afresh");
}

#[tokio::test]
async fn the_direct_api_reports_what_went_wrong() {
    let listener = SilentListener::start().await;
    let cache = Cache::builder()
        .url(listener.url())
        .operation_timeout(Duration::from_millis(50))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_secs(60))
        .build()
        .unwrap();
    assert!(matches!(
        cache.get::<UserRead>("user", &1).await,
        Err(Error::Timeout(_))
    ));
    assert!(matches!(
        cache.get::<UserRead>("user", &1).await,
        Err(Error::Timeout(_))
    ));
    assert!(matches!(
        cache.get::<UserRead>("user", &1).await,
        Err(Error::CircuitOpen)
    ));

    let refused = Cache::builder().url(refused_url()).build().unwrap();
    assert!(matches!(
        refused.get::<UserRead>("user", &1).await,
        Err(Error::Redis(_))
    ));
}

#[tokio::test]
async fn bad_configuration_is_a_typed_error_and_build_never_connects() {
    for url in [
        "http://localhost",
        "localhost:6379",
        "redis://:99999999999",
        "",
    ] {
        assert!(
            matches!(Cache::builder().url(url).build(), Err(Error::Config(_))),
            "{url:?} must be rejected"
        );
    }
    assert!(matches!(
        Cache::builder().namespace("a:b").build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Cache::builder().namespace("").build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Cache::builder().default_ttl(Duration::ZERO).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Cache::builder().operation_timeout(Duration::ZERO).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Cache::builder().breaker_threshold(0).build(),
        Err(Error::Config(_))
    ));
    // A well-formed URL to nowhere builds fine: connecting is lazy.
    assert!(Cache::builder().url(refused_url()).build().is_ok());
}

#[tokio::test]
async fn durations_no_deadline_can_hold_are_refused_by_name_not_a_panic() {
    type Setter = fn(cache_core::CacheBuilder, Duration) -> cache_core::CacheBuilder;
    let options: [(&str, Setter); 6] = [
        ("default_ttl", |builder, value| builder.default_ttl(value)),
        ("operation_timeout", |builder, value| {
            builder.operation_timeout(value)
        }),
        ("breaker_cooldown", |builder, value| {
            builder.breaker_cooldown(value)
        }),
        ("lease_time", |builder, value| builder.lease_time(value)),
        ("lease_wait", |builder, value| builder.lease_wait(value)),
        ("negative_ttl", |builder, value| builder.negative_ttl(value)),
    ];
    for (name, set) in options {
        for value in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            match set(Cache::builder(), value).build() {
                Err(Error::Config(message)) => assert!(message.contains(name), "{message}"),
                other => panic!("{name} = {value:?}: {other:?}"),
            }
        }
    }
    // Ten years is still a duration one may mean.
    let decade = Duration::from_secs(10 * 365 * 24 * 3600);
    assert!(Cache::builder()
        .url("mem://")
        .default_ttl(decade)
        .build()
        .is_ok());
}

#[test]
fn no_password_in_a_builder_or_an_error() {
    // The user info, and the query parameters redis-rs reads as credentials
    // (`redis+unix://…?pass=`), or that others do.
    for url in [
        "redis://app:s3cret@127.0.0.1:6379/0",
        "redis+unix:///run/redis.sock?db=1&pass=s3cret",
        "unix:///run/redis.sock?user=app&PASS=s3cret",
        "redis://127.0.0.1?%70assword=s3cret",
    ] {
        let shown = format!("{:?}", Cache::builder().url(url));
        assert!(
            !shown.contains("s3cret") && shown.contains("***"),
            "{shown}"
        );
        let shown = format!("{:?}", Cache::builder().cluster_nodes([url, url]));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    for url in [
        "foo://app:s3cret@host",
        "redis://app:s3cret@host:99999999",
        "foo:///run/redis.sock?pass=s3cret",
        "redis+unix:///run/redis.sock?db=x&pass=s3cret",
        "redis://host:99999999/?password=s3cret",
    ] {
        let error = Cache::builder().url(url).build().unwrap_err();
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let error = Cache::builder().cluster_nodes([url]).build().unwrap_err();
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}

/// A password in a Unix socket URL's query works, and stays out of the log.
#[tokio::test]
async fn a_password_in_a_socket_url_connects_and_is_not_logged() {
    let server = RedisServer::start();
    server.require_password("s3cret");
    let (log, _guard) = CapturedLog::start();
    let cache = Cache::builder()
        .url(format!("{}?pass=s3cret", server.unix_url()))
        .build()
        .unwrap();
    let user = UserRead {
        id: 1,
        name: "one".into(),
        avatar: None,
        birthday: "2000-01-01".into(),
    };
    cache.put("user", &1, &user).await.unwrap();
    assert_eq!(cache.get::<UserRead>("user", &1).await.unwrap(), Some(user));
    let wrong = Cache::builder()
        .url(format!("{}?pass=wr0ng", server.unix_url()))
        .build()
        .unwrap();
    let error = wrong.get::<UserRead>("user", &1).await.unwrap_err();
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains("wr0ng"), "{shown}");
    }
    for line in log.lines() {
        assert!(
            !line.contains("s3cret") && !line.contains("wr0ng"),
            "{line}"
        );
    }
}

#[test]
fn a_redis_cache_outside_a_runtime_is_a_config_error_not_a_panic() {
    assert!(matches!(
        Cache::builder().url("redis://127.0.0.1:1").build(),
        Err(Error::Config(_))
    ));
    assert!(Cache::builder().url("mem://").build().is_ok());
}

/// A link slow enough that connecting and one command take longer than one operation
/// timeout together, though each fits: the first call waits for the connection (made in a
/// task of its own) and its command then has the whole timeout. Made inside the first
/// call's timeout, the connection was cancelled and begun again by every call, and the
/// handle never cached.
#[tokio::test]
async fn a_connection_slower_than_one_timeout_is_made_once_and_then_used() {
    let server = RedisServer::start();
    // Scripts loaded (a first EVALSHA that finds none takes three round trips).
    let warm = UserRepo::new(Cache::builder().url(server.url()).build().unwrap());
    warm.insert(Row::sample(2));
    warm.get_user(2).await.unwrap();
    let proxy = CuttableProxy::start(server.port()).await;
    // Each chunk waits 60 ms each way: a round trip takes 120 ms, connecting (the handshake)
    // and a command at least 240 ms.
    proxy.set_delay(Duration::from_millis(60));
    let repo = UserRepo::new(
        Cache::builder()
            .url(proxy.url())
            .operation_timeout(Duration::from_millis(180))
            .build()
            .unwrap(),
    );
    repo.insert(Row::sample(1));
    for _ in 0..3 {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    }
    let stats = repo.cache.stats();
    assert_eq!(
        (repo.loads(), stats.fills, stats.hits, stats.errors),
        (1, 1, 2, 0),
        "{stats:?}"
    );
    assert_eq!(proxy.connections(), 1, "one connection, made once");
}

/// `Stats::bypassed` counts calls, as documented: each call that did not touch Redis once
/// (a `None` key, the breaker open, an invalidation of its key pending), and nothing else.
/// During an outage the background delivery of a pending invalidation keeps retrying (and
/// the breaker keeps rejecting it): those retries are no calls and count nothing.
#[tokio::test(flavor = "current_thread")]
async fn bypassed_counts_calls_none_keys_included_background_retries_excluded() {
    let mut server = RedisServer::start();
    let repo = repo_at(&server.url(), |builder| {
        builder
            .breaker_threshold(1)
            .breaker_cooldown(Duration::from_secs(60))
    });
    for _ in 0..7 {
        assert!(repo.get_user_maybe(None).await.is_none());
    }
    assert_eq!(repo.get_user_maybe(Some(1)).await.unwrap().id, 1);
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().id, 1);
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().id, 1);
    let stats = repo.cache.stats();
    assert_eq!(
        (stats.bypassed, stats.hits),
        (7, 2),
        "seven `None` keys bypassed, the other calls read Redis: {stats:?}"
    );

    server.stop();
    // The write's invalidation fails: it is kept, blocks reads of user 1, and a background
    // task retries it while the breaker (opened by that one failure) rejects the retries.
    repo.rename(1, "renamed").await.unwrap();
    assert_eq!(repo.cache.stats().pending_invalidations, 1);
    let before = repo.cache.stats();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = repo.cache.stats();
    assert_eq!(idle.pending_invalidations, 1, "still undelivered: {idle:?}");
    assert_eq!(
        idle.bypassed, before.bypassed,
        "no call, no bypass: background retries are not calls ({before:?} → {idle:?})"
    );

    let calls = 8;
    for _ in 0..calls {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = repo.cache.stats();
    assert_eq!(
        after.bypassed - idle.bypassed,
        calls,
        "each call during the outage bypassed once, retries going on: {after:?}"
    );
    assert_eq!(after.pending_invalidations, 1, "{after:?}");
}
