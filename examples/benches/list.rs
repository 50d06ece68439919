//! Issue 23, measured: the example server's list route `GET /api/users?last=…&limit=10` over
//! its ten pages (100 users, a random page each request) with 5 % `PUT /api/users/{id}`
//! (a random user renamed, with that user's token), 64 connections, the repository cache on
//! and the response cache off (and, for comparison, on), side by side in one process: whole
//! pages cached (`LIST_CACHE=pages`, the behaviour before: any update drops every page)
//! against id lists with the rows read in one batch (`LIST_CACHE=ids`: an update drops its
//! row). Prints the throughput and the database queries per request (the repository's own
//! count of the queries it sent, creates and logins before the run left out), on SQLite and,
//! when `TEST_POSTGRES_URL` is set (as `scripts/bench.sh` does), PostgreSQL.
//! Run with `cargo bench -p example-server --bench list` (`BENCH_REQUESTS`, default 20 000;
//! `BENCH_UPDATES_PER_MILLE`, default 50).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::Cache;
use cache_integration_tests::measure::{self, Row};
use cache_integration_tests::RedisServer;
use example_server::repo::ListCache;

mod shared;

use shared::{create_users, fresh_database, log_in_users, random, serve_with, USERS};

const CONCURRENCY: usize = 64;
/// The pages read: `last` 0, 10, … 90 at `limit=10`, every one cacheable.
const PAGES: u64 = 10;
/// Updates per thousand requests, unless `BENCH_UPDATES_PER_MILLE` says otherwise (0: reads
/// only, the hit path of each).
const UPDATES_PER_MILLE: u64 = 50;

/// The configurations: what a list page caches, and whether whole responses are cached in
/// front (the server's default; the comparison asked for is without).
const MODES: [(&str, ListCache, bool); 4] = [
    ("page cache", ListCache::Pages, false),
    ("id list + batch", ListCache::Ids, false),
    ("page cache + response cache", ListCache::Pages, true),
    ("id list + batch + response cache", ListCache::Ids, true),
];

#[tokio::main]
async fn main() {
    let redis = RedisServer::start();
    let total: usize = shared::env_number("BENCH_REQUESTS", 20_000);
    let updates: u64 = shared::env_number("BENCH_UPDATES_PER_MILLE", UPDATES_PER_MILLE);
    let databases = shared::databases();
    let mut markdown = String::new();
    let mut series: Vec<(String, Vec<Row>)> = Vec::new();
    for (database, postgres) in databases {
        let mut rows = Vec::new();
        let mut queries = Vec::new();
        for (mode, list_cache, responses) in MODES {
            let url = fresh_database(postgres).await;
            let cache = Cache::builder()
                .url(redis.url())
                .namespace(format!("list{}{}", series.len(), rows.len()))
                .build()
                .expect("cache");
            let (base, repo) = serve_with(url, cache, responses, list_cache);
            let client = reqwest::Client::new();
            create_users(&client, &base).await;
            let tokens = Arc::new(log_in_users(&client, &base).await);
            let errors = Arc::new(AtomicUsize::new(0));
            let request = {
                let (client, base, errors) = (client.clone(), base.clone(), errors.clone());
                Arc::new(move |task: usize, i: usize| {
                    let (client, errors) = (client.clone(), errors.clone());
                    let draw = random(task, i, 1000);
                    let request = if draw < updates {
                        // Another draw for the user, from a seed no page draw uses.
                        let user = random(task + CONCURRENCY, i, USERS) + 1;
                        let name = format!("user{user}r{i}");
                        client
                            .put(format!("{base}/api/users/{user}"))
                            .bearer_auth(&tokens[user as usize - 1])
                            .json(&serde_json::json!({
                                "name": name, "age": 30, "birthday": "1990-05-17"
                            }))
                    } else {
                        let last = draw % PAGES * 10;
                        client.get(format!("{base}/api/users?last={last}&limit=10"))
                    };
                    async move {
                        let response = request.send().await;
                        if !response.is_ok_and(|response| response.status() == 200) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            };
            // Warm-up: connections, and every page once.
            measure::run(4, 2_000, request.clone()).await;
            let before = repo.database().queries();
            let run = measure::run(CONCURRENCY, total, request).await;
            let sent = repo.database().queries() - before;
            assert_eq!(
                errors.load(Ordering::Relaxed),
                0,
                "every request answered 200"
            );
            queries.push(sent as f64 / total as f64);
            rows.push(Row {
                name: mode.to_owned(),
                run,
            });
        }
        let mut table = format!(
            "\n{database}: GET /api/users?last=…&limit=10 (10 pages, 100 users) with {:.1} % PUT /api/users/{{id}}, {total} requests, {CONCURRENCY} connections, repository cache on\n\n| | req/s | p50 | p99 | database queries per request | ÷ page cache |\n|---|---:|---:|---:|---:|---:|",
            updates as f64 / 10.0
        );
        for (row, queries) in rows.iter().zip(&queries) {
            table.push_str(&format!(
                "\n| {} | {:.0} | {:.2} ms | {:.2} ms | {:.3} | {:.2} |",
                row.name,
                row.run.ops_per_sec,
                row.run.p50.as_secs_f64() * 1e3,
                row.run.p99.as_secs_f64() * 1e3,
                queries,
                row.run.ops_per_sec / rows[0].run.ops_per_sec,
            ));
        }
        table.push('\n');
        markdown.push_str(&table);
        series.push((database.to_owned(), rows));
    }
    let title = format!(
        "GET /api/users with {:.1} % updates: requests per second, page cache vs id list + batch",
        updates as f64 / 10.0
    );
    measure::report("list", &title, &markdown, &series);
}
