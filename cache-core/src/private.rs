//! What the macros expand to, and nothing else: a facade over the modules that do the work
//! (as thiserror's `private.rs`). Not public API: hidden from the docs, outside semver.
//!
//! - [`Spec`], [`Learned`], [`installed`], [`entry_key`]: the function (`function.rs`);
//! - the adapters of the user's types (`adapt.rs`);
//! - [`near_hit`] and [`get_or_fill`]: `#[cached_get]`'s call (`read_through.rs`);
//! - [`get_many`] and the batch return types: `#[cached_get_many]`'s call (`read_many/`);
//! - [`invalidate`] and [`write_through`]: after a write (`after_write.rs`).

pub use crate::adapt::{
    key_value, output, output_caching_absence, schema, tag_value, AbsentOutput, AnyOutcome,
    CacheSchema, CachedOutput, Detachable, DetachableRef, KeyPart, KeyValue, NearCapable,
    NearIncapable, NearOps, NearProbe, OptionalKey, Outcome, Output, PlainKey, ResultOutcome,
    Schema, TagValue, Tags, TimeoutError,
};
pub use crate::after_write::{invalidate, write_through};
pub use crate::function::{entry_key, installed, Learned, Resilience, Spec};
pub use crate::key::KeySegment;
pub use crate::read_many::{
    get_many, ids_of, key_text, rows_by_field, rows_by_ids, BatchId, BatchOutput, BatchRows, Ids,
    RowsByField, RowsByIds,
};
pub use crate::read_through::{get_or_fill, get_or_fill_detached, near_hit};
