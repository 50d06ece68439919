//! The source tutorial's users API (FastAPI + PostgreSQL + redis-py) ported to Rust, with
//! every cached read going through `cache-core`. See `SEED_API.md` for the routes; `main.rs`
//! for how to run it.

// The public fields are the API's JSON keys and SQL columns, documented in SEED_API.md.
#![allow(missing_docs)]

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod repo;
pub mod routes;
pub mod validate;

use std::sync::OnceLock;

use axum::routing::{get, post, put};
use axum::Router;
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
    // Before the first cached call: each function registers its metrics on its first call.
    prometheus();
    Router::new()
        .route("/api/auth/login", post(routes::login))
        .route("/api/auth/refresh", post(routes::refresh))
        .route(
            "/api/users",
            get(routes::list_users).post(routes::create_user),
        )
        .route(
            "/api/users/{user_id}",
            get(routes::get_user)
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
