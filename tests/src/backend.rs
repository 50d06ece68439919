//! The backend matrix the suites run on (redis-server, Redis Cluster, Redis Sentinel,
//! `mem://`, each with and without near caches), and how a test gets a cache handle on each: one definition, so that
//! every suite covers the same backends the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{Cache, CacheBuilder};

use crate::cluster::RedisCluster;
use crate::sentinel::{RedisSentinel, MASTER_NAME};
use crate::server::{unique_namespace, RedisServer};

/// Where a test runs; two handles on one backend play two processes. The servers live as
/// long as the backend.
#[derive(Debug)]
pub enum Backend {
    /// A redis-server; handles connect as its restricted user if one was made
    /// ([`RedisServer::add_cache_user`]).
    Redis(RedisServer),
    /// A redis-server, with a near cache on every handle.
    RedisNear(RedisServer),
    /// A cluster, with a namespace of the test's own (a test that sets another namespace
    /// replaces it). Behind a lock so that a test can kill a node while handles use it.
    Cluster(Arc<Mutex<RedisCluster>>, String),
    /// A cluster, with a near cache on every handle (tracking on every primary).
    ClusterNear(Arc<Mutex<RedisCluster>>, String),
    /// A primary, its replica and three sentinels; handles find the primary through the
    /// sentinels. Behind a lock so that a test can kill the primary while handles use it.
    Sentinel(Arc<Mutex<RedisSentinel>>),
    /// Behind Sentinel, with a near cache on every handle (tracking on the primary).
    SentinelNear(Arc<Mutex<RedisSentinel>>),
    /// `mem://{name}`: one store shared by every handle of the process that names it; with
    /// an empty name (`mem://`), a private store for each handle.
    Memory(String),
    /// `mem://{name}`, with a near cache on every handle: the store tells them of every
    /// change before it returns.
    MemoryNear(String),
}

impl Backend {
    /// The shared cluster ([`RedisCluster::shared`]), in a namespace of `test`'s own.
    pub fn shared_cluster(test: &str) -> Backend {
        let (cluster, namespace) = shared_cluster_for(test);
        Backend::Cluster(cluster, namespace)
    }

    /// The shared cluster in a namespace of `test`'s own, with a near cache on every handle.
    pub fn shared_cluster_near(test: &str) -> Backend {
        let (cluster, namespace) = shared_cluster_for(test);
        Backend::ClusterNear(cluster, namespace)
    }

    /// How the suites name it in their output.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Redis(_) => "redis",
            Backend::RedisNear(_) => "redis with near caches",
            Backend::Cluster(..) => "cluster",
            Backend::ClusterNear(..) => "cluster with near caches",
            Backend::Sentinel(_) => "sentinel",
            Backend::SentinelNear(_) => "sentinel with near caches",
            Backend::Memory(_) => "mem://",
            Backend::MemoryNear(_) => "mem:// with near caches",
        }
    }

    /// Whether the handles' near caches hear of writes through other handles from Redis's
    /// pushes, up to 5 ms late (README, "Near cache"); `mem://` tells them before the write returns.
    pub fn near_caches_hear_late(&self) -> bool {
        matches!(
            self,
            Backend::RedisNear(_) | Backend::ClusterNear(..) | Backend::SentinelNear(_)
        )
    }

    /// Waits until a write through the other handle has reached this one's near cache: Redis
    /// pushes it within 5 ms (README, "Near cache"); the in-process store before the write returns.
    pub async fn settle(&self) {
        if self.near_caches_hear_late() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A new handle on the backend, its builder changed by `configure` first.
    pub fn cache_with(&self, configure: impl FnOnce(CacheBuilder) -> CacheBuilder) -> Cache {
        let builder = match self {
            Backend::Redis(server) => Cache::builder().url(server.cache_url()),
            Backend::RedisNear(server) => Cache::builder().url(server.url()).near_cache(1_000),
            Backend::Cluster(cluster, namespace) => Cache::builder()
                .cluster_nodes(cluster.lock().unwrap().nodes())
                .namespace(namespace),
            Backend::ClusterNear(cluster, namespace) => Cache::builder()
                .cluster_nodes(cluster.lock().unwrap().nodes())
                .namespace(namespace)
                .near_cache(1_000),
            Backend::Sentinel(group) => {
                Cache::builder().sentinel(MASTER_NAME, group.lock().unwrap().sentinel_urls())
            }
            Backend::SentinelNear(group) => Cache::builder()
                .sentinel(MASTER_NAME, group.lock().unwrap().sentinel_urls())
                .near_cache(1_000),
            Backend::Memory(name) => Cache::builder().url(format!("mem://{name}")),
            Backend::MemoryNear(name) => Cache::builder()
                .url(format!("mem://{name}"))
                .near_cache(1_000),
        };
        configure(builder)
            .build()
            .expect("valid test configuration")
    }

    /// A new handle on the backend.
    pub fn cache(&self) -> Cache {
        self.cache_with(|builder| builder)
    }
}

impl Backend {
    /// A private Sentinel group ([`RedisSentinel::start`]).
    pub fn sentinel() -> Backend {
        Backend::Sentinel(Arc::new(Mutex::new(RedisSentinel::start())))
    }
}

fn shared_cluster_for(test: &str) -> (Arc<Mutex<RedisCluster>>, String) {
    let namespace = unique_namespace(test);
    let cluster = Arc::new(Mutex::new(RedisCluster::shared()));
    (cluster, namespace)
}
