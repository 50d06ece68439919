//! A users service written the way Rust backends usually are, before and after adopting
//! cache-core. Before: an axum router, a repository trait with an `#[async_trait]` sqlx
//! implementation used as `Arc<dyn UserRepo>`, a `deadpool_redis::Pool` the service already
//! holds for its own use (here: `GET /health`), and a Prometheus recorder behind
//! `GET /metrics`. Adopting the cache took the lines marked `// cache:` and nothing else:
//! the dependency, one field, one builder line, and one attribute per repository method.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cache_core::{cached_get, cached_update, Cache}; // cache:
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

/// A user as the API shows it, and as the cache stores it (a Redis hash `user:{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Its display name.
    pub name: String,
    /// Its email address.
    pub email: String,
}

/// The repository, as the handlers see it.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// The user, if there is one.
    async fn get(&self, id: i64) -> Result<Option<User>, sqlx::Error>;
    /// Renames a user; `false` when there is none.
    async fn rename(&self, id: i64, name: &str) -> Result<bool, sqlx::Error>;
}

/// The sqlx implementation.
#[derive(Debug)]
pub struct SqlUserRepo {
    db: SqlitePool,
    cache: Cache, // cache:
    /// Queries sent to the database (for the tests).
    pub queries: AtomicUsize,
}

#[async_trait]
impl UserRepo for SqlUserRepo {
    #[cached_get(prefix = "user", key = "id", schema = User, cache = self.cache)] // cache:
    async fn get(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        sqlx::query_as("SELECT id, name, email FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.db)
            .await
    }

    #[cached_update(prefix = "user", key = "id", cache = self.cache)] // cache:
    async fn rename(&self, id: i64, name: &str) -> Result<bool, sqlx::Error> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let done = sqlx::query("UPDATE users SET name = ? WHERE id = ?")
            .bind(name)
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// What the handlers share.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // `dyn UserRepo` has no `Debug`
pub struct AppState {
    /// The users.
    pub repo: Arc<dyn UserRepo>,
    /// The service's own Redis pool.
    pub redis: deadpool_redis::Pool,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
}

/// What went wrong building the service.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The service over its database, its Redis pool and its recorder. Returns the repository
/// too, for the tests to count queries.
pub async fn service(
    db: SqlitePool,
    redis: deadpool_redis::Pool,
    metrics: PrometheusHandle,
) -> Result<(Router, Arc<SqlUserRepo>), BuildError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)")
        .execute(&db)
        .await?;
    let cache = Cache::builder().redis(redis.clone()).build()?; // cache: the one builder line
    let repo = Arc::new(SqlUserRepo {
        db,
        cache, // cache:
        queries: AtomicUsize::new(0),
    });
    let state = AppState {
        repo: repo.clone(),
        redis,
        metrics,
    };
    let router = Router::new()
        .route("/users/{id}", get(get_user).put(rename_user))
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .with_state(state);
    Ok((router, repo))
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<User>, StatusCode> {
    match state.repo.get(id).await {
        Ok(Some(user)) => Ok(Json(user)),
        Ok(None) => Err(StatusCode::NOT_FOUND),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The body of `PUT /users/{id}`.
#[derive(Debug, Deserialize)]
pub struct Rename {
    /// The new name.
    pub name: String,
}

async fn rename_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(rename): Json<Rename>,
) -> StatusCode {
    match state.repo.rename(id, &rename.name).await {
        Ok(true) => StatusCode::NO_CONTENT,
        Ok(false) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The service's own use of its pool, untouched by the cache.
async fn health(State(state): State<AppState>) -> StatusCode {
    let Ok(mut connection) = state.redis.get().await else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    match deadpool_redis::redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
    {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
