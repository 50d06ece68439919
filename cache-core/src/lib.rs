//! Cache-aside over Redis hashes, with one attribute on an async function.
//!
//! ```rust,no_run
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug)] struct DbError;
//! # struct Pool;
//! # impl Pool { async fn user(&self, id: i64) -> Result<Option<UserRead>, DbError> { Ok(None) } }
//! # struct UserRepo { pool: Pool }
//! use cache_core::{cached_get, cached_update};
//!
//! #[derive(Serialize, Deserialize)]
//! struct UserRead {
//!     id: i64,
//!     name: String,
//!     avatar: Option<String>,
//! }
//!
//! impl UserRepo {
//!     #[cached_get(prefix = "user", key = "user_id", schema = UserRead)]
//!     async fn get_user(&self, user_id: i64) -> Result<Option<UserRead>, DbError> {
//!         self.pool.user(user_id).await // runs only on a miss
//!     }
//!
//!     #[cached_update(prefix = "user", key = "user_id")]
//!     async fn rename(&self, user_id: i64, name: &str) -> Result<(), DbError> {
//!         Ok(()) // UPDATE …; the entry is invalidated after it returns Ok
//!     }
//! }
//!
//! # async fn start() -> Result<(), cache_core::Error> {
//! // At start-up: one handle, installed for the macros.
//! let cache = cache_core::Cache::builder()
//!     .url("redis://127.0.0.1:6379/0") // or "mem://" for an in-process store
//!     .namespace("shop")               // keys become shop:user:42
//!     .build()?;                       // fails only for bad configuration, never for Redis
//! cache_core::install(cache);
//! # Ok(()) }
//! ```
//!
//! `get_user` reads the hash `user:{user_id}`; when every field of `UserRead` is there it
//! returns them without running the body, otherwise it runs the body and merges the result's
//! fields into the hash. Several schemas share one hash per entity. Writes invalidate after
//! they succeed, and a read racing a write never puts the old row back. Every cache failure
//! (Redis down, slow, refusing, answering garbage) ends in running the function.
//!
//! # Where to read on
//!
//! | what | where |
//! |---|---|
//! | the attributes and their arguments (`ttl`, `tags`, `cache_none`, `version`, `cache = …`) | [`cached_get`], [`cached_update`], [`cached_delete`] |
//! | every option and its default; a handle from the environment | [`CacheBuilder`], [`Cache::from_env`] |
//! | reading and writing entries without the macros | [`Cache::get`], [`Cache::put`], [`Cache::invalidate`], [`Cache::invalidate_tag`] |
//! | connections the application already has (pools, managers, cluster clients) | [`RedisSource`] |
//! | Redis Cluster, TLS (feature `tls`), ACL users | [`CacheBuilder::cluster_nodes`], [`CacheBuilder::tls_ca_pem`] |
//! | decoded values in process memory, kept coherent by Redis' pushes | [`CacheBuilder::near_cache`] |
//! | whole responses of axum or actix-web routes (feature `axum` or `actix`) | [`ResponseCache`] |
//! | counters; metrics per prefix (feature `metrics`) | [`Stats`], [`Cache::stats`] |
//! | what can go wrong | [`Error`] |
//!
//! The repository's README holds the guarantees with the tests that show them, the design
//! of the consistency protocol, the figures measured and how to run everything.
//!
//! # Features
//!
//! `macros` (default): the attributes. `tls`: `rediss://` through rustls. `connection-manager`
//! and `deadpool`: a `ConnectionManager` or a `deadpool_redis::Pool` as the handle's
//! connection. `metrics`: counters and latency histograms per prefix through the `metrics`
//! facade. `axum`: `ResponseCache`, a tower layer caching whole responses. `actix`: the same
//! `ResponseCache` as an actix-web 4 middleware, without axum or tower.
//!
//! # Words
//!
//! - **entry**: the Redis hash `{namespace}:{prefix}:{key}` holding the fields of every schema
//!   read under that key, and `__meta` (what the library knows of them).
//! - **clock**: a namespace's hash in Redis that gives **stamps**, increasing numbers from
//!   Redis' own time; an invalidation is recorded as a stamp, and a fill carries the stamp its
//!   miss read before loading, so a fill older than an invalidation is refused.
//! - **tag**: a name a fill registers its entry under (`tags = […]`); invalidating the tag
//!   stamps it and drops every entry registered under it.
//! - **tombstone**: what an invalidated entry becomes for a short while (the lease time): the
//!   next miss knows it was invalidated, not merely absent.
//! - **lease**: one caller's right to load an invalidated entry; the others, in any process,
//!   wait for its fill instead of all querying the database.
//! - **pending**: an invalidation Redis has not taken yet (unreachable, refusing writes): kept
//!   by the handle, which reads none of what it concerns until it is delivered.
//! - **near copy**: a decoded value kept in process memory by the near cache, evicted by
//!   Redis' invalidation pushes.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod adapt;
mod after_write;
mod builder;
mod cache;
mod codec;
mod connect;
mod engine;
mod error;
mod flight;
mod function;
mod guard;
mod key;
mod locks;
mod metrics;
mod near;
mod private;
mod read_many;
mod read_through;
mod redact;
#[cfg(any(feature = "axum", feature = "actix"))]
mod response;
mod source;
mod stats;
mod store;
mod time;

/// What the macros expand to: not public API, outside semver.
#[doc(hidden)]
pub mod __private {
    pub use crate::private::*;
}

pub use crate::builder::CacheBuilder;
pub use crate::cache::{install, installed, Cache};
pub use crate::error::{Error, LoadTimeout};
pub use crate::key::KeySegment;
pub use crate::redact::redact_url;
#[cfg(any(feature = "axum", feature = "actix"))]
pub use crate::response::ResponseCache;
#[cfg(feature = "actix")]
pub use crate::response::ResponseCacheMiddleware;
#[cfg(feature = "axum")]
pub use crate::response::ResponseCacheService;
pub use crate::source::RedisSource;
pub use crate::stats::Stats;

/// The `redis` crate this library is built on, so that users get a matching version.
pub use redis;

/// The `http` crate (1.x) whose types `ResponseCache`'s options take (`HeaderName`,
/// `HeaderValue`, the `Parts` `cache_if` sees), for actix-web 4 apps, which use `http` 0.2.
#[cfg(any(feature = "axum", feature = "actix"))]
pub use http;

#[cfg(feature = "macros")]
#[doc(inline)]
pub use cache_macros::{cached_delete, cached_get, cached_get_many, cached_update};

/// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
