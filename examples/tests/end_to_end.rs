//! The running server (a real socket, a real HTTP client) over a real redis-server, on SQLite
//! and on PostgreSQL. Each of the tutorial's seven cache bugs has a regression test here.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::Cache;
use cache_integration_tests::{RedisServer, SilentListener};
use example_server::repo::{ListCache, Page};
use example_server::{app, AppState};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The server on a free loopback port, and a client for it.
struct Running {
    base: String,
    client: reqwest::Client,
    state: AppState,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Running {
    async fn start(database_url: &str, cache: Cache) -> Running {
        Running::start_with(database_url, cache, ListCache::Ids).await
    }

    /// The server caching list pages as `list_cache` says (`LIST_CACHE`).
    async fn start_with(database_url: &str, cache: Cache, list_cache: ListCache) -> Running {
        let state = common::state_with(database_url, cache, list_cache).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Running {
            base,
            client: reqwest::Client::new(),
            state,
            server,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> StatusCode {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().status()
    }

    async fn create(&self, name: &str, email: &str, password: &str) -> i64 {
        let response = self
            .client
            .post(format!("{}/api/users", self.base))
            .json(&common::new_user(name, email, password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Option<String>) {
        let body = format!(
            "username={}&password={}",
            common::urlencode(email),
            common::urlencode(password)
        );
        let response = self
            .client
            .post(format!("{}/api/auth/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body["access_token"].as_str().map(str::to_owned))
    }

    async fn token(&self, email: &str, password: &str) -> String {
        self.login(email, password).await.1.expect("logged in")
    }

    /// `DELETE /api/me` with `token`: the account is gone.
    async fn delete_me(&self, token: &str) {
        assert_eq!(
            self.send(reqwest::Method::DELETE, "/api/me", Some(token), Value::Null)
                .await,
            StatusCode::NO_CONTENT
        );
    }

    /// A `GET` with headers, answering the status, the headers and the body.
    async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    fn stats(&self) -> cache_core::Stats {
        self.state.repo.cache().stats()
    }
}

fn redis_cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .url(server.url())
        .breaker_cooldown(Duration::from_millis(100))
        .build()
        .unwrap()
}

macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $test() {
                super::$test(&super::common::sqlite_url()).await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $test() {
                super::$test(&super::common::postgres_url().await).await;
            })*
        }
    };
}

/// The example server as `REDIS_CLUSTER_NODES` configures it, on the shared Redis Cluster:
/// the password change (bug 3, a tag across slots: the login entry is keyed by email) and
/// reads racing updates (bug 6).
#[tokio::test]
async fn on_a_redis_cluster_the_tutorial_bugs_stay_fixed() {
    let cluster = cache_integration_tests::cluster::RedisCluster::shared();
    // The variables an operator sets, read as `main` reads the environment.
    let namespace = cache_integration_tests::unique_namespace("example");
    let variables = [
        ("REDIS_CLUSTER_NODES", cluster.nodes_variable()),
        ("CACHE_NAMESPACE", namespace),
    ];
    let config = example_server::config::Config::from_vars(|name| {
        variables
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| value.clone())
    })
    .unwrap();
    assert!(config.cache_location().starts_with("cluster "));
    let database_url = common::sqlite_url();
    let server = Running::start(&database_url, config.cache().unwrap()).await;
    let (id, token) = only_the_new_password_logs_in(&server).await;
    let path = format!("/api/users/{id}");
    assert_eq!(server.get(&path).await.1["name"], "carol");
    for round in 0..5 {
        let name = format!("carol{round}");
        let status = server
            .send(
                reqwest::Method::PUT,
                &path,
                Some(&token),
                json!({"name": name, "age": 30, "birthday": "1990-05-17"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.get(&path).await.1["name"], name.as_str());
    }
    let stats = server.stats();
    assert!(stats.hits > 0, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
}

on_both_databases!(
    bug_1_redis_going_down_and_coming_back_breaks_nothing_and_serves_nothing_stale,
    bug_2_a_user_with_a_null_avatar_is_cached,
    bug_3_after_a_password_change_only_the_new_password_logs_in,
    bug_4_an_update_without_avatar_succeeds_and_is_seen,
    bug_5_list_pages_are_exact_and_follow_every_write,
    bug_5_with_whole_pages_cached_too,
    bug_6_no_read_after_an_update_returns_the_old_row,
    cache_mode_off_serves_the_same_api_without_the_cache,
    responses_are_cached_and_every_write_is_seen_by_the_next_get,
    responses_are_not_poisoned_by_other_spellings_of_a_request,
    a_profile_update_keeps_the_id_lists_and_no_page_shows_the_old_row,
    rows_changed_after_the_id_list_was_read_are_never_served_old,
    pages_emptied_by_deletes_and_pages_past_the_end,
    the_list_json_is_the_same_whatever_caches_it,
    list_reads_racing_updates_never_show_an_older_row,
);

async fn bug_1_redis_going_down_and_coming_back_breaks_nothing_and_serves_nothing_stale(
    database_url: &str,
) {
    let mut redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let id = server.create("alice", "alice@example.com", "secret1").await;
    let token = server.token("alice@example.com", "secret1").await;
    assert_eq!(
        server.get(&format!("/api/users/{id}")).await.1["name"],
        "alice"
    );
    assert_eq!(server.get("/api/users").await.0, StatusCode::OK);

    // Redis goes down (its data saved, so a stale entry would come back with it).
    redis.stop_keeping_data();
    assert_eq!(
        server.get("/api/users").await.0,
        StatusCode::OK,
        "list without Redis"
    );
    assert_eq!(
        server.get(&format!("/api/users/{id}")).await.0,
        StatusCode::OK,
        "get without Redis"
    );
    assert_eq!(
        server.login("alice@example.com", "secret1").await.0,
        StatusCode::OK,
        "login without Redis"
    );
    let update = json!({"name": "alice2", "age": 31, "birthday": "1990-05-17"});
    assert_eq!(
        server
            .send(reqwest::Method::PUT, "/api/me", Some(&token), update)
            .await,
        StatusCode::OK
    );
    let password = json!({"password": "secret2"});
    assert_eq!(
        server
            .send(
                reqwest::Method::PUT,
                "/api/me/password",
                Some(&token),
                password
            )
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get(&format!("/api/users/{id}")).await.1["name"],
        "alice2"
    );
    assert!(
        server.stats().pending_invalidations > 0,
        "{:?}",
        server.stats()
    );

    // Redis comes back with the old entries; none of them is served.
    redis.start_again();
    for _ in 0..20 {
        assert_eq!(
            server.get(&format!("/api/users/{id}")).await.1["name"],
            "alice2"
        );
        assert_eq!(
            server.login("alice@example.com", "secret1").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            server.login("alice@example.com", "secret2").await.0,
            StatusCode::OK
        );
        let list = server.get("/api/users").await.1;
        assert_eq!(list[0]["name"], "alice2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.stats().pending_invalidations,
        0,
        "delivered after the restart"
    );
    let hits_before = server.stats().hits;
    server.get(&format!("/api/users/{id}")).await;
    server.get(&format!("/api/users/{id}")).await;
    assert!(
        server.stats().hits > hits_before,
        "and the cache is used again"
    );
}

async fn bug_2_a_user_with_a_null_avatar_is_cached(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let id = server.create("bob", "bob@example.com", "secret1").await;
    for _ in 0..3 {
        let (status, body) = server.get(&format!("/api/users/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["avatar"], Value::Null);
    }
    assert_eq!(server.stats().hits, 2, "{:?}", server.stats());
    let raw: std::collections::HashMap<String, String> = cache_core::redis::cmd("HGETALL")
        .arg(format!("user:{id}"))
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(raw.get("name").map(String::as_str), Some("bob"));
    assert_eq!(
        raw.get("__meta").map(String::as_str),
        Some("by: null:avatar")
    );
}

async fn bug_3_after_a_password_change_only_the_new_password_logs_in(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    only_the_new_password_logs_in(&server).await;
}

/// Carol logs in (her login entry, keyed by email, is cached under the tag of her id),
/// changes her password, and from then on only the new one logs in. Answers her id and a
/// token.
async fn only_the_new_password_logs_in(server: &Running) -> (i64, String) {
    let id = server.create("carol", "carol@example.com", "secret1").await;
    let token = server.token("carol@example.com", "secret1").await;
    assert_eq!(
        server.login("carol@example.com", "secret1").await.0,
        StatusCode::OK,
        "the login entry is cached"
    );
    let path = format!("/api/users/{id}/password");
    let status = server
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&token),
            json!({"password": "secret2"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.login("carol@example.com", "secret1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.login("carol@example.com", "secret2").await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.login("carol@example.com", "secret1").await.0,
        StatusCode::UNAUTHORIZED
    );
    (id, token)
}

async fn bug_4_an_update_without_avatar_succeeds_and_is_seen(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let id = server.create("dave", "dave@example.com", "secret1").await;
    let token = server.token("dave@example.com", "secret1").await;
    let path = format!("/api/users/{id}");
    let with_avatar = json!({"name": "dave", "avatar": "https://a.example/d.png", "age": 30, "birthday": "1990-05-17"});
    assert_eq!(
        server
            .send(reqwest::Method::PUT, &path, Some(&token), with_avatar)
            .await,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&path).await.1["avatar"],
        "https://a.example/d.png"
    );
    let without_avatar = json!({"name": "dave", "age": 31, "birthday": "1990-05-17"});
    assert_eq!(
        server
            .send(reqwest::Method::PUT, &path, Some(&token), without_avatar)
            .await,
        StatusCode::OK
    );
    let (_, body) = server.get(&path).await;
    assert_eq!(
        (body["avatar"].clone(), body["age"].clone()),
        (Value::Null, json!(31))
    );
}

async fn bug_5_list_pages_are_exact_and_follow_every_write(database_url: &str) {
    pages_are_exact_and_follow_every_write(database_url, ListCache::Ids).await;
}

/// The same with `LIST_CACHE=pages`: whole pages cached, dropped by any write.
async fn bug_5_with_whole_pages_cached_too(database_url: &str) {
    pages_are_exact_and_follow_every_write(database_url, ListCache::Pages).await;
}

async fn pages_are_exact_and_follow_every_write(database_url: &str, list_cache: ListCache) {
    let redis = RedisServer::start();
    let server = Running::start_with(database_url, redis_cache(&redis), list_cache).await;
    let mut ids = Vec::new();
    for n in 0..21 {
        ids.push(
            server
                .create(
                    &format!("user{n}"),
                    &format!("user{n}@example.com"),
                    "secret1",
                )
                .await,
        );
    }
    let page = |last: i64, limit: i64| {
        let server = &server;
        async move {
            let (status, body) = server
                .get(&format!("/api/users?last={last}&limit={limit}"))
                .await;
            assert_eq!(status, StatusCode::OK);
            body.as_array()
                .unwrap()
                .iter()
                .map(|user| {
                    (
                        user["id"].as_i64().unwrap(),
                        user["name"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    for _ in 0..2 {
        assert_eq!(
            page(0, 10).await.iter().map(|u| u.0).collect::<Vec<_>>(),
            ids[0..10]
        );
        assert_eq!(
            page(10, 10).await.iter().map(|u| u.0).collect::<Vec<_>>(),
            ids[10..20]
        );
        assert_eq!(
            page(20, 10).await.iter().map(|u| u.0).collect::<Vec<_>>(),
            ids[20..21],
            "the last page is short"
        );
    }
    assert!(
        server.stats().hits >= 3,
        "pages are cached: {:?}",
        server.stats()
    );

    // Pages outside the bounded set are served right and never cached: no client can grow
    // the cache (or the list tag's members) with arbitrary offsets.
    let misses = server.stats().misses;
    assert_eq!(
        page(7, 3).await.iter().map(|u| u.0).collect::<Vec<_>>(),
        ids[7..10]
    );
    assert_eq!(server.stats().misses, misses, "not even looked up");
    for key in ["users:7:3", "user_pages:7:3"] {
        let cached: bool = cache_core::redis::cmd("EXISTS")
            .arg(key)
            .query(&mut redis.connection())
            .unwrap();
        assert!(!cached, "{key}");
    }

    let new = server
        .create("newcomer", "newcomer@example.com", "secret1")
        .await;
    assert_eq!(
        page(20, 10).await.iter().map(|u| u.0).collect::<Vec<_>>(),
        [ids[20], new],
        "a new user appears"
    );

    // The first page cached again (the create dropped it), so that the rename must drop it.
    assert_eq!(page(0, 10).await[1], (ids[1], "user1".to_owned()));
    let token = server.token("user1@example.com", "secret1").await;
    let rename = json!({"name": "renamed", "age": 30, "birthday": "1990-05-17"});
    assert_eq!(
        server
            .send(reqwest::Method::PUT, "/api/me", Some(&token), rename)
            .await,
        StatusCode::OK
    );
    let first = page(0, 10).await;
    assert_eq!(
        first[1],
        (ids[1], "renamed".to_owned()),
        "an update shows, without duplicates"
    );
    let mut all: Vec<i64> = Vec::new();
    for last in [0, 10, 20] {
        all.extend(page(last, 10).await.iter().map(|u| u.0));
    }
    let mut expected = ids.clone();
    expected.push(new);
    assert_eq!(all, expected, "every user exactly once, in id order");

    server.delete_me(&token).await;
    assert!(
        !page(0, 10).await.iter().any(|u| u.0 == ids[1]),
        "a deleted user is gone"
    );
}

async fn bug_6_no_read_after_an_update_returns_the_old_row(database_url: &str) {
    let redis = RedisServer::start();
    let server = Arc::new(Running::start(database_url, redis_cache(&redis)).await);
    let id = server.create("erin", "erin@example.com", "secret1").await;
    let token = server.token("erin@example.com", "secret1").await;
    let path = format!("/api/users/{id}");
    // Readers hammer the entry while the updates run, so reads race every write.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (server, path, stop) = (server.clone(), path.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    server.get(&path).await;
                }
            })
        })
        .collect();
    for age in 1..=30 {
        let update = json!({"name": "erin", "age": age, "birthday": "1990-05-17"});
        assert_eq!(
            server
                .send(reqwest::Method::PUT, &path, Some(&token), update)
                .await,
            StatusCode::OK
        );
        // Every read that starts after the update returned sees it.
        for _ in 0..3 {
            assert_eq!(
                server.get(&path).await.1["age"],
                age,
                "a read after the update saw an older row"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    // The entry left in Redis is the last row, and it has a TTL.
    let ttl: i64 = cache_core::redis::cmd("PTTL")
        .arg(format!("user:{id}"))
        .query(&mut redis.connection())
        .unwrap();
    assert!(ttl > 0, "every entry has a TTL, got {ttl}");
}

async fn cache_mode_off_serves_the_same_api_without_the_cache(database_url: &str) {
    let server = Running::start(database_url, Cache::disabled()).await;
    let id = server.create("frank", "frank@example.com", "secret1").await;
    assert_eq!(
        server.get(&format!("/api/users/{id}")).await.1["name"],
        "frank"
    );
    assert_eq!(
        server.get(&format!("/api/users/{id}")).await.1["name"],
        "frank"
    );
    assert_eq!(
        server.login("frank@example.com", "secret1").await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.stats(),
        cache_core::Stats::default(),
        "nothing went through a cache"
    );
}

/// Bug 7: the tutorial's Redis client was synchronous and blocked the event loop. Here,
/// against a Redis that accepts connections and never answers, on a single-threaded runtime,
/// a request that does not need Redis completes while eight others wait for it.
#[tokio::test(flavor = "current_thread")]
async fn bug_7_waiting_on_redis_does_not_block_other_requests() {
    let silent = SilentListener::start().await;
    let cache = Cache::builder()
        .url(silent.url())
        .operation_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let server = Arc::new(Running::start(&common::sqlite_url(), cache).await);
    let id = server.create("grace", "grace@example.com", "secret1").await;
    let finished = Arc::new(AtomicUsize::new(0));
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let (server, finished) = (server.clone(), finished.clone());
            tokio::spawn(async move {
                let (status, body) = server.get(&format!("/api/users/{id}")).await;
                finished.fetch_add(1, Ordering::SeqCst);
                (status, body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _) = server.get("/cache/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the stats answered while every Redis read was still waiting"
    );
    for request in waiting {
        let (status, body) = request.await.unwrap();
        assert_eq!(
            (status, body["name"].as_str()),
            (StatusCode::OK, Some("grace")),
            "and each of them succeeded"
        );
    }
}

/// The response cache in front of `GET /api/users/{id}` and the list pages: a repeated `GET`
/// never runs the handler, a client holding the page gets `304`, a request with a token
/// bypasses, and every `POST`/`PUT`/`DELETE` is seen by the next `GET` at once (the
/// repository's write tags drop the responses).
async fn responses_are_cached_and_every_write_is_seen_by_the_next_get(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let id = server.create("rita", "rita@example.com", "secret1").await;
    let token = server.token("rita@example.com", "secret1").await;
    let path = format!("/api/users/{id}");
    let x_cache = |headers: &reqwest::header::HeaderMap| {
        headers
            .get("x-cache")
            .map(|value| value.to_str().unwrap().to_owned())
    };

    let (status, first, body) = server.get_with(&path, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&first).as_deref(), Some("miss"));
    let (_, second, again) = server.get_with(&path, &[]).await;
    assert_eq!(x_cache(&second).as_deref(), Some("hit"));
    assert_eq!(again, body);
    let etag = first["etag"].to_str().unwrap().to_owned();
    let (status, _, empty) = server.get_with(&path, &[("if-none-match", &etag)]).await;
    assert_eq!((status, empty.as_str()), (StatusCode::NOT_MODIFIED, ""));
    // A request with a token is not served from (nor stored in) the response cache.
    let bearer = format!("Bearer {token}");
    let (status, authenticated, _) = server.get_with(&path, &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&authenticated), None);

    let update = json!({"name": "rita2", "age": 30, "birthday": "1990-05-17"});
    assert_eq!(
        server
            .send(reqwest::Method::PUT, &path, Some(&token), update)
            .await,
        StatusCode::OK
    );
    let (_, after, body) = server.get_with(&path, &[]).await;
    assert_eq!(x_cache(&after).as_deref(), Some("miss"));
    assert!(body.contains("rita2"), "{body}");
    let (status, _, _) = server.get_with(&path, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::OK, "the old ETag is stale");

    let list = "/api/users?limit=10";
    server.get_with(list, &[]).await;
    let (_, listed, names) = server.get_with(list, &[]).await;
    assert_eq!(x_cache(&listed).as_deref(), Some("hit"));
    assert!(names.contains("rita2"));
    let other = server.create("sam", "sam@example.com", "secret1").await;
    let (_, listed, names) = server.get_with(list, &[]).await;
    assert_eq!(x_cache(&listed).as_deref(), Some("miss"));
    assert!(names.contains("sam"), "a POST is seen at once: {names}");
    // Queries outside the bounded set of pages are answered, never looked up or stored.
    let (_, searched, _) = server.get_with("/api/users?keyword=ri", &[]).await;
    assert_eq!(x_cache(&searched), None);

    assert_eq!(
        server
            .send(reqwest::Method::DELETE, &path, Some(&token), Value::Null)
            .await,
        StatusCode::NO_CONTENT
    );
    let (status, _, _) = server.get_with(&path, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a DELETE is seen at once");
    let (_, _, names) = server.get_with(list, &[]).await;
    assert!(!names.contains("rita2") && names.contains("sam"), "{names}");
    assert_ne!(other, id);
}

/// Requests the response cache must not confuse, on the server as it ships: another
/// spelling of an id (`/api/users/0{id}`: the handler reads the same user) never keeps the
/// old page after a `PUT`, pages asked with a repeated parameter are each what the handler
/// answers, and a `HEAD` (through hyper) gives the `GET`'s length.
async fn responses_are_not_poisoned_by_other_spellings_of_a_request(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let mut ids = Vec::new();
    for n in 0..11 {
        let email = format!("p{n}@example.com");
        ids.push(server.create(&format!("page{n}"), &email, "secret1").await);
    }
    let id = ids[0];
    let token = server.token("p0@example.com", "secret1").await;
    for path in [format!("/api/users/0{id}"), format!("/api/users/{id}")] {
        for _ in 0..2 {
            let (status, _, body) = server.get_with(&path, &[]).await;
            assert_eq!(status, StatusCode::OK);
            assert!(body.contains("\"page0\""), "{body}");
        }
    }
    let update = json!({"name": "renamed", "age": 30, "birthday": "1990-05-17"});
    let path = format!("/api/users/{id}");
    assert_eq!(
        server
            .send(reqwest::Method::PUT, &path, Some(&token), update)
            .await,
        StatusCode::OK
    );
    for path in [
        format!("/api/users/0{id}"),
        format!("/api/users/+{id}"),
        path.clone(),
    ] {
        let (_, _, body) = server.get_with(&path, &[]).await;
        assert!(body.contains("renamed"), "{path}: {body}");
    }

    let first_page = server.get_with("/api/users?limit=10", &[]).await.2;
    let second_page = server.get_with("/api/users?last=10&limit=10", &[]).await.2;
    assert_ne!(first_page, second_page);
    for (query, expected) in [
        ("last=10&last=0&limit=10", &first_page),
        ("last=0&last=10&limit=10", &second_page),
        ("last=10&last=0&limit=10", &first_page),
    ] {
        let (_, headers, body) = server.get_with(&format!("/api/users?{query}"), &[]).await;
        assert_eq!(&body, expected, "{query}");
        assert!(headers.get("x-cache").is_none(), "{query} is not looked up");
    }

    let (_, _, body) = server.get_with(&path, &[]).await;
    let head = server
        .client
        .head(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "hit");
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
}

/// The example server as `REDIS_SENTINEL_MASTER` and `REDIS_SENTINEL_NODES` configure it,
/// behind Redis Sentinel (a primary, its replica, three sentinels): the password change
/// (bug 3) and updates read back at once (bug 6).
#[tokio::test]
async fn behind_redis_sentinel_the_tutorial_bugs_stay_fixed() {
    let group = cache_integration_tests::sentinel::RedisSentinel::start();
    let variables = [
        (
            "REDIS_SENTINEL_MASTER",
            cache_integration_tests::sentinel::MASTER_NAME.to_owned(),
        ),
        ("REDIS_SENTINEL_NODES", group.sentinels_variable()),
    ];
    let config = example_server::config::Config::from_vars(|name| {
        variables
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| value.clone())
    })
    .unwrap();
    assert!(config.cache_location().starts_with("sentinel "));
    let database_url = common::sqlite_url();
    let server = Running::start(&database_url, config.cache().unwrap()).await;
    let (id, token) = only_the_new_password_logs_in(&server).await;
    let path = format!("/api/users/{id}");
    assert_eq!(server.get(&path).await.1["name"], "carol");
    for round in 0..5 {
        let name = format!("carol{round}");
        let status = server
            .send(
                reqwest::Method::PUT,
                &path,
                Some(&token),
                json!({"name": name, "age": 30, "birthday": "1990-05-17"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.get(&path).await.1["name"], name.as_str());
    }
    let stats = server.stats();
    assert!(stats.hits > 0, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
}

/// A list page's rows as `(id, name)`, read by `GET` with `headers` (a token: around the
/// response cache, so that the repository answers).
async fn rows_of(server: &Running, path: &str, headers: &[(&str, &str)]) -> Vec<(i64, String)> {
    let (status, _, body) = server.get_with(path, headers).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .iter()
        .map(|user| {
            (
                user["id"].as_i64().unwrap(),
                user["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The id list cached for a page, as Redis holds it (`None`: no entry).
fn cached_ids(redis: &RedisServer, page: &str) -> Option<Vec<i64>> {
    let text: Option<String> = cache_core::redis::cmd("HGET")
        .arg(format!("users:{page}"))
        .arg("ids")
        .query(&mut redis.connection())
        .unwrap();
    text.map(|text| serde_json::from_str(&text).unwrap())
}

/// Creates `count` users `{stem}{n}` (emails `{stem}{n}@example.com`, password `secret1`).
async fn create_many(server: &Running, stem: &str, count: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for n in 0..count {
        let email = format!("{stem}{n}@example.com");
        ids.push(
            server
                .create(&format!("{stem}{n}"), &email, "secret1")
                .await,
        );
    }
    ids
}

/// Issue 23: a profile update drops the user's row, not the pages. Every cached id list stays
/// in Redis and is still read (the pages around the response cache miss nothing but the
/// updated row), every page shows the new name, and the response cache, whose pages hold
/// rows, drops its pages (`users:rows`). A password change drops no list either; a create and
/// a delete change the pages.
async fn a_profile_update_keeps_the_id_lists_and_no_page_shows_the_old_row(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let ids = create_many(&server, "lister", 25).await;
    // Any token goes around the response cache: the list route does not check it.
    let around = [("authorization", "Bearer around-the-response-cache")];
    let pages = ["0:10", "10:10", "20:10"];
    let path = |page: &str| {
        let (last, limit) = page.split_once(':').unwrap();
        format!("/api/users?last={last}&limit={limit}")
    };
    for page in pages {
        rows_of(&server, &path(page), &[]).await;
    }
    for (page, expected) in pages.iter().zip([&ids[0..10], &ids[10..20], &ids[20..25]]) {
        assert_eq!(
            cached_ids(&redis, page).as_deref(),
            Some(expected),
            "{page}"
        );
    }

    let renamed = ids[12];
    let token = server.token("lister12@example.com", "secret1").await;
    let rename = |name: &str| json!({"name": name, "age": 30, "birthday": "1990-05-17"});
    let user_path = format!("/api/users/{renamed}");
    assert_eq!(
        server
            .send(
                reqwest::Method::PUT,
                &user_path,
                Some(&token),
                rename("renamed")
            )
            .await,
        StatusCode::OK
    );
    for (page, expected) in pages.iter().zip([&ids[0..10], &ids[10..20], &ids[20..25]]) {
        assert_eq!(
            cached_ids(&redis, page).as_deref(),
            Some(expected),
            "{page}: the id list survives the update"
        );
    }
    // The repository alone: the page without the user is all hits (its id list and its ten
    // rows); the page with the user misses its row only, and shows the new name.
    let misses = server.stats().misses;
    let first = rows_of(&server, &path("0:10"), &around).await;
    assert_eq!(
        first.iter().map(|row| row.0).collect::<Vec<_>>(),
        ids[0..10]
    );
    assert_eq!(
        server.stats().misses,
        misses,
        "the id list and the rows were read"
    );
    let second = rows_of(&server, &path("10:10"), &around).await;
    assert_eq!(
        second.iter().map(|row| row.0).collect::<Vec<_>>(),
        ids[10..20]
    );
    assert_eq!(second[2], (renamed, "renamed".to_owned()), "no stale row");
    assert_eq!(server.stats().misses, misses + 1, "only the updated row");
    // The response cache: its page held the old row and was dropped.
    let (_, headers, body) = server.get_with(&path("10:10"), &[]).await;
    assert_eq!(headers["x-cache"], "miss");
    assert!(
        body.contains("\"renamed\"") && !body.contains("\"lister12\""),
        "{body}"
    );
    assert_eq!(
        server.get_with(&path("10:10"), &[]).await.1["x-cache"],
        "hit"
    );
    // Through `/api/me` too, and again: each PUT is seen by the next GET of either cache.
    for name in ["renamed2", "renamed3"] {
        assert_eq!(
            server
                .send(reqwest::Method::PUT, "/api/me", Some(&token), rename(name))
                .await,
            StatusCode::OK
        );
        for headers in [&[][..], &around[..]] {
            let rows = rows_of(&server, &path("10:10"), headers).await;
            assert_eq!(rows[2], (renamed, name.to_owned()), "{headers:?}");
        }
    }

    // A password change drops no list: no list holds a password.
    server.get_with(&path("0:10"), &[]).await;
    assert_eq!(
        server.get_with(&path("0:10"), &[]).await.1["x-cache"],
        "hit"
    );
    let password = json!({"password": "secret2"});
    assert_eq!(
        server
            .send(
                reqwest::Method::PUT,
                &format!("{user_path}/password"),
                Some(&token),
                password
            )
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(cached_ids(&redis, "0:10").as_deref(), Some(&ids[0..10]));
    let misses = server.stats().misses;
    rows_of(&server, &path("0:10"), &around).await;
    assert_eq!(server.stats().misses, misses);
    let (_, headers, _) = server.get_with(&path("0:10"), &[]).await;
    assert_eq!(headers["x-cache"], "hit", "nor any response page");

    // A create changes the last page, a delete every page after the user's.
    let new = server
        .create("newcomer", "newcomer@example.com", "secret1")
        .await;
    for headers in [&[][..], &around[..]] {
        let last = rows_of(&server, &path("20:10"), headers).await;
        assert_eq!(
            last.iter().map(|row| row.0).collect::<Vec<_>>(),
            [&ids[20..25], &[new][..]].concat()
        );
    }
    let token = server.token("lister3@example.com", "secret1").await;
    server.delete_me(&token).await;
    let mut left = ids.clone();
    left.remove(3);
    left.push(new);
    for headers in [&[][..], &around[..]] {
        let mut all = Vec::new();
        for page in pages {
            all.extend(
                rows_of(&server, &path(page), headers)
                    .await
                    .iter()
                    .map(|row| row.0),
            );
        }
        assert_eq!(all, left, "every user once, in id order, after the delete");
    }
    assert_eq!(cached_ids(&redis, "0:10").as_deref(), Some(&left[0..10]));
    let stats = server.stats();
    assert_eq!(stats.errors, 0, "{stats:?}");
}

/// Rows written after their page's id list was read: the id list in hand is the one from
/// before, the rows are loaded (or read) after an update and a delete. The updated row is the
/// new one, the deleted one is left out, the others keep the page order.
async fn rows_changed_after_the_id_list_was_read_are_never_served_old(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let ids = create_many(&server, "racer", 10).await;
    let repo = &server.state.repo;
    let page = repo.list_ids(Page { last: 0, limit: 10 }).await.unwrap();
    assert_eq!(page.ids, ids);
    // Once with no row cached, once with the rows cached (read before the writes).
    let mut deleted = Vec::new();
    for (cached, updated, gone) in [(false, 3, 6), (true, 2, 5)] {
        if cached {
            let rows = repo.list_items(&page.ids).await.unwrap();
            assert_eq!(rows.len(), ids.len() - deleted.len());
        }
        let token = server
            .token(&format!("racer{updated}@example.com"), "secret1")
            .await;
        let name = format!("updated{updated}");
        assert_eq!(
            server
                .send(
                    reqwest::Method::PUT,
                    "/api/me",
                    Some(&token),
                    json!({"name": name, "age": 30, "birthday": "1990-05-17"})
                )
                .await,
            StatusCode::OK
        );
        let token = server
            .token(&format!("racer{gone}@example.com"), "secret1")
            .await;
        server.delete_me(&token).await;
        deleted.push(ids[gone]);
        let rows = repo.list_items(&page.ids).await.unwrap();
        let expected: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !deleted.contains(id))
            .collect();
        assert_eq!(
            rows.iter().map(|row| row.id).collect::<Vec<_>>(),
            expected,
            "rows cached before: {cached}"
        );
        let row = rows.iter().find(|row| row.id == ids[updated]).unwrap();
        assert_eq!(row.name, name, "rows cached before: {cached}");
    }
    // The id list itself was dropped by the deletes.
    let now = repo.list_ids(Page { last: 0, limit: 10 }).await.unwrap();
    assert_eq!(now.ids.len(), 8);
    assert!(!now.ids.contains(&ids[5]) && !now.ids.contains(&ids[6]));
}

/// A page whose users were all deleted is empty (its id list with it), the pages before it
/// unchanged; pages past the end, at the edges of the cached set and outside it, are empty
/// or short, cached or not.
async fn pages_emptied_by_deletes_and_pages_past_the_end(database_url: &str) {
    let redis = RedisServer::start();
    let server = Running::start(database_url, redis_cache(&redis)).await;
    let ids = create_many(&server, "gone", 20).await;
    let stale = server
        .state
        .repo
        .list_ids(Page {
            last: 10,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        rows_of(&server, "/api/users?last=10&limit=10", &[])
            .await
            .len(),
        10
    );
    for n in 10..20 {
        let token = server
            .token(&format!("gone{n}@example.com"), "secret1")
            .await;
        server.delete_me(&token).await;
    }
    assert_eq!(
        rows_of(&server, "/api/users?last=10&limit=10", &[]).await,
        []
    );
    assert_eq!(
        cached_ids(&redis, "10:10").as_deref(),
        Some(&[][..]),
        "the empty id list, cached"
    );
    assert_eq!(
        server.state.repo.list_items(&stale.ids).await.unwrap(),
        [],
        "the old id list's rows are all gone"
    );
    let first = rows_of(&server, "/api/users?last=0&limit=10", &[]).await;
    assert_eq!(
        first.iter().map(|row| row.0).collect::<Vec<_>>(),
        ids[0..10]
    );

    for (query, count) in [
        // The last cached page of each size, past the end.
        ("last=9900&limit=100", 0),
        ("last=990&limit=10", 0),
        // Outside the cached set.
        ("last=10000&limit=100", 0),
        ("last=9&limit=1", 1),
        ("last=0&limit=1000", 10),
        ("last=5&limit=10", 5),
        // A short cached page.
        ("last=0&limit=20", 10),
        ("last=0&limit=100", 10),
    ] {
        for round in 0..2 {
            let path = format!("/api/users?{query}");
            let rows = rows_of(&server, &path, &[]).await;
            assert_eq!(rows.len(), count, "{query}, round {round}");
            assert!(
                rows.windows(2).all(|pair| pair[0].0 < pair[1].0),
                "{query}: in id order"
            );
        }
    }
    assert_eq!(cached_ids(&redis, "9900:100").as_deref(), Some(&[][..]));
    assert_eq!(cached_ids(&redis, "10000:100"), None, "not cached");
    assert_eq!(cached_ids(&redis, "9:1"), None, "not cached");
}

/// The list route's JSON, byte for byte, is the same with id lists, with whole pages, and
/// without the cache: keys, their order, `null` avatars, page order, cached or not.
async fn the_list_json_is_the_same_whatever_caches_it(database_url: &str) {
    let redis = RedisServer::start();
    let mut bodies: Vec<Vec<String>> = Vec::new();
    for (n, list_cache) in [ListCache::Ids, ListCache::Pages, ListCache::Ids]
        .into_iter()
        .enumerate()
    {
        let cache = if n == 2 {
            Cache::disabled()
        } else {
            Cache::builder()
                .url(redis.url())
                .namespace(format!("json{n}"))
                .build()
                .unwrap()
        };
        // A fresh database each: the same ids in each.
        let url = if database_url.starts_with("sqlite") {
            common::sqlite_url()
        } else {
            common::postgres_url().await
        };
        let server = Running::start_with(&url, cache, list_cache).await;
        let ids = create_many(&server, "json", 12).await;
        let token = server.token("json4@example.com", "secret1").await;
        let avatar = json!({"name": "json4b", "avatar": "https://a.example/4.png", "age": 40, "birthday": "1980-01-02"});
        assert_eq!(
            server
                .send(
                    reqwest::Method::PUT,
                    &format!("/api/users/{}", ids[4]),
                    Some(&token),
                    avatar
                )
                .await,
            StatusCode::OK
        );
        let mut texts = Vec::new();
        for path in [
            "/api/users",
            "/api/users?limit=10",
            "/api/users?last=10&limit=10",
        ] {
            for headers in [&[][..], &[("authorization", "Bearer x")][..]] {
                for _ in 0..2 {
                    texts.push(server.get_with(path, headers).await.2);
                }
            }
        }
        assert_eq!(
            common::first_item_keys(&texts[0]),
            ["name", "id", "email", "avatar"]
        );
        assert!(
            texts[0].contains(r#""avatar":"https://a.example/4.png""#),
            "{}",
            texts[0]
        );
        assert!(texts[0].contains(r#""avatar":null"#), "{}", texts[0]);
        bodies.push(texts);
    }
    assert_eq!(bodies[0], bodies[1], "id lists and whole pages");
    assert_eq!(bodies[0], bodies[2], "id lists and no cache");
}

/// Readers hammer a page (around the response cache and through it) while one of its users
/// is renamed again and again: every read that starts after a `PUT` returned shows the new
/// name, and the id list stays.
async fn list_reads_racing_updates_never_show_an_older_row(database_url: &str) {
    let redis = RedisServer::start();
    let server = Arc::new(Running::start(database_url, redis_cache(&redis)).await);
    let ids = create_many(&server, "hammer", 10).await;
    let token = server.token("hammer7@example.com", "secret1").await;
    let path = "/api/users?last=0&limit=10";
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|n| {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                let headers: &[(&str, &str)] = if n % 2 == 0 {
                    &[]
                } else {
                    &[("authorization", "Bearer x")]
                };
                while !stop.load(Ordering::Relaxed) {
                    server.get_with(path, headers).await;
                }
            })
        })
        .collect();
    for round in 0..20 {
        let name = format!("hammer7r{round}");
        assert_eq!(
            server
                .send(
                    reqwest::Method::PUT,
                    &format!("/api/users/{}", ids[7]),
                    Some(&token),
                    json!({"name": name, "age": 30, "birthday": "1990-05-17"})
                )
                .await,
            StatusCode::OK
        );
        for headers in [&[][..], &[("authorization", "Bearer x")][..]] {
            let rows = rows_of(&server, path, headers).await;
            assert_eq!(rows.iter().map(|row| row.0).collect::<Vec<_>>(), ids);
            assert_eq!(rows[7].1, name, "a read after the update saw an older row");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(cached_ids(&redis, "0:10").as_deref(), Some(&ids[..]));
}
