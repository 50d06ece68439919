//! The source tutorial's users API (FastAPI + PostgreSQL + redis-py) ported to Rust, with
//! every cached read going through `cache-core`. See `routes.rs` for the routes; `main.rs`
//! for how to run it.

// The public fields are the API's JSON keys and SQL columns, as the original API has them.
#![allow(missing_docs)]

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod repo;
pub mod routes;
pub mod validate;

use std::sync::OnceLock;

use axum::extract::Path;
use axum::routing::{get, post, put};
use axum::Router;
use cache_core::{Cache, ResponseCache};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::auth::Auth;
use crate::repo::UserRepo;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Users, cached.
    pub repo: UserRepo,
    /// Tokens and passwords.
    pub auth: Auth,
}

/// The process's Prometheus recorder, installed on first use: the cache's metrics
/// (`cache_hits_total{prefix="user"}`, …) are rendered by `GET /metrics`.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder in this process")
    })
}

/// The whole API. Separate from `main` so that tests drive it without a socket.
pub fn app(state: AppState) -> Router {
    app_with(state, true)
}

/// The whole API, with (`responses`) or without the response cache in front of the public
/// reads (`CACHE_RESPONSES`).
pub fn app_with(state: AppState, responses: bool) -> Router {
    // Before the first cached call: each function registers its metrics on its first call.
    prometheus();
    let cache = if responses {
        state.repo.cache().clone()
    } else {
        Cache::disabled()
    };
    // Whole responses of the two public reads, dropped by the repository's own write tags:
    // a `POST`/`PUT`/`DELETE` is seen by the next `GET` at once. A list page holds rows, so
    // it carries the tag of the rows (`users:rows`, a profile update) besides the list's
    // (`users:list`, a create or a delete), unlike the repository's id lists.
    // As the repository, only the bounded set of list pages is cached (no keyword, usual
    // sizes, the first hundred): a client cannot grow the cache with arbitrary queries.
    let pages = ResponseCache::new(cache.clone(), "resp_users")
        .expect("a valid prefix")
        .tags([repo::LIST_TAG, repo::ROWS_TAG])
        .query_params(["last", "limit"])
        .cache_if(|parts| {
            repo::Page::from_query(parts.uri.query()).is_some_and(|page| page.is_cacheable())
        });
    let user_page = ResponseCache::new(cache, "resp_user")
        .expect("a valid prefix")
        // The tag from the id as the handler parses it: `/api/users/01` is user 1, and a
        // write to user 1 drops it.
        .tags_from(|Path(user_id): Path<i64>| [format!("user:{user_id}")])
        .query_params(Vec::<String>::new())
        // One entry per user: other spellings of an id (`01`, `+1`) are answered by the
        // handler, so a client cannot make many entries of one page.
        .cache_if(|parts| {
            let id = parts.uri.path().rsplit('/').next().unwrap_or_default();
            id.parse::<i64>()
                .is_ok_and(|parsed| parsed.to_string() == id)
        });
    Router::new()
        .route("/api/auth/login", post(routes::login))
        .route("/api/auth/refresh", post(routes::refresh))
        .route(
            "/api/users",
            get(routes::list_users)
                .layer(pages)
                .post(routes::create_user),
        )
        .route(
            "/api/users/{user_id}",
            get(routes::get_user)
                .layer(user_page)
                .put(routes::update_user)
                .delete(routes::delete_user),
        )
        .route(
            "/api/users/{user_id}/password",
            put(routes::update_password),
        )
        .route(
            "/api/me",
            get(routes::get_me)
                .put(routes::update_me)
                .delete(routes::delete_me),
        )
        .route("/api/me/password", put(routes::update_my_password))
        .route("/cache/stats", get(routes::cache_stats))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .with_state(state)
}
