//! The one error type of the crate.

use std::time::Duration;

/// Everything that can go wrong in `cache-core`.
///
/// The macros never surface these to the caller: they log, count and fall back to calling the
/// function. The direct API ([`Cache::get`](crate::Cache::get) and friends) returns them so that
/// code driving the cache by hand can decide for itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration given to [`CacheBuilder`](crate::CacheBuilder) is unusable.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// Redis answered with an error, or the connection failed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within the operation timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open after repeated failures: Redis is skipped for a cool-down.
    #[error("redis skipped: circuit breaker open after repeated failures")]
    CircuitOpen,
    /// An invalidation of this entry could not be delivered to Redis yet; until it is, the
    /// entry is neither read nor written by this handle.
    #[error(
        "an invalidation of this entry is waiting for Redis; the entry is not used until then"
    )]
    InvalidationPending,
    /// A write's cache work stopped before it finished (its task panicked, or the runtime
    /// is shutting down). What it had to invalidate is kept and delivered later.
    #[error("cache operation interrupted: {0}")]
    Interrupted(String),
    /// The value is larger than the handle's `max_value_size`: it is not cached.
    #[error("value of {size} bytes is over the cache's limit of {limit} bytes")]
    TooLarge {
        /// The value's stored size.
        size: usize,
        /// `max_value_size`.
        limit: usize,
    },
    /// A value could not be turned into hash fields.
    #[error("cannot encode field `{field}` for the cache: {message}")]
    Encode {
        /// The hash field (schema field) that failed.
        field: String,
        /// What serde reported.
        message: String,
    },
    /// The schema type cannot be stored as a flat hash (it is not a struct with named fields,
    /// it uses `#[serde(flatten)]`, or a field name starts with the reserved `__`).
    #[error("type `{type_name}` cannot be cached as a hash: {reason}")]
    UnsupportedSchema {
        /// The Rust type.
        type_name: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// A `#[cached_get(hard_timeout = "…")]` function outlasted its timeout and no expired copy
/// could answer (see the README's "When the database is down or slow"). The call returns
/// `Err(E::from(LoadTimeout))`: the function's error type `E` implements
/// `From<LoadTimeout>` (for a foreign error such as `sqlx::Error`, return an error enum of
/// your own that wraps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cached function did not answer within its hard_timeout of {after:?}")]
pub struct LoadTimeout {
    /// The timeout it outlasted.
    pub after: Duration,
}
