//! The attribute macros of [`cache-core`](https://docs.rs/cache-core): `#[cached_get]`,
//! `#[cached_update]` and `#[cached_delete]`. Use them through `cache-core`, which
//! re-exports them; the generated code only names `::cache_core::…` paths.
//!
//! Each macro parses its arguments (`args`), checks them against the function (`valid`), and
//! rewrites the function body into a call of the runtime (`expand`). All the behaviour lives
//! in the runtime; the expansion is a few lines anyone can read with `cargo expand`.

mod args;
mod expand;
mod shape;
mod valid;

use proc_macro::TokenStream;

use crate::args::MacroKind;

/// Caches the value of an async read in a Redis hash. See `cache_core` for the arguments.
#[proc_macro_attribute]
pub fn cached_get(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(MacroKind::Get, args.into(), item.into()).into()
}

/// Invalidates the entry (and its tags) after an async write returned anything but `Err`.
#[proc_macro_attribute]
pub fn cached_update(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(MacroKind::Update, args.into(), item.into()).into()
}

/// Invalidates the entry (and its tags) after an async delete returned anything but `Err`.
#[proc_macro_attribute]
pub fn cached_delete(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(MacroKind::Delete, args.into(), item.into()).into()
}
