//! What the example server's benchmarks share: the server on a runtime of its own, its
//! users, and the random draws every configuration repeats.

#![allow(dead_code, unreachable_pub)] // each benchmark uses its own part; `pub` for them

use cache_core::Cache;
use example_server::app_with;
use example_server::repo::{ListCache, UserRepo};

/// The tests' helpers: the app's state, fresh databases, the user JSON.
#[path = "../../tests/common/mod.rs"]
pub mod common;

/// How many users the benchmarks create and read.
pub const USERS: u64 = 100;

/// Starts the server on its own two-thread runtime (with or without the response cache);
/// answers its base URL.
pub fn serve(database_url: String, cache: Cache, responses: bool) -> String {
    serve_with(database_url, cache, responses, ListCache::default()).0
}

/// The same, caching list pages as `list_cache` says; answers its base URL and its
/// repository (for the database's query count).
pub fn serve_with(
    database_url: String,
    cache: Cache,
    responses: bool,
    list_cache: ListCache,
) -> (String, UserRepo) {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let state = common::state_with(&database_url, cache, list_cache).await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            sender
                .send((
                    format!("http://{}", listener.local_addr().expect("address")),
                    state.repo.clone(),
                ))
                .expect("send");
            axum::serve(listener, app_with(state, responses))
                .await
                .expect("serve");
        });
    });
    receiver.recv().expect("the server started")
}

/// A fresh database: in the PostgreSQL cluster of `TEST_POSTGRES_URL`, or an SQLite file.
pub async fn fresh_database(postgres: bool) -> String {
    if postgres {
        common::postgres_url().await
    } else {
        common::sqlite_url()
    }
}

/// Creates the [`USERS`] users through the API.
pub async fn create_users(client: &reqwest::Client, base: &str) {
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
}

/// xorshift64*, seeded per task and call, below `below`: the same draws for every
/// configuration.
pub fn random(task: usize, i: usize, below: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ ((task as u64) << 32 | i as u64);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
}

/// Logs each of the [`USERS`] users in; answers their access tokens, user `n` at `n - 1`.
pub async fn log_in_users(client: &reqwest::Client, base: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for n in 1..=USERS {
        let form = format!("username=user{n}%40example.com&password=secret1");
        let response = client
            .post(format!("{base}/api/auth/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("token pair");
        tokens.push(body["access_token"].as_str().expect("a token").to_owned());
    }
    tokens
}

/// The databases to run on: SQLite, and PostgreSQL when `TEST_POSTGRES_URL` is set (as
/// `scripts/bench.sh` sets it), each with whether it is PostgreSQL.
#[allow(dead_code)] // not every benchmark runs on both
pub fn databases() -> Vec<(&'static str, bool)> {
    let mut databases = vec![("SQLite", false)];
    if std::env::var_os("TEST_POSTGRES_URL").is_some() {
        databases.push(("PostgreSQL", true));
    } else {
        println!("TEST_POSTGRES_URL not set: PostgreSQL skipped (scripts/bench.sh sets it)");
    }
    databases
}

/// The number in the environment variable `name`, or `default`.
#[allow(dead_code)] // not every benchmark reads one
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}
