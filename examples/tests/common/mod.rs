//! Shared by the example server's tests: the app over a database and a cache, driven either
//! in process (`oneshot`) or as a running server on a free loopback port.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part; `pub` for them

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use cache_core::Cache;
use example_server::auth::Auth;
use example_server::config::Config;
use example_server::db::Database;
use example_server::repo::{ListCache, UserRepo};
use example_server::{app, AppState};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        database_url: String::new(),
        redis_url: String::new(),
        redis_cluster_nodes: None,
        redis_sentinel: None,
        redis_sentinel_primary_url: None,
        cache_namespace: None,
        near_entries: 0,
        cache_enabled: true,
        cache_responses: true,
        list_cache: ListCache::Ids,
        access_secret: "test-access".into(),
        refresh_secret: "test-refresh".into(),
        access_minutes: 30,
        refresh_minutes: 60,
        // bcrypt at cost 4 takes a millisecond; the default 12 would take 0.2 s a hash.
        bcrypt_cost: 4,
    }
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh SQLite file in the temporary directory.
pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("{}.db", unique("example_test")));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A fresh database in the PostgreSQL cluster that the test command starts
/// (`TEST_POSTGRES_URL`, an admin URL).
pub async fn postgres_url() -> String {
    let admin = std::env::var("TEST_POSTGRES_URL").expect(
        "TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts a \
         throwaway PostgreSQL cluster, or point it at one",
    );
    sqlx::any::install_default_drivers();
    let name = unique("example_test");
    let pool = sqlx::AnyPool::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create a test database");
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    format!("{base}/{name}")
}

pub async fn state(database_url: &str, cache: Cache) -> AppState {
    state_with(database_url, cache, ListCache::Ids).await
}

/// The app's state, caching list pages as `list_cache` says.
pub async fn state_with(database_url: &str, cache: Cache, list_cache: ListCache) -> AppState {
    let db = Database::connect(database_url)
        .await
        .expect("connect the test database");
    AppState {
        repo: UserRepo::new(db, cache).with_list_cache(list_cache),
        auth: Auth::new(&config()),
    }
}

/// An HTTP answer: status, headers, JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Drives the app in process.
pub struct InProcess {
    pub state: AppState,
}

impl InProcess {
    pub async fn new() -> InProcess {
        InProcess {
            state: state(
                "sqlite::memory:",
                Cache::builder().url("mem://").build().unwrap(),
            )
            .await,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some((content_type, body)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body)),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn json(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Value,
    ) -> Answer {
        self.send(
            method,
            uri,
            token,
            Some(("application/json", body.to_string())),
        )
        .await
    }

    pub async fn get(&self, uri: &str, token: Option<&str>) -> Answer {
        self.send(Method::GET, uri, token, None).await
    }

    /// `POST /api/users` with a JSON body.
    pub async fn post_user(&self, body: Value) -> Answer {
        self.json(Method::POST, "/api/users", None, body).await
    }

    /// Creates a user and answers its id.
    pub async fn create(&self, name: &str, email: &str, password: &str) -> i64 {
        let answer = self.post_user(new_user(name, email, password)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.body["id"].as_i64().unwrap()
    }

    /// Logs in and answers the token pair.
    pub async fn login(&self, email: &str, password: &str) -> Answer {
        let form = format!(
            "username={}&password={}",
            urlencode(email),
            urlencode(password)
        );
        self.send(
            Method::POST,
            "/api/auth/login",
            None,
            Some(("application/x-www-form-urlencoded", form)),
        )
        .await
    }

    pub async fn access_token(&self, email: &str, password: &str) -> String {
        let answer = self.login(email, password).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.body["access_token"].as_str().unwrap().to_owned()
    }
}

pub fn new_user(name: &str, email: &str, password: &str) -> Value {
    serde_json::json!({
        "name": name,
        "password": password,
        "avatar": null,
        "age": 30,
        "email": email,
        "birthday": "1990-05-17",
    })
}

pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The keys of a JSON object in the order they were sent (`serde_json::Map` sorts them).
pub fn keys(json: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            deserializer.deserialize_map(Visitor)
        }
    }
    serde_json::from_str::<Keys>(json).expect("a JSON object").0
}

/// The keys of the first object of a JSON array, in order.
pub fn first_item_keys(json: &str) -> Vec<String> {
    let items: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_str(json).expect("a JSON array");
    keys(items[0].get())
}
