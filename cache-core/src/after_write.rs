//! `#[cached_update]` and `#[cached_delete]` after the function succeeded: invalidate the
//! entry and its tags, or write the new value through where that cannot bring old data back.

use crate::adapt::{Output, Schema};
use crate::codec::EncodedField;
use crate::engine::Seen;
use crate::function::Spec;
use crate::metrics::PrefixMetrics;
use crate::{Cache, Error};

/// `cached_update` / `cached_delete`: drop the entry and the tags after the function succeeded.
pub async fn invalidate(
    cache: Option<Cache>,
    spec: &'static Spec,
    key: Option<String>,
    tags: Vec<String>,
) {
    let Some(cache) = cache else {
        return;
    };
    let keys: Vec<String> = key.into_iter().collect();
    if keys.is_empty() && tags.is_empty() {
        // A `None` key and no tags: the call did not touch Redis.
        if cache.is_enabled() {
            cache.engine().record(spec.metrics(), Seen::NoKey);
        }
        return;
    }
    let span = tracing::debug_span!("cache.invalidate", prefix = spec.prefix, ?keys, ?tags);
    // An undelivered invalidation is remembered and retried inside, and it runs to the end
    // even if our caller stops waiting; never the caller's problem.
    let outcome =
        tracing::Instrument::instrument(cache.engine().invalidate_all(keys, tags), span).await;
    count_write(&cache, spec, &outcome, PrefixMetrics::invalidation);
}

/// Counts a write's cache step: `counted` when it went through, an error when Redis failed
/// it (it is then pending, delivered later), a bypass when the breaker kept it from Redis.
fn count_write<T>(
    cache: &Cache,
    spec: &'static Spec,
    outcome: &Result<T, Error>,
    counted: fn(&PrefixMetrics),
) {
    match outcome {
        Ok(_) => counted(spec.metrics()),
        Err(Error::CircuitOpen) => {
            cache.engine().count_bypass();
            spec.metrics().bypass();
        }
        Err(_) => spec.metrics().error(),
    }
}

/// `cached_update` with `schema` and `version`: after the function succeeded, write its
/// value through where that cannot bring old data back (the entry holds an older version and
/// no tag registration), else invalidate; the tags are invalidated either way.
#[allow(clippy::too_many_arguments)]
pub async fn write_through<S, R>(
    cache: Option<Cache>,
    spec: &'static Spec,
    key: Option<String>,
    tags: Vec<String>,
    schema: Schema<S>,
    output: Output<S, R>,
    version_field: &'static str,
    result: &R,
) {
    let (Some(cache), Some(key)) = (cache.clone().filter(Cache::is_enabled), key.clone()) else {
        return invalidate(cache, spec, key, tags).await;
    };
    let fields = match (output.to_fill)(result).map(schema.encode) {
        // Too large to cache: the entry is dropped instead.
        Some(Ok(fields)) if cache.engine().check_size(&fields).is_err() => {
            return invalidate(Some(cache), spec, Some(key), tags).await
        }
        Some(Ok(fields)) => fields,
        Some(Err(error)) => {
            if spec.learned.first_warning() {
                tracing::warn!(%key, %error, "updated value cannot be cached; invalidating instead (said once for this function)");
            }
            return invalidate(Some(cache), spec, Some(key), tags).await;
        }
        // `None` from an update: nothing to write, the entry goes.
        None => return invalidate(Some(cache), spec, Some(key), tags).await,
    };
    let Some(version) = version_of(&fields, version_field) else {
        // Most often the field is renamed by serde: `version` names the stored field.
        if spec.learned.first_warning() {
            let stored: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            tracing::warn!(%key, version_field, ?stored, "the version field is not among the stored fields (renamed by serde?) or is not a whole number; this function invalidates instead of writing through (said once)");
        }
        return invalidate(Some(cache), spec, Some(key), tags).await;
    };
    // Failures are remembered and delivered later as an invalidation.
    let span = tracing::debug_span!("cache.write_through", prefix = spec.prefix, %key, version);
    let outcome = tracing::Instrument::instrument(
        cache
            .engine()
            .write_through(key, fields, version_field, version, tags),
        span,
    )
    .await;
    count_write(&cache, spec, &outcome, PrefixMetrics::written_through);
}

fn version_of(fields: &[EncodedField], version_field: &str) -> Option<u64> {
    let (_, value) = fields.iter().find(|(name, _)| *name == version_field)?;
    value.whole_number()
}
