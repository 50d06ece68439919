//! What the `metrics` feature costs a hit, side by side in one process against one
//! redis-server: the same cached function twice, one registered before a Prometheus
//! recorder was installed (its handles do nothing: the facade's cost alone) and one after
//! (every hit increments a counter and, on the Redis path, records its latency), for Redis
//! hits and near-cache hits, at concurrency 1 and 64. Hits open no tracing span (misses,
//! fills and invalidations open `debug` ones). Run with
//! `cargo bench -p cache-integration-tests --bench metrics_overhead`.
//!
//! Not measurable in one process: the build without the feature, which also skips the two
//! clock reads of the latency histogram that the "no recorder" rows still pay.

use std::sync::Arc;

use cache_integration_tests::measure::users::{id_for, leaked_repos, Operation, LOADS, USERS};
use cache_integration_tests::measure::{self, round_count, Row};
use cache_integration_tests::RedisServer;

#[tokio::main]
async fn main() {
    let server = RedisServer::start();
    let (repo, near_repo) = leaked_repos(&server.url());
    // `get` registers its metrics now, without a recorder: no-op handles.
    for id in 0..USERS as i64 {
        repo.get(id).await;
        near_repo.get(id).await;
    }
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder");
    for id in 0..USERS as i64 {
        repo.get_measured(id).await;
        near_repo.get_measured(id).await;
    }
    // Until every user is answered from memory by both functions.
    let warm = std::time::Instant::now();
    loop {
        let before = near_repo.cache.stats().near_hits;
        for id in 0..USERS as i64 {
            near_repo.get(id).await;
            near_repo.get_measured(id).await;
        }
        if near_repo.cache.stats().near_hits - before == 2 * USERS as u64 {
            break;
        }
        assert!(warm.elapsed().as_secs() < 10, "the near cache did not warm");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let loads = LOADS.load(std::sync::atomic::Ordering::Relaxed);

    let operation = |near: bool, measured: bool| -> Arc<Operation> {
        let repo = if near { near_repo } else { repo };
        Arc::new(move |task, i| {
            Box::pin(async move {
                let id = id_for(task, i);
                if measured {
                    std::hint::black_box(repo.get_measured(id).await);
                } else {
                    std::hint::black_box(repo.get(id).await);
                }
            })
        })
    };
    let contenders: Vec<(&str, Arc<Operation>)> = vec![
        ("Redis hit, no recorder", operation(false, false)),
        ("Redis hit, Prometheus recorder", operation(false, true)),
        ("near hit, no recorder", operation(true, false)),
        ("near hit, Prometheus recorder", operation(true, true)),
    ];
    let mut markdown = String::new();
    let mut series: Vec<(String, Vec<Row>)> = Vec::new();
    for (concurrency, total) in [(1, 20_000), (64, 200_000)] {
        let rows = measure::interleaved(&contenders, concurrency, total, round_count()).await;
        let title = measure::hits_title(concurrency, total);
        markdown.push_str(&measure::table(
            &title,
            &rows,
            &["Redis hit, no recorder", "near hit, no recorder"],
        ));
        series.push((format!("concurrency {concurrency}"), rows));
    }
    assert_eq!(
        LOADS.load(std::sync::atomic::Ordering::Relaxed),
        loads,
        "every measured call was a hit"
    );
    let rendered = recorder.render();
    assert!(
        rendered.contains("cache_hits_total{prefix=\"user\"}"),
        "the recorder saw the hits:\n{rendered}"
    );
    measure::report(
        "metrics_overhead",
        "Hit throughput (ops/s) with and without a metrics recorder",
        &markdown,
        &series,
    );
}
