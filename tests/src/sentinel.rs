//! Redis Sentinel for tests: one primary, one replica and three sentinels (`redis-server
//! --sentinel`, which every redis-server can run: no other package) on free loopback ports,
//! with a short `down-after-milliseconds` so that a test that kills the primary sees its
//! replica promoted within seconds. Every process is stopped by its PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// The name the sentinels monitor the primary by.
pub const MASTER_NAME: &str = "cachemaster";

/// How long the sentinels wait before they take a silent primary for down.
const DOWN_AFTER_MS: u64 = 1000;

/// One primary, its replica and three sentinels, owned by one test.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The data nodes' ports: the primary when started, then its replica.
    data_ports: [u16; 2],
    data: [Option<Child>; 2],
    sentinel_ports: Vec<u16>,
    sentinels: Vec<Option<Child>>,
    dir: PathBuf,
    /// `requirepass` of the data nodes, and of the sentinels.
    data_password: Option<String>,
    sentinel_password: Option<String>,
    /// The data nodes speak only TLS (to clients, to their replica and to the sentinels),
    /// with certificates of a CA made in `dir`; the sentinels speak plain.
    data_tls: bool,
}

impl RedisSentinel {
    /// Starts the primary and its replica, waits until the replica is in sync, then starts
    /// three sentinels (quorum 2) and waits until each knows the replica and the other two.
    pub fn start() -> RedisSentinel {
        RedisSentinel::start_with(None, None, false)
    }

    /// As [`start`](Self::start), the data nodes speaking only TLS, with a server
    /// certificate for `127.0.0.1` signed by a CA made for them ([`ca_pem`](Self::ca_pem));
    /// the sentinels speak plain (and TLS to the data nodes).
    pub fn start_with_tls_data_nodes() -> RedisSentinel {
        RedisSentinel::start_with(None, None, true)
    }

    /// The CA certificate (PEM) of the data nodes of [`start_with_tls_data_nodes`](Self::start_with_tls_data_nodes).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).expect("the CA made for the data nodes")
    }

    /// As [`start`](Self::start), the data nodes asking for `data_password` (the replica and
    /// the sentinels give it) and the sentinels for `sentinel_password`.
    pub fn start_with_passwords(data_password: &str, sentinel_password: &str) -> RedisSentinel {
        RedisSentinel::start_with(Some(data_password), Some(sentinel_password), false)
    }

    fn start_with(
        data_password: Option<&str>,
        sentinel_password: Option<&str>,
        data_tls: bool,
    ) -> RedisSentinel {
        let mut ports = distinct_ports(5).into_iter();
        let mut next_port = || ports.next().expect("five ports");
        let data_ports = [next_port(), next_port()];
        let dir = std::env::temp_dir().join(format!(
            "cache-test-sentinel-{}-{}",
            std::process::id(),
            data_ports[0]
        ));
        std::fs::create_dir_all(&dir).expect("create sentinel dir");
        if data_tls {
            crate::server::make_certificates(&dir);
        }
        let mut group = RedisSentinel {
            data_ports,
            data: [None, None],
            sentinel_ports: Vec::new(),
            sentinels: Vec::new(),
            dir,
            data_password: data_password.map(str::to_owned),
            sentinel_password: sentinel_password.map(str::to_owned),
            data_tls,
        };
        group.spawn_data(0, None);
        group.spawn_data(1, Some(group.data_ports[0]));
        group.wait_until(Duration::from_secs(30), "the replica to sync", |group| {
            group
                .info(group.data_ports[1], "replication")
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        for _ in 0..3 {
            let mut port = next_port();
            // A port another test took since it was chosen: another one.
            let child = loop {
                match group.spawn_sentinel(port) {
                    Some(child) => break child,
                    None => port = free_port(),
                }
            };
            group.sentinel_ports.push(port);
            group.sentinels.push(Some(child));
        }
        group.wait_until(
            Duration::from_secs(60),
            "the sentinels to know the replica and each other",
            |group| {
                group.sentinel_ports.iter().all(|port| {
                    let known = |what: &str| {
                        group
                            .sentinel_command(*port, &[what, MASTER_NAME])
                            .and_then(|value| match value {
                                redis::Value::Array(items) => Some(items.len()),
                                _ => None,
                            })
                            .unwrap_or(0)
                    };
                    known("replicas") == 1 && known("sentinels") == 2
                })
            },
        );
        group
    }

    /// Starts data node `index`, on another port if its own was taken meanwhile.
    fn spawn_data(&mut self, index: usize, replica_of: Option<u16>) {
        for _ in 0..5 {
            if self.try_spawn_data(index, replica_of) {
                return;
            }
            self.data_ports[index] = free_port();
        }
        panic!("no data node could start");
    }

    fn try_spawn_data(&mut self, index: usize, replica_of: Option<u16>) -> bool {
        let port = self.data_ports[index];
        let dir = self.dir.join(format!("data-{index}"));
        std::fs::create_dir_all(&dir).expect("create node dir");
        let mut command = Command::new(redis_server_binary());
        if self.data_tls {
            let file = |name: &str| self.dir.join(name).display().to_string();
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-replication", "yes", "--tls-auth-clients", "no"])
                .args(["--tls-cert-file", &file("server.crt")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.crt")]);
        } else {
            command.args(["--port", &port.to_string()]);
        }
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir);
        if let Some(primary) = replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if let Some(password) = &self.data_password {
            command.args(["--requirepass", password, "--masterauth", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test command installs it)");
        let mut child = child;
        let pid = format!("process_id:{}\r\n", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Ours, not another test's server on a port taken meanwhile.
            if self
                .info(port, "server")
                .is_some_and(|info| info.contains(&pid))
            {
                self.data[index] = Some(child);
                return true;
            }
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on port {port} did not start");
    }

    /// A sentinel on `port`; `None` when the port was taken meanwhile (it exited).
    fn spawn_sentinel(&self, port: u16) -> Option<Child> {
        let config = self.dir.join(format!("sentinel-{port}.conf"));
        let primary = self.data_ports[0];
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = self.dir.display()
        );
        if let Some(password) = &self.data_password {
            text.push_str(&format!("sentinel auth-pass {MASTER_NAME} {password}\n"));
        }
        if self.data_tls {
            let file = |name: &str| self.dir.join(name).display().to_string();
            text.push_str(&format!(
                "tls-replication yes\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                file("server.crt"),
                file("server.key"),
                file("ca.crt")
            ));
        }
        // Sentinels give their own password to one another too.
        if let Some(password) = &self.sentinel_password {
            text.push_str(&format!("requirepass {password}\n"));
        }
        std::fs::write(&config, text).expect("write the sentinel's config");
        let mut child = Command::new(redis_server_binary())
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (it runs the sentinels too)");
        let pid = format!("process_id:{}\r\n", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ours = connect(port, self.sentinel_password.as_deref()).is_some_and(|mut c| {
                redis::cmd("INFO")
                    .arg("server")
                    .query::<String>(&mut c)
                    .is_ok_and(|info| info.contains(&pid))
            });
            if ours
                && self
                    .sentinel_command(port, &["get-master-addr-by-name", MASTER_NAME])
                    .is_some()
            {
                return Some(child);
            }
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the sentinel on port {port} did not start");
    }

    fn wait_until(&self, within: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }

    /// The sentinels' URLs, for `Cache::builder().sentinel(MASTER_NAME, …)`.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// `REDIS_SENTINEL_NODES` as the example server reads it.
    pub fn sentinels_variable(&self) -> String {
        self.sentinel_urls().join(",")
    }

    /// The port of the primary as a majority of the live sentinels name it; `None` while
    /// they disagree or none answers.
    pub fn primary_port(&self) -> Option<u16> {
        let mut named: Vec<u16> = self
            .sentinel_ports
            .iter()
            .zip(&self.sentinels)
            .filter(|(_, child)| child.is_some())
            .filter_map(|(port, _)| {
                let reply =
                    self.sentinel_command(*port, &["get-master-addr-by-name", MASTER_NAME])?;
                let (_, port): (String, u16) = redis::from_redis_value(reply).ok()?;
                Some(port)
            })
            .collect();
        named.sort_unstable();
        let first = *named.first()?;
        (named.len() >= 2 && named.iter().all(|port| *port == first)).then_some(first)
    }

    /// A plain connection to the current primary, for inspecting and planting data.
    pub fn primary(&self) -> redis::Connection {
        let port = self.primary_port().expect("the sentinels name a primary");
        self.connect_data(port).expect("connect to the primary")
    }

    /// Kills the primary with SIGKILL and answers its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port().expect("the sentinels name a primary");
        let index = self
            .data_ports
            .iter()
            .position(|candidate| *candidate == port)
            .expect("a data node of this group");
        if let Some(mut child) = self.data[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }

    /// Asks a sentinel for a failover (`SENTINEL FAILOVER`) with the primary alive: its
    /// replica is promoted and the old primary made a replica of it. Answers the old port.
    pub fn fail_over(&self) -> u16 {
        let port = self.primary_port().expect("the sentinels name a primary");
        let deadline = Instant::now() + Duration::from_secs(30);
        // Refused while the sentinels are still busy with a previous one: asked again.
        while Instant::now() < deadline {
            let mut connection = connect(self.sentinel_ports[0], self.sentinel_password.as_deref())
                .expect("connect to a sentinel");
            let asked: redis::RedisResult<()> = redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(MASTER_NAME)
                .query(&mut connection);
            if asked.is_ok() {
                return port;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the sentinels refused a failover");
    }

    /// Waits (60 s at most) until the sentinels name a primary other than `old`, and that
    /// node says it is a primary.
    pub fn wait_for_failover(&self, old: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(port) = self.primary_port().filter(|port| *port != old) {
                if self
                    .info(port, "replication")
                    .is_some_and(|info| info.contains("role:master"))
                {
                    return port;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no replica took over from the primary on port {old}");
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for child in self
            .sentinels
            .iter_mut()
            .chain(self.data.iter_mut())
            .filter_map(Option::take)
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` free loopback ports, no two alike (a port just freed may be handed out again).
fn distinct_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

fn connect(port: u16, password: Option<&str>) -> Option<redis::Connection> {
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    };
    redis::Client::open(url)
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

impl RedisSentinel {
    fn connect_data(&self, port: u16) -> Option<redis::Connection> {
        if !self.data_tls {
            return connect(port, self.data_password.as_deref());
        }
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.ca_pem()),
        };
        redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), certificates)
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()
    }

    fn info(&self, port: u16, section: &str) -> Option<String> {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.connect_data(port)?)
            .ok()
    }

    fn sentinel_command(&self, port: u16, args: &[&str]) -> Option<redis::Value> {
        let mut connection = connect(port, self.sentinel_password.as_deref())?;
        let value: redis::Value = redis::cmd("SENTINEL")
            .arg(args)
            .query(&mut connection)
            .ok()?;
        (!matches!(value, redis::Value::Nil)).then_some(value)
    }
}

fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}
