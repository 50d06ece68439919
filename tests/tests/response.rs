//! The response cache (`ResponseCache`, feature `axum`) on a real redis-server: whole
//! responses served without the handler, `ETag` / `If-None-Match` / `304`, `HEAD`, and
//! dropped by the same writes that invalidate the data (the repository's tags), with the
//! entries' guarantees: no stale set, one handler run for concurrent misses, fail-open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use cache_core::{cached_update, Cache, ResponseCache};
use cache_integration_tests::cluster::RedisCluster;
use cache_integration_tests::{unique_namespace, RedisServer};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tower::ServiceExt;

/// The data, behind a repository whose writes invalidate tags, and what the handlers did.
struct Db {
    cache: Cache,
    names: Mutex<BTreeMap<i64, String>>,
    handler_runs: AtomicUsize,
    /// When set, `GET /users/{id}` reads the data, then waits here before answering.
    gate: Mutex<Option<Arc<Gate>>>,
}

struct Gate {
    read: Notify,
    open: Notify,
}

impl Db {
    #[cached_update(prefix = "user", key = "id", tags = ["user:{id}", "users:list"], cache = self.cache)]
    async fn rename(&self, id: i64, name: String) -> Result<(), String> {
        self.names.lock().unwrap().insert(id, name);
        Ok(())
    }
}

type Shared = Arc<Db>;

/// The user a bearer token names (here the token is the name): what an authentication
/// extractor produces.
struct Bearer(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Bearer {
    type Rejection = StatusCode;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, StatusCode> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(StatusCode::UNAUTHORIZED)?;
        Ok(Bearer(token.to_owned()))
    }
}

async fn get_user(
    State(db): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, StatusCode> {
    db.handler_runs.fetch_add(1, Ordering::SeqCst);
    let name = db.names.lock().unwrap().get(&id).cloned();
    let gate = db.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        gate.read.notify_one();
        gate.open.notified().await;
    }
    match name {
        Some(name) => Ok(Json(json!({ "id": id, "name": name }))),
        None => Err(StatusCode::NOT_FOUND),
    }
}

async fn list_users(State(db): State<Shared>) -> Json<Value> {
    db.handler_runs.fetch_add(1, Ordering::SeqCst);
    let names: Vec<String> = db.names.lock().unwrap().values().cloned().collect();
    Json(json!(names))
}

async fn put_user(
    State(db): State<Shared>,
    Path(id): Path<i64>,
    Json(body): Json<Value>,
) -> StatusCode {
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    db.rename(id, name).await.unwrap();
    StatusCode::NO_CONTENT
}

async fn greeting(State(db): State<Shared>, headers: axum::http::HeaderMap) -> String {
    db.handler_runs.fetch_add(1, Ordering::SeqCst);
    let language = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("en");
    format!("hello in {language}")
}

async fn with_cookie(
    State(db): State<Shared>,
) -> ([(header::HeaderName, &'static str); 1], &'static str) {
    db.handler_runs.fetch_add(1, Ordering::SeqCst);
    ([(header::SET_COOKIE, "session=1")], "personal")
}

async fn no_store(
    State(db): State<Shared>,
) -> ([(header::HeaderName, &'static str); 1], &'static str) {
    db.handler_runs.fetch_add(1, Ordering::SeqCst);
    ([(header::CACHE_CONTROL, "no-store")], "secret")
}

async fn streamed(State(db): State<Shared>) -> Body {
    db.handler_runs.fetch_add(1, Ordering::SeqCst);
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok("a".into()), Ok("b".into())];
    Body::new(chunked(chunks))
}

/// A body of ready chunks that does not announce its size, as a streaming body does not.
fn chunked(
    chunks: Vec<Result<String, std::io::Error>>,
) -> impl axum::body::HttpBody<Data = axum::body::Bytes, Error = std::io::Error> + Send {
    struct Chunks(std::collections::VecDeque<Result<String, std::io::Error>>);
    impl axum::body::HttpBody for Chunks {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Ready(
                self.0
                    .pop_front()
                    .map(|chunk| chunk.map(|text| http_body::Frame::data(text.into()))),
            )
        }
    }
    Chunks(chunks.into())
}

async fn big(State(db): State<Shared>) -> String {
    db.handler_runs.fetch_add(1, Ordering::SeqCst);
    "x".repeat(4096)
}

struct App {
    router: Router,
    db: Shared,
}

fn app(cache: Cache) -> App {
    let db = Arc::new(Db {
        cache: cache.clone(),
        names: Mutex::new((1..=3).map(|id| (id, format!("user{id}"))).collect()),
        handler_runs: AtomicUsize::new(0),
        gate: Mutex::new(None),
    });
    let user_layer = ResponseCache::new(cache.clone(), "resp_user")
        .unwrap()
        .tags_from(|Path(id): Path<i64>| [format!("user:{id}")])
        .cache_control(HeaderValue::from_static(
            "public, max-age=0, must-revalidate",
        ));
    let list_layer = ResponseCache::new(cache.clone(), "resp_users")
        .unwrap()
        .tags(["users:list"]);
    let mine_layer = ResponseCache::new(cache.clone(), "resp_mine")
        .unwrap()
        .per_user(|Bearer(user): Bearer| Some(user));
    let big_layer = ResponseCache::new(cache, "resp_big")
        .unwrap()
        .max_body(1024);
    let router = Router::new()
        .route("/users/{id}", get(get_user).layer(user_layer).put(put_user))
        .route("/users", get(list_users).layer(list_layer))
        .route(
            "/plain/{id}",
            get(get_user).layer(ResponseCache::new(db.cache.clone(), "resp_plain").unwrap()),
        )
        .route("/mine/{id}", get(get_user).layer(mine_layer))
        .route("/big", get(big).layer(big_layer))
        .route(
            "/greeting",
            get(greeting).layer(
                ResponseCache::new(db.cache.clone(), "resp_greeting")
                    .unwrap()
                    .vary([header::ACCEPT_LANGUAGE]),
            ),
        )
        .route(
            "/cookie",
            get(with_cookie).layer(ResponseCache::new(db.cache.clone(), "resp_cookie").unwrap()),
        )
        .route(
            "/no-store",
            get(no_store).layer(ResponseCache::new(db.cache.clone(), "resp_no_store").unwrap()),
        )
        .route(
            "/streamed",
            get(streamed).layer(ResponseCache::new(db.cache.clone(), "resp_streamed").unwrap()),
        )
        .route(
            "/only/{id}",
            get(get_user).layer(
                ResponseCache::new(db.cache.clone(), "resp_only")
                    .unwrap()
                    .query_params(["lang"])
                    .cache_if(|parts| parts.uri.query() != Some("uncached")),
            ),
        )
        .with_state(db.clone());
    App { router, db }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl App {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Method::GET, uri, &[], "").await
    }

    fn runs(&self) -> usize {
        self.db.handler_runs.load(Ordering::SeqCst)
    }
}

fn header_of<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
}

fn redis_cache(server: &RedisServer) -> Cache {
    Cache::builder().url(server.url()).build().unwrap()
}

#[tokio::test]
async fn a_response_is_served_from_redis_with_its_etag_and_age() {
    let server = RedisServer::start();
    let app = app(redis_cache(&server));
    let first = app.get("/users/1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(header_of(&first, "x-cache"), Some("miss"));
    let etag = header_of(&first, "etag").unwrap().to_owned();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    assert_eq!(
        header_of(&first, "cache-control"),
        Some("public, max-age=0, must-revalidate")
    );

    let second = app.get("/users/1").await;
    assert_eq!(app.runs(), 1, "the second answer came from Redis");
    assert_eq!(header_of(&second, "x-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(header_of(&second, "etag"), Some(etag.as_str()));
    assert_eq!(header_of(&second, "content-type"), Some("application/json"));
    assert!(header_of(&second, "age").is_some());

    let stored: Option<String> = redis::cmd("HGET")
        .arg("resp_user:/users/1")
        .arg("body")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(stored.as_deref(), Some(first.body.as_str()));
}

#[tokio::test]
async fn if_none_match_is_answered_304_without_the_handler_and_head_without_body() {
    let server = RedisServer::start();
    let app = app(redis_cache(&server));
    let first = app.get("/users/2").await;
    let etag = header_of(&first, "etag").unwrap().to_owned();

    let revalidated = app
        .send(Method::GET, "/users/2", &[("if-none-match", &etag)], "")
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.body, "");
    assert_eq!(header_of(&revalidated, "etag"), Some(etag.as_str()));
    let other = app
        .send(
            Method::GET,
            "/users/2",
            &[("if-none-match", "\"other\"")],
            "",
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, first.body);

    let head = app.send(Method::HEAD, "/users/2", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.body, "");
    assert_eq!(header_of(&head, "etag"), Some(etag.as_str()));
    assert_eq!(
        app.runs(),
        1,
        "revalidations and HEAD were answered from Redis"
    );
}

#[tokio::test]
async fn writes_drop_the_responses_made_from_their_data() {
    let server = RedisServer::start();
    let app = app(redis_cache(&server));
    let before = app.get("/users/1").await;
    let list_before = app.get("/users").await;
    app.get("/users/1").await;
    app.get("/users").await;
    assert_eq!(app.runs(), 2);

    let put = app
        .send(Method::PUT, "/users/1", &[], r#"{"name":"renamed"}"#)
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let after = app.get("/users/1").await;
    assert_eq!(header_of(&after, "x-cache"), Some("miss"));
    assert!(after.body.contains("renamed"), "{}", after.body);
    assert_ne!(header_of(&after, "etag"), header_of(&before, "etag"));
    let list_after = app.get("/users").await;
    assert!(list_after.body.contains("renamed"));
    assert_ne!(list_after.body, list_before.body);
    // The old ETag no longer revalidates.
    let old = header_of(&before, "etag").unwrap().to_owned();
    let revalidated = app
        .send(Method::GET, "/users/1", &[("if-none-match", &old)], "")
        .await;
    assert_eq!(revalidated.status, StatusCode::OK);
}

#[tokio::test]
async fn failures_big_bodies_and_other_users_are_not_stored() {
    let server = RedisServer::start();
    let app = app(redis_cache(&server));
    for _ in 0..2 {
        assert_eq!(app.get("/users/99").await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.runs(), 2, "a 404 is not stored");
    for _ in 0..2 {
        assert_eq!(app.get("/big").await.body.len(), 4096);
    }
    assert_eq!(app.runs(), 4, "a body over max_body is not stored");

    // Authorization bypasses a route that did not opt in…
    for _ in 0..2 {
        let answer = app
            .send(
                Method::GET,
                "/plain/1",
                &[("authorization", "Bearer ada")],
                "",
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.headers.get("x-cache").is_none(), "bypassed");
    }
    assert_eq!(app.runs(), 6);
    // …and a route that did caches per user.
    for user in ["ada", "ada", "bob", "bob"] {
        let token = format!("Bearer {user}");
        app.send(Method::GET, "/mine/1", &[("authorization", &token)], "")
            .await;
    }
    assert_eq!(app.runs(), 8, "one run per user");
}

#[tokio::test]
async fn queries_in_another_order_share_an_entry() {
    let server = RedisServer::start();
    let app = app(redis_cache(&server));
    app.get("/users?page=1&size=10").await;
    let again = app.get("/users?size=10&page=1").await;
    assert_eq!(header_of(&again, "x-cache"), Some("hit"));
    assert_eq!(app.runs(), 1);

    // Only the listed parameters are part of the key: junk makes no new entry.
    app.get("/only/1?lang=en").await;
    let junk = app.get("/only/1?junk=1&lang=en").await;
    assert_eq!(header_of(&junk, "x-cache"), Some("hit"));
    let other = app.get("/only/1?lang=fr").await;
    assert_eq!(header_of(&other, "x-cache"), Some("miss"));
    // A request `cache_if` refuses is not looked up.
    let refused = app.get("/only/1?uncached").await;
    assert_eq!(header_of(&refused, "x-cache"), None);
    assert_eq!(app.runs(), 4);
}

#[tokio::test]
async fn a_response_made_before_a_write_is_not_stored_after_it() {
    let server = RedisServer::start();
    let app = Arc::new(app(redis_cache(&server)));
    let gate = Arc::new(Gate {
        read: Notify::new(),
        open: Notify::new(),
    });
    *app.db.gate.lock().unwrap() = Some(gate.clone());
    let slow = tokio::spawn({
        let app = app.clone();
        async move { app.get("/users/3").await }
    });
    // The handler has read "user3"; the write lands before it answers.
    gate.read.notified().await;
    *app.db.gate.lock().unwrap() = None;
    app.send(Method::PUT, "/users/3", &[], r#"{"name":"new"}"#)
        .await;
    gate.open.notify_one();
    let old = slow.await.unwrap();
    assert!(
        old.body.contains("user3"),
        "the slow request answers what it read"
    );

    let next = app.get("/users/3").await;
    assert!(
        next.body.contains("new"),
        "the response made before the write was not stored: {}",
        next.body
    );
}

#[tokio::test]
async fn concurrent_misses_run_the_handler_once() {
    let server = RedisServer::start();
    let app = Arc::new(app(redis_cache(&server)));
    let gate = Arc::new(Gate {
        read: Notify::new(),
        open: Notify::new(),
    });
    *app.db.gate.lock().unwrap() = Some(gate.clone());
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get("/users/2").await })
        })
        .collect();
    gate.read.notified().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    *app.db.gate.lock().unwrap() = None;
    gate.open.notify_one();
    for request in requests {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(app.runs(), 1, "one handler run for eight concurrent misses");
}

#[tokio::test]
async fn redis_down_means_the_handler_answers() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .url(server.url())
        .operation_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let app = app(cache);
    app.get("/users/1").await;
    server.stop();
    for _ in 0..3 {
        let answer = app.get("/users/1").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.contains("user1"));
    }
    let put = app
        .send(Method::PUT, "/users/1", &[], r#"{"name":"while down"}"#)
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert!(app.get("/users/1").await.body.contains("while down"));
}

#[tokio::test]
async fn vary_headers_key_the_entry_and_responses_that_say_so_are_not_stored() {
    let server = RedisServer::start();
    let app = app(redis_cache(&server));
    for language in ["fr", "fr", "de"] {
        let answer = app
            .send(
                Method::GET,
                "/greeting",
                &[("accept-language", language)],
                "",
            )
            .await;
        assert_eq!(answer.body, format!("hello in {language}"));
        assert_eq!(header_of(&answer, "vary"), Some("accept-language"));
    }
    assert_eq!(app.runs(), 2, "one entry per language");

    for path in ["/cookie", "/no-store", "/streamed"] {
        let first = app.get(path).await;
        let second = app.get(path).await;
        assert_eq!(first.body, second.body, "{path}");
        assert_eq!(
            header_of(&second, "x-cache"),
            None,
            "{path} is passed through"
        );
    }
    assert_eq!(
        app.runs(),
        8,
        "a Set-Cookie, a no-store and a streamed body are never stored"
    );
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("resp_*")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
}

#[tokio::test]
async fn on_a_redis_cluster_writes_drop_the_responses_too() {
    let cluster = RedisCluster::shared();
    let cache = Cache::builder()
        .cluster_nodes(cluster.nodes())
        .namespace(unique_namespace("responses"))
        .build()
        .unwrap();
    let app = app(cache);
    for id in 1..=3 {
        app.get(&format!("/users/{id}")).await;
    }
    for id in 1..=3 {
        let answer = app.get(&format!("/users/{id}")).await;
        assert_eq!(header_of(&answer, "x-cache"), Some("hit"), "user {id}");
    }
    app.get("/users").await;
    assert_eq!(header_of(&app.get("/users").await, "x-cache"), Some("hit"));
    assert_eq!(app.runs(), 4);

    app.send(Method::PUT, "/users/2", &[], r#"{"name":"moved"}"#)
        .await;
    let after = app.get("/users/2").await;
    assert!(after.body.contains("moved"), "{}", after.body);
    assert!(app.get("/users").await.body.contains("moved"));
    assert_eq!(
        header_of(&app.get("/users/1").await, "x-cache"),
        Some("hit")
    );
}
