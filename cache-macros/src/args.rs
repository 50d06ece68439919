//! Parsing the macro arguments into a typed struct. Only syntax is checked here; what the
//! arguments mean for the function is checked in `valid`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{bracketed, Expr, Lit, LitBool, LitInt, LitStr, Path, Token, Type};

/// Which of the three macros is being expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MacroKind {
    Get,
    GetMany,
    Update,
    Delete,
}

impl MacroKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MacroKind::Get => "cached_get",
            MacroKind::GetMany => "cached_get_many",
            MacroKind::Update => "cached_update",
            MacroKind::Delete => "cached_delete",
        }
    }
}

mod kw {
    syn::custom_keyword!(prefix);
    syn::custom_keyword!(key);
    syn::custom_keyword!(keys);
    syn::custom_keyword!(key_field);
    syn::custom_keyword!(schema);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(tags);
    syn::custom_keyword!(cache);
    syn::custom_keyword!(cache_none);
    syn::custom_keyword!(none_ttl);
    syn::custom_keyword!(version);
    syn::custom_keyword!(fail_safe);
    syn::custom_keyword!(fail_safe_throttle);
    syn::custom_keyword!(hard_timeout);
    syn::custom_keyword!(soft_timeout);
    syn::custom_keyword!(refresh_after);
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
    /// `cached_get_many`: the parameter holding the ids.
    pub(crate) keys: Option<Arg<LitStr>>,
    /// `cached_get_many`: the field of the schema holding a row's id.
    pub(crate) key_field: Option<Arg<LitStr>>,
    pub(crate) schema: Option<Arg<Type>>,
    pub(crate) ttl: Option<Arg<LitInt>>,
    pub(crate) tags: Option<Arg<Vec<LitStr>>>,
    pub(crate) cache: Option<Arg<Expr>>,
    pub(crate) cache_none: Option<Arg<LitBool>>,
    pub(crate) none_ttl: Option<Arg<LitInt>>,
    pub(crate) version: Option<Arg<LitStr>>,
    /// Durations: `"10m"`, `"250ms"` (or whole seconds); checked in `valid`.
    pub(crate) fail_safe: Option<Arg<Lit>>,
    pub(crate) fail_safe_throttle: Option<Arg<Lit>>,
    pub(crate) hard_timeout: Option<Arg<Lit>>,
    pub(crate) soft_timeout: Option<Arg<Lit>>,
    /// A fraction of the TTL, `0.8`.
    pub(crate) refresh_after: Option<Arg<Lit>>,
    /// `crate = "path"`.
    pub(crate) krate: Option<Arg<Path>>,
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

/// One `lookahead.peek(kw::NAME)` branch per argument: the keyword, `=`, the value, stored
/// once. An unknown name is an error listing every known one, at the unknown token.
/// `crate`, a keyword, is the last branch.
macro_rules! parse_argument {
    ($input:ident, $args:ident, $($name:ident: $value:expr),* $(,)?) => {{
        let lookahead = $input.lookahead1();
        $(if lookahead.peek(kw::$name) {
            let keyword = $input.parse::<kw::$name>()?;
            $input.parse::<Token![=]>()?;
            set_once(&mut $args.$name, stringify!($name), keyword.span, $value)?;
        } else)* if lookahead.peek(Token![crate]) {
            let keyword = $input.parse::<Token![crate]>()?;
            $input.parse::<Token![=]>()?;
            let path = crate_path($input)?;
            set_once(&mut $args.krate, "crate", keyword.span, path)?;
        } else {
            return Err(lookahead.error());
        }
    }};
}

/// `crate = "::renamed"` as serde and tokio take it: a string holding a path.
fn crate_path(input: ParseStream<'_>) -> syn::Result<Path> {
    let literal: LitStr = input.parse()?;
    literal.parse_with(Path::parse_mod_style).map_err(|_| {
        syn::Error::new_spanned(
            &literal,
            "`crate` is the path of cache-core as this crate names it, e.g. `crate = \"::my_cache\"`",
        )
    })
}

fn tag_list(input: ParseStream<'_>) -> syn::Result<Vec<LitStr>> {
    let content;
    bracketed!(content in input);
    let tags = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
    Ok(tags.into_iter().collect())
}

impl Parse for CacheArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = CacheArgs::default();
        while !input.is_empty() {
            parse_argument!(input, args,
                prefix: input.parse()?,
                key: input.parse()?,
                keys: input.parse()?,
                key_field: input.parse()?,
                schema: input.parse()?,
                ttl: input.parse()?,
                tags: tag_list(input)?,
                cache_none: input.parse()?,
                none_ttl: input.parse()?,
                version: input.parse()?,
                fail_safe: input.parse()?,
                fail_safe_throttle: input.parse()?,
                hard_timeout: input.parse()?,
                soft_timeout: input.parse()?,
                refresh_after: input.parse()?,
                cache: input.parse()?,
            );
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}
