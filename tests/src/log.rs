//! What a test can observe besides results: the commands a server received (`MONITOR`) and
//! the library's log lines (`tracing`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The commands a server received from clients, recorded with `MONITOR` on its own
/// connection. Commands run inside Lua scripts are told apart (MONITOR marks them `lua`), so
/// this counts round trips exactly: what the cache sent, not what its scripts did.
#[derive(Debug)]
pub struct CommandLog {
    port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl CommandLog {
    pub(crate) fn start(port: u16) -> CommandLog {
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
        let mut connection =
            crate::server::inspection_client(&format!("redis://127.0.0.1:{}", self.port))
                .get_connection()
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
