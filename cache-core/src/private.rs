//! What the macros expand to. Not public API: hidden from the docs, outside semver.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::{schema_field_names, Lookup};
use crate::Cache;

/// The constant part of one annotated function.
#[derive(Debug)]
pub struct Spec {
    /// The entry prefix (checked by the macro: non-empty, no `:`).
    pub prefix: &'static str,
    /// `ttl = …` in seconds, if given.
    pub ttl_secs: Option<u64>,
}

/// The handle a call uses: the `cache = …` expression or the installed one.
pub fn installed() -> Option<Cache> {
    crate::cache::installed()
}

/// Builds the entry key before the body takes ownership of the parameters.
pub fn entry_key<K: Display + ?Sized>(cache: Option<&Cache>, spec: &Spec, key: &K) -> Option<String> {
    cache.map(|cache| cache.key(spec.prefix, key))
}

/// The return types a `cached_get` function may have, for its schema `S`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not carry the schema `{S}`",
    label = "a `#[cached_get(schema = {S})]` function must return `{S}`, `Option<{S}>`, `Result<{S}, E>` or `Result<Option<{S}>, E>`"
)]
pub trait CachedOutput<S>: Sized {
    /// The value to return on a hit.
    fn from_hit(value: S) -> Self;
    /// The value to cache, if this outcome is cacheable (`None` and `Err` are not).
    fn to_fill(&self) -> Option<&S>;
}

impl<S> CachedOutput<S> for S {
    fn from_hit(value: S) -> Self {
        value
    }
    fn to_fill(&self) -> Option<&S> {
        Some(self)
    }
}

impl<S> CachedOutput<S> for Option<S> {
    fn from_hit(value: S) -> Self {
        Some(value)
    }
    fn to_fill(&self) -> Option<&S> {
        self.as_ref()
    }
}

impl<S, E> CachedOutput<S> for Result<S, E> {
    fn from_hit(value: S) -> Self {
        Ok(value)
    }
    fn to_fill(&self) -> Option<&S> {
        self.as_ref().ok()
    }
}

impl<S, E> CachedOutput<S> for Result<Option<S>, E> {
    fn from_hit(value: S) -> Self {
        Ok(Some(value))
    }
    fn to_fill(&self) -> Option<&S> {
        self.as_ref().ok().and_then(Option::as_ref)
    }
}

/// Asserts at the user's schema type that it can be cached.
pub fn assert_schema<S: Serialize + DeserializeOwned>() {}

/// Asserts at the user's return type that it carries the schema.
pub fn assert_output<S, R: CachedOutput<S>>() {}

/// `cached_get`: answer from the cache, or run `body` and fill the cache with its value.
///
/// Never fails because of the cache: every cache problem ends in calling `body`.
pub async fn get_or_fill<S, R, F>(
    cache: Option<Cache>,
    spec: &'static Spec,
    key: Option<String>,
    body: F,
) -> R
where
    S: Serialize + DeserializeOwned,
    R: CachedOutput<S>,
    F: Future<Output = R>,
{
    let (Some(cache), Some(key)) = (cache, key) else {
        return body.await;
    };
    let fields = match schema_field_names::<S>() {
        Ok(fields) => fields,
        Err(error) => {
            tracing::warn!(%error, "schema cannot be cached; calling the function");
            cache.count_bypass();
            return body.await;
        }
    };
    if cache.reads_blocked(&key).await {
        return body.await;
    }
    let fill = match cache.read_entry::<S>(&key, fields).await {
        Ok(Lookup::Hit(value)) => return R::from_hit(value),
        Ok(Lookup::Miss) => true,
        // Redis did not answer: filling would most likely fail too.
        Err(_) => false,
    };
    let output = body.await;
    if fill {
        if let Some(value) = output.to_fill() {
            let ttl = cache.ttl_or_default(spec.ttl_secs.map(Duration::from_secs));
            // Failures are logged and counted inside; the caller gets its value regardless.
            let _ = cache.write_entry(&key, value, ttl).await;
        }
    }
    output
}

/// `cached_update` / `cached_delete`: drop the entry after the function succeeded.
pub async fn invalidate(cache: Option<Cache>, key: Option<String>) {
    if let (Some(cache), Some(key)) = (cache, key) {
        // An undelivered invalidation is remembered and retried inside; never the caller's
        // problem.
        let _ = cache.invalidate_keys(&[key.as_str()]).await;
    }
}

/// Tells a failed write (`Err`) from a successful one, for any return type: `Result`s by
/// their variant, everything else counts as success. Chosen by autoref at the call site.
#[derive(Debug)]
pub struct Outcome<'a, T>(pub &'a T);

/// The `Result` case of [`Outcome`].
pub trait ResultOutcome {
    /// Whether the write failed.
    fn is_failure(&self) -> bool;
}

impl<T, E> ResultOutcome for Outcome<'_, Result<T, E>> {
    fn is_failure(&self) -> bool {
        self.0.is_err()
    }
}

/// The fallback case of [`Outcome`]: not a `Result`, so it cannot have failed.
pub trait AnyOutcome {
    /// Always `false`.
    fn is_failure(&self) -> bool;
}

impl<T> AnyOutcome for &Outcome<'_, T> {
    fn is_failure(&self) -> bool {
        false
    }
}
