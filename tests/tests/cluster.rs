//! Redis Cluster specifics (the suites themselves run on the cluster in `behaviour.rs`,
//! `consistency.rs` and `checker.rs`): slot migrations (`ASK`, then `MOVED`) are followed,
//! not taken for an outage; every script touches one slot; configuration errors.

use std::sync::atomic::{AtomicUsize, Ordering};

use cache_core::{cached_get, Cache, Error};
use cache_integration_tests::cluster::RedisCluster;
use cache_integration_tests::fixtures::{Row, UserRepo};
use cache_integration_tests::unique_namespace;
use serde::{Deserialize, Serialize};

fn cluster_cache(cluster: &RedisCluster, namespace: &str) -> Cache {
    Cache::builder()
        .cluster_nodes(cluster.nodes())
        .namespace(namespace)
        .build()
        .expect("valid test configuration")
}

fn node(port: u16) -> redis::Connection {
    cache_integration_tests::server::inspection_client(&format!("redis://127.0.0.1:{port}"))
        .get_connection()
        .expect("connect to a cluster node")
}

fn node_id(port: u16) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node(port))
        .expect("CLUSTER MYID")
}

fn slot_of(port: u16, key: &str) -> i64 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut node(port))
        .expect("CLUSTER KEYSLOT")
}

/// The commands every primary ran, from `INFO commandstats` (`cmdstat_<name>:calls=N`).
fn command_counts(ports: &[u16]) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for port in ports {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut node(*port))
            .unwrap();
        for line in info.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|line| line.split_once(':'))
            else {
                continue;
            };
            let calls = rest
                .split(',')
                .find_map(|part| part.strip_prefix("calls="))
                .and_then(|calls| calls.parse::<u64>().ok())
                .unwrap_or(0);
            *counts.entry(name.to_owned()).or_default() += calls;
        }
    }
    counts
}

/// A hit is one command on the entry's node, as on one server: 60 hits spread over the
/// three primaries run 60 `HMGET`s and nothing else anywhere in the cluster.
#[tokio::test]
async fn a_hit_is_one_hmget_on_the_entrys_node() {
    let cluster = RedisCluster::start();
    let repo = UserRepo::new(cluster_cache(&cluster, "wire"));
    for id in 0..60 {
        repo.insert(Row::sample(id));
        repo.get_user(id).await.unwrap();
    }
    let ports: Vec<u16> = cluster
        .nodes()
        .iter()
        .map(|url| url.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    for port in &ports {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut node(*port))
            .unwrap();
    }
    for id in 0..60 {
        repo.get_user(id).await.unwrap();
    }
    assert_eq!(repo.loads(), 60, "all hits");
    let mut counts = command_counts(&ports);
    // The inspection's own commands.
    counts.remove("info");
    counts.remove("config|resetstat");
    // Redis 6.2 counts subcommands under their command.
    counts.remove("config");
    let expected: std::collections::BTreeMap<String, u64> = [("hmget".to_owned(), 60)].into();
    assert_eq!(counts, expected);
}

/// Moves one slot, key by key, from one primary to another while the cache is used: in the
/// middle (slot `MIGRATING` on the source, `IMPORTING` on the target) keys already moved are
/// answered with `ASK`; once done, the old owner answers `MOVED`. The cache follows both:
/// no error, no bypass, hits keep hitting and writes keep invalidating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_is_followed_not_taken_for_an_outage() {
    let cluster = RedisCluster::start();
    let namespace = unique_namespace("migration");
    let repo = UserRepo::new(cluster_cache(&cluster, &namespace));
    repo.insert(Row::sample(1));
    repo.insert(Row::sample(2));
    let key = format!("{namespace}:user:1");
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");

    let source = cluster.primary_of(&key);
    let ports: Vec<u16> = cluster
        .nodes()
        .iter()
        .map(|url| url.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let target = ports
        .iter()
        .copied()
        .find(|port| {
            *port != source
                && redis::cmd("ROLE")
                    .query::<Vec<redis::Value>>(&mut node(*port))
                    .is_ok_and(|role| {
                        role.first() == Some(&redis::Value::BulkString(b"master".to_vec()))
                    })
        })
        .expect("another primary");
    let slot = slot_of(source, &key);
    let (source_id, target_id) = (node_id(source), node_id(target));
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&source_id)
        .query::<()>(&mut node(target))
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&target_id)
        .query::<()>(&mut node(source))
        .unwrap();

    // Half-way: the slot's keys move one by one; a hit and a miss of the slot meanwhile.
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query(&mut node(source))
        .unwrap();
    assert!(keys.contains(&key), "{keys:?}");
    for moved in &keys {
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(target)
            .arg(moved)
            .arg(0)
            .arg(5000)
            .query::<()>(&mut node(source))
            .unwrap();
        assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "user1");
    }
    assert_eq!(
        repo.loads(),
        1,
        "the entry was found at its new place (ASK)"
    );
    repo.rename(1, "renamed").await.unwrap();
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");

    // Done: every node learns the new owner; the old one answers MOVED.
    for port in &ports {
        let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&target_id)
            .query(&mut node(*port));
    }
    cluster.wait_until_ok();
    assert_eq!(cluster.primary_of(&key), target);
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    let loads = repo.loads();
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "renamed");
    assert_eq!(repo.loads(), loads, "a hit on the new owner (MOVED)");
    repo.rename(1, "again").await.unwrap();
    assert_eq!(repo.get_user(1).await.unwrap().unwrap().name, "again");

    let stats = repo.cache.stats();
    assert_eq!(
        (stats.errors, stats.bypassed, stats.pending_invalidations),
        (0, 0, 0),
        "a migration is not an outage: {stats:?}"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: i64,
    name: String,
}

/// Items, every entry tagged `items`.
struct Items {
    cache: Cache,
    loads: AtomicUsize,
}

impl Items {
    #[cached_get(prefix = "item", key = "id", schema = Item, cache = self.cache, tags = ["items"])]
    async fn get(&self, id: i64) -> Option<Item> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Some(Item {
            id,
            name: format!("item{id}"),
        })
    }
}

/// A tag invalidation reaches entries in other slots and on other nodes: entries of many
/// keys (spread over the three primaries) carry one tag; invalidating it drops them all.
#[tokio::test]
async fn a_tag_reaches_entries_on_every_node() {
    let cluster = RedisCluster::shared();
    let namespace = unique_namespace("spread");
    let items = Items {
        cache: cluster_cache(&cluster, &namespace),
        loads: AtomicUsize::new(0),
    };
    let ids: Vec<i64> = (1..=30).collect();
    for id in &ids {
        items.get(*id).await.unwrap();
    }
    let primaries: std::collections::BTreeSet<u16> = ids
        .iter()
        .map(|id| cluster.primary_of(&format!("{namespace}:item:{id}")))
        .collect();
    assert_eq!(primaries.len(), 3, "the entries live on every primary");
    for id in &ids {
        items.get(*id).await.unwrap();
    }
    assert_eq!(items.loads.load(Ordering::SeqCst), ids.len(), "all cached");
    items.cache.invalidate_tag("items").await.unwrap();
    for id in &ids {
        items.get(*id).await.unwrap();
    }
    assert_eq!(
        items.loads.load(Ordering::SeqCst),
        2 * ids.len(),
        "every entry was dropped"
    );
    // The entries themselves are gone too (tombstoned), not only refused by the tag's stamp:
    // other clients of the hashes see them gone.
    let mut connection = cluster.client();
    items.cache.invalidate_tag("items").await.unwrap();
    for id in &ids {
        let name: Option<String> = redis::cmd("HGET")
            .arg(format!("{namespace}:item:{id}"))
            .arg("name")
            .query(&mut connection)
            .unwrap();
        assert_eq!(name, None, "item {id}");
    }
    assert_eq!(items.cache.stats().errors, 0);
}

/// A user with exactly the README's ACL rule for a cluster: reads, fills, tags, updates and
/// write paths work, with no error.
#[tokio::test]
async fn a_user_with_the_readme_acl_rule_works_on_the_cluster() {
    let cluster = RedisCluster::shared();
    let namespace = unique_namespace("acl");
    let nodes = cluster.add_cache_user(
        &namespace,
        &[&format!("{namespace}:*"), &format!("__cache:{namespace}:*")],
    );
    let cache = Cache::builder()
        .cluster_nodes(nodes)
        .namespace(&namespace)
        .build()
        .unwrap();
    let items = Items {
        cache: cache.clone(),
        loads: AtomicUsize::new(0),
    };
    let repo = UserRepo::new(cache.clone());
    for id in 1..=10 {
        repo.insert(Row::sample(id));
        repo.get_user(id).await.unwrap();
        items.get(id).await.unwrap();
    }
    for id in 1..=10 {
        repo.get_user(id).await.unwrap();
        items.get(id).await.unwrap();
    }
    assert_eq!(repo.loads(), 10);
    assert_eq!(items.loads.load(Ordering::SeqCst), 10);
    repo.rename(3, "renamed").await.unwrap();
    assert_eq!(repo.get_user(3).await.unwrap().unwrap().name, "renamed");
    cache.invalidate_tag("items").await.unwrap();
    items.get(1).await.unwrap();
    assert_eq!(items.loads.load(Ordering::SeqCst), 11);
    let stats = cache.stats();
    assert_eq!(
        (stats.errors, stats.pending_invalidations),
        (0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn cluster_configuration_errors_are_typed_and_hide_passwords() {
    let bad = Cache::builder()
        .cluster_nodes(["http://user:secret@127.0.0.1:7000"])
        .build()
        .unwrap_err();
    assert!(matches!(bad, Error::Config(_)), "{bad:?}");
    assert!(!bad.to_string().contains("secret"), "{bad}");
    let empty = Cache::builder()
        .cluster_nodes(Vec::<String>::new())
        .build()
        .unwrap_err();
    assert!(matches!(empty, Error::Config(_)), "{empty:?}");
    let braces = Cache::builder()
        .cluster_nodes(["redis://127.0.0.1:7000"])
        .namespace("a{b}")
        .build()
        .unwrap_err();
    assert!(braces.to_string().contains('{'), "{braces}");
    // Down nodes are not a configuration error: connecting is lazy, calls answer.
    let down = Cache::builder()
        .cluster_nodes([cache_integration_tests::refused_url()])
        .build()
        .expect("built without connecting");
    let repo = UserRepo::new(down);
    repo.insert(Row::sample(5));
    assert_eq!(repo.get_user(5).await.unwrap().unwrap().name, "user5");
}
