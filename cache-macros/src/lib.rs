//! The attribute macros of [`cache-core`](https://docs.rs/cache-core): `#[cached_get]`,
//! `#[cached_update]` and `#[cached_delete]`. Use them through `cache-core`, which
//! re-exports them; the generated code only names `::cache_core::…` paths (or the path given
//! by `crate = "…"`).
//!
//! Each macro parses its arguments (`args`), finds where the function's asynchronous body is
//! (`shape`: an `async fn`, an `#[async_trait]` method, a `fn` returning an `async` block),
//! checks the arguments against the function (`valid`), and rewrites the body into a call of
//! the runtime (`expand`). All the behaviour lives in the runtime; the expansion is a few
//! lines anyone can read with `cargo expand`.

#![deny(missing_docs)]

mod args;
mod detach;
mod expand;
mod many;
mod refuse;
mod shape;
mod valid;

use proc_macro::TokenStream;

use crate::args::MacroKind;

/// Caches the value of an async read in a Redis hash: `{namespace}:{prefix}:{key}`.
///
/// The call reads the fields of `schema` from the hash (one `HMGET`); when every field is
/// there the value is returned without running the function. Otherwise the function runs
/// and its value's fields are merged into the hash, unless a write invalidated the entry
/// since the read (then the value is returned, not stored). Several functions with
/// different schemas may share one hash per entity.
///
/// # Arguments
///
/// | argument | |
/// |---|---|
/// | `prefix = "user"` | required: the entry's prefix; not empty, no `:`, not starting with `__` |
/// | `key = "id"` | required: a parameter, a field path into one or into `self` (`"req.id"`, `"self.tenant"`, `"path.0"`), or a template of them (`"{self.tenant}:{id}"`); their `Display` text completes the key. In a template of several values each value's `%` and `:` are escaped and the values are separated by text holding a `:` (a compile error otherwise), so two tuples never share a key (`cache_core::KeySegment` writes a part alike). An `Option` that is `None` bypasses the cache |
/// | `schema = T` | required: the struct read from and written to the hash (`Serialize + Deserialize`); a type written as a collection, map, tuple, array, reference, `Option`, `Result` or single value is a compile error at the type |
/// | `ttl = 60` | seconds (1 to ten years); default: the handle's `default_ttl` |
/// | `tags = ["user:{id}", "team:{team_id}"]` | tags to register the entry under; `{name}` is a parameter (or a path into one or `self`) or a field of the returned value |
/// | `cache_none = true` | cache absences (`None`, `Ok(None)`) too, for `none_ttl` seconds |
/// | `none_ttl = 30` | with `cache_none`: the absences' TTL; default: the handle's `negative_ttl` |
/// | `cache = expr` | the handle: a `Cache`, `&Cache`, `Arc<Cache>`, `LazyLock<Cache>`, `self.cache()`; default: the one given to `cache_core::install` |
/// | `crate = "::my_cache"` | the path of cache-core when `Cargo.toml` renames it |
///
/// # Return types
///
/// `S`, `Option<S>`, `Result<S, E>` or `Result<Option<S>, E>` where `S` is the schema (or
/// aliases of them). `None` and `Err` are returned and not cached (`None` is, with
/// `cache_none`). The return type must be written out: `impl Trait` is refused.
///
/// # Where it goes
///
/// An `async fn`: free, a method (`&self`, `&mut self`, `self`), generic, in an `impl`, native
/// in a trait or a trait's default method; a method of an `#[async_trait]` impl or trait
/// (`#[async_trait]` on the impl, this attribute on the method); a `fn … -> impl Future<Output
/// = R> + Send` whose body ends with an `async` block.
///
/// # Failures
///
/// Never because of the cache: Redis down, slow, refusing, or holding garbage makes the call
/// run the function (and the failure is counted and logged, at most once per interval).
/// Misuse is a compile error at the offending token: an unknown argument, a key naming no
/// parameter, a tag naming nothing, a schema without serde, a return type that does not
/// carry the schema.
///
/// # Example
///
/// ```
/// use cache_core::{cached_get, Cache};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct UserRead {
///     id: i64,
///     name: String,
///     avatar: Option<String>,
/// }
///
/// struct UserRepo {
///     cache: Cache,
/// }
///
/// impl UserRepo {
///     #[cached_get(prefix = "user", key = "id", schema = UserRead, cache = self.cache, ttl = 600)]
///     async fn get_user(&self, id: i64) -> Result<Option<UserRead>, std::io::Error> {
///         // The database query, run on a miss only.
///         Ok(Some(UserRead { id, name: "ada".into(), avatar: None }))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let repo = UserRepo { cache: Cache::builder().url("mem://").build().unwrap() };
/// repo.get_user(1).await.unwrap(); // a miss: runs the body, fills `user:1`
/// repo.get_user(1).await.unwrap(); // a hit
/// assert_eq!(repo.cache.stats().hits, 1);
/// # }
/// ```
#[proc_macro_attribute]
pub fn cached_get(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(MacroKind::Get, args.into(), item.into()).into()
}

/// Caches many entries at once: one Redis round trip for all the ids, the function called
/// once with only the ids that missed, each row filled into its own entry.
///
/// ```ignore
/// #[cached_get_many(prefix = "user", keys = "ids", schema = UserRead, key_field = "id")]
/// async fn users(&self, ids: &[i64]) -> Result<Vec<UserRead>, sqlx::Error> {
///     // runs only for the ids that missed (`ids` holds those)
///     sqlx::query_as("SELECT … WHERE id = ANY($1)").bind(ids).fetch_all(&self.pool).await
/// }
/// ```
///
/// Each id is the key of one entry `{namespace}:{prefix}:{id}`, the same entry a
/// `#[cached_get(prefix = "user", key = "id", schema = …)]` reads and a `#[cached_update]`
/// invalidates: single and batch reads share entries.
///
/// # Arguments
///
/// | argument | |
/// |---|---|
/// | `prefix = "user"` | required, as for `cached_get` |
/// | `keys = "ids"` | required: the parameter holding the ids, a `&[K]`, `&Vec<K>` or `Vec<K>` with `K: Display + Clone`; the body sees the ids that missed under the same name |
/// | `schema = T` | required: the struct each entry holds, as for `cached_get` |
/// | `key_field = "id"` | for `Vec<S>` returns: the field of `S` that holds a row's id (it must display as the id does) |
/// | `ttl`, `tags`, `cache`, `crate` | as for `cached_get`; tags naming fields of the value are rendered per row |
///
/// # Return types
///
/// `Vec<S>` (with `key_field`: the rows found, one per distinct id in the order asked),
/// `Vec<Option<S>>` (one per id asked, in order, duplicates included: the body returns one
/// per id it was given), `HashMap<K, S>`, or a `Result` of one of them. An `Err` is returned
/// as is, and nothing is cached.
///
/// # Behaviour
///
/// Duplicate ids are read and loaded once; an empty list makes no call at all. The near
/// cache answers first; then one pipeline of reads (several, sent together, beyond the
/// handle's `batch_size`; per slot on a cluster). The misses take part in the single flight
/// and the leases as single reads do; their fills are checked against one clock read made
/// before the function ran, so an invalidation during the load refuses them. When Redis
/// cannot be read, the function runs with every id, as without the cache.
#[proc_macro_attribute]
pub fn cached_get_many(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(MacroKind::GetMany, args.into(), item.into()).into()
}

/// Invalidates the entry (and its tags) after an async write returned anything but `Err`.
///
/// The function runs first; when it returns `Ok` (or anything that is not a `Result`), the
/// entry `{namespace}:{prefix}:{key}` and every tag given are invalidated before the call
/// returns: no read that starts afterwards, in any process, gets the old value, and a read
/// that loaded before the write cannot store its value after it. The function must have
/// committed by then.
///
/// # Arguments
///
/// | argument | |
/// |---|---|
/// | `prefix`, `key`, `cache`, `crate` | as for [`cached_get`] |
/// | `tags = ["user:{id}", "users:list"]` | tags to invalidate; `{name}` is a parameter or a path into one or `self` |
/// | `schema = T, version = "version"` | write the returned `T` through instead of invalidating, where that cannot bring old data back: the entry holds an older `version` and no tags |
///
/// # Return types
///
/// Any, `impl Trait` included. A `Result` that is `Err` invalidates nothing.
///
/// # Failures
///
/// An invalidation Redis does not take (down, refusing) is kept and delivered when it is
/// back; meanwhile this handle reads around the entries concerned. The function's result is
/// returned either way.
///
/// # Example
///
/// ```
/// use cache_core::{cached_update, Cache};
///
/// struct UserRepo {
///     cache: Cache,
/// }
///
/// impl UserRepo {
///     #[cached_update(prefix = "user", key = "id", tags = ["users:list"], cache = self.cache)]
///     async fn rename(&self, id: i64, name: &str) -> Result<(), std::io::Error> {
///         // UPDATE users SET name = $2 WHERE id = $1
///         let _ = (id, name);
///         Ok(())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let repo = UserRepo { cache: Cache::builder().url("mem://").build().unwrap() };
/// # repo.rename(1, "ada").await.unwrap();
/// # assert_eq!(repo.cache.stats().invalidations, 2);
/// # }
/// ```
#[proc_macro_attribute]
pub fn cached_update(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(MacroKind::Update, args.into(), item.into()).into()
}

/// Invalidates the entry (and its tags) after an async delete returned anything but `Err`.
///
/// The same as [`cached_update`] without write-through: `prefix`, `key`, `tags`, `cache`,
/// `crate`; any return type; an `Err` invalidates nothing.
///
/// # Example
///
/// ```
/// use cache_core::{cached_delete, Cache};
///
/// struct UserRepo {
///     cache: Cache,
/// }
///
/// impl UserRepo {
///     #[cached_delete(prefix = "user", key = "id", tags = ["user:{id}", "users:list"], cache = self.cache)]
///     async fn delete(&self, id: i64) -> Result<bool, std::io::Error> {
///         // DELETE FROM users WHERE id = $1
///         Ok(id > 0)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let repo = UserRepo { cache: Cache::builder().url("mem://").build().unwrap() };
/// # assert!(repo.delete(1).await.unwrap());
/// # }
/// ```
#[proc_macro_attribute]
pub fn cached_delete(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(MacroKind::Delete, args.into(), item.into()).into()
}
