//! Real network faults between the cache and Redis: a listener that never answers, and a
//! proxy that can be cut, restored or slowed down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
