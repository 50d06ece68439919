//! The response cache attacked: requests crafted to make `ResponseCache` serve a page to a
//! request the handler would have answered differently (another spelling of an id, a
//! repeated or encoded parameter, another tenant's nest prefix, another `Accept`, a range,
//! another host, a revoked token), on a real redis-server. Two requests the handler cannot
//! tell apart share an entry; two it can never do.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_core::{cached_update, Cache, ResponseCache};
use cache_integration_tests::RedisServer;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Db {
    cache: Cache,
    names: Mutex<BTreeMap<i64, String>>,
    runs: AtomicUsize,
}

impl Db {
    #[cached_update(prefix = "user", key = "id", tags = ["user:{id}"], cache = self.cache)]
    async fn rename(&self, id: i64, name: String) -> Result<(), String> {
        self.names.lock().unwrap().insert(id, name);
        Ok(())
    }

    fn ran(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
    }
}

type Shared = Arc<Db>;

fn db(cache: Cache) -> Shared {
    Arc::new(Db {
        cache,
        names: Mutex::new((1..=3).map(|id| (id, format!("user{id}"))).collect()),
        runs: AtomicUsize::new(0),
    })
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

async fn send(router: &Router, method: Method, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get_at(router: &Router, uri: &str) -> Answer {
    send(router, Method::GET, uri, &[]).await
}

fn redis_cache(server: &RedisServer) -> Cache {
    Cache::builder().url(server.url()).build().unwrap()
}

async fn user(State(db): State<Shared>, Path(id): Path<i64>) -> Result<Json<Value>, StatusCode> {
    db.ran();
    let name = db.names.lock().unwrap().get(&id).cloned();
    name.map(|name| Json(json!({ "id": id, "name": name })))
        .ok_or(StatusCode::NOT_FOUND)
}

/// `GET /api/users/01`, a write to user 1, `GET /api/users/01`: the tag is the one the
/// handler's id gives, so the write drops the page whatever spelling made it.
#[tokio::test]
async fn a_write_is_seen_through_every_spelling_of_the_id() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let layer = ResponseCache::new(db.cache.clone(), "resp_user")
        .unwrap()
        .tags_from(|Path(id): Path<i64>| [format!("user:{id}")]);
    let router = Router::new()
        .route("/api/users/{id}", get(user).layer(layer))
        .with_state(db.clone());

    for spelling in ["01", "+1", "%31", "1"] {
        let uri = format!("/api/users/{spelling}");
        assert!(get_at(&router, &uri).await.body.contains("user1"));
        let again = get_at(&router, &uri).await;
        assert_eq!(again.header("x-cache"), Some("hit"), "{uri}");
    }
    db.rename(1, "renamed".into()).await.unwrap();
    for spelling in ["01", "+1", "%31", "1"] {
        let uri = format!("/api/users/{spelling}");
        let after = get_at(&router, &uri).await;
        assert!(after.body.contains("renamed"), "{uri}: {}", after.body);
    }
    // `%31` is `1` to the router and the handler: one entry for both.
    let runs = db.runs.load(Ordering::SeqCst);
    get_at(&router, "/api/users/%31").await;
    get_at(&router, "/api/users/1").await;
    assert_eq!(db.runs.load(Ordering::SeqCst), runs);
}

async fn page(Query(query): Query<HashMap<String, String>>) -> Json<Value> {
    Json(json!({ "last": query.get("last"), "page": query.get("page") }))
}

/// A handler reads one value of a repeated parameter (axum's `Query` into a map keeps the
/// last); requests repeating one are answered by the handler, never from an entry made
/// for another order.
#[tokio::test]
async fn repeated_parameters_never_share_an_entry() {
    let server = RedisServer::start();
    let layer = ResponseCache::new(redis_cache(&server), "resp_list").unwrap();
    let router = Router::new().route("/list", get(page).layer(layer));

    let first = get_at(&router, "/list?last=10&last=0&limit=10").await;
    let second = get_at(&router, "/list?last=0&last=10&limit=10").await;
    assert!(first.body.contains("\"0\""), "{}", first.body);
    assert!(second.body.contains("\"10\""), "{}", second.body);
    assert_eq!(first.header("x-cache"), None, "not looked up");
    assert_eq!(second.header("x-cache"), None, "not looked up");
    // A name repeated through an encoding is the same name.
    let encoded = get_at(&router, "/list?last=0&%6Cast=10").await;
    assert!(encoded.body.contains("\"10\""), "{}", encoded.body);
    assert_eq!(encoded.header("x-cache"), None);
}

/// `?%70age=9` is `page=9` to the handler: it must neither poison `/page` (where `page` is
/// the only parameter keyed) nor miss the entry of `?page=9`.
#[tokio::test]
async fn percent_encoded_names_are_the_names_they_decode_to() {
    let server = RedisServer::start();
    let layer = ResponseCache::new(redis_cache(&server), "resp_page")
        .unwrap()
        .query_params(["page"]);
    let router = Router::new().route("/page", get(page).layer(layer));

    let encoded = get_at(&router, "/page?%70age=9").await;
    assert!(encoded.body.contains("\"9\""));
    let plain = get_at(&router, "/page").await;
    assert!(plain.body.contains("\"page\":null"), "{}", plain.body);
    assert_eq!(plain.header("x-cache"), Some("miss"));
    let decoded = get_at(&router, "/page?page=9").await;
    assert_eq!(decoded.header("x-cache"), Some("hit"), "the same request");
    assert!(decoded.body.contains("\"9\""));
    // `+` in a value is a space to the handler, `%2B` a plus: two pages.
    let plus = get_at(&router, "/page?page=a%2Bb").await;
    let space = get_at(&router, "/page?page=a+b").await;
    assert!(plus.body.contains("a+b") && space.body.contains("a b"));
}

/// Two tenants' routers nested under their prefixes, one layer configuration: the nest
/// prefix is part of the key.
#[tokio::test]
async fn nested_routers_keep_their_prefix_in_the_key() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let tenant = |name: &'static str| {
        let layer = ResponseCache::new(cache.clone(), "resp_tenant").unwrap();
        Router::new().route(
            "/users/{id}",
            get(move |Path(id): Path<i64>| async move { format!("{name}'s user {id}") })
                .layer(layer),
        )
    };
    let router = Router::new()
        .nest("/tenant-a", tenant("a"))
        .nest("/tenant-b", tenant("b"));

    assert_eq!(
        get_at(&router, "/tenant-a/users/1").await.body,
        "a's user 1"
    );
    let b = get_at(&router, "/tenant-b/users/1").await;
    assert_eq!(b.body, "b's user 1");
    assert_eq!(b.header("x-cache"), Some("miss"));
    assert_eq!(
        get_at(&router, "/tenant-a/users/1").await.header("x-cache"),
        Some("hit")
    );
}

async fn negotiated(headers: HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .is_some_and(|accept| accept.as_bytes().starts_with(b"text/html"));
    let body = if html {
        "<p>ada</p>"
    } else {
        "{\"name\":\"ada\"}"
    };
    ([(header::VARY, "Accept")], body).into_response()
}

async fn ranged(headers: HeaderMap) -> Response {
    if headers.contains_key(header::RANGE) {
        (
            StatusCode::PARTIAL_CONTENT,
            [(header::CONTENT_RANGE, "bytes 0-1/10")],
            "01",
        )
            .into_response()
    } else {
        "0123456789".into_response()
    }
}

/// The handler's own `Vary` is honoured (not stored unless the layer keys by it, then
/// keyed), and a `206` answering a `Range` is never stored.
#[tokio::test]
async fn the_handlers_vary_and_partial_content_never_serve_another_request() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let router = Router::new()
        .route(
            "/negotiated",
            get(negotiated).layer(ResponseCache::new(cache.clone(), "resp_neg").unwrap()),
        )
        .route(
            "/keyed",
            get(negotiated).layer(
                ResponseCache::new(cache.clone(), "resp_keyed")
                    .unwrap()
                    .vary([header::ACCEPT]),
            ),
        )
        .route(
            "/ranged",
            get(ranged).layer(ResponseCache::new(cache, "resp_ranged").unwrap()),
        );

    for route in ["/negotiated", "/keyed"] {
        let html = send(&router, Method::GET, route, &[("accept", "text/html")]).await;
        assert_eq!(html.body, "<p>ada</p>");
        let json = send(
            &router,
            Method::GET,
            route,
            &[("accept", "application/json")],
        )
        .await;
        assert_eq!(json.body, "{\"name\":\"ada\"}", "{route}");
        assert!(json.header("vary").unwrap().contains("ccept"), "{route}");
    }
    let keyed = send(&router, Method::GET, "/keyed", &[("accept", "text/html")]).await;
    assert_eq!(keyed.header("x-cache"), Some("hit"), "keyed by Accept");
    assert_eq!(keyed.body, "<p>ada</p>");

    let part = send(&router, Method::GET, "/ranged", &[("range", "bytes=0-1")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    let whole = get_at(&router, "/ranged").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, "0123456789");
}

/// The tokens the authentication accepts, and whose they are; revoking one takes effect at
/// once.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, String>>>);

/// What the authentication produced: the user, checked against the sessions on every
/// request.
struct Authenticated(String);

static SESSIONS: std::sync::OnceLock<Sessions> = std::sync::OnceLock::new();

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let sessions = SESSIONS.get_or_init(Sessions::default).0.lock().unwrap();
        sessions
            .get(token)
            .map(|user| Authenticated(user.clone()))
            .ok_or(StatusCode::UNAUTHORIZED)
    }
}

async fn mine(Authenticated(user): Authenticated) -> String {
    format!("{user}'s page")
}

/// `per_user` gets what the authentication produced, on every request: a revoked token
/// reads nothing from the cache, another user's token reads their own page, and no token
/// reaches Redis. Without `per_user`, any private header (`X-Api-Key` among them) bypasses.
#[tokio::test]
async fn per_user_pages_follow_the_authentication_and_keep_tokens_out_of_redis() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let sessions = SESSIONS.get_or_init(Sessions::default).clone();
    sessions.0.lock().unwrap().extend(
        [("tok-ada-s3cret", "ada"), ("tok-bob-s3cret", "bob")]
            .map(|(token, user)| (token.to_owned(), user.to_owned())),
    );
    let served = Arc::new(AtomicUsize::new(0));
    let counted = served.clone();
    let api_key = move |headers: HeaderMap| {
        let served = counted.clone();
        async move {
            served.fetch_add(1, Ordering::SeqCst);
            let key = headers
                .get("x-api-key")
                .map(|key| key.to_str().unwrap().to_owned());
            format!("data for {key:?}")
        }
    };
    let router = Router::new()
        .route(
            "/mine",
            get(mine).layer(
                ResponseCache::new(cache.clone(), "resp_mine")
                    .unwrap()
                    .per_user(|Authenticated(user)| Some(user)),
            ),
        )
        .route(
            "/keyed",
            get(api_key).layer(ResponseCache::new(cache, "resp_api").unwrap()),
        );
    let as_token = |token: &str| format!("Bearer {token}");

    let ada = send(
        &router,
        Method::GET,
        "/mine",
        &[("authorization", &as_token("tok-ada-s3cret"))],
    )
    .await;
    assert_eq!(ada.body, "ada's page");
    let again = send(
        &router,
        Method::GET,
        "/mine",
        &[("authorization", &as_token("tok-ada-s3cret"))],
    )
    .await;
    assert_eq!(again.header("x-cache"), Some("hit"));
    let bob = send(
        &router,
        Method::GET,
        "/mine",
        &[("authorization", &as_token("tok-bob-s3cret"))],
    )
    .await;
    assert_eq!(bob.body, "bob's page");
    // No token, or a forged one: the handler answers.
    let forged = send(
        &router,
        Method::GET,
        "/mine",
        &[("authorization", "Bearer ada")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_at(&router, "/mine").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Revoked: the next request is not served from the cache.
    sessions.0.lock().unwrap().remove("tok-ada-s3cret");
    let revoked = send(
        &router,
        Method::GET,
        "/mine",
        &[("authorization", &as_token("tok-ada-s3cret"))],
    )
    .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.connection())
        .unwrap();
    assert!(!keys.is_empty());
    let mut everything = keys.join("\n");
    for key in &keys {
        let fields: Vec<String> = redis::cmd("HVALS")
            .arg(key)
            .query(&mut server.connection())
            .unwrap_or_default();
        everything.push_str(&fields.join("\n"));
    }
    for secret in ["s3cret", "tok-", "user=ada"] {
        assert!(
            !everything.contains(secret),
            "{secret} in Redis: {everything}"
        );
    }

    // API keys are private without per_user: each request goes to the handler.
    let one = send(&router, Method::GET, "/keyed", &[("x-api-key", "one")]).await;
    let two = send(&router, Method::GET, "/keyed", &[("x-api-key", "two")]).await;
    assert_eq!(one.body, "data for Some(\"one\")");
    assert_eq!(two.body, "data for Some(\"two\")");
    assert_eq!(two.header("x-cache"), None);
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

async fn hosted(headers: HeaderMap, State(db): State<Shared>) -> String {
    db.ran();
    let host = headers
        .get(header::HOST)
        .map_or("", |host| host.to_str().unwrap());
    let forwarded = headers
        .get("x-forwarded-host")
        .map_or("", |host| host.to_str().unwrap());
    let name = db.names.lock().unwrap()[&1].clone();
    format!("<a href=\"https://{host}{forwarded}/\">{name}</a>")
}

/// A client's `no-cache` is answered by the handler; `HEAD` says the stored length; hosts
/// (and forwarded hosts) key the entry.
#[tokio::test]
async fn no_cache_head_and_hosts_are_answered_as_http_says() {
    let server = RedisServer::start();
    let db = db(redis_cache(&server));
    let router = Router::new()
        .route(
            "/home",
            get(hosted).layer(ResponseCache::new(db.cache.clone(), "resp_home").unwrap()),
        )
        .with_state(db.clone());

    let first = send(&router, Method::GET, "/home", &[("host", "a.example")]).await;
    assert!(first.body.contains("a.example"));
    // Changed behind the cache's back (no invalidation): only `no-cache` sees it.
    db.names.lock().unwrap().insert(1, "changed".into());
    let cached = send(&router, Method::GET, "/home", &[("host", "a.example")]).await;
    assert_eq!(cached.header("x-cache"), Some("hit"));
    let fresh = send(
        &router,
        Method::GET,
        "/home",
        &[("host", "a.example"), ("cache-control", "no-cache")],
    )
    .await;
    assert!(fresh.body.contains("changed"), "{}", fresh.body);

    let other = send(&router, Method::GET, "/home", &[("host", "b.example")]).await;
    assert!(other.body.contains("b.example"), "{}", other.body);
    let forwarded = send(
        &router,
        Method::GET,
        "/home",
        &[("host", "a.example"), ("x-forwarded-host", "evil.example")],
    )
    .await;
    assert!(forwarded.body.contains("evil.example"));
    let plain = send(&router, Method::GET, "/home", &[("host", "a.example")]).await;
    assert!(!plain.body.contains("evil"), "{}", plain.body);

    let head = send(&router, Method::HEAD, "/home", &[("host", "a.example")]).await;
    assert_eq!(head.header("x-cache"), Some("hit"));
    assert_eq!(head.body, "");
    assert_eq!(
        head.header("content-length"),
        Some(plain.body.len().to_string().as_str())
    );
    let head_miss = send(&router, Method::HEAD, "/home", &[("host", "c.example")]).await;
    assert_eq!(head_miss.header("x-cache"), Some("miss"));
    let get_c = send(&router, Method::GET, "/home", &[("host", "c.example")]).await;
    assert_eq!(
        head_miss.header("content-length"),
        Some(get_c.body.len().to_string().as_str())
    );
}
