#![doc = include_str!("../../README.md")]
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
mod read_through;
mod redact;
#[cfg(feature = "axum")]
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
pub use crate::error::Error;
pub use crate::key::KeySegment;
pub use crate::redact::redact_url;
#[cfg(feature = "axum")]
pub use crate::response::{ResponseCache, ResponseCacheService};
pub use crate::source::RedisSource;
pub use crate::stats::Stats;

/// The `redis` crate this library is built on, so that users get a matching version.
pub use redis;

#[cfg(feature = "macros")]
#[doc(inline)]
pub use cache_macros::{cached_delete, cached_get, cached_update};
