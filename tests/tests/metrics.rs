//! The `metrics` feature on a real redis-server: the counters and histogram of each prefix,
//! and of the handle, as a Prometheus recorder renders them; and the tracing spans of
//! misses, fills and invalidations (none for hits).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{cached_delete, cached_get, Cache};
use cache_integration_tests::fixtures::{Row, UserRepo};
use cache_integration_tests::RedisServer;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

/// The value of one sample line (`name{labels} value`) of the rendered metrics.
fn sample(rendered: &str, series: &str) -> f64 {
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in:\n{rendered}"))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: i64,
    total: i64,
}

#[cached_get(prefix = "order", key = "id", schema = Order, cache = cache)]
async fn get_order(cache: &Cache, id: i64) -> Option<Order> {
    Some(Order { id, total: 10 })
}

#[cached_delete(prefix = "order", key = "id", cache = cache)]
async fn delete_order(cache: &Cache, id: i64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn recorder() -> PrometheusHandle {
    PrometheusBuilder::new()
        .install_recorder()
        .expect("one recorder per test process (nextest runs each test alone)")
}

#[tokio::test]
async fn counters_and_latencies_are_labelled_by_prefix() {
    let metrics = recorder();
    let server = RedisServer::start();
    let cache = Cache::builder()
        .url(server.url())
        .namespace("shop")
        .build()
        .unwrap();
    let repo = UserRepo::new(cache.clone());
    for id in 0..3 {
        repo.insert(Row::sample(id));
    }
    // user: 3 misses and fills, then 6 hits; 1 invalidation, then a miss and a fill again.
    for id in 0..3 {
        repo.get_user(id).await.unwrap();
    }
    for _ in 0..2 {
        for id in 0..3 {
            repo.get_user(id).await.unwrap();
        }
    }
    repo.rename(1, "renamed").await.unwrap();
    repo.get_user(1).await.unwrap();
    // order: 1 miss, 1 hit, 1 invalidation.
    get_order(&cache, 7).await;
    get_order(&cache, 7).await;
    delete_order(&cache, 7).await.unwrap();
    // A `None` key bypasses without touching Redis: not a Redis call, not counted as one.
    repo.get_user_maybe(None).await;

    let rendered = metrics.render();
    let user = |name: &str| sample(&rendered, &format!("{name}{{prefix=\"user\"}}"));
    let order = |name: &str| sample(&rendered, &format!("{name}{{prefix=\"order\"}}"));
    assert_eq!(user("cache_misses_total"), 4.0);
    assert_eq!(user("cache_fills_total"), 4.0);
    assert_eq!(user("cache_hits_total"), 6.0);
    assert_eq!(user("cache_invalidations_total"), 1.0);
    assert_eq!(user("cache_errors_total"), 0.0);
    assert_eq!(order("cache_misses_total"), 1.0);
    assert_eq!(order("cache_hits_total"), 1.0);
    assert_eq!(order("cache_invalidations_total"), 1.0);
    assert_eq!(
        sample(
            &rendered,
            "cache_get_duration_seconds_count{prefix=\"user\",result=\"hit\"}"
        ),
        6.0
    );
    assert_eq!(
        sample(
            &rendered,
            "cache_get_duration_seconds_count{prefix=\"user\",result=\"miss\"}"
        ),
        4.0
    );
    assert_eq!(
        sample(&rendered, "cache_pending_invalidations{namespace=\"shop\"}"),
        0.0
    );
    // The same figures as the handle's own stats.
    let stats = cache.stats();
    assert_eq!(stats.hits, 7);
    assert_eq!(stats.misses, 5);
}

#[tokio::test]
async fn errors_pending_invalidations_and_bypasses_are_counted() {
    let metrics = recorder();
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .url(server.url())
        .breaker_threshold(2)
        .operation_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let repo = UserRepo::new(cache.clone());
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    server.stop();
    for _ in 0..4 {
        repo.get_user(1).await.unwrap();
    }
    repo.rename(1, "while down").await.unwrap();

    let rendered = metrics.render();
    let user = |name: &str| sample(&rendered, &format!("{name}{{prefix=\"user\"}}"));
    assert!(user("cache_errors_total") >= 2.0, "{rendered}");
    assert!(user("cache_bypasses_total") >= 2.0, "{rendered}");
    assert_eq!(
        sample(&rendered, "cache_pending_invalidations{namespace=\"\"}"),
        1.0,
        "the rename's invalidation waits for Redis"
    );

    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.stats().pending_invalidations > 0 {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sample(
            &metrics.render(),
            "cache_pending_invalidations{namespace=\"\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn near_cache_counters_are_exported() {
    let metrics = recorder();
    let server = RedisServer::start();
    let cache = Cache::builder()
        .url(server.url())
        .near_cache(100)
        .build()
        .unwrap();
    let repo = UserRepo::new(cache.clone());
    repo.insert(Row::sample(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cache.stats().near_hits == 0 {
        assert!(std::time::Instant::now() < deadline, "no near hit");
        repo.get_user(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    repo.rename(1, "x").await.unwrap();
    // Near hits are counted per thread and published every 250 ms.
    let near_hits = cache.stats().near_hits as f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let rendered = loop {
        let rendered = metrics.render();
        let published = sample(&rendered, "cache_near_hits_total{prefix=\"user\"}");
        if published == near_hits {
            break rendered;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{published} near hits published of {near_hits}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(sample(&rendered, "cache_near_misses_total{prefix=\"user\"}") >= 1.0);
    assert!(sample(&rendered, "cache_near_invalidations_total{namespace=\"\"}") >= 1.0);
}

/// A span opened: its name and fields.
type Opened = (String, BTreeMap<String, String>);

/// Records the spans opened.
#[derive(Clone, Default)]
struct SpanNames(Arc<Mutex<Vec<Opened>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for SpanNames {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::DEBUG
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        let mut names = self.0.lock().unwrap();
        names.push((span.metadata().name().to_owned(), fields));
        tracing::span::Id::from_u64(names.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn misses_fills_and_invalidations_have_spans_and_hits_none() {
    let spans = SpanNames::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let server = RedisServer::start();
    let repo = UserRepo::new(Cache::builder().url(server.url()).build().unwrap());
    repo.insert(Row::sample(1));
    repo.get_user(1).await.unwrap();
    let after_miss = spans.0.lock().unwrap().len();
    repo.get_user(1).await.unwrap();
    repo.get_user(1).await.unwrap();
    assert_eq!(
        spans.0.lock().unwrap().len(),
        after_miss,
        "hits open no span"
    );
    repo.rename(1, "x").await.unwrap();

    let names = spans.0.lock().unwrap().clone();
    let opened: Vec<&str> = names.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(opened, ["cache.miss", "cache.fill", "cache.invalidate"]);
    assert_eq!(names[0].1["prefix"], "\"user\"");
    assert_eq!(names[0].1["key"], "user:1");
    assert_eq!(names[2].1["keys"], "[\"user:1\"]");
}
