//! Redis Cluster for tests: three primaries with a replica each, on free loopback ports whose
//! cluster bus ports (+10000) are free too, made with `redis-cli --cluster create`.
//!
//! The test command starts one cluster for the whole run and names its nodes in
//! `TEST_REDIS_CLUSTER_NODES` ([`RedisCluster::shared`]; tests keep apart by namespaces). A
//! test that breaks a cluster (kills a node) starts its own ([`RedisCluster::start`]).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis Cluster used by a test: owned (its processes stop on drop) or the shared one.
#[derive(Debug)]
pub struct RedisCluster {
    ports: Vec<u16>,
    /// The node processes, by index of `ports`; empty for the shared cluster.
    children: Vec<Option<Child>>,
    dir: Option<PathBuf>,
    /// Nodes speak only TLS (client, bus and replication), with certificates of a CA made
    /// for the cluster in `dir` (see [`RedisCluster::start_tls`]).
    tls: bool,
}

/// How long a node may be silent before the cluster fails it over: short, so that a test
/// that kills a primary sees its replica promoted within seconds.
const NODE_TIMEOUT_MS: u64 = 1000;

impl RedisCluster {
    /// The cluster the test command started (`TEST_REDIS_CLUSTER_NODES`), or, when it did
    /// not (one test run by hand), a private one.
    pub fn shared() -> RedisCluster {
        match std::env::var("TEST_REDIS_CLUSTER_NODES") {
            Ok(nodes) if !nodes.trim().is_empty() => RedisCluster {
                ports: nodes
                    .split(',')
                    .filter_map(|node| node.trim().rsplit(':').next()?.parse().ok())
                    .collect(),
                children: Vec::new(),
                dir: None,
                tls: false,
            },
            _ => RedisCluster::start(),
        }
    }

    /// Starts six nodes and joins them into a cluster of three primaries with one replica
    /// each; waits until every slot is served.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with_tls(false)
    }

    /// As [`start`](Self::start), with nodes that speak only TLS, to clients, to each other
    /// and to their replicas, with a server certificate for `127.0.0.1` signed by a CA made
    /// for it; clients need [`ca_pem`](Self::ca_pem) to trust them.
    pub fn start_tls() -> RedisCluster {
        RedisCluster::start_with_tls(true)
    }

    fn start_with_tls(tls: bool) -> RedisCluster {
        let ports = cluster_ports(6);
        let dir = std::env::temp_dir().join(format!(
            "cache-test-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if tls {
            crate::server::make_certificates(&dir);
        }
        let mut cluster = RedisCluster {
            children: ports.iter().map(|_| None).collect(),
            ports,
            dir: Some(dir),
            tls,
        };
        for index in 0..cluster.ports.len() {
            cluster.spawn(index);
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut create = Command::new("redis-cli");
        if tls {
            create
                .args(["--tls", "--cacert"])
                .arg(cluster.file("ca.crt"));
        }
        let output = create
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_until_ok();
        cluster
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.as_ref().expect("an owned cluster").join(name)
    }

    fn spawn(&mut self, index: usize) {
        let dir = self
            .dir
            .as_ref()
            .expect("an owned cluster")
            .join(index.to_string());
        std::fs::create_dir_all(&dir).expect("create node dir");
        let port = self.ports[index];
        let mut command = Command::new(
            std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned()),
        );
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .arg("--tls-cert-file")
                .arg(self.file("server.crt"))
                .arg("--tls-key-file")
                .arg(self.file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.file("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // Replicas sync at once, and may take over however long ago they last heard from
            // their primary: a test kills primaries seconds after the cluster is made.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test command installs it)");
        self.children[index] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.node(index).is_some() {
                if !self.tls {
                    crate::server::assert_expected_version(&format!("redis://127.0.0.1:{port}"));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cluster node on port {port} did not start");
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on the slots.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let all_ok = (0..self.ports.len())
                .filter(|index| self.is_running(*index))
                .all(|index| {
                    self.node(index).is_some_and(|mut connection| {
                        let cluster_ok = redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query::<String>(&mut connection)
                            .is_ok_and(|info| info.contains("cluster_state:ok"));
                        // A replica must be in sync before its primary may be killed.
                        let synced = redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut connection)
                            .is_ok_and(|info| {
                                info.contains("role:master")
                                    || info.contains("master_link_status:up")
                            });
                        cluster_ok && synced
                    })
                });
            if all_ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the cluster did not become ok");
    }

    fn is_running(&self, index: usize) -> bool {
        self.children.is_empty() || self.children[index].is_some()
    }

    fn node(&self, index: usize) -> Option<redis::Connection> {
        let client = if self.tls {
            let url = format!("rediss://127.0.0.1:{}", self.ports[index]);
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(self.ca_pem()),
            };
            redis::Client::build_with_tls(url, certificates).ok()?
        } else {
            crate::server::inspection_client(&format!("redis://127.0.0.1:{}", self.ports[index]))
        };
        client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()
    }

    /// Makes the ACL user `name` on every node (ACL users are per node) with exactly the
    /// README's rule for a cluster: [`crate::acl::CACHE_ACL_COMMANDS`] and
    /// [`crate::acl::CLUSTER_ACL_COMMANDS`] on the keys `patterns`. Answers the node URLs that
    /// connect as that user.
    pub fn add_cache_user(&self, name: &str, patterns: &[&str]) -> Vec<String> {
        self.add_cache_user_with(name, patterns, "")
    }

    /// [`RedisCluster::add_cache_user`] with `extra` commands (the near cache's, say).
    pub fn add_cache_user_with(&self, name: &str, patterns: &[&str], extra: &str) -> Vec<String> {
        let commands = format!(
            "{} {} {extra}",
            crate::acl::CACHE_ACL_COMMANDS,
            crate::acl::CLUSTER_ACL_COMMANDS
        );
        let rule = crate::acl::acl_rule(name, &commands, patterns);
        for index in (0..self.ports.len()).filter(|index| self.is_running(*index)) {
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&rule)
                .query::<()>(&mut self.node(index).expect("a live node"))
                .expect("ACL SETUSER");
        }
        self.ports
            .iter()
            .map(|port| format!("redis://{name}:cache-secret@127.0.0.1:{port}"))
            .collect()
    }

    /// The URLs of the nodes, for `Cache::builder().cluster_nodes(…)`.
    pub fn nodes(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        self.ports
            .iter()
            .map(|port| format!("{scheme}://127.0.0.1:{port}"))
            .collect()
    }

    /// The CA certificate (PEM) of a cluster made by [`start_tls`](Self::start_tls).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.file("ca.crt")).expect("the cluster's CA certificate")
    }

    /// `REDIS_CLUSTER_NODES` as the example server reads it.
    pub fn nodes_variable(&self) -> String {
        self.nodes().join(",")
    }

    /// A connection that follows the cluster, for inspecting and planting data (clusters
    /// without TLS).
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.nodes())
            .and_then(|client| client.get_connection())
            .expect("connect to the test cluster")
    }

    /// The port of the primary serving `key`'s slot.
    pub fn primary_of(&self, key: &str) -> u16 {
        let mut connection = (0..self.ports.len())
            .filter(|index| self.is_running(*index))
            .find_map(|index| self.node(index))
            .expect("a live node");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection)
            .expect("CLUSTER KEYSLOT");
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut connection)
            .expect("CLUSTER SLOTS");
        for range in slots {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let number = |value: &redis::Value| match value {
                redis::Value::Int(number) => *number,
                _ => -1,
            };
            if parts.len() >= 3 && number(&parts[0]) <= slot && slot <= number(&parts[1]) {
                if let redis::Value::Array(primary) = &parts[2] {
                    return u16::try_from(number(&primary[1])).expect("a port");
                }
            }
        }
        panic!("no primary serves slot {slot}");
    }

    /// Kills the primary serving `key`'s slot with SIGKILL (owned clusters only) and answers
    /// its port; its replica takes over after the node timeout.
    pub fn kill_primary_of(&mut self, key: &str) -> u16 {
        let port = self.primary_of(key);
        let index = self
            .ports
            .iter()
            .position(|candidate| *candidate == port)
            .expect("a node of this cluster");
        let mut child = self.children[index]
            .take()
            .expect("kill a node of an owned, running cluster");
        let _ = child.kill();
        let _ = child.wait();
        port
    }

    /// Waits until `key`'s slot is served by a primary other than `old` (a failover).
    pub fn wait_for_failover(&self, key: &str, old: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.primary_of(key) != old {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no replica took over from the primary on port {old}");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `count` free loopback ports whose cluster bus ports (+10000) are free too, all below the
/// kernel's ephemeral range (32768 and up): a port that some outgoing connection happens to
/// hold when the node starts cannot be listened on.
fn cluster_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    // Spread the starting point over processes, so that concurrent tests rarely collide.
    let mut candidate = 20_000 + (std::process::id() % 2_700) as u16;
    let mut tried = 0;
    while ports.len() < count {
        tried += 1;
        assert!(tried < 10_000, "no free ports for a cluster");
        candidate = 20_000 + (candidate - 20_000 + 7) % 2_700;
        let taken = |port: u16| {
            ports.iter().any(|chosen: &u16| {
                *chosen == port || *chosen + 10_000 == port || *chosen == port + 10_000
            })
        };
        if taken(candidate) {
            continue;
        }
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(candidate) && free(candidate + 10_000) {
            ports.push(candidate);
        }
    }
    ports
}
