//! What one annotated function knows: its constant arguments and what its calls learn (a
//! `static` [`Spec`] per function), its handle, and its keys.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::metrics::PrefixMetrics;
use crate::Cache;

/// The constant part of one annotated function.
#[derive(Debug)]
pub struct Spec {
    /// The entry prefix (checked by the macro: non-empty, no `:`, no leading `__`).
    pub prefix: &'static str,
    /// `ttl = …` in seconds, if given.
    pub ttl_secs: Option<u64>,
    /// `none_ttl = …` in seconds, if given: the TTL of cached absences.
    pub none_ttl_secs: Option<u64>,
    /// `tags = […]` is not empty.
    pub tagged: bool,
    /// `fail_safe`, `fail_safe_throttle`, `hard_timeout`, `soft_timeout`, `refresh_after`.
    pub resilience: Resilience,
    /// What the runtime learns about the function as it runs (see [`Learned`]).
    pub learned: Learned,
}

/// A function's answers to a failing or slow database (its attribute arguments; `None`: the
/// handle's default, where the handle has one). Durations in ms.
#[derive(Debug, Clone, Copy)]
pub struct Resilience {
    /// `fail_safe = "…"`: how long expired copies are kept; `Some(0)`: off.
    pub fail_safe_ms: Option<u64>,
    /// `fail_safe_throttle = "…"`.
    pub fail_safe_throttle_ms: Option<u64>,
    /// `hard_timeout = "…"`: the longest the function may run before the call gives up.
    pub hard_timeout_ms: Option<u64>,
    /// `soft_timeout = "…"`: how long a miss with an expired copy waits for the function
    /// before returning the copy (the load goes on in the background).
    pub soft_timeout_ms: Option<u64>,
    /// `refresh_after = …`: the fraction of the TTL after which a hit starts a background
    /// load.
    pub refresh_after: Option<f64>,
}

impl Resilience {
    /// Nothing set: the handle's defaults.
    pub const DEFAULT: Resilience = Resilience {
        fail_safe_ms: None,
        fail_safe_throttle_ms: None,
        hard_timeout_ms: None,
        soft_timeout_ms: None,
        refresh_after: None,
    };
}

/// What one annotated function's calls learn about its schema, once per process: the field
/// list worth reading, whether the schema can ever be a hit, and whether its misuse was
/// already reported. Lives in the function's `static` [`Spec`].
#[derive(Debug)]
pub struct Learned {
    /// The schema's fields that its `Serialize` writes: serde's list of a struct's fields
    /// (from `Deserialize`) also holds every `#[serde(alias)]`, which is never stored, so a
    /// read of the whole list could never be complete.
    pub(crate) fields: OnceLock<&'static [&'static str]>,
    /// The schema's own fill does not decode back (a field skipped by `skip_serializing_if`
    /// without `default`, …): reading it would never hit, so calls skip the cache.
    pub(crate) uncacheable: AtomicBool,
    /// Set once this function's misuse was logged: one warning per function per process.
    warned: AtomicBool,
    /// Set once this function was said to run uncached for want of an installed handle.
    warned_uninstalled: AtomicBool,
    /// This prefix's metrics, registered on the first call.
    #[cfg(feature = "metrics")]
    metrics: OnceLock<PrefixMetrics>,
}

impl Learned {
    /// Nothing learnt yet.
    #[allow(clippy::new_without_default)] // used in a `static`: must be `const`
    pub const fn new() -> Self {
        Learned {
            fields: OnceLock::new(),
            uncacheable: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            warned_uninstalled: AtomicBool::new(false),
            #[cfg(feature = "metrics")]
            metrics: OnceLock::new(),
        }
    }

    /// Whether this is the first warning of this function in this process.
    pub(crate) fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

impl Spec {
    /// This function's metrics (feature `metrics`; nothing without it).
    #[cfg(feature = "metrics")]
    pub(crate) fn metrics(&'static self) -> &'static PrefixMetrics {
        if let Some(metrics) = self.learned.metrics.get() {
            return metrics;
        }
        let metrics = self
            .learned
            .metrics
            .get_or_init(|| PrefixMetrics::new(self.prefix));
        crate::metrics::publish(metrics);
        metrics
    }

    #[cfg(not(feature = "metrics"))]
    #[inline(always)]
    pub(crate) fn metrics(&self) -> &'static PrefixMetrics {
        &PrefixMetrics
    }
}

/// The handle a call uses when the macro has no `cache = …`: the installed one. Without
/// one the call runs uncached, and the first such call of each function says so in one
/// `warn` line: a forgotten `install` is otherwise invisible.
pub fn installed(spec: &Spec) -> Option<Cache> {
    let cache = crate::cache::installed();
    if cache.is_none()
        && !spec
            .learned
            .warned_uninstalled
            .swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            prefix = spec.prefix,
            "this cached function runs uncached: no handle is installed (`cache_core::install`) and its attribute has no `cache = …` (said once for this function)"
        );
    }
    cache
}

/// Builds the entry key before the body takes ownership of the parameters.
pub fn entry_key<K: Display + ?Sized>(
    cache: Option<&Cache>,
    spec: &Spec,
    key: &K,
) -> Option<String> {
    cache.map(|cache| cache.engine().key(spec.prefix, key))
}
