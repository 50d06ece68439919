//! Checking the arguments against the annotated function. Every error points at the tokens
//! that are wrong: the literal naming a missing parameter, the `:` prefix, the `fn` that is not
//! `async`, the argument that does not belong to this macro.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt as _;
use syn::parse::Parser as _;
use syn::{Expr, FnArg, Ident, ItemFn, LitStr, Member, Pat, ReturnType, Type};

use crate::args::{Arg, CacheArgs, MacroKind};
use crate::refuse;
use crate::shape::{self, Shape};

/// Everything the expansion needs, known to be consistent with the function.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) prefix: LitStr,
    pub(crate) key: Template,
    /// `cached_get`: the schema read; `cached_update`: the schema written through.
    pub(crate) schema: Option<Type>,
    /// `cached_update` with `schema`: the schema field holding the row's version.
    pub(crate) version: Option<LitStr>,
    pub(crate) ttl_secs: Option<u64>,
    /// `cache_none = true`: absences are cached too.
    pub(crate) cache_none: bool,
    pub(crate) none_ttl_secs: Option<u64>,
    pub(crate) tags: Vec<Template>,
    /// `fail_safe`, `fail_safe_throttle`, `hard_timeout`, in ms (`cached_get` only).
    pub(crate) fail_safe_ms: Option<u64>,
    pub(crate) fail_safe_throttle_ms: Option<u64>,
    pub(crate) hard_timeout_ms: Option<u64>,
    /// The `hard_timeout` argument's name, where a return type that cannot carry the
    /// timeout error is reported.
    pub(crate) hard_timeout_span: Option<Span>,
    pub(crate) soft_timeout_ms: Option<u64>,
    pub(crate) refresh_after: Option<f64>,
    /// `soft_timeout` or `refresh_after`: the function also runs in the background, from
    /// copies of its receiver and parameters; the span of the argument that asked, where
    /// what cannot be copied is reported.
    pub(crate) detached: Option<Span>,
    pub(crate) cache: Option<Expr>,
    /// `crate = "path"`: where `cache-core` is, for users who renamed the dependency.
    pub(crate) krate: TokenStream,
    /// What the caller gets once the call is awaited; `()` when no return type is written.
    pub(crate) output: Type,
    /// The output hides its type (`impl Trait`): it cannot be named in the expansion.
    pub(crate) output_opaque: bool,
}

/// A key or tag as written: text and the places its values come from. A key without braces
/// is one place (`"id"`, `"req.id"`, `"self.tenant"`); with braces a template like a tag's
/// (`"{self.tenant}:{id}"`).
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) literal: LitStr,
    pub(crate) parts: Vec<TemplatePart>,
}

#[derive(Debug)]
pub(crate) enum TemplatePart {
    Text(String),
    /// A parameter, `self`, or a field path into one (`req.id`, `path.0`): the expression
    /// reading it, spanned on the literal, so that a field that does not exist is reported
    /// there.
    Param(TokenStream),
    /// `{name}` (or `{a.b}`) naming a field of the returned value (`cached_get` tags only):
    /// the field path, read from `__cache_value`.
    Field(TokenStream),
}

impl Template {
    pub(crate) fn reads_value(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, TemplatePart::Field(_)))
    }
}

pub(crate) fn check(
    kind: MacroKind,
    args: CacheArgs,
    function: &ItemFn,
    shape: Option<&Shape<'_>>,
) -> syn::Result<Checked> {
    let mut errors = Errors::default();
    let sig = &function.sig;
    if shape.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!(
                "#[{}] works on an `async fn`, on a method of an `#[async_trait]` impl or trait, or on a `fn` returning `impl Future<Output = …>` whose body ends with an `async` block{}",
                kind.name(),
                shape::hint(function).unwrap_or_default()
            ),
        ));
    }
    let params = Params::of(function);

    for (arg, name) in [(&args.keys, "keys"), (&args.key_field, "key_field")] {
        if let Some(arg) = arg {
            errors.push(syn::Error::new(
                arg.name_span,
                format!(
                    "#[{}] takes no `{name}`: it is for batch reads, `#[cached_get_many(keys = \"ids\", …)]`",
                    kind.name()
                ),
            ));
        }
    }
    let prefix = required(kind, args.prefix, "prefix = \"…\"", &mut errors).and_then(|prefix| {
        match prefix_problem(&prefix.value.value()) {
            Some(message) => {
                errors.push(syn::Error::new_spanned(&prefix.value, message));
                None
            }
            None => Some(prefix.value),
        }
    });

    let key = required(kind, args.key, "key = \"<parameter>\"", &mut errors).and_then(|key| {
        match parse_key(key.value, &params) {
            Ok(key) => {
                errors.extend(refuse::list_key(&key.literal, function));
                Some(key)
            }
            Err(error) => {
                errors.push(error);
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
        (MacroKind::Update | MacroKind::GetMany, Some(schema)) => Some(schema.value),
        (MacroKind::Delete, Some(schema)) => {
            errors.push(syn::Error::new(
                schema.name_span,
                "#[cached_delete] takes no `schema`: it invalidates, it does not write",
            ));
            None
        }
        (_, None) => None,
    };
    errors.extend(schema.as_ref().and_then(refuse::schema));
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

    let mut get_only_duration =
        |arg: Option<Arg<syn::Lit>>, name: &str, zero_means: Option<&str>| {
            let arg = arg?;
            if kind != MacroKind::Get {
                errors.push(syn::Error::new(
                    arg.name_span,
                    format!(
                        "#[{}] takes no `{name}`: it is for reads (`cached_get`)",
                        kind.name()
                    ),
                ));
                return None;
            }
            milliseconds(name, &arg.value, zero_means, &mut errors)
        };
    let fail_safe_ms = get_only_duration(args.fail_safe, "fail_safe", Some("off"));
    let fail_safe_throttle_ms = get_only_duration(
        args.fail_safe_throttle,
        "fail_safe_throttle",
        Some("no throttle"),
    );
    let hard_timeout_span = args.hard_timeout.as_ref().map(|arg| arg.name_span);
    let hard_timeout_ms = get_only_duration(args.hard_timeout, "hard_timeout", None);
    let soft_span = args.soft_timeout.as_ref().map(|arg| arg.name_span);
    let soft_timeout_ms = get_only_duration(args.soft_timeout, "soft_timeout", None);
    if let (Some(span), None | Some(0)) = (soft_span, fail_safe_ms) {
        errors.push(syn::Error::new(
            span,
            "`soft_timeout` returns the expired copy while the load goes on, so it needs `fail_safe = \"…\"` on this function (the copies to return)",
        ));
    }
    let refresh_span = args.refresh_after.as_ref().map(|arg| arg.name_span);
    let refresh_after = args.refresh_after.and_then(|arg| {
        if kind != MacroKind::Get {
            errors.push(syn::Error::new(
                arg.name_span,
                format!("#[{}] takes no `refresh_after`: it is for reads (`cached_get`)", kind.name()),
            ));
            return None;
        }
        let fraction = match &arg.value {
            syn::Lit::Float(float) => float.base10_parse::<f64>().ok(),
            _ => None,
        };
        match fraction {
            Some(fraction) if fraction > 0.0 && fraction < 1.0 => Some(fraction),
            _ => {
                errors.push(syn::Error::new_spanned(
                    &arg.value,
                    "`refresh_after` is a fraction of the TTL between 0 and 1, such as `0.8`: a hit after 80 % of the TTL starts a refresh",
                ));
                None
            }
        }
    });
    let detached = soft_span.or(refresh_span);
    if let Some(span) = detached {
        if let Err(error) = crate::detach::check(function, span) {
            errors.push(error);
        }
    }

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
    let output = match (shape.and_then(Shape::future_output), &sig.output) {
        (Some(output), _) => output.clone(),
        (None, ReturnType::Type(_, ty)) => (**ty).clone(),
        (None, ReturnType::Default) => syn::parse_quote!(()),
    };
    let output_opaque = shape::has_impl_trait(&output);
    if kind == MacroKind::Get && output_opaque {
        errors.push(syn::Error::new_spanned(
            &output,
            "#[cached_get] needs the return type written out (`impl Trait` hides whether it carries the schema): `S`, `Option<S>`, `Result<S, E>` or `Result<Option<S>, E>`",
        ));
    }
    let krate = match args.krate {
        Some(krate) => krate.value.to_token_stream(),
        None => quote!(::cache_core),
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
            fail_safe_ms,
            fail_safe_throttle_ms,
            hard_timeout_ms,
            hard_timeout_span,
            soft_timeout_ms,
            refresh_after,
            detached,
            cache: args.cache.map(|cache| cache.value),
            krate,
            output,
            output_opaque,
        }),
        // Both are reported above whenever missing.
        _ => Err(syn::Error::new(Span::call_site(), "invalid arguments")),
    }
}

/// Why the runtime would refuse this prefix, if it would: the same rule as `check_segment` in
/// `cache-core/src/key.rs` (this crate cannot call it), in the same order, so that a prefix
/// the macros accept never fails at run time. Change both together; the tests on both sides
/// (and `tests/ui/fail/prefix-*.rs`) list the same refused samples.
pub(crate) fn prefix_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("the prefix must not be empty")
    } else if text.contains(':') {
        Some("the prefix must not contain `:` (it separates the prefix from the key)")
    } else if text.contains(char::is_whitespace) {
        Some("the prefix must not contain whitespace (a space, a tab, a no-break space, …)")
    } else if text.starts_with("__") {
        Some("the prefix must not start with `__`, reserved for the cache's own keys")
    } else {
        None
    }
}

/// The longest TTL the macros accept, as the runtime's builder: ten years. Longer ones are
/// mistakes (a duration in milliseconds, say) rather than intentions.
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 60 * 60;

pub(crate) fn seconds(name: &str, literal: &syn::LitInt, errors: &mut Errors) -> Option<u64> {
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

/// A duration argument in ms: a string of a whole number and a unit (`"250ms"`, `"30s"`,
/// `"10m"`, `"2h"`, `"1d"`), or a whole number of seconds. Zero is refused unless
/// `zero_means` says what it does (`fail_safe = "0s"` turns a handle's default off).
fn milliseconds(
    name: &str,
    literal: &syn::Lit,
    zero_means: Option<&str>,
    errors: &mut Errors,
) -> Option<u64> {
    const MAX_MS: u64 = MAX_TTL_SECS * 1000;
    let parsed = match literal {
        syn::Lit::Str(text) => duration_ms(&text.value()),
        syn::Lit::Int(secs) => secs
            .base10_parse::<u64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1000)),
        _ => None,
    };
    let zero = zero_means.map_or_else(String::new, |meaning| format!("; \"0s\" means {meaning}"));
    match parsed {
        Some(ms) if ms <= MAX_MS && (ms > 0 || zero_means.is_some()) => Some(ms),
        _ => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`{name}` is a duration such as \"250ms\", \"30s\", \"10m\", \"2h\" or \"1d\" (a whole number and a unit), at most ten years{zero}"
                ),
            ));
            None
        }
    }
}

/// `"<whole number><unit>"` in ms, units `ms`, `s`, `m`, `h`, `d`.
fn duration_ms(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Collects every mistake, so that one run of the compiler shows them all, each at its place.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn extend(&mut self, error: Option<syn::Error>) {
        if let Some(error) = error {
            self.push(error);
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

pub(crate) fn required<T>(
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

/// What the function's parameters offer to keys and tags.
pub(crate) struct Params {
    /// The named parameters.
    named: Vec<Ident>,
    /// Whether there is a `self`.
    receiver: bool,
    /// Parameters given as patterns (`Path(id): Path<i64>`): what they bind is no
    /// parameter, and the error says what to write instead.
    patterns: Vec<(Pat, Type)>,
}

impl Params {
    pub(crate) fn of(function: &ItemFn) -> Params {
        let mut params = Params {
            named: Vec::new(),
            receiver: false,
            patterns: Vec::new(),
        };
        for input in &function.sig.inputs {
            match input {
                FnArg::Receiver(_) => params.receiver = true,
                FnArg::Typed(typed) => match &*typed.pat {
                    Pat::Ident(pat) => params.named.push(pat.ident.clone()),
                    pat => params.patterns.push((pat.clone(), (*typed.ty).clone())),
                },
            }
        }
        params
    }

    /// Whether `root` (`self` or a name, raw or not) is a parameter.
    pub(crate) fn has(&self, root: &Ident) -> bool {
        if root == "self" {
            return self.receiver;
        }
        let root = root.unraw();
        self.named.iter().any(|param| param.unraw() == root)
    }

    /// Why `name` is not a parameter, and what to write instead.
    pub(crate) fn missing(&self, name: &Ident, whole: &str, what: &str) -> String {
        if name == "self" {
            return format!("`{whole}`: this function has no `self`");
        }
        for (pat, ty) in &self.patterns {
            if let Some(path) = binding_path(pat, &name.unraw()) {
                let ty_text = ty.to_token_stream().to_string().replace(' ', "");
                let pattern = pat.to_token_stream().to_string().replace(' ', "");
                let suggested = suggested_name(ty);
                // `id` in `Path(id)` is `path.0`; what followed the name (`id.x`) follows.
                let mut replacement = std::iter::once(suggested.clone())
                    .chain(path)
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some((_, rest)) = whole.trim().split_once('.') {
                    replacement = format!("{replacement}.{rest}");
                }
                return format!(
                    "`{name}` is bound by the pattern `{pattern}`, not a parameter: name the parameter (`{suggested}: {ty_text}`) and write `{what} = \"{replacement}\"`"
                );
            }
        }
        format!(
            "`{name}` is not a parameter of this function{}",
            self.list()
        )
    }

    fn list(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        if self.receiver {
            names.push("`self`".into());
        }
        names.extend(self.named.iter().map(|ident| format!("`{ident}`")));
        if names.is_empty() {
            return "; it has no named parameters".into();
        }
        format!("; its parameters are {}", names.join(", "))
    }
}

/// The fields leading from a pattern's value to the binding `name` in it (`Path(id)` → `0`,
/// `Query { id, .. }` → `id`), if the pattern binds it.
fn binding_path(pat: &Pat, name: &Ident) -> Option<Vec<String>> {
    match pat {
        Pat::Ident(ident) if ident.ident.unraw() == *name => Some(Vec::new()),
        Pat::Ident(ident) => ident
            .subpat
            .as_ref()
            .and_then(|(_, sub)| binding_path(sub, name)),
        Pat::TupleStruct(tuple) => tuple.elems.iter().enumerate().find_map(|(index, elem)| {
            binding_path(elem, name).map(|rest| prepend(index.to_string(), rest))
        }),
        Pat::Tuple(tuple) => tuple.elems.iter().enumerate().find_map(|(index, elem)| {
            binding_path(elem, name).map(|rest| prepend(index.to_string(), rest))
        }),
        Pat::Struct(fields) => fields.fields.iter().find_map(|field| {
            let member = match &field.member {
                Member::Named(ident) => ident.to_string(),
                Member::Unnamed(index) => index.index.to_string(),
            };
            binding_path(&field.pat, name).map(|rest| prepend(member, rest))
        }),
        Pat::Reference(reference) => binding_path(&reference.pat, name),
        Pat::Paren(paren) => binding_path(&paren.pat, name),
        _ => None,
    }
}

fn prepend(first: String, mut rest: Vec<String>) -> Vec<String> {
    rest.insert(0, first);
    rest
}

/// A parameter name for a type: `Path<i64>` → `path`, `Json<T>` → `json`.
fn suggested_name(ty: &Type) -> String {
    let last = match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.to_string()),
        _ => None,
    };
    let mut name = String::new();
    for (index, ch) in last.unwrap_or_else(|| "arg".into()).chars().enumerate() {
        if ch.is_uppercase() && index > 0 {
            name.push('_');
        }
        name.extend(ch.to_lowercase());
    }
    name
}

/// Splits `req.id`, `self.tenant`, `path.0`, `r#type` into the root and the members after
/// it; `None` when the text is not such a path.
fn split_path(text: &str) -> Option<(Ident, Vec<Member>)> {
    let mut segments = text.split('.');
    let root = Ident::parse_any.parse_str(segments.next()?.trim()).ok()?;
    let members = segments
        .map(|segment| syn::parse_str::<Member>(segment.trim()).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((root, members))
}

/// The expression `root.member…`, every token spanned on the literal.
fn path_tokens(root: Option<&Ident>, members: &[Member], span: Span) -> TokenStream {
    let members = members.iter().map(|member| match member {
        Member::Named(ident) => {
            let mut ident = ident.clone();
            ident.set_span(span);
            Member::Named(ident)
        }
        Member::Unnamed(index) => Member::Unnamed(syn::Index {
            index: index.index,
            span,
        }),
    });
    match root {
        Some(root) => {
            let mut root = root.clone();
            root.set_span(span);
            quote!(#root #(.#members)*)
        }
        None => quote!(#(.#members)*),
    }
}

/// A key: one place, or a template when it holds braces.
fn parse_key(literal: LitStr, params: &Params) -> syn::Result<Template> {
    let text = literal.value();
    if text.contains(['{', '}']) {
        let template = parse_template(MacroKind::Update, "key", literal, params)?;
        check_composite_key(&template)?;
        return Ok(template);
    }
    let part = placeholder(MacroKind::Update, "key", &text, &literal, params)?;
    Ok(Template {
        literal,
        parts: vec![part],
    })
}

/// A key of several values: each two are separated by text holding a `:`. The runtime
/// escapes `:` in each value's text, so the key can be read back into its values: no two
/// tuples of values make one key. Without a `:` between them, `{a}{b}` gives `("ab", "c")`
/// and `("a", "bc")` one key, and `{a}-{b}` gives `("a-b", "c")` and `("a", "b-c")` one.
fn check_composite_key(template: &Template) -> syn::Result<()> {
    let mut params = 0;
    let mut separated = true;
    for part in &template.parts {
        match part {
            TemplatePart::Text(text) => separated |= text.contains(':'),
            TemplatePart::Param(_) | TemplatePart::Field(_) => {
                if params > 0 && !separated {
                    return Err(syn::Error::new_spanned(
                        &template.literal,
                        "separate the values of a composite key with `:` (`\"{org}:{name}\"`): \
                         each value's `:` is escaped, so then no two tuples of values make one key",
                    ));
                }
                params += 1;
                separated = false;
            }
        }
    }
    Ok(())
}

/// One placeholder of a key or tag: a parameter (or path into one), or for `cached_get`
/// tags a field of the value.
fn placeholder(
    kind: MacroKind,
    what: &str,
    name: &str,
    literal: &LitStr,
    params: &Params,
) -> syn::Result<TemplatePart> {
    let span = literal.span();
    let Some((root, members)) = split_path(name) else {
        return Err(syn::Error::new(
            span,
            format!("`{name}` must name a parameter (or a field of one: `req.id`, `self.tenant`)"),
        ));
    };
    if params.has(&root) {
        return Ok(TemplatePart::Param(path_tokens(
            Some(&root),
            &members,
            span,
        )));
    }
    if matches!(kind, MacroKind::Get | MacroKind::GetMany) && root != "self" {
        let mut all = vec![Member::Named(root)];
        all.extend(members);
        return Ok(TemplatePart::Field(path_tokens(None, &all, span)));
    }
    Err(syn::Error::new(span, params.missing(&root, name, what)))
}

/// A template such as `"user:{id}"` or `"{self.tenant}:{req.id}"`, split into text and
/// placeholders.
fn parse_template(
    kind: MacroKind,
    what: &str,
    literal: LitStr,
    params: &Params,
) -> syn::Result<Template> {
    let text = literal.value();
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(syn::Error::new_spanned(
                &literal,
                format!("unmatched `}}` in {what}"),
            ));
        }
        let close = rest[open..]
            .find('}')
            .map(|offset| open + offset)
            .ok_or_else(|| syn::Error::new_spanned(&literal, format!("unclosed `{{` in {what}")))?;
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_owned()));
        }
        parts.push(placeholder(
            kind,
            what,
            &rest[open + 1..close],
            &literal,
            params,
        )?);
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_owned()));
    }
    Ok(Template { literal, parts })
}

pub(crate) fn parse_tag(
    kind: MacroKind,
    literal: LitStr,
    params: &Params,
) -> syn::Result<Template> {
    parse_template(kind, "tag", literal, params)
}

#[cfg(test)]
mod tests {
    use super::prefix_problem;

    /// One sample of each class of prefix that `check_segment` in `cache-core/src/key.rs`
    /// refuses (its test `prefixes_refused_as_the_macros_refuse_them` lists the same).
    #[test]
    fn prefixes_refused_as_the_runtime_refuses_them() {
        for refused in ["", "a:b", "a b", "a\tb", "a\u{a0}b", "a\nb", "__x"] {
            assert!(prefix_problem(refused).is_some(), "{refused:?}");
        }
        for accepted in ["user", "_x", "a_b", "a-b.c", "{x}", "é"] {
            assert!(prefix_problem(accepted).is_none(), "{accepted:?}");
        }
    }
}
