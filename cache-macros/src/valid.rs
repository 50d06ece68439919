//! Checking the arguments against the annotated function. Every error points at the tokens
//! that are wrong: the literal naming a missing parameter, the `:` prefix, the `fn` that is not
//! `async`, the argument that does not belong to this macro.

use proc_macro2::Span;
use syn::{Expr, FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Type};

use crate::args::{Arg, CacheArgs, MacroKind};

/// Everything the expansion needs, known to be consistent with the function.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) prefix: LitStr,
    pub(crate) key: KeyParam,
    /// `cached_get`: the schema read; `cached_update`: the schema written through.
    pub(crate) schema: Option<Type>,
    /// `cached_update` with `schema`: the schema field holding the row's version.
    pub(crate) version: Option<LitStr>,
    pub(crate) ttl_secs: Option<u64>,
    /// `cache_none = true`: absences are cached too.
    pub(crate) cache_none: bool,
    pub(crate) none_ttl_secs: Option<u64>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) cache: Option<Expr>,
    /// The declared return type; `()` when none is written.
    pub(crate) output: Type,
}

/// The parameter whose value completes the key.
#[derive(Debug)]
pub(crate) struct KeyParam {
    pub(crate) ident: Ident,
    /// `Option<_>` (or a reference to one): `None` bypasses the cache.
    pub(crate) optional: bool,
}

/// A tag template such as `"user:{id}"`, split into text and placeholders.
#[derive(Debug)]
pub(crate) struct Tag {
    pub(crate) literal: LitStr,
    pub(crate) parts: Vec<TagPart>,
}

#[derive(Debug)]
pub(crate) enum TagPart {
    Text(String),
    /// `{name}` naming a parameter of the function.
    Param(Ident),
    /// `{name}` naming a field of the returned value (`cached_get` only).
    Field(Ident),
}

pub(crate) fn check(kind: MacroKind, args: CacheArgs, function: &ItemFn) -> syn::Result<Checked> {
    let mut errors = Errors::default();
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("#[{}] works on `async fn` only", kind.name()),
        ));
    }
    let params = parameters(function);

    let prefix = required(kind, args.prefix, "prefix = \"…\"", &mut errors).and_then(|prefix| {
        let text = prefix.value.value();
        let problem = if text.is_empty() {
            Some("the prefix must not be empty")
        } else if text.contains(':') {
            Some("the prefix must not contain `:` (it separates the prefix from the key)")
        } else if text.starts_with("__") {
            Some("the prefix must not start with `__`, reserved for the cache's own keys")
        } else {
            None
        };
        match problem {
            Some(message) => {
                errors.push(syn::Error::new_spanned(&prefix.value, message));
                None
            }
            None => Some(prefix.value),
        }
    });

    let key = required(kind, args.key, "key = \"<parameter>\"", &mut errors).and_then(|key| {
        let name = key.value.value();
        match params.iter().find(|(ident, _)| *ident == name) {
            Some((ident, ty)) => Some(KeyParam {
                ident: ident.clone(),
                optional: is_option(ty),
            }),
            None => {
                errors.push(syn::Error::new_spanned(
                    &key.value,
                    format!(
                        "`{name}` is not a parameter of this function{}",
                        list(&params)
                    ),
                ));
                None
            }
        }
    });

    let schema_span = args.schema.as_ref().map(|schema| schema.name_span);
    let schema = match (kind, args.schema) {
        (MacroKind::Get, Some(schema)) => Some(schema.value),
        (MacroKind::Get, None) => {
            errors.push(syn::Error::new(
                Span::call_site(),
                "#[cached_get] needs `schema = <type>`: the struct read from and written to the hash",
            ));
            None
        }
        (MacroKind::Update, Some(schema)) => Some(schema.value),
        (MacroKind::Delete, Some(schema)) => {
            errors.push(syn::Error::new(
                schema.name_span,
                "#[cached_delete] takes no `schema`: it invalidates, it does not write",
            ));
            None
        }
        (_, None) => None,
    };
    let version = match (kind, args.version, &schema) {
        (MacroKind::Update, Some(version), Some(_)) => Some(version.value),
        (MacroKind::Update, Some(version), None) => {
            errors.push(syn::Error::new(
                version.name_span,
                "`version` goes with `schema = <type>`: the value written through",
            ));
            None
        }
        (MacroKind::Update, None, Some(_)) => {
            errors.push(syn::Error::new(
                schema_span.unwrap_or_else(Span::call_site),
                "write-through needs `version = \"<field>\"`: a field of the schema that grows with every write, so that an older value never overwrites a newer one",
            ));
            None
        }
        (MacroKind::Update, None, None) => None,
        (_, Some(version), _) => {
            errors.push(syn::Error::new(
                version.name_span,
                format!("#[{}] takes no `version`", kind.name()),
            ));
            None
        }
        (_, None, _) => None,
    };

    let ttl_secs = args
        .ttl
        .and_then(|ttl| seconds("ttl", &ttl.value, &mut errors));
    let cache_none = match args.cache_none {
        Some(flag) if kind != MacroKind::Get => {
            errors.push(syn::Error::new(
                flag.name_span,
                format!("#[{}] takes no `cache_none`", kind.name()),
            ));
            false
        }
        Some(flag) => flag.value.value,
        None => false,
    };
    let none_ttl_secs = args.none_ttl.and_then(|ttl| {
        if !cache_none {
            errors.push(syn::Error::new(
                ttl.name_span,
                "`none_ttl` needs `cache_none = true`",
            ));
            return None;
        }
        seconds("none_ttl", &ttl.value, &mut errors)
    });

    let tags = args
        .tags
        .map(|tags| tags.value)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|literal| match parse_tag(kind, literal, &params) {
            Ok(tag) => Some(tag),
            Err(error) => {
                errors.push(error);
                None
            }
        })
        .collect();

    if kind == MacroKind::Get && matches!(sig.output, ReturnType::Default) {
        errors.push(syn::Error::new_spanned(
            sig,
            "#[cached_get] needs a return type that carries the schema: `S`, `Option<S>`, `Result<S, E>` or `Result<Option<S>, E>`",
        ));
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };

    errors.finish()?;
    match (prefix, key) {
        (Some(prefix), Some(key)) => Ok(Checked {
            prefix,
            key,
            schema,
            version,
            ttl_secs,
            cache_none,
            none_ttl_secs,
            tags,
            cache: args.cache.map(|cache| cache.value),
            output,
        }),
        // Both are reported above whenever missing.
        _ => Err(syn::Error::new(Span::call_site(), "invalid arguments")),
    }
}

/// The longest TTL the macros accept, as the runtime's builder: ten years. Longer ones are
/// mistakes (a duration in milliseconds, say) rather than intentions.
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 60 * 60;

fn seconds(name: &str, literal: &syn::LitInt, errors: &mut Errors) -> Option<u64> {
    match literal.base10_parse::<u64>() {
        Ok(secs) if (1..=MAX_TTL_SECS).contains(&secs) => Some(secs),
        _ => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`{name}` is a whole number of seconds, from 1 to {MAX_TTL_SECS} (ten years)"
                ),
            ));
            None
        }
    }
}

/// Collects every mistake, so that one run of the compiler shows them all, each at its place.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn required<T>(
    kind: MacroKind,
    arg: Option<Arg<T>>,
    form: &str,
    errors: &mut Errors,
) -> Option<Arg<T>> {
    if arg.is_none() {
        errors.push(syn::Error::new(
            Span::call_site(),
            format!("#[{}] needs `{form}`", kind.name()),
        ));
    }
    arg
}

/// The function's named parameters (the receiver and destructuring patterns have no name).
fn parameters(function: &ItemFn) -> Vec<(Ident, Type)> {
    function
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) => Some((pat.ident.clone(), (*typed.ty).clone())),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect()
}

fn list(params: &[(Ident, Type)]) -> String {
    if params.is_empty() {
        return "; it has no named parameters".into();
    }
    let names: Vec<String> = params
        .iter()
        .map(|(ident, _)| format!("`{ident}`"))
        .collect();
    format!("; its parameters are {}", names.join(", "))
}

/// Whether a parameter type is `Option<_>` or a reference to one.
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => is_option(&reference.elem),
        Type::Paren(paren) => is_option(&paren.elem),
        Type::Group(group) => is_option(&group.elem),
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Option"),
        _ => false,
    }
}

fn parse_tag(kind: MacroKind, literal: LitStr, params: &[(Ident, Type)]) -> syn::Result<Tag> {
    let text = literal.value();
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(syn::Error::new_spanned(&literal, "unmatched `}` in tag"));
        }
        let close = rest[open..]
            .find('}')
            .map(|offset| open + offset)
            .ok_or_else(|| syn::Error::new_spanned(&literal, "unclosed `{` in tag"))?;
        if open > 0 {
            parts.push(TagPart::Text(rest[..open].to_owned()));
        }
        let name = &rest[open + 1..close];
        // Parsing checks that the name is an identifier; the span points at the literal.
        let parsed: Ident = syn::parse_str(name).map_err(|_| {
            syn::Error::new_spanned(
                &literal,
                format!("`{{{name}}}` in a tag must name a parameter or field"),
            )
        })?;
        // Keeps raw identifiers (`{r#type}`) as they are; `Ident::new` would refuse them.
        let mut ident = parsed;
        ident.set_span(literal.span());
        if params.iter().any(|(param, _)| *param == name) {
            parts.push(TagPart::Param(ident));
        } else if kind == MacroKind::Get {
            parts.push(TagPart::Field(ident));
        } else {
            return Err(syn::Error::new_spanned(
                &literal,
                format!(
                    "`{{{name}}}` is not a parameter of this function{}",
                    list(params)
                ),
            ));
        }
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TagPart::Text(rest.to_owned()));
    }
    Ok(Tag { literal, parts })
}
