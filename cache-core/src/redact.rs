//! Secrets out of logs, errors and `Debug` output: connection URLs carry passwords, in their
//! user info and in query parameters.

use std::borrow::Cow;

/// Query parameter names (compared decoded and ignoring case) whose value is a secret:
/// redis-rs reads `pass` and `password` (`redis+unix:///run/redis.sock?pass=…`), libpq and
/// sqlx `password` and `sslpassword`, and the rest are the usual names of tokens and keys.
const SECRET_PARAMETERS: &[&str] = &[
    "pass",
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "user",
    "username",
    "token",
    "access_token",
    "auth",
    "secret",
    "api_key",
    "apikey",
    "key",
];

/// `url` with every credential replaced by `***`: the password (or a lone token) in the user
/// info, `redis://app:s3cret@cache:6379/0` → `redis://app:***@cache:6379/0`, and the value of
/// each query parameter that names one (`pass`, `password`, `sslpassword`, `user`,
/// `username`, `token`, `auth`, `secret`, `api_key`, … whatever their case or
/// percent-encoding): `redis+unix:///run/redis.sock?db=1&pass=s3cret` →
/// `redis+unix:///run/redis.sock?db=1&pass=***`. Anything else comes back unchanged. For
/// logging a URL that may hold a secret, as the example server does with `DATABASE_URL` and
/// `REDIS_URL`; the library's own `Debug` output and errors use it.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut redacted = String::with_capacity(url.len());
    redacted.push_str(&url[..authority_start]);
    match authority.rfind('@') {
        Some(at) => {
            match authority[..at].split_once(':') {
                Some((user, _password)) => {
                    redacted.push_str(user);
                    redacted.push_str(":***");
                }
                None => redacted.push_str("***"),
            }
            redacted.push_str(&authority[at..]);
        }
        None => redacted.push_str(authority),
    }
    let after = &rest[authority_end..];
    let (before_fragment, fragment) = after.split_at(after.find('#').unwrap_or(after.len()));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            redacted.push_str(path);
            redacted.push('?');
            redacted.push_str(&redact_query(query));
        }
        None => redacted.push_str(before_fragment),
    }
    redacted.push_str(fragment);
    redacted
}

/// The query with the values of secret parameters replaced by `***`.
fn redact_query(query: &str) -> String {
    let mut redacted = String::with_capacity(query.len());
    for (index, pair) in query.split('&').enumerate() {
        if index > 0 {
            redacted.push('&');
        }
        match pair.split_once('=') {
            Some((name, _value)) if is_secret(name) => {
                redacted.push_str(name);
                redacted.push_str("=***");
            }
            _ => redacted.push_str(pair),
        }
    }
    redacted
}

fn is_secret(name: &str) -> bool {
    let spaced = name.replace('+', " ");
    let decoded: Cow<'_, str> = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    let decoded = decoded.trim();
    SECRET_PARAMETERS
        .iter()
        .any(|secret| decoded.eq_ignore_ascii_case(secret))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_and_tokens_are_replaced() {
        assert_eq!(
            redact_url("redis://app:s3cret@cache:6379/0"),
            "redis://app:***@cache:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@cache"), "redis://:***@cache");
        assert_eq!(redact_url("rediss://token@cache/1"), "rediss://***@cache/1");
        assert_eq!(
            redact_url("postgres://u:p@ss:w@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        for plain in [
            "redis://127.0.0.1:6379",
            "mem://",
            "sqlite://users.db?mode=rwc",
            "redis+unix:///run/redis.sock?db=2",
            "x",
            "x?password=not-a-url",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }

    #[test]
    fn credentials_in_queries_are_replaced() {
        for (url, redacted) in [
            (
                "redis+unix:///run/redis.sock?pass=s3cret",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&user=app&password=s3cret",
                "redis+unix:///run/redis.sock?db=1&user=***&password=***",
            ),
            (
                "unix:///run/redis.sock?PASS=s3cret",
                "unix:///run/redis.sock?PASS=***",
            ),
            (
                "postgres://db/app?sslmode=require&password=s3cret#x",
                "postgres://db/app?sslmode=require&password=***#x",
            ),
            (
                "postgres://db/app?sslpassword=s3cret&user=u",
                "postgres://db/app?sslpassword=***&user=***",
            ),
            (
                "redis://cache?%70ass%77ord=s3cret&Token=t0k&api_key=k3y",
                "redis://cache?%70ass%77ord=***&Token=***&api_key=***",
            ),
            (
                "redis://u:p@cache?auth=s3cret",
                "redis://u:***@cache?auth=***",
            ),
            ("redis://cache?secret", "redis://cache?secret"),
            ("redis://cache?&&pass=&", "redis://cache?&&pass=***&"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }
}
