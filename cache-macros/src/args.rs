//! Parsing the macro arguments into a typed struct. Only syntax is checked here; what the
//! arguments mean for the function is checked in `valid`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{bracketed, Expr, LitBool, LitInt, LitStr, Token, Type};

/// Which of the three macros is being expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MacroKind {
    Get,
    Update,
    Delete,
}

impl MacroKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MacroKind::Get => "cached_get",
            MacroKind::Update => "cached_update",
            MacroKind::Delete => "cached_delete",
        }
    }
}

mod kw {
    syn::custom_keyword!(prefix);
    syn::custom_keyword!(key);
    syn::custom_keyword!(schema);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(tags);
    syn::custom_keyword!(cache);
    syn::custom_keyword!(cache_none);
    syn::custom_keyword!(none_ttl);
    syn::custom_keyword!(version);
}

/// An argument's value together with the span of its name, for diagnostics about the
/// argument as a whole.
#[derive(Debug, Clone)]
pub(crate) struct Arg<T> {
    pub(crate) name_span: Span,
    pub(crate) value: T,
}

/// The arguments of any of the three macros, as written.
#[derive(Debug, Default)]
pub(crate) struct CacheArgs {
    pub(crate) prefix: Option<Arg<LitStr>>,
    pub(crate) key: Option<Arg<LitStr>>,
    pub(crate) schema: Option<Arg<Type>>,
    pub(crate) ttl: Option<Arg<LitInt>>,
    pub(crate) tags: Option<Arg<Vec<LitStr>>>,
    pub(crate) cache: Option<Arg<Expr>>,
    pub(crate) cache_none: Option<Arg<LitBool>>,
    pub(crate) none_ttl: Option<Arg<LitInt>>,
    pub(crate) version: Option<Arg<LitStr>>,
}

/// Stores an argument, rejecting a second occurrence at the second name.
fn set_once<T>(
    slot: &mut Option<Arg<T>>,
    name: &str,
    name_span: Span,
    value: T,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            name_span,
            format!("duplicate argument `{name}`"),
        ));
    }
    *slot = Some(Arg { name_span, value });
    Ok(())
}

impl Parse for CacheArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = CacheArgs::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::prefix) {
                let name = input.parse::<kw::prefix>()?;
                input.parse::<Token![=]>()?;
                set_once(&mut args.prefix, "prefix", name.span, input.parse()?)?;
            } else if lookahead.peek(kw::key) {
                let name = input.parse::<kw::key>()?;
                input.parse::<Token![=]>()?;
                set_once(&mut args.key, "key", name.span, input.parse()?)?;
            } else if lookahead.peek(kw::schema) {
                let name = input.parse::<kw::schema>()?;
                input.parse::<Token![=]>()?;
                set_once(&mut args.schema, "schema", name.span, input.parse()?)?;
            } else if lookahead.peek(kw::ttl) {
                let name = input.parse::<kw::ttl>()?;
                input.parse::<Token![=]>()?;
                set_once(&mut args.ttl, "ttl", name.span, input.parse()?)?;
            } else if lookahead.peek(kw::tags) {
                let name = input.parse::<kw::tags>()?;
                input.parse::<Token![=]>()?;
                let content;
                bracketed!(content in input);
                let tags = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
                set_once(
                    &mut args.tags,
                    "tags",
                    name.span,
                    tags.into_iter().collect(),
                )?;
            } else if lookahead.peek(kw::cache_none) {
                let name = input.parse::<kw::cache_none>()?;
                input.parse::<Token![=]>()?;
                set_once(
                    &mut args.cache_none,
                    "cache_none",
                    name.span,
                    input.parse()?,
                )?;
            } else if lookahead.peek(kw::none_ttl) {
                let name = input.parse::<kw::none_ttl>()?;
                input.parse::<Token![=]>()?;
                set_once(&mut args.none_ttl, "none_ttl", name.span, input.parse()?)?;
            } else if lookahead.peek(kw::version) {
                let name = input.parse::<kw::version>()?;
                input.parse::<Token![=]>()?;
                set_once(&mut args.version, "version", name.span, input.parse()?)?;
            } else if lookahead.peek(kw::cache) {
                let name = input.parse::<kw::cache>()?;
                input.parse::<Token![=]>()?;
                set_once(&mut args.cache, "cache", name.span, input.parse()?)?;
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}
