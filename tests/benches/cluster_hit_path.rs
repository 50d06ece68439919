//! The hit path on a Redis Cluster beside one redis-server, side by side in one process:
//!
//! * raw redis-rs cluster `HGETALL` into a map, then the struct (the limit a hand-written
//!   hash cache reaches on a cluster: what the ratios are against);
//! * this library's `#[cached_get]` hit on the cluster (one `HMGET` on the entry's node);
//! * the same two against one redis-server, for the price of the cluster itself.
//!
//! The cluster is three primaries with a replica each, started here on free loopback ports
//! (`redis-cli --cluster create`); all nodes share the machine's two cores, so this measures
//! the client side (routing, one connection per node), not a cluster's scale-out. 100 users,
//! hits only, at concurrency 1 and 64, median of 5 rounds with the contenders interleaved in
//! every round. Run with `cargo bench -p cache-integration-tests --bench cluster_hit_path`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cache_core::Cache;
use cache_integration_tests::cluster::RedisCluster;
use cache_integration_tests::measure::users::{id_for, raw_hgetall, Operation, Repo, LOADS, USERS};
use cache_integration_tests::measure::{self, Row};
use cache_integration_tests::RedisServer;

fn cached(repo: Arc<Repo>) -> Arc<Operation> {
    Arc::new(move |task, i| {
        let repo = repo.clone();
        Box::pin(async move {
            std::hint::black_box(repo.get(id_for(task, i)).await);
        })
    })
}

#[tokio::main]
async fn main() {
    let cluster = RedisCluster::start();
    let server = RedisServer::start();
    let on_cluster = Arc::new(Repo {
        cache: Cache::builder()
            .cluster_nodes(cluster.nodes())
            .build()
            .expect("cache"),
    });
    let on_server = Arc::new(Repo {
        cache: Cache::builder().url(server.url()).build().expect("cache"),
    });
    for id in 0..USERS as i64 {
        on_cluster.get(id).await;
        on_server.get(id).await;
    }
    let loads_after_fill = LOADS.load(Ordering::Relaxed);
    let cluster_connection = redis::cluster::ClusterClient::new(cluster.nodes())
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("connect to the cluster");
    let server_connection = redis::Client::open(server.url().as_str())
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let contenders: [(&str, Arc<Operation>); 4] = [
        (
            "cluster: raw HGETALL → map → struct",
            raw_hgetall(cluster_connection),
        ),
        ("cluster: cache-core hit", cached(on_cluster.clone())),
        (
            "one server: raw HGETALL → map → struct",
            raw_hgetall(server_connection),
        ),
        ("one server: cache-core hit", cached(on_server.clone())),
    ];
    let rounds_wanted = measure::round_count();
    let mut markdown = String::new();
    let mut series: Vec<(String, Vec<Row>)> = Vec::new();
    for (concurrency, total) in [(1, 20_000), (64, 200_000)] {
        let rows = measure::interleaved(&contenders, concurrency, total, rounds_wanted).await;
        let title = format!(
            "Hits at concurrency {concurrency} ({total} per round, median of {rounds_wanted} rounds)"
        );
        markdown.push_str(&measure::table(
            &title,
            &rows,
            &["cluster: raw HGETALL → map → struct"],
        ));
        series.push((format!("concurrency {concurrency}"), rows));
    }
    assert_eq!(
        LOADS.load(Ordering::Relaxed),
        loads_after_fill,
        "every measured call was a hit"
    );
    let title = "Hit throughput (ops/s), 2 cores: Redis Cluster (3 primaries + 3 replicas) and one redis-server";
    measure::report("cluster_hit_path", title, &markdown, &series);
}
