//! How long the library keeps Redis busy for work that grows with data: invalidating a tag
//! with 100 000 registered entries, and delivering 100 000 pending invalidations after an
//! outage. Another client PINGs Redis in a loop meanwhile; its slowest answer is the stall
//! every other client of that Redis saw. Printed beside the baseline of doing the same work
//! in one script, as the library did before it batched (`SMEMBERS` and tombstone them all).
//!
//! `cargo bench -p cache-integration-tests --bench stall` (`STALL_ENTRIES` to change 100 000).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::Cache;
use cache_integration_tests::{CuttableProxy, RedisServer};

/// PINGs on its own connection until stopped; answers the slowest round trip.
fn watch_stalls(server: &RedisServer, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    let mut connection = server.connection();
    std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let _: String = redis::cmd("PING").query(&mut connection).unwrap();
            slowest = slowest.max(sent.elapsed());
            std::thread::sleep(Duration::from_micros(200));
        }
        slowest
    })
}

/// Registers `count` entries under `tag` as the library's fills do.
fn plant_tagged_entries(server: &RedisServer, tag: &str, count: usize) {
    let mut connection = server.connection();
    for chunk in (0..count).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            let key = format!("item:{id}");
            pipe.cmd("HSET")
                .arg(&key)
                .arg("name")
                .arg("x")
                .arg("__meta")
                .arg(format!("by: tags:1:{tag}"))
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(3_600_000).ignore();
            pipe.cmd("SADD")
                .arg(format!("__cache::tag:{tag}"))
                .arg(&key)
                .ignore();
        }
        pipe.query::<()>(&mut connection).unwrap();
    }
}

/// The pre-batching invalidation: every member tombstoned in one script.
const ONE_SCRIPT: &str = r"
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', entry)
  redis.call('HSET', entry, '__meta', 'inv:1')
  redis.call('PEXPIRE', entry, 10000)
end
redis.call('DEL', KEYS[1])
return 1
";

fn remaining(server: &RedisServer, tag: &str) -> usize {
    redis::cmd("SCARD")
        .arg(format!("__cache::tag:{tag}"))
        .query(&mut server.connection())
        .unwrap()
}

async fn stall_of(
    server: &RedisServer,
    work: impl std::future::Future<Output = ()>,
) -> (Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_stalls(server, stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    work.await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    (took, watcher.join().unwrap())
}

#[tokio::main]
async fn main() {
    let entries: usize = std::env::var("STALL_ENTRIES")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(100_000);
    let server = RedisServer::start();
    let cache = Cache::builder().url(server.url()).build().unwrap();

    plant_tagged_entries(&server, "one-script", entries);
    let (baseline_took, baseline_stall) = stall_of(&server, async {
        let _: i64 = redis::Script::new(ONE_SCRIPT)
            .key("__cache::tag:one-script")
            .invoke(&mut server.connection())
            .unwrap();
    })
    .await;

    plant_tagged_entries(&server, "batched", entries);
    let (took, stall) = stall_of(&server, async {
        let answered = cache.invalidate_tag("batched").await;
        assert!(answered.is_ok(), "the call tells the truth: {answered:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while remaining(&server, "batched") > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    println!("tag invalidation, {entries} registered entries:");
    println!("  one script (before): {baseline_took:>10.2?} total, longest stall of another client {baseline_stall:.2?}");
    println!("  batched (now):       {took:>10.2?} total, longest stall of another client {stall:.2?} ({:.2}x the baseline's stall)", stall.as_secs_f64() / baseline_stall.as_secs_f64());

    // Pending delivery: an outage during which `entries` invalidations were lost.
    let proxy = CuttableProxy::start(server.port()).await;
    let writer = Cache::builder()
        .url(proxy.url())
        .max_pending_invalidations(entries + 1)
        .build()
        .unwrap();
    writer.invalidate("item", &0).await.unwrap();
    proxy.cut();
    for id in 0..entries {
        let _ = writer.invalidate("item", &id).await;
    }
    let pending = writer.stats().pending_invalidations;
    proxy.restore();
    let (took, stall) = stall_of(&server, async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while writer.stats().pending_invalidations > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    println!("pending delivery after an outage, {pending} invalidations:");
    println!(
        "  batched: delivered in {took:.2?}, longest stall of another client {stall:.2?}, {} left",
        writer.stats().pending_invalidations
    );
}
