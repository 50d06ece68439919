//! The tutorial's benchmark, reproduced: 100 users, `GET /api/users/{id}` with random valid
//! ids, 5 000 and 50 000 requests, one at a time and 64 at once, with the cache off, on
//! (Redis), and on with a near cache (`near_cache`), on SQLite and (when `TEST_POSTGRES_URL`
//! is set, as `scripts/bench.sh` does) PostgreSQL.
//! The server runs in this process on its own runtime, the client (reqwest, keep-alive) on
//! another, against a redis-server started here: all on the same cores, as in the tutorial.
//! Run with `bash scripts/bench.sh`, or `cargo bench -p example-server --bench tutorial`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::Cache;
use cache_integration_tests::measure::{self, Row};
use cache_integration_tests::RedisServer;

mod shared;

use shared::{create_users, fresh_database, random, serve, USERS};

/// The configurations measured, by name.
const OFF: &str = "cache off";
const ON: &str = "cache on";
const NEAR: &str = "cache on + near cache";
const MODES: [&str; 3] = [OFF, ON, NEAR];

#[tokio::main]
async fn main() {
    let redis = RedisServer::start();
    let total_requests: Vec<usize> = std::env::var("BENCH_REQUESTS")
        .ok()
        .map(|text| text.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![5_000, 50_000]);
    let databases = shared::databases();
    let mut markdown = String::new();
    let mut series: Vec<(String, Vec<Row>)> = Vec::new();
    for (database, postgres) in databases {
        let mut rows = Vec::new();
        for mode in MODES {
            let url = fresh_database(postgres).await;
            let builder = Cache::builder()
                .url(redis.url())
                .namespace(format!("bench{}", rows.len()));
            let cache = match mode {
                OFF => Cache::disabled(),
                ON => builder.build().expect("cache"),
                _ => builder.near_cache(10_000).build().expect("cache"),
            };
            let base = serve(url, cache, false);
            let client = reqwest::Client::new();
            create_users(&client, &base).await;
            let errors = Arc::new(AtomicUsize::new(0));
            let request = {
                let (client, base, errors) = (client.clone(), base.clone(), errors.clone());
                Arc::new(move |task: usize, i: usize| {
                    let (client, base, errors) = (client.clone(), base.clone(), errors.clone());
                    async move {
                        let response = client
                            .get(format!("{base}/api/users/{}", random(task, i, USERS) + 1))
                            .send()
                            .await;
                        if !response.is_ok_and(|response| response.status() == 200) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            };
            // Warm-up: connections, and for the cache every user once (for the near cache,
            // once more after the pushes of its own fills have arrived).
            measure::run(4, 2_000, request.clone()).await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            measure::run(4, 2_000, request.clone()).await;
            for &total in &total_requests {
                for concurrency in [1, 64] {
                    let run = measure::run(concurrency, total, request.clone()).await;
                    rows.push(Row {
                        name: format!("{mode}, {total} requests, concurrency {concurrency}"),
                        run,
                    });
                }
            }
            assert_eq!(
                errors.load(Ordering::Relaxed),
                0,
                "every request answered 200"
            );
        }
        let mut table = format!("\n{database}: GET /api/users/{{id}}, 100 users, random ids\n\n| | req/s | p50 | p99 | ÷ cache off |\n|---|---:|---:|---:|---:|");
        for row in &rows {
            let off_name = MODES
                .iter()
                .rev()
                .fold(row.name.clone(), |name, mode| name.replace(mode, OFF));
            let off = rows
                .iter()
                .find(|other| other.name == off_name)
                .map_or(1.0, |off| row.run.ops_per_sec / off.run.ops_per_sec);
            table.push_str(&format!(
                "\n| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} |",
                row.name,
                row.run.ops_per_sec,
                row.run.p50.as_secs_f64() * 1e3,
                row.run.p99.as_secs_f64() * 1e3,
                off
            ));
        }
        table.push('\n');
        markdown.push_str(&table);
        series.push((database.to_owned(), rows));
    }
    let title = "GET /api/users/{id}: requests per second, cache off, on, on + near cache";
    measure::report("tutorial", title, &markdown, &series);
}
