//! The hit path against its limit and a peer, side by side in one process against one
//! redis-server (started here on a free loopback port):
//!
//! * raw redis-rs `HGETALL` into a map, then the struct, over one multiplexed connection
//!   (the limit a hand-written hash cache reaches);
//! * raw `HMGET` of the four fields, decoded positionally;
//! * this library's `#[cached_get]` hit;
//! * the `cached` crate 4.x, `#[concurrent_cached]` over its `AsyncRedisCache` (one `GET` of
//!   a serialized blob).
//!
//! 100 users, hits only, at concurrency 1 and 64, median of 5 rounds with the contenders
//! interleaved in every round. Also the heap allocations per hit (counted, not timed: the
//! one figure here free of the machine's noise) and the bytes per cached user
//! (`MEMORY USAGE`). Run with
//! `cargo bench -p cache-integration-tests --bench hit_path`; the SVG goes to
//! `target/bench/hit_path.svg`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use cache_integration_tests::measure::users::{
    id_for, leaked_repos, raw_hgetall, user, Operation, UserRead, LOADS, USERS,
};
use cache_integration_tests::measure::{self, round_count, Row};
use cache_integration_tests::RedisServer;
use cached::macros::concurrent_cached;
use redis::AsyncCommands;

#[global_allocator]
static ALLOCATOR: measure::CountingAllocator = measure::CountingAllocator;

/// The concurrency levels and the hits per round at each: `BENCH_CONCURRENCY=64` (a
/// comma-separated list) runs a subset, for a profiler or a quick look; `BENCH_SCALE=20`
/// multiplies the hits per round (in-process contenders finish a default round in a few
/// milliseconds, too short to measure well on their own).
fn levels() -> Vec<(usize, usize)> {
    let chosen = std::env::var("BENCH_CONCURRENCY").unwrap_or_default();
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1);
    [(1, 20_000 * scale), (64, 200_000 * scale)]
        .into_iter()
        .filter(|(concurrency, _)| {
            chosen.is_empty()
                || chosen
                    .split(',')
                    .any(|c| c.trim() == concurrency.to_string())
        })
        .collect()
}

static CACHED_URL: OnceLock<String> = OnceLock::new();

#[derive(Debug, Clone)]
struct PeerError;

#[concurrent_cached(
    map_error = r##"|_e| PeerError"##,
    ty = "cached::AsyncRedisCache<i64, UserRead>",
    create = r##" {
        cached::AsyncRedisCache::builder("peer")
            .ttl(std::time::Duration::from_secs(3600))
            .connection_string(CACHED_URL.get().expect("set before use"))
            .build()
            .await
            .expect("the cached crate's Redis store")
    } "##
)]
async fn peer_get(id: i64) -> Result<UserRead, PeerError> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    Ok(user(id))
}

#[tokio::main]
async fn main() {
    let server = RedisServer::start();
    CACHED_URL.set(server.url()).expect("set once");
    let client = redis::Client::open(server.url().as_str()).expect("redis URL");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let (repo, near_repo) = leaked_repos(&server.url());

    for id in 0..USERS as i64 {
        repo.get(id).await;
        peer_get(id).await.expect("peer fill");
    }
    // Until every user is answered from memory: tracking on, the fills' pushes arrived.
    let warm = std::time::Instant::now();
    loop {
        let before = near_repo.cache.stats().near_hits;
        for id in 0..USERS as i64 {
            near_repo.get(id).await;
        }
        if near_repo.cache.stats().near_hits - before == USERS as u64 {
            break;
        }
        assert!(warm.elapsed().as_secs() < 10, "the near cache did not warm");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let loads_after_fill = LOADS.load(Ordering::Relaxed);
    // The bare in-process cache the near cache is built on, holding the same values: the
    // floor of a near hit (a key built with `format!`, a get, a clone).
    let bare: &'static quick_cache::sync::Cache<String, UserRead> =
        Box::leak(Box::new(quick_cache::sync::Cache::new(10_000)));
    for id in 0..USERS as i64 {
        bare.insert(format!("user:{id}"), user(id));
    }

    // The other candidate store, the same way.
    let moka: &'static moka::sync::Cache<String, UserRead> =
        Box::leak(Box::new(moka::sync::Cache::new(10_000)));
    for id in 0..USERS as i64 {
        moka.insert(format!("user:{id}"), user(id));
    }

    let raw_hgetall = raw_hgetall(connection.clone());
    let raw_hmget: Arc<Operation> = {
        let connection = connection.clone();
        Arc::new(move |task, i| {
            let mut connection = connection.clone();
            Box::pin(async move {
                let values: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(format!("user:{}", id_for(task, i)))
                    .arg(&["id", "name", "email", "avatar"])
                    .query_async(&mut connection)
                    .await
                    .expect("HMGET");
                let mut values = values.into_iter();
                let mut next = || values.next().flatten().expect("field");
                std::hint::black_box(UserRead {
                    id: next().parse().expect("id"),
                    name: next(),
                    email: next(),
                    avatar: Some(next()),
                });
            })
        })
    };
    let ours: Arc<Operation> = Arc::new(move |task, i| {
        Box::pin(async move {
            std::hint::black_box(repo.get(id_for(task, i)).await);
        })
    });
    let peer: Arc<Operation> = Arc::new(|task, i| {
        Box::pin(async move {
            std::hint::black_box(peer_get(id_for(task, i)).await.expect("peer hit"));
        })
    });
    let near: Arc<Operation> = Arc::new(move |task, i| {
        Box::pin(async move {
            std::hint::black_box(near_repo.get(id_for(task, i)).await);
        })
    });
    let bare_get: Arc<Operation> = Arc::new(move |task, i| {
        Box::pin(async move {
            std::hint::black_box(bare.get(&format!("user:{}", id_for(task, i))));
        })
    });
    let moka_get: Arc<Operation> = Arc::new(move |task, i| {
        Box::pin(async move {
            std::hint::black_box(moka.get(&format!("user:{}", id_for(task, i))));
        })
    });
    let contenders: [(&str, Arc<Operation>); 7] = [
        ("raw HGETALL → map → struct", raw_hgetall),
        ("raw HMGET, positional", raw_hmget),
        ("cache-core hit", ours),
        ("cached 4.1 hit (GET, blob)", peer),
        ("cache-core near hit", near),
        ("quick_cache get + clone (no Redis)", bare_get),
        ("moka sync get + clone (no Redis)", moka_get),
    ];

    // BENCH_ONLY=<part of a name>[,<part of another>…] runs only the matching contenders
    // (for a profiler, or a quick look).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let contenders: Vec<(&str, Arc<Operation>)> = contenders
        .into_iter()
        .filter(|(name, _)| only.split(',').any(|part| name.contains(part)))
        .collect();
    let mut markdown = String::from(
        "\nHeap allocations per hit (all threads, counted over 2000 sequential hits)\n\n| | allocations |\n|---|---:|",
    );
    for (name, operation) in &contenders {
        let allocations = measure::allocations_per_call(operation.as_ref()).await;
        markdown.push_str(&format!("\n| {name} | {allocations:.1} |"));
    }
    markdown.push('\n');
    let mut series: Vec<(String, Vec<Row>)> = Vec::new();
    for (concurrency, total) in levels() {
        let rows = measure::interleaved(&contenders, concurrency, total, round_count()).await;
        if rows.len() < 2 {
            continue;
        }
        let title = measure::hits_title(concurrency, total);
        markdown.push_str(&measure::table(
            &title,
            &rows,
            &[
                "raw HGETALL → map → struct",
                "cached 4.1 hit (GET, blob)",
                "quick_cache get + clone (no Redis)",
            ],
        ));
        series.push((format!("concurrency {concurrency}"), rows));
    }
    assert_eq!(
        LOADS.load(Ordering::Relaxed),
        loads_after_fill,
        "every measured call was a hit"
    );

    let mut commands = redis::cmd("MEMORY");
    let mut plain = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let json = serde_json::to_string(&user(1)).expect("json");
    let _: () = plain.set("json:user:1", json).await.expect("SET");
    let peer_key: Vec<String> = plain.keys("*peer*").await.expect("KEYS");
    let peer_key: Vec<String> = peer_key
        .into_iter()
        .filter(|key| key.ends_with(":1"))
        .collect();
    let mut memory =
        String::from("\nBytes per cached user (`MEMORY USAGE`)\n\n| entry | bytes |\n|---|---:|");
    for (name, key) in [
        ("cache-core hash `user:1`", "user:1".to_owned()),
        ("one JSON string", "json:user:1".to_owned()),
        (
            "cached 4.1 entry",
            peer_key.first().cloned().unwrap_or_default(),
        ),
    ] {
        let bytes: Option<i64> = commands
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut plain)
            .await
            .expect("MEMORY USAGE");
        commands = redis::cmd("MEMORY");
        let _ = std::fmt::Write::write_fmt(
            &mut memory,
            format_args!("\n| {name} | {} |", bytes.unwrap_or(0)),
        );
    }
    let fields: HashMap<String, String> = plain.hgetall("user:1").await.expect("HGETALL");
    memory.push_str(&format!(
        "\n\nThe hash holds {} fields: {:?}\n",
        fields.len(),
        {
            let mut names: Vec<_> = fields.keys().cloned().collect();
            names.sort();
            names
        }
    ));
    markdown.push_str(&memory);
    let title = "Hit throughput (ops/s), 2 cores, one redis-server";
    measure::report("hit_path", title, &markdown, &series);
}
