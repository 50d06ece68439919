//! Batch reads of 50 ids, side by side in one process against one redis-server (started
//! here on a free loopback port):
//!
//! * raw redis-rs: one pipeline of 50 `HMGET`s, decoded positionally (the limit), and the
//!   same with the `__meta` field each of the library's reads adds;
//! * `#[cached_get_many]`, all hits;
//! * a loop of 50 `#[cached_get]` hits (what users write without batch reads);
//! * `#[cached_get_many]` with a near cache.
//!
//! Then 50 ids of which 5 (10 %) are missing: how many times the database is asked per
//! batch, and for how many ids. Run with
//! `cargo bench -p cache-integration-tests --bench batch` (`BENCH_ROUNDS`, default 5).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cache_core::{cached_get_many, Cache};
use cache_integration_tests::measure::users::{leaked_repos, user, Operation, UserRead, USERS};
use cache_integration_tests::measure::{self, interleaved, round_count};
use cache_integration_tests::RedisServer;

#[global_allocator]
static ALLOCATOR: measure::CountingAllocator = measure::CountingAllocator;

/// How many ids one batch reads.
const BATCH: usize = 50;

/// Batch loads, and the ids they were given.
static BATCH_LOADS: AtomicUsize = AtomicUsize::new(0);
static BATCH_IDS: AtomicUsize = AtomicUsize::new(0);

struct Users {
    cache: Cache,
}

impl Users {
    #[cached_get_many(prefix = "user", keys = "ids", schema = UserRead, key_field = "id", cache = self.cache)]
    async fn get_many(&self, ids: &[i64]) -> Vec<UserRead> {
        BATCH_LOADS.fetch_add(1, Ordering::Relaxed);
        BATCH_IDS.fetch_add(ids.len(), Ordering::Relaxed);
        ids.iter().map(|&id| user(id)).collect()
    }
}

/// The 50 ids a task's call reads: a window of the users, from a start of its own.
fn ids_for(task: usize, i: usize) -> Vec<i64> {
    let start = task * 31 + i * 7;
    (0..BATCH).map(|k| ((start + k) % USERS) as i64).collect()
}

fn leaked(url: &str, near: usize) -> &'static Users {
    Box::leak(Box::new(Users {
        cache: Cache::builder()
            .url(url)
            .near_cache(near)
            .build()
            .expect("cache"),
    }))
}

#[tokio::main]
async fn main() {
    // BENCH_LOG=1: the library's warnings (a near listener going deaf, say) on stderr.
    if std::env::var_os("BENCH_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .init();
    }
    let server = RedisServer::start();
    let client = redis::Client::open(server.url().as_str()).expect("redis URL");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let (single, _) = leaked_repos(&server.url());
    let batch = leaked(&server.url(), 0);
    let near = leaked(&server.url(), 10_000);
    let all: Vec<i64> = (0..USERS as i64).collect();
    assert_eq!(batch.get_many(&all).await.len(), USERS);
    for _ in 0..50 {
        near.get_many(&all).await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let loads_after_fill = BATCH_LOADS.load(Ordering::Relaxed);

    // The limit, and the same with the `__meta` field the library reads with every entry
    // (stamps, absences): what the extra element of each reply costs on its own.
    let raw_pipeline = |meta: bool| -> Arc<Operation> {
        let connection = connection.clone();
        Arc::new(move |task, i| {
            let mut connection = connection.clone();
            Box::pin(async move {
                let mut pipeline = redis::pipe();
                for id in ids_for(task, i) {
                    pipeline
                        .cmd("HMGET")
                        .arg(format!("user:{id}"))
                        .arg(&["id", "name", "email", "avatar"]);
                    if meta {
                        pipeline.arg("__meta");
                    }
                }
                let replies: Vec<Vec<Option<String>>> = pipeline
                    .query_async(&mut connection)
                    .await
                    .expect("pipeline");
                let users: Vec<UserRead> = replies
                    .into_iter()
                    .map(|values| {
                        let mut values = values.into_iter();
                        let mut next = || values.next().flatten().expect("field");
                        UserRead {
                            id: next().parse().expect("id"),
                            name: next(),
                            email: next(),
                            avatar: Some(next()),
                        }
                    })
                    .collect();
                std::hint::black_box(users);
            })
        })
    };
    let raw = raw_pipeline(false);
    let raw_meta = raw_pipeline(true);
    let many: Arc<Operation> = Arc::new(move |task, i| {
        Box::pin(async move {
            std::hint::black_box(batch.get_many(&ids_for(task, i)).await);
        })
    });
    let looped: Arc<Operation> = Arc::new(move |task, i| {
        Box::pin(async move {
            let mut users = Vec::with_capacity(BATCH);
            for id in ids_for(task, i) {
                users.push(single.get(id).await);
            }
            std::hint::black_box(users);
        })
    });
    let many_near: Arc<Operation> = Arc::new(move |task, i| {
        Box::pin(async move {
            std::hint::black_box(near.get_many(&ids_for(task, i)).await);
        })
    });
    let contenders = [
        ("raw pipeline of 50 HMGET", raw),
        ("raw pipeline of 50 HMGET with __meta", raw_meta),
        ("cached_get_many, 50 ids", many),
        ("50 × cached_get", looped),
        ("cached_get_many, near cache", many_near),
    ];
    // BENCH_ONLY=<part of a name>[,<part of another>…] runs only the matching contenders
    // (for a profiler, or a quick look).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let contenders: Vec<(&str, Arc<Operation>)> = contenders
        .into_iter()
        .filter(|(name, _)| only.split(',').any(|part| name.contains(part)))
        .collect();
    let mut markdown =
        String::from("## Batch reads of 50 ids, all hits (one redis-server on loopback)\n");
    // The one figure free of the machine's noise: heap allocations per batch, all threads.
    markdown.push_str("\nHeap allocations per batch of 50 (all threads, 2000 sequential batches)\n\n| | allocations | per id |\n|---|---:|---:|");
    for (name, operation) in &contenders {
        let allocations = measure::allocations_per_call(operation.as_ref()).await;
        let per_id = allocations / BATCH as f64;
        markdown.push_str(&format!("\n| {name} | {allocations:.1} | {per_id:.2} |"));
    }
    markdown.push('\n');
    let mut series = Vec::new();
    for (concurrency, total) in [(1, 2_000), (64, 20_000)] {
        let before = near.cache.stats();
        let rows = interleaved(&contenders, concurrency, total, round_count()).await;
        let after = near.cache.stats();
        eprintln!(
            "near handle at concurrency {concurrency}: {} near hits, {} near misses, {} errors",
            after.near_hits - before.near_hits,
            after.near_misses - before.near_misses,
            after.errors - before.errors,
        );
        let title = format!(
            "Batches of {BATCH} at concurrency {concurrency} ({total} per round, median of {} rounds)",
            round_count()
        );
        markdown.push_str(&measure::table(
            &title,
            &rows,
            &["raw pipeline of 50 HMGET", "50 × cached_get"],
        ));
        series.push((format!("concurrency {concurrency}"), rows));
    }
    // Hits only, unless a read timed out (`operation_timeout`, on a starved machine) and the
    // call went to the function: said, not hidden, as those figures then include bypasses.
    let loads_during_hits = BATCH_LOADS.load(Ordering::Relaxed) - loads_after_fill;
    if loads_during_hits > 0 {
        let (stats, near_stats) = (batch.cache.stats(), near.cache.stats());
        markdown.push_str(&format!(
            "\n**{loads_during_hits} batches were loaded during the hit runs** (cache errors: {}, bypasses: {}): those figures include bypasses.\n",
            stats.errors + near_stats.errors,
            stats.bypassed + near_stats.bypassed,
        ));
    }

    // 10 % misses: 5 of the 50 entries dropped before each batch.
    let dropped = Mutex::new(0usize);
    let (loads, ids) = (
        BATCH_LOADS.load(Ordering::Relaxed),
        BATCH_IDS.load(Ordering::Relaxed),
    );
    const BATCHES: usize = 200;
    let mut raw_connection = connection.clone();
    for i in 0..BATCHES {
        let window = ids_for(0, i);
        let gone: Vec<String> = window
            .iter()
            .step_by(10)
            .map(|id| format!("user:{id}"))
            .collect();
        let _: () = redis::cmd("DEL")
            .arg(&gone)
            .query_async(&mut raw_connection)
            .await
            .expect("DEL");
        *dropped.lock().unwrap() += gone.len();
        assert_eq!(batch.get_many(&window).await.len(), BATCH);
    }
    let calls = BATCH_LOADS.load(Ordering::Relaxed) - loads;
    let asked = BATCH_IDS.load(Ordering::Relaxed) - ids;
    let _ = write_misses(
        &mut markdown,
        calls,
        asked,
        *dropped.lock().unwrap(),
        BATCHES,
    );
    measure::report("batch", "Batches of 50 ids, all hits", &markdown, &series);
}

fn write_misses(
    markdown: &mut String,
    calls: usize,
    asked: usize,
    dropped: usize,
    batches: usize,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(
        markdown,
        "\n### 50 ids with 10 % misses ({batches} batches)\n\n| database calls per batch | ids per call | entries dropped per batch |\n|---:|---:|---:|\n| {:.2} | {:.1} | {:.1} |",
        calls as f64 / batches as f64,
        asked as f64 / calls.max(1) as f64,
        dropped as f64 / batches as f64,
    )
}
