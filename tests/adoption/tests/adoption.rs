//! The adopted service against a real redis-server: reads are cached, writes invalidate,
//! the service's own pool keeps working, and Prometheus sees the cache.

use std::sync::atomic::Ordering;

use adoption_example::service;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use cache_integration_tests::RedisServer;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: &str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn the_usual_service_is_cached_by_attributes_and_one_builder_line() {
    let server = RedisServer::start();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let redis = deadpool_redis::Config::from_url(server.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let db = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let (router, repo) = service(db.clone(), redis, metrics).await.unwrap();
    sqlx::query("INSERT INTO users (id, name, email) VALUES (1, 'ada', 'ada@example.com')")
        .execute(&db)
        .await
        .unwrap();

    for _ in 0..3 {
        let (status, body) = send(&router, Method::GET, "/users/1", "").await;
        assert_eq!(status, StatusCode::OK);
        let user: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(user["name"], "ada");
    }
    assert_eq!(
        repo.queries.load(Ordering::Relaxed),
        1,
        "two of three reads were hits"
    );

    let (status, _) = send(&router, Method::PUT, "/users/1", r#"{"name":"lovelace"}"#).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = send(&router, Method::GET, "/users/1", "").await;
    assert!(
        body.contains("lovelace"),
        "the write invalidated the entry: {body}"
    );
    assert_eq!(
        send(&router, Method::GET, "/users/2", "").await.0,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        send(&router, Method::GET, "/health", "").await.0,
        StatusCode::OK
    );

    let (_, rendered) = send(&router, Method::GET, "/metrics", "").await;
    let value = |series: &str| -> f64 {
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{rendered}"))
    };
    assert_eq!(value("cache_hits_total{prefix=\"user\"}"), 2.0);
    assert_eq!(value("cache_misses_total{prefix=\"user\"}"), 3.0);
    assert_eq!(value("cache_invalidations_total{prefix=\"user\"}"), 1.0);

    let stored: Option<String> = cache_core::redis::cmd("HGET")
        .arg("user:1")
        .arg("name")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(stored.as_deref(), Some("lovelace"));
}
