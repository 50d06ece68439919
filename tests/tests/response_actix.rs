//! The response cache as an actix-web middleware (`ResponseCache`, feature `actix`) on a real
//! redis-server, driven through actix-web's own service stack: the same cache, `ETag` /
//! `If-None-Match` / `304`, tags and invalidation as with axum (tests/response.rs), and the
//! poisoning cases of tests/response_poisoning.rs (spellings of an id, repeated and encoded
//! parameters, a handler's `Vary`, hosts, `no-cache`, users), one actix app each.

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, Service, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{test, web, App, FromRequest, HttpRequest, HttpResponse};
use cache_core::{cached_update, Cache, ResponseCache};
use cache_integration_tests::RedisServer;
use serde_json::{json, Value};
use tokio::sync::Notify;

struct Db {
    cache: Cache,
    names: Mutex<BTreeMap<i64, String>>,
    runs: AtomicUsize,
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

    fn ran(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

type Shared = web::Data<Db>;

fn db(cache: Cache) -> Shared {
    web::Data::new(Db {
        cache,
        names: Mutex::new((1..=3).map(|id| (id, format!("user{id}"))).collect()),
        runs: AtomicUsize::new(0),
        gate: Mutex::new(None),
    })
}

fn redis_cache(server: &RedisServer) -> Cache {
    Cache::builder().url(server.url()).build().unwrap()
}

struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

async fn send<S, B>(
    app: &S,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut request = test::TestRequest::default().method(method).uri(uri);
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    if !body.is_empty() {
        request = request
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body);
    }
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get_at<S, B>(app: &S, uri: &str) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    send(app, Method::GET, uri, &[], "").await
}

async fn user(db: Shared, id: web::Path<i64>) -> HttpResponse {
    db.ran();
    let id = id.into_inner();
    let name = db.names.lock().unwrap().get(&id).cloned();
    let gate = db.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        gate.read.notify_one();
        gate.open.notified().await;
    }
    match name {
        Some(name) => HttpResponse::Ok().json(json!({ "id": id, "name": name })),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn list(db: Shared) -> HttpResponse {
    db.ran();
    let names: Vec<String> = db.names.lock().unwrap().values().cloned().collect();
    HttpResponse::Ok().json(names)
}

async fn put_user(db: Shared, id: web::Path<i64>, body: web::Json<Value>) -> HttpResponse {
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    db.rename(id.into_inner(), name).await.unwrap();
    HttpResponse::NoContent().finish()
}

fn user_cache(db: &Shared) -> ResponseCache {
    ResponseCache::new(db.cache.clone(), "resp_user")
        .unwrap()
        .cache_control(header_value("public, max-age=0, must-revalidate"))
        .actix_tags_from(|id: web::Path<i64>| [format!("user:{}", id.into_inner())])
}

/// `http` 1, the types `ResponseCache`'s options take, re-exported for actix-web apps.
fn header_value(text: &'static str) -> cache_core::http::HeaderValue {
    cache_core::http::HeaderValue::from_static(text)
}

/// The end-to-end case of the issue: an actix app caches a page, validates its `ETag` with a
/// `304` without the handler, and drops the page when a write through the app changes it.
#[tokio::test]
async fn an_actix_app_caches_validates_etags_and_drops_pages_on_writes() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(
        App::new()
            .app_data(db.clone())
            .service(
                web::resource("/users/{id}")
                    .wrap(user_cache(&db))
                    .route(web::get().to(user))
                    .route(web::put().to(put_user)),
            )
            .service(
                web::resource("/users")
                    .wrap(
                        ResponseCache::new(db.cache.clone(), "resp_users")
                            .unwrap()
                            .tags(["users:list"]),
                    )
                    .route(web::get().to(list)),
            ),
    )
    .await;

    let first = get_at(&app, "/users/1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-cache"), Some("miss"));
    let etag = first.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=0, must-revalidate")
    );
    let list_before = get_at(&app, "/users").await;

    let second = get_at(&app, "/users/1").await;
    assert_eq!(db.runs(), 2, "the second answer came from Redis");
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), Some(etag.as_str()));
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert!(second.header("age").is_some());
    let stored: Option<String> = redis::cmd("HGET")
        .arg("resp_user:/users/1")
        .arg("body")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(stored.as_deref(), Some(first.body.as_str()));

    let revalidated = send(
        &app,
        Method::GET,
        "/users/1",
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.body, "");
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    let other = send(
        &app,
        Method::GET,
        "/users/1",
        &[("if-none-match", "\"other\"")],
        "",
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, first.body);
    get_at(&app, "/users").await;
    assert_eq!(
        db.runs(),
        2,
        "revalidations and hits did not run the handlers"
    );

    let put = send(&app, Method::PUT, "/users/1", &[], r#"{"name":"renamed"}"#).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let after = get_at(&app, "/users/1").await;
    assert_eq!(after.header("x-cache"), Some("miss"));
    assert!(after.body.contains("renamed"), "{}", after.body);
    assert_ne!(after.header("etag"), Some(etag.as_str()));
    let list_after = get_at(&app, "/users").await;
    assert!(list_after.body.contains("renamed"), "{}", list_after.body);
    assert_ne!(list_after.body, list_before.body);
    let old = send(
        &app,
        Method::GET,
        "/users/1",
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(
        old.status,
        StatusCode::OK,
        "the old ETag no longer revalidates"
    );
}

/// `GET /api/users/01`, a write to user 1, `GET /api/users/01`: the tag is the one the
/// handler's id gives, so the write drops the page whatever spelling made it.
#[tokio::test]
async fn a_write_is_seen_through_every_spelling_of_the_id() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(
        App::new().app_data(db.clone()).service(
            web::resource("/api/users/{id}")
                .wrap(user_cache(&db))
                .route(web::get().to(user)),
        ),
    )
    .await;

    for spelling in ["01", "+1", "%31", "1"] {
        let uri = format!("/api/users/{spelling}");
        assert!(get_at(&app, &uri).await.body.contains("user1"), "{uri}");
        let again = get_at(&app, &uri).await;
        assert_eq!(again.header("x-cache"), Some("hit"), "{uri}");
    }
    db.rename(1, "renamed".into()).await.unwrap();
    for spelling in ["01", "+1", "%31", "1"] {
        let uri = format!("/api/users/{spelling}");
        let after = get_at(&app, &uri).await;
        assert!(after.body.contains("renamed"), "{uri}: {}", after.body);
    }
    let runs = db.runs();
    get_at(&app, "/api/users/%31").await;
    get_at(&app, "/api/users/1").await;
    assert_eq!(db.runs(), runs, "`%31` and `1` are one entry");
}

async fn page(db: Shared, request: HttpRequest) -> HttpResponse {
    db.ran();
    // What actix-web's `web::Query<HashMap<…>>` reads: the last value of a repeated name.
    let query = web::Query::<HashMap<String, String>>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({ "page": query.get("page"), "last": query.get("last") }))
}

/// A parameter given twice is never cached (handlers differ in which value they take); an
/// encoded name is the name it decodes to.
#[tokio::test]
async fn repeated_and_encoded_parameters_are_read_as_the_handler_reads_them() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(
        App::new().app_data(db.clone()).service(
            web::resource("/page")
                .wrap(ResponseCache::new(db.cache.clone(), "resp_page").unwrap())
                .route(web::get().to(page)),
        ),
    )
    .await;

    let one = get_at(&app, "/page?last=10").await;
    assert_eq!(one.header("x-cache"), Some("miss"));
    let twice = get_at(&app, "/page?last=10&last=0").await;
    assert_eq!(twice.header("x-cache"), None, "not looked up");
    assert_ne!(twice.body, one.body);
    let again = get_at(&app, "/page?last=10&last=0").await;
    assert_eq!(again.header("x-cache"), None);

    let plain = get_at(&app, "/page?page=9").await;
    let encoded = get_at(&app, "/page?%70age=9").await;
    assert_eq!(encoded.header("x-cache"), Some("hit"));
    assert_eq!(encoded.body, plain.body);
}

async fn negotiated(request: HttpRequest) -> HttpResponse {
    let json = request
        .headers()
        .get(header::ACCEPT)
        .is_some_and(|accept| accept.as_bytes().starts_with(b"application/json"));
    let mut response = HttpResponse::Ok();
    response.insert_header((header::VARY, "Accept"));
    if json {
        response.json(json!({ "hello": "json" }))
    } else {
        response.body("<p>hello html</p>")
    }
}

/// A handler's `Vary` the key does not hold is not stored; once `vary` keys it, each
/// `Accept` gets its own entry.
#[tokio::test]
async fn the_handlers_vary_never_serves_another_request() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let app = test::init_service(
        App::new()
            .service(
                web::resource("/unkeyed")
                    .wrap(ResponseCache::new(cache.clone(), "resp_unkeyed").unwrap())
                    .route(web::get().to(negotiated)),
            )
            .service(
                web::resource("/keyed")
                    .wrap(
                        ResponseCache::new(cache.clone(), "resp_keyed")
                            .unwrap()
                            .vary([cache_core::http::header::ACCEPT]),
                    )
                    .route(web::get().to(negotiated)),
            ),
    )
    .await;
    let json = [("accept", "application/json")];
    let html = [("accept", "text/html")];
    for path in ["/unkeyed", "/keyed"] {
        let first = send(&app, Method::GET, path, &json, "").await;
        assert!(first.body.contains("json"), "{path}");
        let other = send(&app, Method::GET, path, &html, "").await;
        assert!(other.body.contains("html"), "{path}: {}", other.body);
        let back = send(&app, Method::GET, path, &json, "").await;
        assert!(back.body.contains("json"), "{path}: {}", back.body);
    }
    let unkeyed = send(&app, Method::GET, "/unkeyed", &json, "").await;
    assert_eq!(
        unkeyed.header("x-cache"),
        None,
        "answered as the handler made it"
    );
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("resp_unkeyed*")
        .query(&mut server.connection())
        .unwrap();
    assert!(stored.is_empty(), "never stored: {stored:?}");
    let keyed = send(&app, Method::GET, "/keyed", &html, "").await;
    assert_eq!(keyed.header("x-cache"), Some("hit"));
    assert_eq!(keyed.header("vary"), Some("accept"));
}

/// The user a bearer token names, as an actix-web authentication extractor would give it;
/// a request without one is rejected.
struct Bearer(String);

impl FromRequest for Bearer {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, actix_web::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .filter(|token| !token.starts_with("revoked"));
        ready(match token {
            Some(token) => Ok(Bearer(token.to_owned())),
            None => Err(actix_web::error::ErrorUnauthorized("no session")),
        })
    }
}

async fn mine(db: Shared, request: HttpRequest) -> HttpResponse {
    db.ran();
    match Bearer::extract(&request).await {
        Ok(Bearer(token)) => {
            HttpResponse::Ok().body(format!("the page of {}", token.trim_end_matches("-secret")))
        }
        Err(_) => HttpResponse::Unauthorized().finish(),
    }
}

/// Per-user pages: each user has its own entry, a request with credentials but no
/// `actix_per_user` is never looked up, a revoked token is answered by the handler, and the
/// token never reaches Redis.
#[tokio::test]
async fn per_user_pages_follow_the_authentication_and_keep_tokens_out_of_redis() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(
        App::new()
            .app_data(db.clone())
            .service(
                web::resource("/me")
                    .wrap(
                        ResponseCache::new(db.cache.clone(), "resp_me")
                            .unwrap()
                            .actix_per_user(|Bearer(user)| Some(user)),
                    )
                    .route(web::get().to(mine)),
            )
            .service(
                web::resource("/shared")
                    .wrap(ResponseCache::new(db.cache.clone(), "resp_shared").unwrap())
                    .route(web::get().to(mine)),
            ),
    )
    .await;
    let alice = [("authorization", "Bearer alice-secret")];
    let bob = [("authorization", "Bearer bob-secret")];
    assert!(send(&app, Method::GET, "/me", &alice, "")
        .await
        .body
        .contains("alice"));
    let bobs = send(&app, Method::GET, "/me", &bob, "").await;
    assert!(bobs.body.contains("bob"), "{}", bobs.body);
    let alice_again = send(&app, Method::GET, "/me", &alice, "").await;
    assert_eq!(alice_again.header("x-cache"), Some("hit"));
    assert!(alice_again.body.contains("alice"));
    let revoked = send(
        &app,
        Method::GET,
        "/me",
        &[("authorization", "Bearer revoked-alice-secret")],
        "",
    )
    .await;
    assert_eq!(
        revoked.status,
        StatusCode::UNAUTHORIZED,
        "the handler answered"
    );
    assert_eq!(revoked.header("x-cache"), None, "not looked up");

    for _ in 0..2 {
        let shared = send(&app, Method::GET, "/shared", &alice, "").await;
        assert_eq!(shared.header("x-cache"), None, "a private request");
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.connection())
        .unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert!(!key.contains("secret"), "{key}");
        let fields: Vec<String> = redis::cmd("HVALS")
            .arg(&key)
            .query(&mut server.connection())
            .unwrap_or_default();
        assert!(
            fields.iter().all(|field| !field.contains("secret")),
            "{key}"
        );
    }
}

async fn hosted(db: Shared, request: HttpRequest) -> HttpResponse {
    db.ran();
    let header_text = |name: &str| {
        request
            .headers()
            .get(name)
            .map_or(String::new(), |value| value.to_str().unwrap().to_owned())
    };
    let name = db.names.lock().unwrap()[&1].clone();
    HttpResponse::Ok().body(format!(
        "<a href=\"https://{}{}/\">{name}</a>",
        header_text("host"),
        header_text("x-forwarded-host")
    ))
}

/// A client's `no-cache` is answered by the handler; hosts and forwarded hosts key the
/// entry; a `HEAD` goes to the app's `HEAD` route, not to the cache.
#[tokio::test]
async fn no_cache_head_and_hosts_are_answered_as_http_says() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(
        App::new().app_data(db.clone()).service(
            web::resource("/home")
                .wrap(ResponseCache::new(db.cache.clone(), "resp_home").unwrap())
                .route(web::get().to(hosted))
                .route(web::head().to(hosted)),
        ),
    )
    .await;
    let a = [("host", "a.example")];
    let first = send(&app, Method::GET, "/home", &a, "").await;
    assert!(first.body.contains("a.example"));
    db.names.lock().unwrap().insert(1, "changed".into());
    let cached = send(&app, Method::GET, "/home", &a, "").await;
    assert_eq!(cached.header("x-cache"), Some("hit"));
    assert!(!cached.body.contains("changed"));
    let fresh = send(
        &app,
        Method::GET,
        "/home",
        &[("host", "a.example"), ("cache-control", "no-cache")],
        "",
    )
    .await;
    assert!(fresh.body.contains("changed"), "{}", fresh.body);
    let other = send(&app, Method::GET, "/home", &[("host", "b.example")], "").await;
    assert!(other.body.contains("b.example"), "{}", other.body);
    let forwarded = send(
        &app,
        Method::GET,
        "/home",
        &[("host", "a.example"), ("x-forwarded-host", "evil.example")],
        "",
    )
    .await;
    assert!(forwarded.body.contains("evil.example"));
    let plain = send(&app, Method::GET, "/home", &a, "").await;
    assert!(!plain.body.contains("evil"), "{}", plain.body);

    let runs = db.runs();
    let head = send(&app, Method::HEAD, "/home", &a, "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-cache"), None, "not looked up");
    assert_eq!(db.runs(), runs + 1, "the HEAD route answered");
}

/// Redis down: the handler answers every request, nothing fails.
#[tokio::test]
async fn redis_down_means_the_handler_answers() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(
        App::new().app_data(db.clone()).service(
            web::resource("/users/{id}")
                .wrap(user_cache(&db))
                .route(web::get().to(user)),
        ),
    )
    .await;
    get_at(&app, "/users/1").await;
    drop(server);
    for _ in 0..2 {
        let answer = get_at(&app, "/users/1").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.contains("user1"));
    }
}

/// An axum extractor given to a cache an actix app wraps would leave its tags out: refused
/// when the app is built.
#[tokio::test]
#[should_panic(expected = "wrapped by actix holds an extractor for axum")]
async fn an_axum_extractor_is_refused_by_an_actix_app() {
    let cache = Cache::builder().url("mem://").build().unwrap();
    let wrong = ResponseCache::new(cache, "resp_wrong")
        .unwrap()
        .tags_from(|axum::extract::Path(id): axum::extract::Path<i64>| [format!("user:{id}")]);
    let _app = test::init_service(
        App::new().service(
            web::resource("/users/{id}")
                .wrap(wrong)
                .route(web::get().to(HttpResponse::Ok)),
        ),
    )
    .await;
}

fn users_app_routes(
    db: &Shared,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new().app_data(db.clone()).service(
        web::resource("/users/{id}")
            .wrap(user_cache(db))
            .route(web::get().to(user))
            .route(web::put().to(put_user)),
    )
}

/// The handler read the data, a write lands, then the handler answers: what it made is
/// answered but not stored, so the next request sees the write.
#[tokio::test]
async fn a_response_made_before_a_write_is_not_stored_after_it() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(users_app_routes(&db)).await;
    let gate = Arc::new(Gate {
        read: Notify::new(),
        open: Notify::new(),
    });
    *db.gate.lock().unwrap() = Some(gate.clone());
    let (old, ()) = tokio::join!(get_at(&app, "/users/3"), async {
        // The handler has read "user3"; the write lands before it answers.
        gate.read.notified().await;
        *db.gate.lock().unwrap() = None;
        let put = send(&app, Method::PUT, "/users/3", &[], r#"{"name":"new"}"#).await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
        gate.open.notify_one();
    });
    assert!(old.body.contains("user3"), "it answers what it read");
    let next = get_at(&app, "/users/3").await;
    assert!(
        next.body.contains("new"),
        "the response made before the write was not stored: {}",
        next.body
    );
}

/// Concurrent misses of one page run the handler once.
#[tokio::test]
async fn concurrent_misses_run_the_handler_once() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(users_app_routes(&db)).await;
    let gate = Arc::new(Gate {
        read: Notify::new(),
        open: Notify::new(),
    });
    *db.gate.lock().unwrap() = Some(gate.clone());
    let (a, b, c, d, ()) = tokio::join!(
        get_at(&app, "/users/2"),
        get_at(&app, "/users/2"),
        get_at(&app, "/users/2"),
        get_at(&app, "/users/2"),
        async {
            gate.read.notified().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            *db.gate.lock().unwrap() = None;
            gate.open.notify_one();
        }
    );
    for answer in [a, b, c, d] {
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.contains("user2"));
    }
    assert_eq!(db.runs(), 1, "one handler run for four concurrent misses");
}

async fn big(db: Shared) -> HttpResponse {
    db.ran();
    HttpResponse::Ok().body("x".repeat(4096))
}

async fn streamed(db: Shared) -> HttpResponse {
    db.ran();
    HttpResponse::Ok().body(Chunks(["a", "b"].into()))
}

/// A body of ready chunks that does not announce its size, as a streaming body does not.
struct Chunks(std::collections::VecDeque<&'static str>);

impl MessageBody for Chunks {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(web::Bytes::from(chunk))))
    }
}

/// Errors, bodies over `max_body`, bodies of unknown size and `Set-Cookie` are answered as
/// the handler made them and never stored.
#[tokio::test]
async fn failures_big_bodies_streams_and_cookies_are_not_stored() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let cache = db.cache.clone();
    let wrapped = |prefix: &str| ResponseCache::new(cache.clone(), prefix).unwrap();
    let app =
        test::init_service(
            App::new()
                .app_data(db.clone())
                .service(
                    web::resource("/users/{id}")
                        .wrap(user_cache(&db))
                        .route(web::get().to(user)),
                )
                .service(
                    web::resource("/big")
                        .wrap(wrapped("resp_big").max_body(1024))
                        .route(web::get().to(big)),
                )
                .service(
                    web::resource("/streamed")
                        .wrap(wrapped("resp_streamed"))
                        .route(web::get().to(streamed)),
                )
                .service(web::resource("/cookie").wrap(wrapped("resp_cookie")).route(
                    web::get().to(|db: Shared| async move {
                        db.ran();
                        HttpResponse::Ok()
                            .insert_header((header::SET_COOKIE, "session=1"))
                            .body("personal")
                    }),
                )),
        )
        .await;
    for _ in 0..2 {
        assert_eq!(
            get_at(&app, "/users/99").await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(db.runs(), 2, "a 404 is not stored");
    for _ in 0..2 {
        assert_eq!(get_at(&app, "/big").await.body.len(), 4096);
    }
    assert_eq!(db.runs(), 4, "a body over max_body is not stored");
    for _ in 0..2 {
        assert_eq!(get_at(&app, "/streamed").await.body, "ab");
    }
    assert_eq!(db.runs(), 6, "a body of unknown size is not stored");
    for _ in 0..2 {
        let answer = get_at(&app, "/cookie").await;
        assert_eq!(answer.header("set-cookie"), Some("session=1"));
    }
    assert_eq!(db.runs(), 8, "a response setting a cookie is not stored");
}

/// Scopes keep their prefix in the key: two tenants' `/users/1` are two entries.
#[tokio::test]
async fn scopes_keep_their_prefix_in_the_key() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let tenant = |name: &'static str| {
        web::scope(if name == "a" {
            "/tenant-a"
        } else {
            "/tenant-b"
        })
        .service(
            web::resource("/users/{id}")
                .wrap(ResponseCache::new(cache.clone(), "resp_tenant").unwrap())
                .route(web::get().to(move |id: web::Path<i64>| async move {
                    format!("{name}'s user {}", id.into_inner())
                })),
        )
    };
    let app = test::init_service(App::new().service(tenant("a")).service(tenant("b"))).await;
    assert_eq!(get_at(&app, "/tenant-a/users/1").await.body, "a's user 1");
    let b = get_at(&app, "/tenant-b/users/1").await;
    assert_eq!(b.body, "b's user 1");
    assert_eq!(b.header("x-cache"), Some("miss"));
    assert_eq!(
        get_at(&app, "/tenant-a/users/1").await.header("x-cache"),
        Some("hit")
    );
}

async fn ranged(request: HttpRequest) -> HttpResponse {
    if request.headers().contains_key(header::RANGE) {
        HttpResponse::PartialContent()
            .insert_header((header::CONTENT_RANGE, "bytes 0-1/10"))
            .body("01")
    } else {
        HttpResponse::Ok().body("0123456789")
    }
}

/// A `206` answering a `Range` is never stored, so the whole page is never served a part.
#[tokio::test]
async fn partial_content_never_serves_another_request() {
    let server = RedisServer::start();
    let app = test::init_service(
        App::new().service(
            web::resource("/ranged")
                .wrap(ResponseCache::new(redis_cache(&server), "resp_ranged").unwrap())
                .route(web::get().to(ranged)),
        ),
    )
    .await;
    let part = send(&app, Method::GET, "/ranged", &[("range", "bytes=0-1")], "").await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    let whole = get_at(&app, "/ranged").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, "0123456789");
}

/// Parameters in another order share an entry; with `query_params`, only the listed ones
/// key it; a request `cache_if` refuses is not looked up (`cache_if` sees the request as
/// `http` 1 parts, converted from actix-web's).
#[tokio::test]
async fn queries_in_another_order_share_an_entry_and_only_listed_ones_key_it() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let app = test::init_service(
        App::new()
            .app_data(db.clone())
            .service(
                web::resource("/page")
                    .wrap(ResponseCache::new(db.cache.clone(), "resp_page").unwrap())
                    .route(web::get().to(page)),
            )
            .service(
                web::resource("/only")
                    .wrap(
                        ResponseCache::new(db.cache.clone(), "resp_only")
                            .unwrap()
                            .query_params(["page"])
                            .cache_if(|parts| parts.uri.query() != Some("uncached")),
                    )
                    .route(web::get().to(page)),
            ),
    )
    .await;
    get_at(&app, "/page?page=1&last=10").await;
    let again = get_at(&app, "/page?last=10&page=1").await;
    assert_eq!(again.header("x-cache"), Some("hit"));
    assert_eq!(db.runs(), 1);

    get_at(&app, "/only?page=2").await;
    let junk = get_at(&app, "/only?junk=1&page=2").await;
    assert_eq!(junk.header("x-cache"), Some("hit"));
    let other = get_at(&app, "/only?page=3").await;
    assert_eq!(other.header("x-cache"), Some("miss"));
    let refused = get_at(&app, "/only?uncached").await;
    assert_eq!(refused.header("x-cache"), None);
    assert_eq!(db.runs(), 4);
}

/// And the other way round: an actix-web extractor in a cache an axum route is layered with.
#[tokio::test]
#[should_panic(expected = "wrapped by axum holds an extractor for actix")]
async fn an_actix_extractor_is_refused_by_an_axum_layer() {
    let cache = Cache::builder().url("mem://").build().unwrap();
    let wrong = ResponseCache::new(cache, "resp_wrong")
        .unwrap()
        .actix_per_user(|Bearer(user)| Some(user));
    let _router: axum::Router =
        axum::Router::new().route("/me", axum::routing::get(|| async { "" }).layer(wrong));
}

/// One HTTP/1.1 exchange over TCP, as a client sends it: status, headers (names
/// lowercased) and the bytes after them.
async fn over_tcp(address: std::net::SocketAddr, head: &str, body: &str) -> WireAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{head}\r\nHost: test.example\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    WireAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

struct WireAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl WireAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(named, _)| named == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The same on the wire: a real `HttpServer` on a loopback port (its own actix system on a
/// thread, stopped at the end), a client speaking HTTP/1.1 over TCP. A page is cached, its
/// `ETag` answered `304` without the handler, a `HEAD` answered by its route without body
/// and with the page's length, and a `PUT` drops the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_an_actix_server_caches_validates_and_drops_pages() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let (sender, receiver) = std::sync::mpsc::channel();
    let app_db = db.clone();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let http = actix_web::HttpServer::new(move || {
                App::new().app_data(app_db.clone()).service(
                    web::resource("/users/{id}")
                        .wrap(user_cache(&app_db))
                        .route(web::get().to(user))
                        .route(web::head().to(user))
                        .route(web::put().to(put_user)),
                )
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
            let address = http.addrs()[0];
            let running = http.run();
            sender.send((address, running.handle())).unwrap();
            running.await
        })
    });
    let (address, handle) = receiver.recv().unwrap();

    let first = over_tcp(address, "GET /users/1 HTTP/1.1", "").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert!(first.body.contains("user1"), "{}", first.body);
    let etag = first.header("etag").unwrap().to_owned();
    let hit = over_tcp(address, "GET /users/1 HTTP/1.1", "").await;
    assert_eq!(hit.header("x-cache"), Some("hit"));
    assert_eq!(hit.body, first.body);
    assert_eq!(
        hit.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    let revalidated = over_tcp(
        address,
        &format!("GET /users/1 HTTP/1.1\r\nIf-None-Match: {etag}"),
        "",
    )
    .await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.body, "");
    assert_eq!(db.runs(), 1, "the hit and the 304 did not run the handler");

    let head = over_tcp(address, "HEAD /users/1 HTTP/1.1", "").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "", "no body on the wire");
    assert_eq!(
        head.header("content-length"),
        Some(first.body.len().to_string().as_str()),
        "the GET's length"
    );

    let put = over_tcp(
        address,
        "PUT /users/1 HTTP/1.1\r\nContent-Type: application/json",
        r#"{"name":"renamed"}"#,
    )
    .await;
    assert_eq!(put.status, 204);
    let after = over_tcp(address, "GET /users/1 HTTP/1.1", "").await;
    assert_eq!(after.header("x-cache"), Some("miss"));
    assert!(after.body.contains("renamed"), "{}", after.body);

    handle.stop(true).await;
    thread.join().unwrap().unwrap();
}
