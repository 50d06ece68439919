//! How the user's types meet the runtime, chosen where the macro names them: the values a
//! key is made of, the return types that carry a schema, the schema's codec and near-cache
//! operations, the tags of a call, and whether a write failed. Each type check happens
//! once, at the type the user wrote, so that a mistake is one error at that type.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, schema_field_names, DecodeFn, EncodedField};
use crate::near::{Near, NearCopy, Ticket};
use crate::{Error, LoadTimeout};

/// A value an entry key is made of (a parameter, or a field of one), for the choice
/// [`OptionalKey`] and [`PlainKey`] make by autoref specialization. Neither asks for
/// `Display`: [`key_value`] does, so that a value that cannot be in a key is one error in
/// [`KeyValue`]'s words, not a method that "exists but its trait bounds were not satisfied".
#[derive(Debug)]
pub struct KeyPart<'a, T>(pub &'a T);

/// An `Option` in a key: `None` bypasses the cache. Found first by
/// `(&&KeyPart(&place)).key_part()` (its `&self` is `&&KeyPart`, the receiver as written).
pub trait OptionalKey<'a> {
    /// What the key displays.
    type Value;
    /// The value to display in the key, `None` for `None`.
    fn key_part(&self) -> Option<&'a Self::Value>;
}

impl<'a, T> OptionalKey<'a> for &KeyPart<'a, Option<T>> {
    type Value = T;
    fn key_part(&self) -> Option<&'a T> {
        self.0.as_ref()
    }
}

impl<'a, 'b: 'a, T> OptionalKey<'a> for &KeyPart<'a, &'b Option<T>> {
    type Value = T;
    fn key_part(&self) -> Option<&'a T> {
        self.0.as_ref()
    }
}

/// Any other value in a key: as it displays. Found after [`OptionalKey`] (one dereference
/// further), so it never takes an `Option`.
pub trait PlainKey<'a> {
    /// What the key displays.
    type Value;
    /// The value to display in the key.
    fn key_part(&self) -> Option<&'a Self::Value>;
}

impl<'a, T> PlainKey<'a> for KeyPart<'a, T> {
    type Value = T;
    fn key_part(&self) -> Option<&'a T> {
        Some(self.0)
    }
}

/// A value that can be written into a key: one that implements `Display`. Asked for by
/// [`key_value`], at the key as written, so that the error names the type and says what to
/// do instead (rustc reports the root obligation's message when the failing bound is on
/// the same type).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is used in the key, so it must implement `Display`",
    label = "this key reads a `{Self}`, which does not implement `Display`",
    note = "implement `Display` for it, or key by a field that does: `key = \"{{kind.code}}\"`; a tuple by its fields: `key = \"{{at.0}}:{{at.1}}\"`",
    note = "a slice or `Vec` cannot be one key: read one entry per id with `#[cached_get_many(keys = \"ids\", …)]`, or key by a field path that identifies the call"
)]
pub trait KeyValue {
    /// The value as the key displays it.
    fn as_display(&self) -> &(dyn Display + '_);
}

impl<T: Display> KeyValue for T {
    fn as_display(&self) -> &(dyn Display + '_) {
        self
    }
}

/// A key part as the key displays it, `None` for an `Option` that is `None`.
pub fn key_value<'a, T: KeyValue + 'a>(part: Option<&'a T>) -> Option<&'a (dyn Display + 'a)> {
    part.map(KeyValue::as_display)
}

/// A parameter value that can be written into a tag: one that implements `Display`. Asked
/// for by [`tag_value`], at the tag as written (as [`KeyValue`] for keys).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is used in a tag, so it must implement `Display`",
    label = "this tag reads a `{Self}`, which does not implement `Display`",
    note = "implement `Display` for it, or name a field that does: `tags = [\"kind:{{kind.code}}\"]`"
)]
pub trait TagValue {
    /// The value as the tag displays it.
    fn as_display(&self) -> &(dyn Display + '_);
}

impl<T: Display> TagValue for T {
    fn as_display(&self) -> &(dyn Display + '_) {
        self
    }
}

/// A tag's parameter value as the tag displays it.
pub fn tag_value<T: TagValue>(value: &T) -> &(dyn Display + '_) {
    value.as_display()
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
    /// Whether the function failed (`Err`): the outcome the fail-safe answers with an
    /// expired copy.
    fn is_failure(&self) -> bool {
        false
    }
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
    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

impl<S, E> CachedOutput<S> for Result<Option<S>, E> {
    fn from_hit(value: S) -> Self {
        Ok(Some(value))
    }
    fn to_fill(&self) -> Option<&S> {
        self.as_ref().ok().and_then(Option::as_ref)
    }
    fn is_failure(&self) -> bool {
        self.is_err()
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

/// A type that can be a schema: serde's two traits. Asked for by [`schema`], at the type in
/// `schema = …`, so that a schema without them is an error in these words.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is the schema of a cached function, so it must implement `Serialize` and `Deserialize`",
    label = "`{Self}` is stored as a hash of its fields: it needs serde's `Serialize` and `Deserialize`",
    note = "derive them on the struct: `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait CacheSchema: Serialize + DeserializeOwned {}

impl<S: Serialize + DeserializeOwned> CacheSchema for S {}

/// The codec of schema `S`.
pub fn schema<S: CacheSchema>() -> Schema<S> {
    Schema {
        fields: schema_field_names::<S>,
        decode: codec::decode::<S>,
        encode: codec::encode::<S>,
        near: None,
    }
}

// By hand: a derive would ask `S: Clone`, and these are only function pointers.
impl<S> Clone for Schema<S> {
    fn clone(&self) -> Self {
        Schema {
            fields: self.fields,
            decode: self.decode,
            encode: self.encode,
            near: self.near.clone(),
        }
    }
}

impl<S> Clone for NearOps<S> {
    fn clone(&self) -> Self {
        NearOps {
            get: self.get,
            insert: self.insert,
        }
    }
}

impl<S, R> Clone for Output<S, R> {
    fn clone(&self) -> Self {
        Output {
            from_hit: self.from_hit,
            to_fill: self.to_fill,
            failed: self.failed,
            absent: self.absent.as_ref().map(|absence| Absence {
                value: absence.value,
                is: absence.is,
            }),
            timed_out: self.timed_out,
        }
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
    pub(crate) failed: fn(&R) -> bool,
    /// Set with `cache_none = true`.
    pub(crate) absent: Option<Absence<R>>,
    /// The error to return when the function outlasts `hard_timeout` (and no expired copy
    /// can answer): the user's conversion from [`LoadTimeout`], set with `hard_timeout`.
    pub(crate) timed_out: Option<fn(LoadTimeout) -> R>,
}

impl<S, R> Output<S, R> {
    /// What `hard_timeout` returns when the function outlasts it and no expired copy
    /// answers: the macro passes `|timeout| Err(From::from(timeout))`, so that a return
    /// type without `From<LoadTimeout>` for its error is a compile error at the argument.
    #[must_use]
    pub fn on_timeout(mut self, timed_out: fn(LoadTimeout) -> R) -> Self {
        self.timed_out = Some(timed_out);
        self
    }
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
        failed: R::is_failure,
        absent: None,
        timed_out: None,
    }
}

/// The adapters of return type `R` for schema `S`, caching absences too.
pub fn output_caching_absence<S, R: AbsentOutput<S>>() -> Output<S, R> {
    Output {
        from_hit: R::from_hit,
        to_fill: R::to_fill,
        failed: R::is_failure,
        absent: Some(Absence {
            value: R::absent,
            is: R::is_absent,
        }),
        timed_out: None,
    }
}

/// What `refresh_after` and `soft_timeout` need of the receiver and of each owned
/// parameter: the function runs again in the background after the call returned, on copies.
#[diagnostic::on_unimplemented(
    message = "`refresh_after` and `soft_timeout` run the function in the background after the call returned, on a copy of `{Self}`, so it must be `Clone + Send + Sync + 'static`",
    label = "`{Self}` is not `Clone + Send + Sync + 'static`",
    note = "a repository that holds a pool (`PgPool`, `deadpool_redis::Pool`, an `Arc`) derives `Clone` at the cost of a reference count"
)]
pub trait Detachable: Sized {
    /// The copy the background load runs on.
    fn detached(&self) -> Self;
}

impl<T: Clone + Send + Sync + 'static> Detachable for T {
    fn detached(&self) -> Self {
        self.clone()
    }
}

/// [`Detachable`] for a borrowed parameter (`&str`, `&[i64]`, `&Uuid`): the background load
/// borrows from an owned copy (`String`, `Vec<i64>`, `Uuid`).
#[diagnostic::on_unimplemented(
    message = "`refresh_after` and `soft_timeout` run the function in the background, on an owned copy of each parameter: `{Self}` must be `ToOwned` into a `Send + Sync + 'static` type",
    label = "no owned copy of `{Self}` can outlive the call"
)]
pub trait DetachableRef {
    /// The owned copy.
    type Owned: std::borrow::Borrow<Self> + Send + Sync + 'static;
    /// Makes it.
    fn detached_ref(&self) -> Self::Owned;
}

impl<U: ?Sized + ToOwned> DetachableRef for U
where
    U::Owned: Send + Sync + 'static,
{
    type Owned = U::Owned;
    fn detached_ref(&self) -> Self::Owned {
        self.to_owned()
    }
}

/// The error types `hard_timeout` can return: those that convert from [`LoadTimeout`].
#[diagnostic::on_unimplemented(
    message = "`hard_timeout` returns `Err(E::from(cache_core::LoadTimeout))` when the function outlasts it, so `{Self}` must implement `From<cache_core::LoadTimeout>`",
    label = "the function's error type `{Self}` has no `From<cache_core::LoadTimeout>`",
    note = "for a foreign error type (such as `sqlx::Error`), return an error enum of your own with a variant for the timeout"
)]
pub trait TimeoutError: Sized {
    /// The error for a timeout.
    fn timed_out(timeout: LoadTimeout) -> Self;
}

impl<E: From<LoadTimeout>> TimeoutError for E {
    fn timed_out(timeout: LoadTimeout) -> Self {
        E::from(timeout)
    }
}

/// The tags of one `cached_get` call: those known from the parameters, rendered before the
/// call, and a function rendering those that name fields of the value.
#[derive(Debug, Clone)]
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
