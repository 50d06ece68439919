//! When the database is slow or down (README, "When the database is down or slow"), side by
//! side in one process on one redis-server:
//!
//! 1. Hot keys, a loader of 5 ms, TTL 1 s, 64 tasks reading for `DB_BENCH_SECS` (6 s): the
//!    latency of every call (p50, p99, p99.9, max) and the database calls per second, with and
//!    without `refresh_after = 0.8`. The goal: no call waits for the database after warm-up,
//!    so p99 is a hit's.
//! 2. The database down for 10 s (every load fails after 5 ms), keys cached before: how many
//!    calls were answered, with and without `fail_safe`. The goal: all of them, from expired
//!    copies.
//!
//! `cargo bench -p cache-integration-tests --bench database`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::{cached_get, Cache};
use cache_integration_tests::RedisServer;
use serde::{Deserialize, Serialize};

const TASKS: usize = 64;
const KEYS: i64 = 16;
const LOAD: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Price {
    id: i64,
    cents: i64,
}

#[derive(Debug)]
struct Down;

#[derive(Clone)]
struct Repo {
    cache: Cache,
    calls: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl Repo {
    async fn load(&self, id: i64) -> Result<Price, Down> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(LOAD).await;
        if self.down.load(Ordering::Relaxed) {
            return Err(Down);
        }
        Ok(Price {
            id,
            cents: id * 100,
        })
    }

    #[cached_get(prefix = "plain", key = "id", schema = Price, ttl = 1, cache = self.cache)]
    async fn plain(&self, id: i64) -> Result<Price, Down> {
        self.load(id).await
    }

    #[cached_get(prefix = "refreshed", key = "id", schema = Price, ttl = 1, refresh_after = 0.8,
        cache = self.cache)]
    async fn refreshed(&self, id: i64) -> Result<Price, Down> {
        self.load(id).await
    }

    #[cached_get(prefix = "safe", key = "id", schema = Price, ttl = 1, fail_safe = "1m",
        cache = self.cache)]
    async fn safe(&self, id: i64) -> Result<Price, Down> {
        self.load(id).await
    }
}

#[derive(Clone, Copy)]
enum Read {
    Plain,
    Refreshed,
    Safe,
}

impl Read {
    async fn call(self, repo: &Repo, id: i64) -> Result<Price, Down> {
        match self {
            Read::Plain => repo.plain(id).await,
            Read::Refreshed => repo.refreshed(id).await,
            Read::Safe => repo.safe(id).await,
        }
    }
}

/// 64 tasks read the hot keys for `duration`; every call's latency, and the answered count.
async fn run(repo: &Repo, read: Read, duration: Duration) -> (Vec<Duration>, u64, u64) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (repo, latencies) = (repo.clone(), latencies.clone());
            let (answered, failed) = (answered.clone(), failed.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut i = task as i64;
                while Instant::now() < end {
                    i += 7;
                    let started = Instant::now();
                    let result = read.call(&repo, i % KEYS).await;
                    mine.push(started.elapsed());
                    match result {
                        Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    // A hit never yields to the runtime by itself: let the others run.
                    tokio::task::yield_now().await;
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let latencies = std::mem::take(&mut *latencies.lock().unwrap());
    (
        latencies,
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    )
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("DB_BENCH_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(6);
    let server = RedisServer::start();
    let repo = Repo {
        cache: Cache::builder().url(server.url()).build().unwrap(),
        calls: Arc::default(),
        down: Arc::default(),
    };

    println!("## Hot keys, loader 5 ms, TTL 1 s, {TASKS} tasks, {KEYS} keys, {seconds} s\n");
    println!("| function | calls | p50 | p99 | p99.9 | max | database calls/s |");
    println!("|---|---|---|---|---|---|---|");
    for (name, read) in [
        ("`ttl = 1`", Read::Plain),
        ("`ttl = 1, refresh_after = 0.8`", Read::Refreshed),
    ] {
        // Warm-up: every key cached once.
        for id in 0..KEYS {
            let _ = read.call(&repo, id).await;
        }
        let before = repo.calls.load(Ordering::Relaxed);
        let (mut latencies, answered, _) = run(&repo, read, Duration::from_secs(seconds)).await;
        let calls = repo.calls.load(Ordering::Relaxed) - before;
        latencies.sort_unstable();
        println!(
            "| {name} | {answered} | {} | {} | {} | {} | {:.1} |",
            micros(percentile(&latencies, 0.50)),
            micros(percentile(&latencies, 0.99)),
            micros(percentile(&latencies, 0.999)),
            micros(*latencies.last().unwrap()),
            calls as f64 / seconds as f64
        );
    }
    println!("\nhandle stats: {:?}\n", repo.cache.stats());

    println!("## The database down for 10 s, {TASKS} tasks, {KEYS} keys cached before\n");
    println!("| function | calls | answered | failed | answered % |");
    println!("|---|---|---|---|---|");
    for (name, read) in [
        ("`ttl = 1`", Read::Plain),
        ("`ttl = 1, fail_safe = \"1m\"`", Read::Safe),
    ] {
        repo.down.store(false, Ordering::Relaxed);
        for id in 0..KEYS {
            let _ = read.call(&repo, id).await;
        }
        repo.down.store(true, Ordering::Relaxed);
        let (latencies, answered, failed) = run(&repo, read, Duration::from_secs(10)).await;
        println!(
            "| {name} | {} | {answered} | {failed} | {:.2} % |",
            latencies.len(),
            answered as f64 * 100.0 / (answered + failed).max(1) as f64
        );
    }
    println!("\nhandle stats: {:?}", repo.cache.stats());
}
