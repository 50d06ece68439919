//! Redis as production runs it, and callers as production has them: futures dropped halfway,
//! memory limits that evict or refuse, ACL users, entries written by other clients.

use std::time::{Duration, Instant};

use cache_core::Cache;
use cache_integration_tests::fixtures::{Row, UserRead, UserRepo};
use cache_integration_tests::{CuttableProxy, RedisServer};

fn field(server: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut server.connection())
        .unwrap()
}

/// Polls `condition` for up to ten seconds.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

#[tokio::test]
async fn a_write_whose_caller_stops_waiting_still_invalidates() {
    let server = RedisServer::start();
    // Another process filled the entry.
    let other = UserRepo::new(Cache::builder().url(server.url()).build().unwrap());
    other.insert(Row::sample(1));
    assert_eq!(other.get_user(1).await.unwrap().unwrap().name, "user1");

    // This process reaches Redis over a slow link and has not connected yet: its
    // invalidation waits for the connection when the caller gives up (a client that
    // disconnected, a request timeout).
    let proxy = CuttableProxy::start(server.port()).await;
    proxy.set_delay(Duration::from_millis(100));
    let writer = UserRepo::new(
        Cache::builder()
            .url(proxy.url())
            .operation_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    writer.insert(Row::sample(1));
    let gave_up = tokio::time::timeout(Duration::from_millis(20), writer.rename(1, "renamed"))
        .await
        .is_err();
    assert!(
        gave_up,
        "the caller stopped waiting during the invalidation"
    );

    assert!(
        eventually(|| field(&server, "user:1", "name").is_none()).await,
        "the committed write's invalidation reached Redis without its caller"
    );
    other.rename(1, "renamed").await.unwrap();
    assert_eq!(other.get_user(1).await.unwrap().unwrap().name, "renamed");
    proxy.set_delay(Duration::ZERO);
    assert_eq!(writer.get_user(1).await.unwrap().unwrap().name, "renamed");
}

#[tokio::test]
async fn a_direct_invalidation_dropped_by_its_caller_still_happens() {
    let server = RedisServer::start();
    let proxy = CuttableProxy::start(server.port()).await;
    proxy.set_delay(Duration::from_millis(100));
    let direct = Cache::builder().url(server.url()).build().unwrap();
    let user = UserRead {
        id: 2,
        name: "two".into(),
        avatar: None,
        birthday: "2000-01-31".into(),
    };
    direct.put("user", &2, &user).await.unwrap();
    let slow = Cache::builder()
        .url(proxy.url())
        .operation_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let dropped = tokio::time::timeout(Duration::from_millis(20), slow.invalidate("user", &2));
    assert!(dropped.await.is_err());
    assert!(eventually(|| field(&server, "user:2", "name").is_none()).await);
}
