#![allow(missing_docs)] // benchmark helpers: the names say it all
//! What the benchmarks share: timing concurrent workloads, summarising rounds, printing
//! tables with ratios, and drawing the results as an SVG bar chart.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One run of a workload: throughput and latency percentiles.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub ops_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs `operation(task, i)` `total` times spread over `concurrency` tasks and times each.
pub async fn run<F, Fut>(concurrency: usize, total: usize, operation: Arc<F>) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + ?Sized + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_task = total.div_ceil(concurrency);
    // Written before the clock starts: a fresh allocation's pages are faulted in on first
    // touch, which would charge the kernel's page zeroing to whichever contender runs first.
    let buffers: Vec<Vec<Duration>> = (0..concurrency)
        .map(|_| vec![Duration::ZERO; per_task])
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = buffers
        .into_iter()
        .enumerate()
        .map(|(task, mut latencies)| {
            let operation = operation.clone();
            tokio::spawn(async move {
                for (i, latency) in latencies.iter_mut().enumerate() {
                    let begun = Instant::now();
                    operation(task, i).await;
                    *latency = begun.elapsed();
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(per_task * concurrency);
    for task in tasks {
        latencies.extend(task.await.expect("benchmark task"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// The round with the median throughput.
pub fn median(mut rounds: Vec<Run>) -> Run {
    rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    rounds[rounds.len() / 2]
}

/// Runs every contender `rounds` times at `concurrency` (`total` calls each time), the
/// contenders interleaved within each round so that the machine's drift touches them alike;
/// answers each one's median run.
pub async fn interleaved(
    contenders: &[(&str, Arc<users::Operation>)],
    concurrency: usize,
    total: usize,
    rounds: usize,
) -> Vec<Row> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        // Each round starts with the next contender: going first (or after a particular
        // one) must not favour anybody.
        for offset in 0..contenders.len() {
            let index = (round + offset) % contenders.len();
            let operation = contenders[index].1.clone();
            runs[index].push(run(concurrency, total, operation).await);
        }
    }
    contenders
        .iter()
        .zip(runs)
        .map(|((name, _), runs)| Row {
            name: (*name).to_owned(),
            run: median(runs),
        })
        .collect()
}

/// `BENCH_ROUNDS`, default 5.
pub fn round_count() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(5)
}

/// A table row: a name and its median run.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub run: Run,
}

/// A Markdown table of rows, with each row's throughput as a ratio of the rows named in
/// `baselines`.
pub fn table(title: &str, rows: &[Row], baselines: &[&str]) -> String {
    let mut out = format!("\n{title}\n\n| | ops/s | p50 | p99 |");
    for baseline in baselines {
        let _ = write!(out, " × {baseline} |");
    }
    out.push_str("\n|---|---:|---:|---:|");
    out.push_str(&"---:|".repeat(baselines.len()));
    for row in rows {
        let _ = write!(
            out,
            "\n| {} | {:.0} | {:.1} µs | {:.1} µs |",
            row.name,
            row.run.ops_per_sec,
            row.run.p50.as_secs_f64() * 1e6,
            row.run.p99.as_secs_f64() * 1e6
        );
        for baseline in baselines {
            let base = rows
                .iter()
                .find(|other| other.name == *baseline)
                .map(|other| other.run.ops_per_sec);
            match base {
                Some(base) => {
                    let _ = write!(out, " {:.2} |", row.run.ops_per_sec / base);
                }
                None => out.push_str(" |"),
            }
        }
    }
    out.push('\n');
    out
}

/// A horizontal bar chart of throughput, one group of bars per series.
pub fn svg_bars(title: &str, series: &[(&str, &[Row])]) -> String {
    let bar_height = 18.0;
    let label_width = 260.0;
    let chart_width = 420.0;
    let max = series
        .iter()
        .flat_map(|(_, rows)| rows.iter())
        .map(|row| row.run.ops_per_sec)
        .fold(1.0, f64::max);
    let rows: usize = series.iter().map(|(_, rows)| rows.len() + 1).sum();
    let height = 40.0 + rows as f64 * (bar_height + 6.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        label_width + chart_width + 90.0
    );
    let _ = write!(
        svg,
        r#"<text x="8" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let mut y = 36.0;
    for (name, rows) in series {
        let _ = write!(
            svg,
            r#"<text x="8" y="{}" font-weight="bold">{}</text>"#,
            y + 13.0,
            escape(name)
        );
        y += bar_height + 6.0;
        for row in rows.iter() {
            let width = chart_width * row.run.ops_per_sec / max;
            let _ = write!(
                svg,
                r##"<text x="20" y="{}">{}</text><rect x="{label_width}" y="{y}" width="{width:.1}" height="{bar_height}" fill="#4a7fb5"/><text x="{}" y="{}">{:.0}/s</text>"##,
                y + 13.0,
                escape(&row.name),
                label_width + width + 6.0,
                y + 13.0,
                row.run.ops_per_sec
            );
            y += bar_height + 6.0;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Prints the tables and writes them with an SVG bar chart of `series` to
/// `target/bench/{name}.md` and `.svg`.
pub fn report(name: &str, chart_title: &str, markdown: &str, series: &[(String, Vec<Row>)]) {
    println!("{markdown}");
    let series: Vec<(&str, &[Row])> = series
        .iter()
        .map(|(label, rows)| (label.as_str(), rows.as_slice()))
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(
        dir.join(format!("{name}.svg")),
        svg_bars(chart_title, &series),
    )
    .expect("write the SVG");
    std::fs::write(dir.join(format!("{name}.md")), markdown).expect("write the tables");
    println!("wrote target/bench/{name}.svg and target/bench/{name}.md");
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The title of a table of hits at one concurrency level.
pub fn hits_title(concurrency: usize, total: usize) -> String {
    format!(
        "Hits at concurrency {concurrency} ({total} per round, median of {} rounds)",
        round_count()
    )
}

/// The users the hit-path benchmarks read: what they cache, and how a hand-written cache
/// decodes the same hash.
/// Counts heap allocations (and reallocations) in all threads while `COUNTING` is set, once a
/// bench makes it its `#[global_allocator]`; costs one relaxed load otherwise, so the timed
/// runs are not disturbed.
#[derive(Debug)]
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

impl CountingAllocator {
    fn count() {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap allocations per call of `operation`, all threads (the connection's driver task too),
/// sequentially, after a warm-up.
pub async fn allocations_per_call(operation: &users::Operation) -> f64 {
    const CALLS: usize = 2_000;
    for i in 0..100 {
        operation(0, i).await;
    }
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for i in 0..CALLS {
        operation(0, i).await;
    }
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCATIONS.load(Ordering::Relaxed) as f64 / CALLS as f64
}

pub mod users {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cache_core::{cached_get, Cache};
    use redis::AsyncCommands as _;
    use serde::{Deserialize, Serialize};

    /// Calls of [`Repo::get`]'s body, in every repository: a benchmark of hits must not load.
    pub static LOADS: AtomicUsize = AtomicUsize::new(0);

    /// The users, cached by this library.
    #[derive(Debug)]
    pub struct Repo {
        pub cache: Cache,
    }

    impl Repo {
        #[cached_get(prefix = "user", key = "id", schema = UserRead, cache = self.cache)]
        pub async fn get(&self, id: i64) -> UserRead {
            LOADS.fetch_add(1, Ordering::Relaxed);
            user(id)
        }

        /// [`get`](Self::get) again, as a function of its own: its metrics are registered
        /// apart (the metrics benchmark registers `get`'s before a recorder is installed,
        /// and this one's after).
        #[cached_get(prefix = "user", key = "id", schema = UserRead, cache = self.cache)]
        pub async fn get_measured(&self, id: i64) -> UserRead {
            LOADS.fetch_add(1, Ordering::Relaxed);
            user(id)
        }
    }

    /// Two repositories on the server at `url`, one with a near cache. Leaked, so that a call
    /// borrows them instead of cloning an `Arc`: a reference count written by every call
    /// shares its cache line with the fields every call reads, and that contention (the
    /// harness's, not the contender's) was a tenth of a near hit.
    pub fn leaked_repos(url: &str) -> (&'static Repo, &'static Repo) {
        let repo = |near_entries| -> &'static Repo {
            Box::leak(Box::new(Repo {
                cache: Cache::builder()
                    .url(url)
                    .near_cache(near_entries)
                    .build()
                    .expect("cache"),
            }))
        };
        (repo(0), repo(10_000))
    }

    /// How many distinct users the benchmarks read.
    pub const USERS: usize = 100;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct UserRead {
        pub id: i64,
        pub name: String,
        pub email: String,
        pub avatar: Option<String>,
    }

    pub fn user(id: i64) -> UserRead {
        UserRead {
            id,
            name: format!("user{id}"),
            email: format!("user{id}@example.com"),
            avatar: Some(format!("https://example.com/{id}.png")),
        }
    }

    /// A hand-written cache's decoding of `HGETALL`.
    pub fn from_map(map: &HashMap<String, String>) -> UserRead {
        UserRead {
            id: map["id"].parse().expect("id"),
            name: map["name"].clone(),
            email: map["email"].clone(),
            avatar: map.get("avatar").cloned(),
        }
    }

    /// One call of a contender: the task number and the call's number within the task.
    pub type Operation = dyn Fn(usize, usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync;

    /// The user a task's call reads: every task walks all users, from its own start.
    pub fn id_for(task: usize, i: usize) -> i64 {
        ((task * 31 + i) % USERS) as i64
    }

    /// A hand-written cache's hit: `HGETALL` into a map, then the struct.
    pub fn raw_hgetall<C>(connection: C) -> std::sync::Arc<Operation>
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    {
        std::sync::Arc::new(move |task, i| {
            let mut connection = connection.clone();
            Box::pin(async move {
                let map: HashMap<String, String> = connection
                    .hgetall(format!("user:{}", id_for(task, i)))
                    .await
                    .expect("HGETALL");
                std::hint::black_box(from_map(&map));
            })
        })
    }
}
