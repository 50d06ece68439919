//! Run with: `bash scripts/run-example.sh` (starts a private redis-server when `REDIS_URL` is
//! not set), or `cargo run --release -p example-server` with the environment of
//! `example_server::config::Config` (`APP_ADDR`, `DATABASE_URL`, `REDIS_URL`, `REDIS_CLUSTER_NODES`, `REDIS_SENTINEL_MASTER`/`REDIS_SENTINEL_NODES`, `CACHE_MODE`,
//! `LIST_CACHE`, `JWT_SECRET`, `BCRYPT_COST`, …).

use example_server::auth::Auth;
use example_server::config::Config;
use example_server::db::Database;
use example_server::repo::UserRepo;
use example_server::{app_with, AppState};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::from_env()?;
    let db = Database::connect(&config.database_url).await?;
    let cache = config.cache()?;
    tracing::info!(
        database = %cache_core::redact_url(&config.database_url),
        cache = %config.cache_location(),
        "starting"
    );
    let state = AppState {
        repo: UserRepo::new(db, cache).with_list_cache(config.list_cache),
        auth: Auth::new(&config),
    };
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app_with(state, config.cache_responses))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
