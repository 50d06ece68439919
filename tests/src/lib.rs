//! Test harness: real redis-servers on free loopback ports, and real faults (a listener that
//! never answers). Every server is a child process stopped by its PID when dropped.

pub mod cluster;
pub mod fixtures;
pub mod measure;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// The commands the library needs, exactly as the README's ACL rule lists them: what it
/// sends (`HMGET`, `HGET`, `MGET`, `UNLINK`, `EVALSHA`, `SCRIPT LOAD`) and what its scripts run.
pub const CACHE_ACL_COMMANDS: &str = "-@all +hmget +hget +mget +unlink +evalsha +script|load \
    +hset +hdel +hlen +hexists +del +exists +pexpire +pttl +type +time +get +set +sadd +srem \
    +spop +scard +srandmember";

/// What a Redis Cluster needs beyond [`CACHE_ACL_COMMANDS`], as the README says: the slot
/// map, and `WAIT` for replicas.
pub const CLUSTER_ACL_COMMANDS: &str = "+wait +cluster|slots";

/// What the near cache's listener needs beyond [`CACHE_ACL_COMMANDS`], as the README says.
pub const NEAR_ACL_COMMANDS: &str = "+hello +client|tracking +ping";

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
            } else if let Ok(client) = redis::Client::open(self.url().as_str()) {
                if let Ok(mut connection) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut connection).is_ok() {
                        return;
                    }
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

    /// A plain synchronous connection for inspecting and planting data.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .and_then(|client| client.get_connection())
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

fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// `ACL SETUSER` arguments for user `name` with password `cache-secret`, exactly `commands`
/// (space-separated) and the key `patterns`, and nothing else.
pub(crate) fn acl_rule(name: &str, commands: &str, patterns: &[&str]) -> Vec<String> {
    let mut rule: Vec<String> = [name, "on", ">cache-secret", "resetkeys", "resetchannels"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    rule.extend(commands.split_whitespace().map(str::to_owned));
    rule.extend(patterns.iter().map(|pattern| format!("~{pattern}")));
    rule
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

/// A TCP listener that accepts connections, reads whatever is sent, and never answers:
/// the nastiest way for Redis to be down.
#[derive(Debug)]
pub struct SilentListener {
    address: SocketAddr,
    bytes_received: std::sync::Arc<AtomicU64>,
    connections: std::sync::Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentListener {
    /// Binds a free loopback port and starts accepting on the current Tokio runtime.
    pub async fn start() -> SilentListener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind listener");
        let address = listener.local_addr().expect("listener address");
        let bytes_received = std::sync::Arc::new(AtomicU64::new(0));
        let connections = std::sync::Arc::new(AtomicU64::new(0));
        let (bytes, accepted) = (bytes_received.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buffer = [0u8; 4096];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        bytes.fetch_add(read as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        SilentListener {
            address,
            bytes_received,
            connections,
            task,
        }
    }

    /// `redis://` URL pointing at it.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Bytes clients sent so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
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

/// A TCP proxy in front of a server that the test can cut (every connection reset, new ones
/// dropped at once) and restore, or slow down: a network fault between the cache and Redis.
#[derive(Debug)]
pub struct CuttableProxy {
    address: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds each chunk waits before it is forwarded, both ways.
    delay_ms: std::sync::Arc<AtomicU64>,
    /// Milliseconds an invalidation push from the server waits.
    push_delay_ms: std::sync::Arc<AtomicU64>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Starts forwarding a free loopback port to `upstream_port` on 127.0.0.1.
    pub async fn start(upstream_port: u16) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = std::sync::Arc::new(AtomicU64::new(0));
        let push_delay_ms = std::sync::Arc::new(AtomicU64::new(0));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_cut, tasks, delay) = (cut.clone(), connections.clone(), delay_ms.clone());
        let push_delay = push_delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let delay = delay.clone();
                let push_delay = push_delay.clone();
                let connection = tokio::spawn(async move {
                    let Ok(upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (upstream_read, upstream_write) = upstream.into_split();
                    let no_push_delay = std::sync::Arc::new(AtomicU64::new(0));
                    tokio::select! {
                        _ = forward(client_read, upstream_write, delay.clone(), no_push_delay) => {}
                        _ = forward(upstream_read, client_write, delay, push_delay) => {}
                    }
                });
                tasks.lock().expect("proxy tasks").push(connection);
            }
        });
        CuttableProxy {
            address,
            cut,
            delay_ms,
            push_delay_ms,
            connections,
            task,
        }
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> usize {
        self.connections.lock().expect("proxy tasks").len()
    }

    /// From now on every chunk waits `delay` before it is forwarded, both ways: a slow or
    /// congested link (or a Redis busy elsewhere).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// From now on the server's invalidation pushes wait `delay` before they are forwarded;
    /// replies do not: a listener that hears late.
    pub fn set_push_delay(&self, delay: Duration) {
        self.push_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Resets every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().expect("proxy tasks").drain(..) {
            connection.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction of a proxied connection, each chunk after the current delay; with a
/// push delay, the part of a chunk from an invalidation push on waits that much longer (a
/// push often shares its segment with the reply before it, which is not held back).
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: std::sync::Arc<AtomicU64>,
    push_delay_ms: std::sync::Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PUSH: &[u8] = b">2\r\n$10\r\ninvalidate\r\n";
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let chunk = &buffer[..read];
        let push_delay = push_delay_ms.load(Ordering::SeqCst);
        let push_at = (push_delay > 0)
            .then(|| chunk.windows(PUSH.len()).position(|window| window == PUSH))
            .flatten();
        let (now, later) = chunk.split_at(push_at.unwrap_or(read));
        if to.write_all(now).await.is_err() {
            break;
        }
        if !later.is_empty() {
            tokio::time::sleep(Duration::from_millis(push_delay)).await;
            if to.write_all(later).await.is_err() {
                break;
            }
        }
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The commands a server received from clients, recorded with `MONITOR` on its own
/// connection. Commands run inside Lua scripts are told apart (MONITOR marks them `lua`), so
/// this counts round trips exactly: what the cache sent, not what its scripts did.
#[derive(Debug)]
pub struct CommandLog {
    port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl CommandLog {
    fn start(port: u16) -> CommandLog {
        use std::io::{BufRead, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect for MONITOR");
        stream.write_all(b"MONITOR\r\n").expect("send MONITOR");
        let mut reader = std::io::BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR reply");
        assert_eq!(ok.trim_end(), "+OK");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("monitor lines").push(line);
            }
        });
        CommandLog { port, lines }
    }

    /// Waits until everything sent so far is recorded, then returns the names (lower case)
    /// of the commands clients sent since the last call, leaving out those run by scripts.
    pub fn take_client_commands(&self) -> Vec<String> {
        static MARK: AtomicU64 = AtomicU64::new(0);
        let marker = format!("monitor-mark-{}", MARK.fetch_add(1, Ordering::Relaxed));
        let mut connection = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .and_then(|client| client.get_connection())
            .expect("connect for the marker");
        redis::cmd("ECHO")
            .arg(&marker)
            .query::<String>(&mut connection)
            .expect("ECHO marker");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut lines = self.lines.lock().expect("monitor lines");
            if let Some(end) = lines.iter().position(|line| line.contains(&marker)) {
                let taken: Vec<String> = lines.drain(..=end).collect();
                return taken[..taken.len() - 1]
                    .iter()
                    .filter(|line| !line.contains(" lua] "))
                    .filter_map(|line| line.split("] \"").nth(1))
                    .filter_map(|rest| rest.split('"').next())
                    .map(str::to_lowercase)
                    .collect();
            }
            drop(lines);
            assert!(Instant::now() < deadline, "MONITOR did not see the marker");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Log lines written through `tracing` while it is held (on this thread: the tests using it
/// run on a current-thread runtime, so the library's tasks log here too).
#[derive(Debug, Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Captures warnings and errors logged on this thread while the guard lives.
    pub fn start() -> (CapturedLog, tracing::subscriber::DefaultGuard) {
        let log = CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
