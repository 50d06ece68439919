//! Secrets out of logs, errors and `Debug` output: connection URLs carry passwords.

/// `url` with the password (or a lone token) in its user info replaced by `***`:
/// `redis://app:s3cret@cache:6379/0` → `redis://app:***@cache:6379/0`. Anything that is not
/// a URL with user info comes back unchanged. For logging a URL that may hold a secret, as
/// the example server does with `DATABASE_URL` and `REDIS_URL`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let user_info = &authority[..at];
    let redacted = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!(
        "{}{redacted}{}",
        &url[..authority_start],
        &url[authority_start + at..]
    )
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
            "x",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }
}
