//! The near cache (`near_cache`): hits from process memory, kept coherent by Redis'
//! invalidation pushes, and nothing served from memory by a handle that cannot hear them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cache_core::Cache;
use cache_integration_tests::cluster::RedisCluster;
use cache_integration_tests::fixtures::{Row, UserRepo};
use cache_integration_tests::{unique_namespace, CuttableProxy, RedisServer};

fn near_cache(url: &str) -> Cache {
    Cache::builder()
        .url(url)
        .near_cache(1_000)
        .operation_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

/// Reads `id` until one is answered from memory (the listener has turned tracking on and
/// the entry was read from Redis once since), lets the pushes of the fill arrive (they
/// evict the copy), and reads until memory answers again: then the copy is there to stay
/// until something changes. At most 3 s each.
async fn until_near_hit(repo: &UserRepo, id: i64) {
    until_one_near_hit(repo, id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    until_one_near_hit(repo, id).await;
}

async fn until_one_near_hit(repo: &UserRepo, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let before = repo.cache.stats().near_hits;
    while repo.cache.stats().near_hits == before {
        assert!(
            Instant::now() < deadline,
            "no near hit: {:?}",
            repo.cache.stats()
        );
        repo.get_user(id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn near_hits_send_nothing_to_redis() {
    let server = RedisServer::start();
    let repo = UserRepo::new(near_cache(&server.url()));
    repo.insert(Row::sample(1));
    until_near_hit(&repo, 1).await;
    let log = server.monitor();
    let before = repo.cache.stats();
    for _ in 0..100 {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    }
    let after = repo.cache.stats();
    assert_eq!(after.near_hits - before.near_hits, 100);
    assert_eq!(after.hits, before.hits, "no Redis hit");
    let commands = log.take_client_commands();
    assert!(
        !commands.iter().any(|command| command.contains("HMGET")),
        "{commands:?}"
    );
    assert_eq!(repo.loads(), 1);
}

/// The handle's own write is seen by its next read at once, without waiting for Redis'
/// push: the listener here hears 100 ms late (its pushes are delayed by a proxy, its replies
/// are not), so only the write's local eviction can keep the old copy from being served.
#[tokio::test]
async fn a_write_through_the_same_handle_is_seen_at_once() {
    let server = RedisServer::start();
    let proxy = CuttableProxy::start(server.port()).await;
    let repo = UserRepo::new(near_cache(&proxy.url()));
    repo.insert(Row::sample(1));
    until_near_hit(&repo, 1).await;
    proxy.set_push_delay(Duration::from_millis(100));
    for round in 0..10 {
        // The copy is in memory (the last round's delayed push has come and gone).
        tokio::time::sleep(Duration::from_millis(150)).await;
        until_one_near_hit(&repo, 1).await;
        let name = format!("name{round}");
        repo.rename(1, &name).await.unwrap();
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, name);
    }
}

/// Another handle (another process) writes: its invalidation reaches this handle's memory
/// by Redis' push. The delay from the write's return to the eviction is measured (printed;
/// the benchmark reports it too), and the read a comfortable 50 ms later must be fresh.
#[tokio::test]
async fn a_write_through_another_handle_evicts_by_push() {
    let server = RedisServer::start();
    let reader = UserRepo::new(near_cache(&server.url()));
    let writer = UserRepo::new(Cache::builder().url(server.url()).build().unwrap());
    let mut delays = Vec::new();
    for round in 0..50 {
        let row = Row {
            name: format!("name{round}"),
            ..Row::sample(1)
        };
        reader.insert(row.clone());
        writer.insert(row);
        until_near_hit(&reader, 1).await;
        let renamed = format!("renamed{round}");
        // Settle the pushes of the reader's own fill before measuring.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let received = reader.cache.stats().near_invalidations;
        let writing = Instant::now();
        writer.rename(1, &renamed).await.unwrap();
        let written = writing.elapsed();
        while reader.cache.stats().near_invalidations == received
            && writing.elapsed() < Duration::from_secs(1)
        {
            tokio::task::yield_now().await;
        }
        delays.push((writing.elapsed(), written));
        reader.insert(Row {
            name: renamed.clone(),
            ..Row::sample(1)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(reader.get_user(1).await.unwrap().unwrap().name, renamed);
    }
    delays.sort();
    let (p50, p99) = (delays[delays.len() / 2], delays[delays.len() * 99 / 100]);
    println!(
        "from another handle's write call to the eviction in memory: p50 {:?} (the write \
         itself took {:?}), p99 {:?} ({:?})",
        p50.0, p50.1, p99.0, p99.1
    );
}

/// A reader with a near cache behind a proxy that the test breaks, and a writer beside it
/// (another process) straight on the server; both over rows of their own, kept alike.
struct Deafness {
    _server: RedisServer,
    proxy: CuttableProxy,
    reader: UserRepo,
    writer: UserRepo,
}

impl Deafness {
    /// User 1 is in the reader's memory.
    async fn start() -> Deafness {
        let server = RedisServer::start();
        let proxy = CuttableProxy::start(server.port()).await;
        let reader = UserRepo::new(near_cache(&proxy.url()));
        let writer = UserRepo::new(Cache::builder().url(server.url()).build().unwrap());
        reader.insert(Row::sample(1));
        writer.insert(Row::sample(1));
        until_near_hit(&reader, 1).await;
        Deafness {
            _server: server,
            proxy,
            reader,
            writer,
        }
    }

    /// The writer renames user 1, which the reader cannot hear: its next read must not
    /// come from memory.
    async fn a_write_unheard_is_not_hidden(&self) {
        self.writer.rename(1, "renamed").await.unwrap();
        self.reader.insert(Row {
            name: "renamed".into(),
            ..Row::sample(1)
        });
        let near_hits = self.reader.cache.stats().near_hits;
        assert_eq!(
            self.reader.get_user(1).await.unwrap().unwrap().name,
            "renamed"
        );
        assert_eq!(
            self.reader.cache.stats().near_hits,
            near_hits,
            "nothing from memory"
        );
    }
}

/// The listener's connection is cut: memory serves nothing from then on, so a write by
/// another process that this handle cannot hear about is not hidden by an old copy.
#[tokio::test]
async fn a_cut_connection_stops_serving_from_memory() {
    let test = Deafness::start().await;
    test.proxy.cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    test.a_write_unheard_is_not_hidden().await;
    // Back: tracking on again, memory serves again.
    test.proxy.restore();
    until_near_hit(&test.reader, 1).await;
    assert_eq!(
        test.reader.get_user(1).await.unwrap().unwrap().name,
        "renamed"
    );
}

/// The listener's connection goes silent (the peer stops answering, nothing is closed):
/// within the operation timeout plus the health check, memory serves nothing.
#[tokio::test]
async fn a_silent_connection_stops_serving_from_memory() {
    let test = Deafness::start().await;
    test.proxy.set_delay(Duration::from_secs(3600));
    // Operation timeout (200 ms) + health check (500 ms), with room for a busy machine.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    test.a_write_unheard_is_not_hidden().await;
}

/// An ACL user with the README's rule plus what the near cache needs (`+hello
/// +client|tracking +ping`) gets near hits.
#[tokio::test]
async fn a_user_with_the_readme_acl_rule_gets_near_hits() {
    let mut server = RedisServer::start();
    server.add_cache_user_with(
        &["user:*", "__cache::*"],
        cache_integration_tests::NEAR_ACL_COMMANDS,
    );
    let repo = UserRepo::new(near_cache(&server.cache_url()));
    repo.insert(Row::sample(1));
    until_near_hit(&repo, 1).await;
    repo.rename(1, "renamed").await.unwrap();
    repo.insert(Row {
        name: "renamed".into(),
        ..Row::sample(1)
    });
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(repo.cache.stats().errors, 0);
}

/// A dropped handle's listener goes with it: its tracking connection is closed (at the next
/// health check at the latest), not kept open for the life of the process.
#[tokio::test]
async fn a_dropped_handle_closes_its_listener() {
    let server = RedisServer::start();
    let tracking_clients = || {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut server.connection())
            .unwrap();
        clients
            .lines()
            // `t` in a client's flags: it has tracking on.
            .filter(|client| {
                client
                    .split(' ')
                    .find_map(|field| field.strip_prefix("flags="))
                    .is_some_and(|flags| flags.contains('t'))
            })
            .count()
    };
    let repo = UserRepo::new(near_cache(&server.url()));
    repo.insert(Row::sample(1));
    until_near_hit(&repo, 1).await;
    assert_eq!(tracking_clients(), 1);
    drop(repo);
    let deadline = Instant::now() + Duration::from_secs(3);
    while tracking_clients() > 0 {
        assert!(
            Instant::now() < deadline,
            "the listener outlived its handle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cluster_handle(cluster: &RedisCluster, namespace: &str, near: bool) -> Cache {
    let builder = Cache::builder()
        .cluster_nodes(cluster.nodes())
        .namespace(namespace)
        .operation_timeout(Duration::from_millis(200));
    let builder = if near {
        builder.near_cache(1_000)
    } else {
        builder
    };
    builder.build().unwrap()
}

/// One user id per primary of `cluster`: their entries live on every primary.
fn one_user_per_primary(cluster: &RedisCluster, namespace: &str) -> Vec<i64> {
    let mut by_primary = BTreeMap::new();
    for id in 0..1_000 {
        let port = cluster.primary_of(&format!("{namespace}:user:{id}"));
        by_primary.entry(port).or_insert(id);
    }
    by_primary.into_values().collect()
}

/// Waits (at most a second) for the next invalidation the reader's near cache receives.
async fn next_invalidation(reader: &UserRepo, received: u64) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while reader.cache.stats().near_invalidations == received {
        assert!(Instant::now() < deadline, "no invalidation arrived");
        tokio::task::yield_now().await;
    }
}

/// Waits (at most a second) until the reader sees user `id` renamed. The first push after
/// a write may name the slot's clock, written by the same script a moment before the
/// entry: its own push follows. Without tracking on the entry's primary the copy would be
/// served for the near cache's whole minute.
async fn until_renamed(reader: &UserRepo, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while reader.get_user(id).await.unwrap().unwrap().name != "renamed" {
        assert!(
            Instant::now() < deadline,
            "user {id}: the copy was never evicted"
        );
        tokio::task::yield_now().await;
    }
}

/// On a cluster the listener tracks every primary: a write by another process to an entry
/// on any of them evicts the copy.
#[tokio::test]
async fn on_a_cluster_every_primary_tells_of_its_changes() {
    let cluster = RedisCluster::shared();
    let namespace = unique_namespace("near");
    let reader = UserRepo::new(cluster_handle(&cluster, &namespace, true));
    let writer = UserRepo::new(cluster_handle(&cluster, &namespace, false));
    let ids = one_user_per_primary(&cluster, &namespace);
    assert_eq!(ids.len(), 3, "the test cluster has three primaries");
    for id in &ids {
        reader.insert(Row::sample(*id));
        writer.insert(Row::sample(*id));
        until_near_hit(&reader, *id).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for id in &ids {
        let received = reader.cache.stats().near_invalidations;
        writer.rename(*id, "renamed").await.unwrap();
        reader.insert(Row {
            name: "renamed".into(),
            ..Row::sample(*id)
        });
        next_invalidation(&reader, received).await;
        until_renamed(&reader, *id).await;
    }
}

/// A primary is killed: the listener's connection to it breaks, memory serves nothing, and
/// once the replica is promoted the listener tracks it and memory serves again, never the
/// value from before a write made on the promoted primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_near_cache_tracks_the_promoted_primary() {
    let mut cluster = RedisCluster::start();
    let namespace = "failover";
    let reader = UserRepo::new(cluster_handle(&cluster, namespace, true));
    let writer = UserRepo::new(cluster_handle(&cluster, namespace, false));
    reader.insert(Row::sample(1));
    writer.insert(Row::sample(1));
    until_near_hit(&reader, 1).await;

    let key = format!("{namespace}:user:1");
    let old = cluster.kill_primary_of(&key);
    // The reset of the connection reaches the listener at once; the health check is the
    // bound (operation timeout + 500 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let near_hits = reader.cache.stats().near_hits;
    assert_eq!(reader.get_user(1).await.unwrap().unwrap().name, "user1");
    assert_eq!(
        reader.cache.stats().near_hits,
        near_hits,
        "nothing from memory while a primary is unheard"
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(&key, old);
        cluster
    })
    .await
    .unwrap();
    // The writer renames on the promoted primary (its invalidation may wait in the writer
    // until its client has found the new primary).
    writer.rename(1, "renamed").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while writer.cache.stats().pending_invalidations > 0 {
        assert!(
            Instant::now() < deadline,
            "the invalidation was never delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.insert(Row {
        name: "renamed".into(),
        ..Row::sample(1)
    });
    // Memory serves again (the promoted primary is tracked), and only the new value.
    until_near_hit(&reader, 1).await;
    assert_eq!(reader.get_user(1).await.unwrap().unwrap().name, "renamed");
    drop(cluster);
}

/// A user with the README's cluster rule plus the near cache's commands gets near hits on
/// every primary, and hears every primary's changes.
#[tokio::test]
async fn a_user_with_the_readme_acl_rule_gets_near_hits_on_the_cluster() {
    let cluster = RedisCluster::shared();
    let namespace = unique_namespace("nearacl");
    let nodes = cluster.add_cache_user_with(
        &namespace,
        &[&format!("{namespace}:*"), &format!("__cache:{namespace}:*")],
        cache_integration_tests::NEAR_ACL_COMMANDS,
    );
    let reader = UserRepo::new(
        Cache::builder()
            .cluster_nodes(nodes)
            .namespace(&namespace)
            .near_cache(1_000)
            .build()
            .unwrap(),
    );
    let writer = UserRepo::new(cluster_handle(&cluster, &namespace, false));
    for id in one_user_per_primary(&cluster, &namespace) {
        reader.insert(Row::sample(id));
        writer.insert(Row::sample(id));
        until_near_hit(&reader, id).await;
        let received = reader.cache.stats().near_invalidations;
        writer.rename(id, "renamed").await.unwrap();
        reader.insert(Row {
            name: "renamed".into(),
            ..Row::sample(id)
        });
        next_invalidation(&reader, received).await;
        until_renamed(&reader, id).await;
    }
    assert_eq!(reader.cache.stats().errors, 0);
}

/// A byte budget bounds what memory keeps: large values push each other out (counted in
/// `near_evictions`), and what is kept is still served from memory.
#[tokio::test]
async fn a_byte_budget_evicts_and_counts() {
    let server = RedisServer::start();
    let repo = UserRepo::new(
        Cache::builder()
            .url(server.url())
            .near_cache(1_000)
            .near_max_bytes(4_000)
            .build()
            .unwrap(),
    );
    let long = "x".repeat(1_000);
    for id in 1..=20 {
        repo.insert(Row {
            name: long.clone(),
            ..Row::sample(id)
        });
    }
    until_near_hit(&repo, 1).await;
    for _ in 0..3 {
        for id in 1..=20 {
            assert_eq!(repo.get_user(id).await.unwrap().unwrap().name, long);
        }
    }
    let stats = repo.cache.stats();
    assert!(stats.near_evictions > 0, "{stats:?}");
    until_near_hit(&repo, 20).await;
}

/// Redis accepts `CLIENT TRACKING` but its pushes never arrive (a proxy that drops them;
/// here one that holds them back for an hour while replies pass): the listener's probe key
/// comes back as no push, so memory never serves, and one log line says why.
#[tokio::test(flavor = "current_thread")]
async fn pushes_that_never_arrive_leave_the_near_cache_off_with_one_log_line() {
    let (log, _capturing) = cache_integration_tests::CapturedLog::start();
    let server = RedisServer::start();
    let proxy = CuttableProxy::start(server.port()).await;
    proxy.set_push_delay(Duration::from_secs(3600));
    let repo = UserRepo::new(near_cache(&proxy.url()));
    repo.insert(Row::sample(1));
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = repo.cache.stats();
    assert_eq!(stats.near_hits, 0, "{stats:?}");
    assert!(stats.hits > 0, "Redis still serves: {stats:?}");
    let lines: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|line| line.contains("near cache"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("did not arrive"), "{lines:?}");

    // The proxy passes pushes again: the listener's next attempt hears its probe.
    proxy.set_push_delay(Duration::ZERO);
    until_near_hit(&repo, 1).await;
}

/// Two functions read one entry: `login` registers the tag `team:{id}` with its fills,
/// `profile` names no tag. A copy `profile` keeps must carry the entry's tag all the same.
mod shared_entry {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use cache_core::{cached_get, Cache};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Profile {
        pub(crate) id: i64,
        pub(crate) name: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Login {
        pub(crate) id: i64,
        pub(crate) name: String,
        pub(crate) email: String,
    }

    pub(crate) struct Accounts {
        pub(crate) cache: Cache,
        names: Mutex<HashMap<i64, String>>,
    }

    impl Accounts {
        pub(crate) fn new(cache: Cache) -> Accounts {
            Accounts {
                cache,
                names: Mutex::new(HashMap::new()),
            }
        }

        pub(crate) fn set_name(&self, id: i64, name: &str) {
            self.names.lock().unwrap().insert(id, name.to_owned());
        }

        fn name(&self, id: i64) -> String {
            self.names.lock().unwrap()[&id].clone()
        }

        #[cached_get(prefix = "acct", key = "id", schema = Login, tags = ["team:{id}"], cache = self.cache)]
        pub(crate) async fn login(&self, id: i64) -> Result<Login, String> {
            Ok(Login {
                id,
                name: self.name(id),
                email: format!("{id}@example.com"),
            })
        }

        #[cached_get(prefix = "acct", key = "id", schema = Profile, cache = self.cache)]
        pub(crate) async fn profile(&self, id: i64) -> Result<Profile, String> {
            Ok(Profile {
                id,
                name: self.name(id),
            })
        }
    }
}

/// Fills the entry through the tagged `login`, then reads it through the untagged
/// `profile` until memory answers (twice, so the pushes of the fill have come and gone).
async fn profile_near_hit(accounts: &shared_entry::Accounts, id: i64) {
    accounts.login(id).await.unwrap();
    assert_eq!(
        accounts.cache.stats().fills,
        1,
        "the tagged read filled: {:?}",
        accounts.cache.stats()
    );
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(3);
        let before = accounts.cache.stats().near_hits;
        while accounts.cache.stats().near_hits == before {
            assert!(Instant::now() < deadline, "no near hit");
            accounts.profile(id).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A handle on `server` in `namespace`, with a near cache or without.
fn handle_in(server: &RedisServer, namespace: &str, near: bool) -> Cache {
    let builder = Cache::builder()
        .url(server.url())
        .namespace(namespace)
        .operation_timeout(Duration::from_millis(200));
    if near {
        builder.near_cache(1_000)
    } else {
        builder
    }
    .build()
    .unwrap()
}

/// Deletes the member set of the tag `team:1`, as Redis evicts any key under `allkeys-lru`:
/// an invalidation of the tag can no longer name (and so tombstone) the entry.
async fn lose_member_set(server: &RedisServer, namespace: &str) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let members = format!("__cache:{namespace}:tag{{:team:1}}");
    let removed: i64 = redis::cmd("DEL")
        .arg(&members)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the tag's member set was at {members}");
}

/// Reads `profile(1)` until it is `new`, for at most a second.
async fn until_profile_is_new(reader: &shared_entry::Accounts) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while reader.profile(1).await.unwrap().name != "new" {
        assert!(
            Instant::now() < deadline,
            "the near copy outlived the tag's invalidation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The tag's member set is lost, then another handle invalidates the tag: the entry in
/// Redis is stale by its recorded tag's stamp, and the copy in memory, which carries that
/// tag, goes too (nothing refills the entry meanwhile, whose push would evict it anyway).
#[tokio::test]
async fn a_tag_invalidation_by_another_handle_evicts_copies_read_without_the_tag() {
    let server = RedisServer::start();
    let namespace = unique_namespace("neartag");
    let reader = shared_entry::Accounts::new(handle_in(&server, &namespace, true));
    let writer = handle_in(&server, &namespace, false);
    reader.set_name(1, "old");
    profile_near_hit(&reader, 1).await;
    lose_member_set(&server, &namespace).await;
    reader.set_name(1, "new");
    writer.invalidate_tag("team:1").await.unwrap();
    assert_eq!(
        writer
            .get::<shared_entry::Profile>("acct", &1)
            .await
            .unwrap(),
        None,
        "Redis' entry is stale"
    );
    until_profile_is_new(&reader).await;
}

/// The same through the reader's own handle: its invalidation evicts, at once, every copy
/// carrying the tag, whichever function read it.
#[tokio::test]
async fn a_tag_invalidation_by_the_same_handle_evicts_copies_read_without_the_tag() {
    let server = RedisServer::start();
    let namespace = unique_namespace("neartag");
    let reader = shared_entry::Accounts::new(handle_in(&server, &namespace, true));
    reader.set_name(1, "old");
    profile_near_hit(&reader, 1).await;
    lose_member_set(&server, &namespace).await;
    reader.set_name(1, "new");
    reader.cache.invalidate_tag("team:1").await.unwrap();
    assert_eq!(reader.profile(1).await.unwrap().name, "new");
}

/// On a cluster, where the entry and the tag's keys live on different primaries.
#[tokio::test]
async fn on_a_cluster_a_tag_invalidation_evicts_copies_read_without_the_tag() {
    let cluster = RedisCluster::shared();
    let namespace = unique_namespace("neartag");
    let reader = shared_entry::Accounts::new(cluster_handle(&cluster, &namespace, true));
    let writer = cluster_handle(&cluster, &namespace, false);
    reader.set_name(1, "old");
    profile_near_hit(&reader, 1).await;
    let members = format!("__cache:{namespace}:tag{{:team:1}}");
    let removed: i64 = redis::cmd("DEL")
        .arg(&members)
        .query(&mut cluster.client())
        .unwrap();
    assert_eq!(removed, 1, "the tag's member set was at {members}");
    reader.set_name(1, "new");
    writer.invalidate_tag("team:1").await.unwrap();
    until_profile_is_new(&reader).await;
}
