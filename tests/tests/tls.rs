//! `rediss://`: a redis-server, and a Redis Cluster, that speak only TLS, with certificates
//! of a private CA.

use std::time::Duration;

use cache_core::Cache;
use cache_integration_tests::cluster::RedisCluster;
use cache_integration_tests::fixtures::{Row, UserRepo};
use cache_integration_tests::RedisServer;

#[tokio::test]
async fn over_tls_with_a_private_ca_reads_fill_and_invalidate() {
    let server = RedisServer::start_tls();
    let cache = Cache::builder()
        .url(server.tls_url())
        .tls_ca_pem(server.ca_pem())
        .build()
        .unwrap();
    let repo = UserRepo::new(cache);
    repo.insert(Row::sample(1));
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    assert_eq!(repo.loads(), 1, "the second read was a hit, over TLS");
    repo.rename(1, "renamed").await.unwrap();
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    let stats = repo.cache.stats();
    assert_eq!(
        (stats.errors, stats.pending_invalidations),
        (0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_certificate_nobody_trusts_is_an_outage_not_a_failure() {
    let server = RedisServer::start_tls();
    // The system's roots do not know the test CA: the handshake fails, the calls answer.
    let cache = Cache::builder()
        .url(server.tls_url())
        .operation_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let repo = UserRepo::new(cache);
    repo.insert(Row::sample(1));
    for _ in 0..3 {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    }
    assert_eq!(repo.loads(), 3);
    assert!(repo.cache.stats().errors > 0);
    // Plain text to a TLS port is no better, and no worse.
    let plain = Cache::builder()
        .url(format!("redis://127.0.0.1:{}", server.port()))
        .operation_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let repo = UserRepo::new(plain);
    repo.insert(Row::sample(1));
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
}

#[tokio::test]
async fn a_server_that_asks_for_client_certificates_gets_ours() {
    let server = RedisServer::start_mutual_tls();
    let (certificate, key) = server.client_identity();
    let cache = Cache::builder()
        .url(server.tls_url())
        .tls_ca_pem(server.ca_pem())
        .tls_client_identity(certificate, key)
        .build()
        .unwrap();
    let repo = UserRepo::new(cache);
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    repo.get_user(1).await.unwrap();
    assert_eq!(repo.loads(), 1, "a hit: the server took our certificate");

    // Without a certificate, the server refuses the handshake: an outage, calls answer.
    let anonymous = Cache::builder()
        .url(server.tls_url())
        .tls_ca_pem(server.ca_pem())
        .operation_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let repo = UserRepo::new(anonymous);
    repo.insert(Row::sample(1));
    for _ in 0..2 {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    }
    assert_eq!(repo.loads(), 2);
    assert!(repo.cache.stats().errors > 0);
}

/// A cluster whose nodes speak only TLS (to clients, to each other, to their replicas):
/// `rediss://` node URLs with the private CA; every slot's node is reached over TLS, tags
/// included, and a near cache's listener tracks every primary over TLS. A handle without
/// the CA sees an outage, and its calls answer.
#[tokio::test]
async fn a_cluster_over_tls_with_a_private_ca() {
    let cluster = RedisCluster::start_tls();
    assert!(cluster.nodes()[0].starts_with("rediss://"));
    let cache = Cache::builder()
        .cluster_nodes(cluster.nodes())
        .tls_ca_pem(cluster.ca_pem())
        .namespace("tls")
        .build()
        .unwrap();
    let repo = UserRepo::new(cache.clone());
    for id in 1..=10 {
        repo.insert(Row::sample(id));
        repo.get_user(id).await.unwrap();
    }
    for id in 1..=10 {
        assert_eq!(
            repo.get_user(id).await.unwrap().unwrap().name,
            format!("user{id}")
        );
    }
    assert_eq!(repo.loads(), 10, "hits on every node, over TLS");
    repo.rename(4, "renamed").await.unwrap();
    assert_eq!(repo.get_user(4).await.unwrap().unwrap().name, "renamed");
    cache.invalidate_tag("anything").await.unwrap();
    let stats = cache.stats();
    assert_eq!(
        (stats.errors, stats.pending_invalidations),
        (0, 0),
        "{stats:?}"
    );

    // A near cache's listener reaches every primary over TLS as well.
    let near = UserRepo::new(
        Cache::builder()
            .cluster_nodes(cluster.nodes())
            .tls_ca_pem(cluster.ca_pem())
            .namespace("tls")
            .near_cache(100)
            .build()
            .unwrap(),
    );
    for id in 1..=10 {
        near.insert(Row::sample(id));
    }
    near.insert(Row {
        name: "renamed".into(),
        ..Row::sample(4)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let before = near.cache.stats().near_hits;
        for id in 1..=10 {
            near.get_user(id).await.unwrap();
        }
        if near.cache.stats().near_hits - before == 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            near.cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = near.cache.stats().near_invalidations;
    repo.rename(7, "again").await.unwrap();
    near.insert(Row {
        name: "again".into(),
        ..Row::sample(7)
    });
    while near.cache.stats().near_invalidations == received {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(near.get_user(7).await.unwrap().unwrap().name, "again");

    let untrusting = Cache::builder()
        .cluster_nodes(cluster.nodes())
        .operation_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let repo = UserRepo::new(untrusting);
    repo.insert(Row::sample(1));
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    assert!(repo.cache.stats().errors > 0);
}
