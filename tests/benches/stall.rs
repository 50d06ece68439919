//! How long the library keeps Redis busy for work that grows with data: invalidating a tag
//! with 100 000 registered entries, and delivering 100 000 pending invalidations after an
//! outage. Another client PINGs Redis in a loop meanwhile; its slowest answer is the stall
//! every other client of that Redis saw. Printed beside the baseline of doing the same work
//! in one script, as the library did before it batched (`SMEMBERS` and tombstone them all).
//!
//! Last, the tail latency of reads through the cache with a fast loader and a healthy Redis,
//! writes mixed in (so that leases and refused fills happen), beside the same workload with
//! the cache disabled.
//!
//! `cargo bench -p cache-integration-tests --bench stall` (`STALL_ENTRIES` to change 100 000).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::Cache;
use cache_integration_tests::fixtures::{Row, UserRepo};
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

/// What one phase cost: its duration, the slowest PING of another client (which includes
/// that client's own scheduling on a busy machine), and the longest single command Redis ran
/// (from its `SLOWLOG`: the stall itself, as Redis measured it).
struct Stall {
    took: Duration,
    slowest_ping: Duration,
    longest_command: Duration,
}

async fn stall_of(server: &RedisServer, work: impl std::future::Future<Output = ()>) -> Stall {
    let mut connection = server.connection();
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "1000000"),
    ] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query::<()>(&mut connection)
            .unwrap();
    }
    redis::cmd("SLOWLOG")
        .arg("RESET")
        .query::<()>(&mut connection)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_stalls(server, stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    work.await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let slowest_ping = watcher.join().unwrap();
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut connection)
        .unwrap();
    // The longest command of the work itself: not the log's own housekeeping.
    let longest_command = log
        .iter()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => {
                let name = match fields.get(3) {
                    Some(redis::Value::Array(args)) => match args.first() {
                        Some(redis::Value::BulkString(name)) => name.to_ascii_uppercase(),
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                match fields.get(2) {
                    Some(redis::Value::Int(micros)) if name != b"SLOWLOG" && name != b"CONFIG" => {
                        Some(Duration::from_micros(*micros as u64))
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .max()
        .unwrap_or_default();
    Stall {
        took,
        slowest_ping,
        longest_command,
    }
}

fn report(name: &str, stall: &Stall) {
    println!(
        "  {name:<20} {:>10.2?} total, longest command {:>9.2?}, slowest PING of another client {:>9.2?}",
        stall.took, stall.longest_command, stall.slowest_ping
    );
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
    let baseline = stall_of(&server, async {
        let _: i64 = redis::Script::new(ONE_SCRIPT)
            .key("__cache::tag:one-script")
            .invoke(&mut server.connection())
            .unwrap();
    })
    .await;

    plant_tagged_entries(&server, "batched", entries);
    let batched = stall_of(&server, async {
        let answered = cache.invalidate_tag("batched").await;
        assert!(answered.is_ok(), "the call tells the truth: {answered:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while remaining(&server, "batched") > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    println!("tag invalidation, {entries} registered entries (longest command: Redis' SLOWLOG):");
    report("one script (before)", &baseline);
    report("batched (now)", &batched);
    println!(
        "  batched / one script: {:.3}x the longest command",
        batched.longest_command.as_secs_f64() / baseline.longest_command.as_secs_f64()
    );

    // Pending delivery: an outage during which `entries` invalidations were lost.
    let proxy = CuttableProxy::start(server.port()).await;
    let writer = Cache::builder()
        .url(proxy.url())
        .max_pending_invalidations(entries + 1)
        .build()
        .unwrap();
    // Other keys than the tag's: its 100 000 tombstones expire (all at once, ten seconds on)
    // by Redis' own expiry cycle, which is not the library's doing.
    writer.invalidate("pending", &0).await.unwrap();
    proxy.cut();
    for id in 0..entries {
        let _ = writer.invalidate("pending", &id).await;
    }
    let pending = writer.stats().pending_invalidations;
    proxy.restore();
    let delivery = stall_of(&server, async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while writer.stats().pending_invalidations > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    println!(
        "pending delivery after an outage, {pending} invalidations ({} left; the total includes the backoff's wait):",
        writer.stats().pending_invalidations
    );
    report("batched (now)", &delivery);

    tail_latency(&RedisServer::start()).await;
}

/// 32 tasks over two handles (two processes) on 8 hot keys, one call in ten a write;
/// answers the read latencies, sorted.
async fn read_latencies(caches: [Cache; 2]) -> Vec<Duration> {
    const TASKS: usize = 32;
    const CALLS: usize = 1_000;
    let repos: Vec<Arc<UserRepo>> = caches
        .into_iter()
        .map(|cache| {
            let repo = UserRepo::new(cache);
            for id in 0..8 {
                repo.insert(Row::sample(id));
            }
            Arc::new(repo)
        })
        .collect();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let repo = repos[task % 2].clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(CALLS);
                for call in 0..CALLS {
                    let id = ((task * 7 + call * 13) % 8) as i64;
                    if (task + call) % 10 == 0 {
                        repo.rename(id, "renamed").await.unwrap();
                        continue;
                    }
                    let started = Instant::now();
                    repo.get_user(id).await.unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)]
}

async fn tail_latency(server: &RedisServer) {
    let cached = || Cache::builder().url(server.url()).build().unwrap();
    let with_cache = read_latencies([cached(), cached()]).await;
    let without = read_latencies([Cache::disabled(), Cache::disabled()]).await;
    println!("reads with a fast loader on a healthy Redis, 32 tasks over 2 handles, 8 hot keys, 10 % writes:");
    for (name, latencies) in [("cache", &with_cache), ("no cache (baseline)", &without)] {
        println!(
            "  {name:<20} p50 {:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}  ({} reads)",
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            percentile(latencies, 0.999),
            latencies.last().unwrap(),
            latencies.len()
        );
    }
}
