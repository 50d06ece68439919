//! The response cache against the repository cache alone and no cache: the example server's
//! `GET /api/users/{id}` (100 users, random ids) and a list page (`GET /api/users?limit=10`
//! at one of the first ten offsets, random), 64 connections, on PostgreSQL when
//! `TEST_POSTGRES_URL` is set (as `scripts/bench.sh` does), else SQLite. The server runs in
//! this process on its own two-thread runtime, the client (reqwest, keep-alive) on another,
//! against a redis-server started here. Run with
//! `cargo bench -p example-server --bench responses`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::Cache;
use cache_integration_tests::measure::{self, Row};
use cache_integration_tests::RedisServer;

mod shared;

use shared::{create_users, fresh_database, random, serve, USERS};

const CONCURRENCY: usize = 64;

/// The configurations measured: the cache handle, and whether responses are cached.
const NONE: &str = "no cache";
const REPOSITORY: &str = "repository cache";
const RESPONSES: &str = "response cache";
const REPOSITORY_NEAR: &str = "repository cache + near cache";
const RESPONSES_NEAR: &str = "response cache + near cache";
const MODES: [&str; 5] = [NONE, REPOSITORY, RESPONSES, REPOSITORY_NEAR, RESPONSES_NEAR];

#[tokio::main]
async fn main() {
    let redis = RedisServer::start();
    let total: usize = shared::env_number("BENCH_REQUESTS", 20_000);
    let postgres = std::env::var_os("TEST_POSTGRES_URL").is_some();
    let database = if postgres { "PostgreSQL" } else { "SQLite" };
    let mut rows = Vec::new();
    for (index, mode) in MODES.into_iter().enumerate() {
        let url = fresh_database(postgres).await;
        let builder = Cache::builder()
            .url(redis.url())
            .namespace(format!("responses{index}"));
        let cache = match mode {
            NONE => Cache::disabled(),
            REPOSITORY | RESPONSES => builder.build().expect("cache"),
            _ => builder.near_cache(10_000).build().expect("cache"),
        };
        let base = serve(url, cache, mode == RESPONSES || mode == RESPONSES_NEAR);
        let client = reqwest::Client::new();
        create_users(&client, &base).await;
        for (route, path) in [
            ("GET /api/users/{id}", None),
            ("GET /api/users?limit=10&last=…", Some(())),
        ] {
            let errors = Arc::new(AtomicUsize::new(0));
            let request = {
                let (client, base, errors) = (client.clone(), base.clone(), errors.clone());
                Arc::new(move |task: usize, i: usize| {
                    let (client, base, errors) = (client.clone(), base.clone(), errors.clone());
                    let uri = match path {
                        None => format!("{base}/api/users/{}", random(task, i, USERS) + 1),
                        Some(()) => format!(
                            "{base}/api/users?limit=10&last={}",
                            random(task, i, 10) * 10
                        ),
                    };
                    async move {
                        let response = client.get(uri).send().await;
                        if !response.is_ok_and(|response| response.status() == 200) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            };
            // Warm-up: connections, and every user and page once (for the near cache, once
            // more after the pushes of its own fills have arrived).
            measure::run(4, 2_000, request.clone()).await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            measure::run(4, 2_000, request.clone()).await;
            let run = measure::run(CONCURRENCY, total, request).await;
            assert_eq!(
                errors.load(Ordering::Relaxed),
                0,
                "every request answered 200"
            );
            rows.push(Row {
                name: format!("{route}, {mode}"),
                run,
            });
        }
    }
    let mut table = format!(
        "\n{database}: {total} requests per row, {CONCURRENCY} connections, 100 users, random ids and pages\n\n| | req/s | p50 | p99 | ÷ no cache | ÷ repository cache |\n|---|---:|---:|---:|---:|---:|"
    );
    for row in &rows {
        let ratio = |mode: &str| {
            let (route, _) = row.name.split_once(", ").expect("route, mode");
            let name = format!("{route}, {mode}");
            rows.iter()
                .find(|other| other.name == name)
                .map_or(1.0, |base| row.run.ops_per_sec / base.run.ops_per_sec)
        };
        table.push_str(&format!(
            "\n| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.2} |",
            row.name,
            row.run.ops_per_sec,
            row.run.p50.as_secs_f64() * 1e3,
            row.run.p99.as_secs_f64() * 1e3,
            ratio(NONE),
            ratio(REPOSITORY),
        ));
    }
    table.push('\n');
    let title =
        "Example server: requests per second with the response cache, the repository cache, none";
    measure::report("responses", title, &table, &[(database.to_owned(), rows)]);
}
