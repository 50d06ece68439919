//! How the user's types meet the runtime, chosen where the macro names them: the values a
//! key is made of, the return types that carry a schema, the schema's codec and near-cache
//! operations, the tags of a call, and whether a write failed. Each type check happens
//! once, at the type the user wrote, so that a mistake is one error at that type.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, schema_field_names, DecodeFn, EncodedField};
use crate::near::{Near, NearCopy, Ticket};
use crate::Error;

/// A value an entry key is made of (a parameter, or a field of one), for the choice
/// [`OptionalKey`] and [`PlainKey`] make by autoref specialization.
#[derive(Debug)]
pub struct KeyPart<'a, T>(pub &'a T);

/// An `Option` in a key: `None` bypasses the cache.
pub trait OptionalKey<'a> {
    /// The value to display in the key, `None` for `None`.
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)>;
}

impl<'a, T: Display> OptionalKey<'a> for &&KeyPart<'a, Option<T>> {
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)> {
        self.0.as_ref().map(|value| value as &dyn Display)
    }
}

impl<'a, 'b: 'a, T: Display> OptionalKey<'a> for &&KeyPart<'a, &'b Option<T>> {
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)> {
        self.0.as_ref().map(|value| value as &dyn Display)
    }
}

/// Any other value in a key: as it displays.
#[diagnostic::on_unimplemented(
    message = "a cache key is made of values that implement `Display` (or `Option`s of them)",
    label = "this key reads a value that does not implement `Display`"
)]
pub trait PlainKey<'a> {
    /// The value to display in the key.
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)>;
}

impl<'a, T: Display> PlainKey<'a> for &KeyPart<'a, T> {
    fn key_part(&self) -> Option<&'a (dyn Display + 'a)> {
        Some(self.0)
    }
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

/// The return types that can say "absent", for `cache_none = true`.
#[diagnostic::on_unimplemented(
    message = "`cache_none` needs a return type that can be absent, not `{Self}`",
    label = "with `cache_none = true` the function must return `Option<{S}>` or `Result<Option<{S}>, E>`"
)]
pub trait AbsentOutput<S>: CachedOutput<S> {
    /// The value to return on a cached absence.
    fn absent() -> Self;
    /// Whether this outcome is an absence worth caching (`None`, not `Err`).
    fn is_absent(&self) -> bool;
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

impl<S> AbsentOutput<S> for Option<S> {
    fn absent() -> Self {
        None
    }
    fn is_absent(&self) -> bool {
        self.is_none()
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

impl<S, E> AbsentOutput<S> for Result<Option<S>, E> {
    fn absent() -> Self {
        Ok(None)
    }
    fn is_absent(&self) -> bool {
        matches!(self, Ok(None))
    }
}

/// How to store one schema type. Only constructible when the schema has serde's traits:
/// that bound is checked once, where the macro names the schema, and nowhere else, so a
/// schema without serde gives one error per missing trait, at the schema.
#[derive(Debug)]
pub struct Schema<S> {
    pub(crate) fields: fn() -> Result<&'static [&'static str], Error>,
    pub(crate) decode: DecodeFn<S>,
    pub(crate) encode: fn(&S) -> Result<Vec<EncodedField>, Error>,
    /// How to keep values of `S` in the near cache; `None` when `S` cannot be (not `Clone`,
    /// `Send`, `Sync` and `'static`): its calls then always ask Redis.
    pub(crate) near: Option<NearOps<S>>,
}

/// The codec of schema `S`.
pub fn schema<S: Serialize + DeserializeOwned>() -> Schema<S> {
    Schema {
        fields: schema_field_names::<S>,
        decode: codec::decode::<S>,
        encode: codec::encode::<S>,
        near: None,
    }
}

impl<S> Schema<S> {
    /// The near cache's operations for `S`, as [`NearProbe`] found them.
    #[must_use]
    pub fn with_near(mut self, near: Option<NearOps<S>>) -> Self {
        self.near = near;
        self
    }
}

/// The near cache's operations on values of one schema type, monomorphized where the type
/// is known to be `Clone + Send + Sync + 'static`.
#[derive(Debug)]
pub struct NearOps<S> {
    pub(crate) get: fn(&Near, &str) -> Option<S>,
    pub(crate) insert: fn(&Near, Ticket, &str, &S, NearCopy),
}

/// Finds, at the macro's call site where the schema type is concrete, whether its values can
/// live in the near cache: `(&&NearProbe::<S>::NEW).near_ops()` picks [`NearCapable`] when
/// `S: Clone + Send + Sync + 'static`, else [`NearIncapable`] (autoref specialization).
#[derive(Debug)]
pub struct NearProbe<S>(std::marker::PhantomData<S>);

impl<S> NearProbe<S> {
    /// The probe.
    pub const NEW: Self = NearProbe(std::marker::PhantomData);
}

/// [`NearProbe`]'s case for types the near cache can hold.
pub trait NearCapable<S> {
    /// The operations.
    fn near_ops(&self) -> Option<NearOps<S>>;
}

impl<S: Clone + Send + Sync + 'static> NearCapable<S> for &NearProbe<S> {
    fn near_ops(&self) -> Option<NearOps<S>> {
        Some(NearOps {
            get: |near, key| near.get::<S>(key, S::clone),
            insert: |near, ticket, key, value, copy| {
                near.insert(ticket, key, value.clone(), copy);
            },
        })
    }
}

/// The near cache's operations for a type known to fit it, for the runtime's own schemas.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) fn near_ops<S: Clone + Send + Sync + 'static>() -> Option<NearOps<S>> {
    NearCapable::near_ops(&&NearProbe::<S>::NEW)
}

/// [`NearProbe`]'s fallback: the near cache cannot hold this type.
pub trait NearIncapable<S> {
    /// `None`.
    fn near_ops(&self) -> Option<NearOps<S>>;
}

impl<S> NearIncapable<S> for NearProbe<S> {
    fn near_ops(&self) -> Option<NearOps<S>> {
        None
    }
}

/// How a return type carries the schema; only constructible when it does (see [`Schema`]).
#[derive(Debug)]
pub struct Output<S, R> {
    pub(crate) from_hit: fn(S) -> R,
    pub(crate) to_fill: fn(&R) -> Option<&S>,
    /// Set with `cache_none = true`.
    pub(crate) absent: Option<Absence<R>>,
}

/// How to return and recognise an absence, for `cache_none = true`.
#[derive(Debug)]
pub(crate) struct Absence<R> {
    pub(crate) value: fn() -> R,
    pub(crate) is: fn(&R) -> bool,
}

/// The adapters of return type `R` for schema `S`.
pub fn output<S, R: CachedOutput<S>>() -> Output<S, R> {
    Output {
        from_hit: R::from_hit,
        to_fill: R::to_fill,
        absent: None,
    }
}

/// The adapters of return type `R` for schema `S`, caching absences too.
pub fn output_caching_absence<S, R: AbsentOutput<S>>() -> Output<S, R> {
    Output {
        from_hit: R::from_hit,
        to_fill: R::to_fill,
        absent: Some(Absence {
            value: R::absent,
            is: R::is_absent,
        }),
    }
}

/// The tags of one `cached_get` call: those known from the parameters, rendered before the
/// call, and a function rendering those that name fields of the value.
#[derive(Debug)]
pub struct Tags<T> {
    /// Tags made of parameters only.
    pub from_parameters: Vec<String>,
    /// Tags that name fields of the returned value.
    pub from_value: T,
}

impl<T> Tags<T> {
    pub(crate) fn of<S>(&self, value: &S) -> Vec<String>
    where
        T: Fn(&S) -> Vec<String>,
    {
        let mut tags = self.from_parameters.clone();
        tags.extend((self.from_value)(value));
        tags
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
