//! A cache built from a connection the application already has (`CacheBuilder::redis`):
//! a `redis::Client`, a `MultiplexedConnection`, a `ConnectionManager`, a deadpool-redis
//! `Pool`, and on a cluster a `ClusterClient` or `ClusterConnection`. Each caches with one
//! command per hit (no pool checkout per call), and those that can reconnect come back after
//! Redis restarts.

use std::time::Duration;

use cache_core::{Cache, Error, RedisSource};
use cache_integration_tests::cluster::RedisCluster;
use cache_integration_tests::fixtures::{Row, UserRepo};
use cache_integration_tests::{unique_namespace, RedisServer};

/// Every source of one server, made fresh (each names what it is, for failures).
async fn sources(server: &RedisServer) -> Vec<(&'static str, RedisSource)> {
    let client = redis::Client::open(server.url()).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let manager = redis::aio::ConnectionManager::new(client.clone())
        .await
        .unwrap();
    let pool = deadpool_redis::Config::from_url(server.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    vec![
        ("client", client.into()),
        ("multiplexed connection", connection.into()),
        ("connection manager", manager.into()),
        ("deadpool pool", pool.into()),
    ]
}

fn repo(source: RedisSource) -> UserRepo {
    let cache = Cache::builder()
        .redis(source)
        .breaker_cooldown(Duration::from_millis(100))
        .build()
        .unwrap();
    let repo = UserRepo::new(cache);
    for id in 0..3 {
        repo.insert(Row::sample(id));
    }
    repo
}

#[tokio::test]
async fn every_source_caches_with_one_command_per_hit() {
    let server = RedisServer::start();
    for (name, source) in sources(&server).await {
        redis::cmd("FLUSHALL")
            .query::<()>(&mut server.connection())
            .unwrap();
        let repo = repo(source);
        // Warm up: connect and load the scripts.
        repo.get_user(0).await.unwrap();
        repo.rename(0, "warm").await.unwrap();
        repo.get_user(1).await.unwrap();
        let loads = repo.loads();

        let log = server.monitor();
        log.take_client_commands();
        for _ in 0..20 {
            assert_eq!(
                repo.get_user(1).await.unwrap().unwrap().name,
                "user1",
                "{name}"
            );
        }
        assert_eq!(repo.loads(), loads, "{name}: every read was a hit");
        assert_eq!(
            log.take_client_commands(),
            vec!["hmget".to_owned(); 20],
            "{name}: 20 hits are 20 HMGETs, no checkout (UNWATCH, PING)"
        );

        repo.rename(1, "renamed").await.unwrap();
        assert_eq!(
            repo.get_user(1).await.unwrap().unwrap().name,
            "renamed",
            "{name}"
        );
        assert_eq!(repo.cache.stats().errors, 0, "{name}");
    }
}

#[tokio::test]
async fn reconnecting_sources_serve_again_after_redis_restarts() {
    let mut server = RedisServer::start();
    let repos: Vec<(&str, UserRepo)> = sources(&server)
        .await
        .into_iter()
        .filter(|(name, _)| *name != "multiplexed connection")
        .map(|(name, source)| (name, repo(source)))
        .collect();
    for (_, repo) in &repos {
        repo.get_user(1).await.unwrap();
    }
    server.restart();
    for (name, repo) in &repos {
        // The first calls may meet the dead connection (an error, so a load); within a few
        // breaker cool-downs the source has reconnected and the entry is cached again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert_eq!(
                repo.get_user(1).await.unwrap().unwrap().name,
                "user1",
                "{name}"
            );
            let before = repo.loads();
            repo.get_user(1).await.unwrap();
            if repo.loads() == before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: never a hit again after the restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stored: Option<String> = redis::cmd("HGET")
            .arg("user:1")
            .arg("name")
            .query(&mut server.connection())
            .unwrap();
        assert_eq!(
            stored.as_deref(),
            Some("user1"),
            "{name} filled the new server"
        );
    }
}

#[tokio::test]
async fn a_given_connection_that_broke_fails_open() {
    let mut server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let repo = repo(connection.into());
    repo.get_user(1).await.unwrap();
    server.stop();
    for _ in 0..5 {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    }
    repo.rename(1, "while down").await.unwrap();
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "while down");
    assert!(repo.cache.stats().errors > 0);
}

#[tokio::test]
async fn the_near_cache_needs_a_client() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let cache = Cache::builder()
        .redis(client)
        .near_cache(100)
        .build()
        .unwrap();
    let repo = UserRepo::new(cache);
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    // The listener proves tracking before memory serves: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while repo.cache.stats().near_hits == 0 {
        assert!(std::time::Instant::now() < deadline, "no near hit");
        repo.get_user(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for (name, source) in sources(&server).await {
        let built = Cache::builder().redis(source).near_cache(100).build();
        match (name, built) {
            ("client", built) => assert!(built.is_ok()),
            (_, Err(Error::Config(message))) => {
                assert!(message.contains("redis::Client"), "{name}: {message}")
            }
            (_, other) => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn cluster_sources_cache_and_invalidate() {
    let cluster = RedisCluster::shared();
    let client = redis::cluster::ClusterClient::new(cluster.nodes()).unwrap();
    let connection = client.get_async_connection().await.unwrap();
    let sources: Vec<(&str, RedisSource)> = vec![
        ("cluster client", client.into()),
        ("cluster connection", connection.into()),
    ];
    for (name, source) in sources {
        let cache = Cache::builder()
            .redis(source)
            .namespace(unique_namespace("sources"))
            .build()
            .unwrap();
        let repo = UserRepo::new(cache);
        for id in 0..20 {
            repo.insert(Row::sample(id));
        }
        for id in 0..20 {
            repo.get_user(id).await.unwrap();
        }
        for id in 0..20 {
            repo.get_user(id).await.unwrap();
        }
        assert_eq!(
            repo.loads(),
            20,
            "{name}: the second round hit, in every slot"
        );
        for id in 0..20 {
            repo.rename(id, "renamed").await.unwrap();
        }
        for id in 0..20 {
            assert_eq!(
                repo.get_user(id).await.unwrap().unwrap().name,
                "renamed",
                "{name}"
            );
        }
        assert_eq!(repo.cache.stats().errors, 0, "{name}");
    }
}
