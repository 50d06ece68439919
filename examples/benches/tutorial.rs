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
use example_server::app;

/// The tests' helpers: the app's state, fresh databases, the user JSON.
#[path = "../tests/common/mod.rs"]
mod common;

const USERS: u64 = 100;

/// The configurations measured, by name.
const OFF: &str = "cache off";
const ON: &str = "cache on";
const NEAR: &str = "cache on + near cache";
const MODES: [&str; 3] = [OFF, ON, NEAR];

/// Starts the server on its own two-thread runtime; answers its base URL.
fn serve(database_url: String, cache: Cache) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let state = common::state(&database_url, cache).await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            sender
                .send(format!(
                    "http://{}",
                    listener.local_addr().expect("address")
                ))
                .expect("send");
            axum::serve(listener, app(state)).await.expect("serve");
        });
    });
    receiver.recv().expect("the server started")
}

/// xorshift64*, seeded per task: the same random ids for every configuration.
fn random_id(task: usize, i: usize) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ ((task as u64) << 32 | i as u64);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D) % USERS + 1
}

#[tokio::main]
async fn main() {
    let redis = RedisServer::start();
    let total_requests: Vec<usize> = std::env::var("BENCH_REQUESTS")
        .ok()
        .map(|text| text.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![5_000, 50_000]);
    let mut databases = vec![("SQLite", false)];
    if std::env::var_os("TEST_POSTGRES_URL").is_some() {
        databases.push(("PostgreSQL", true));
    } else {
        println!("TEST_POSTGRES_URL not set: PostgreSQL skipped (scripts/bench.sh sets it)");
    }
    let mut markdown = String::new();
    let mut series: Vec<(String, Vec<Row>)> = Vec::new();
    for (database, postgres) in databases {
        let mut rows = Vec::new();
        for mode in MODES {
            let url = if postgres {
                common::postgres_url().await
            } else {
                common::sqlite_url()
            };
            let builder = Cache::builder()
                .url(redis.url())
                .namespace(format!("bench{}", rows.len()));
            let cache = match mode {
                OFF => Cache::disabled(),
                ON => builder.build().expect("cache"),
                _ => builder.near_cache(10_000).build().expect("cache"),
            };
            let base = serve(url, cache);
            let client = reqwest::Client::new();
            for n in 1..=USERS {
                let user = common::new_user(
                    &format!("user{n}"),
                    &format!("user{n}@example.com"),
                    "secret1",
                );
                let status = client
                    .post(format!("{base}/api/users"))
                    .json(&user)
                    .send()
                    .await
                    .expect("create")
                    .status();
                assert_eq!(status, 201);
            }
            let errors = Arc::new(AtomicUsize::new(0));
            let request = {
                let (client, base, errors) = (client.clone(), base.clone(), errors.clone());
                Arc::new(move |task: usize, i: usize| {
                    let (client, base, errors) = (client.clone(), base.clone(), errors.clone());
                    async move {
                        let response = client
                            .get(format!("{base}/api/users/{}", random_id(task, i)))
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
