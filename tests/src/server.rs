//! The throwaway redis-server a test owns (plain, TLS or mutual TLS, with its certificates
//! made by `openssl`), stopped by its PID when dropped; and the free ports and names that keep
//! tests apart.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::acl::{acl_rule, CACHE_ACL_COMMANDS};
use crate::log::CommandLog;

/// A redis-server owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// The URL of the restricted user made by [`RedisServer::add_cache_user`].
    cache_url: Option<String>,
    /// Speaks only TLS, with a certificate of its own CA (see [`RedisServer::start_tls`]).
    tls: bool,
    /// Asks TLS clients for a certificate of that CA (see [`RedisServer::start_mutual_tls`]).
    client_certificates: bool,
}

impl RedisServer {
    /// Starts a redis-server on a free loopback port and waits until it answers.
    pub fn start() -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("cache-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            cache_url: None,
            tls: false,
            client_certificates: false,
        };
        server.spawn();
        server
    }

    /// Starts a redis-server that speaks only TLS on a free loopback port, with a server
    /// certificate for `127.0.0.1` signed by a CA made for it (`openssl`); clients need
    /// [`ca_pem`](Self::ca_pem) to trust it. Plain connections are refused.
    pub fn start_tls() -> RedisServer {
        RedisServer::start_with_tls(false)
    }

    /// As [`start_tls`](Self::start_tls), and clients must present a certificate signed by
    /// the same CA ([`client_identity`](Self::client_identity)).
    pub fn start_mutual_tls() -> RedisServer {
        RedisServer::start_with_tls(true)
    }

    /// A client certificate and key (PEM) the mutual-TLS server accepts.
    pub fn client_identity(&self) -> (Vec<u8>, Vec<u8>) {
        let read = |name: &str| std::fs::read(self.dir.join(name)).expect("made by start_tls");
        (read("client.crt"), read("client.key"))
    }

    fn start_with_tls(client_certificates: bool) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "cache-test-redis-tls-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        make_certificates(&dir);
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            cache_url: None,
            tls: true,
            client_certificates,
        };
        server.spawn();
        server
    }

    /// `rediss://127.0.0.1:<port>` of a server made by [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The PEM certificate of the CA that signed a TLS server's certificate.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).expect("the CA made by start_tls")
    }

    fn spawn(&mut self) {
        let mut command = Command::new(redis_server_binary());
        if self.tls {
            let file = |name: &str| self.dir.join(name).display().to_string();
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", &file("server.crt")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.crt")])
                .args([
                    "--tls-auth-clients",
                    if self.client_certificates {
                        "yes"
                    } else {
                        "no"
                    },
                ]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--unixsocket")
            .arg(self.socket_path())
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test command installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.tls {
                let ping = Command::new("redis-cli")
                    .args(["--tls", "--cacert"])
                    .arg(self.dir.join("ca.crt"))
                    .arg("--cert")
                    .arg(self.dir.join("client.crt"))
                    .arg("--key")
                    .arg(self.dir.join("client.key"))
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "PING"])
                    .output();
                if ping.is_ok_and(|output| output.stdout.starts_with(b"PONG")) {
                    return;
                }
            } else if let Ok(mut connection) = inspection_client(&self.url()).get_connection() {
                if redis::cmd("PING").query::<String>(&mut connection).is_ok() {
                    assert_expected_version(&self.url());
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis+unix://<socket>`: the server listens on a Unix socket in its directory too.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.socket_path().display())
    }

    /// Requires `password` of every client from now on (`requirepass`, the default user's).
    pub fn require_password(&self, password: &str) {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(password)
            .query::<()>(&mut self.connection())
            .expect("CONFIG SET requirepass");
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// Makes an ACL user with exactly the README's rule: [`CACHE_ACL_COMMANDS`] on the keys
    /// `patterns` (the entries' and the library's), and nothing else. From then on
    /// [`cache_url`](Self::cache_url) connects as that user.
    pub fn add_cache_user(&mut self, patterns: &[&str]) {
        self.add_cache_user_with(patterns, "");
    }

    /// As [`add_cache_user`](Self::add_cache_user), with `more` commands beyond the rule.
    pub fn add_cache_user_with(&mut self, patterns: &[&str], more: &str) {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(acl_rule(
                "cache",
                &format!("{CACHE_ACL_COMMANDS} {more}"),
                patterns,
            ))
            .query::<()>(&mut self.connection())
            .expect("ACL SETUSER");
        self.cache_url = Some(format!(
            "redis://cache:cache-secret@127.0.0.1:{}",
            self.port
        ));
    }

    /// The URL the cache under test connects with: the restricted user's, if one was made.
    pub fn cache_url(&self) -> String {
        self.cache_url.clone().unwrap_or_else(|| self.url())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL by PID) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.spawn();
    }

    /// Saves the data to disk (`SAVE`) and stops the server: a shutdown after which a
    /// [`start_again`](Self::start_again) finds every key, stale ones included.
    pub fn stop_keeping_data(&mut self) {
        redis::cmd("SAVE")
            .query::<()>(&mut self.connection())
            .expect("SAVE");
        self.stop();
    }

    /// Starts it again on the same port with the data saved by
    /// [`stop_keeping_data`](Self::stop_keeping_data).
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A plain synchronous connection for inspecting and planting data (see
    /// [`inspection_client`]: nothing of it shows in `MONITOR` or `INFO commandstats` but
    /// what the test sends).
    pub fn connection(&self) -> redis::Connection {
        inspection_client(&self.url())
            .get_connection()
            .expect("connect to the test redis-server")
    }

    /// Starts recording every command the server executes (Redis `MONITOR`).
    pub fn monitor(&self) -> CommandLog {
        CommandLog::start(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a server certificate for `127.0.0.1` signed by it, in `dir` (`openssl`).
pub(crate) fn make_certificates(dir: &std::path::Path) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    // Extensions make both certificates X.509 v3, the only version webpki accepts.
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .expect("write client.ext");
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=cache-test-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext",
        "req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=cache-test-client",
        "x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.ext",
    ];
    for step in steps {
        let status = Command::new("openssl")
            .args(step.split_whitespace())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl must be installed (the test command installs it)");
        assert!(status.success(), "openssl {step:?}");
    }
}

/// The server binary tests start: `REDIS_SERVER_BIN` (the test command's compatibility
/// matrix sets it to Redis 6.2 and Valkey 8.1, README "Tested servers"), else `redis-server`.
pub fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// When `REDIS_SERVER_VERSION` is set (the matrix sets it beside `REDIS_SERVER_BIN`), panics
/// unless the server at `url` says it is that version (`redis_version` or `valkey_version`
/// in `INFO server` starts with it): a matrix run cannot pass on another server than the
/// one it names.
pub fn assert_expected_version(url: &str) {
    let Ok(expected) = std::env::var("REDIS_SERVER_VERSION") else {
        return;
    };
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut inspection_client(url).get_connection().expect("connect"))
        .expect("INFO server");
    let versions: Vec<&str> = info
        .lines()
        .filter(|line| line.starts_with("redis_version:") || line.starts_with("valkey_version:"))
        .collect();
    assert!(
        versions.iter().any(|line| line
            .split_once(':')
            .is_some_and(|(_, version)| version.starts_with(&expected))),
        "REDIS_SERVER_VERSION={expected}, but the server at {url} says {versions:?}"
    );
}

/// A client for the tests' own connections: it does not send `CLIENT SETINFO` on connecting
/// (Redis 7.2+ and Valkey run it, and it would show in `MONITOR` and `INFO commandstats`
/// beside the library's commands; Redis 7.0 refuses it unseen, 6.2 counts it as `client`).
pub fn inspection_client(url: &str) -> redis::Client {
    let info = redis::IntoConnectionInfo::into_connection_info(url).expect("a valid test URL");
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    redis::Client::open(info.set_redis_settings(settings)).expect("a valid test URL")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free loopback port")
}

/// A port where nothing listens: connections are refused.
pub fn refused_url() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

/// A namespace no other test uses, for tests sharing one server.
pub fn unique_namespace(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{test}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
