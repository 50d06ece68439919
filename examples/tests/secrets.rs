//! No password reaches a log line: the example server is run as a process, with passwords in
//! both `DATABASE_URL` and `REDIS_URL` (in their user info, and in their queries), debug
//! logging on, a few requests served, and a bad cache URL; its whole output is searched for
//! them.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cache_integration_tests::{free_port, RedisServer};

const DATABASE_SECRET: &str = "db-pa55word";
const REDIS_SECRET: &str = "redis-pa55word";

/// Runs the server binary with `env`, sends `requests` GETs once it listens, stops it, and
/// returns everything it printed.
fn run_server(env: &[(&str, String)], port: u16, requests: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-server"))
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("APP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .env("BCRYPT_COST", "4")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listening = false;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            listening = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if listening {
        for path in requests {
            use std::io::Write;
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        }
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the server with these two URLs, serves a few requests, and returns its output,
/// checked to show that it started.
fn serve_with(database_url: String, redis_url: String) -> String {
    let env = [
        ("DATABASE_URL", database_url),
        ("REDIS_URL", redis_url),
        ("JWT_SECRET", "jwt".to_owned()),
    ];
    let output = run_server(
        &env,
        free_port(),
        &["/api/users", "/api/users", "/cache/stats"],
    );
    assert!(output.contains("starting"), "the server logged: {output}");
    output
}

#[tokio::test]
async fn passwords_in_both_urls_never_reach_the_output() {
    let redis = RedisServer::start();
    // The default user has no password: Redis accepts any, so the URL may carry one.
    let redis_url = format!("redis://default:{REDIS_SECRET}@127.0.0.1:{}", redis.port());
    let database = common::postgres_url().await;
    let database_url = database.replacen(
        "://postgres@",
        &format!("://postgres:{DATABASE_SECRET}@"),
        1,
    );
    assert!(database_url.contains(DATABASE_SECRET), "{database_url}");
    let output = serve_with(database_url.clone(), redis_url.clone());
    assert!(
        output.contains("***"),
        "the URLs are logged, redacted: {output}"
    );

    // A cache URL the library refuses: its error is printed, without the password.
    let bad = [
        ("DATABASE_URL", database_url),
        (
            "REDIS_URL",
            format!("foo://default:{REDIS_SECRET}@127.0.0.1:1"),
        ),
        ("JWT_SECRET", "jwt".to_owned()),
    ];
    let failed = run_server(&bad, free_port(), &[]);
    assert!(failed.contains("unsupported cache URL"), "{failed}");

    for secret in [DATABASE_SECRET, REDIS_SECRET] {
        assert!(
            !output.contains(secret),
            "{secret} in the output:\n{output}"
        );
        assert!(
            !failed.contains(secret),
            "{secret} in the output:\n{failed}"
        );
    }
}

/// Passwords in the URLs' queries: `?pass=` on a Unix socket (redis-rs reads it, and the
/// server requires it here) and `?password=` for PostgreSQL.
#[tokio::test]
async fn passwords_in_url_queries_never_reach_the_output() {
    let redis = RedisServer::start();
    redis.require_password(REDIS_SECRET);
    let redis_url = format!("{}?db=0&pass={REDIS_SECRET}", redis.unix_url());
    let database_url = format!(
        "{}?password={DATABASE_SECRET}",
        common::postgres_url().await
    );
    let output = serve_with(database_url, redis_url);
    assert!(
        output.contains("pass=***") && output.contains("password=***"),
        "the URLs are logged, redacted: {output}"
    );
    for secret in [DATABASE_SECRET, REDIS_SECRET] {
        assert!(
            !output.contains(secret),
            "{secret} in the output:\n{output}"
        );
    }
}
