//! `#[cached_get_many]`: its arguments checked against the function (which parameter holds
//! the ids, the row field that says which id a row answers) and the rewriting of its body
//! into a call of the runtime's `get_many`, which calls the body once with the ids that
//! missed, bound to the ids parameter's name.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, LitStr, Member, Pat, ReturnType, Type};

use crate::args::{Arg, CacheArgs, MacroKind};
use crate::expand::{adapters, get_tags, handle, optional_u64, respan};
use crate::refuse;
use crate::shape::{self, Shape};
use crate::valid::{parse_tag, prefix_problem, required, seconds, Errors, Params, Template};

const KIND: MacroKind = MacroKind::GetMany;

/// How the ids parameter holds them, which decides how the body sees the ids that missed.
enum Holding {
    /// `&[K]`: the body gets a slice of the misses.
    Slice,
    /// `&Vec<K>`.
    VecRef,
    /// `Vec<K>`: the body owns the misses.
    Vec,
}

/// The arguments, known to be consistent with the function.
struct Checked {
    prefix: LitStr,
    ids: Ident,
    /// `mut ids: Vec<K>`: the body's binding stays mutable.
    ids_mut: bool,
    holding: Holding,
    /// Where a key that cannot display is reported.
    keys_literal: LitStr,
    schema: Type,
    key_field: Option<(LitStr, Member)>,
    ttl_secs: Option<u64>,
    tags: Vec<Template>,
    cache: Option<syn::Expr>,
    krate: TokenStream,
    output: Type,
}

/// The whole attribute: checked, then expanded.
pub(crate) fn expand(
    args: CacheArgs,
    function: &ItemFn,
    shape: Option<&Shape<'_>>,
) -> syn::Result<TokenStream> {
    let checked = check(args, function, shape)?;
    let shape = shape.expect("checked");
    Ok(rewrite(&checked, function, shape))
}

fn check(args: CacheArgs, function: &ItemFn, shape: Option<&Shape<'_>>) -> syn::Result<Checked> {
    let mut errors = Errors::default();
    let sig = &function.sig;
    if shape.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!(
                "#[cached_get_many] works on an `async fn`, on a method of an `#[async_trait]` impl or trait, or on a `fn` returning `impl Future<Output = …>` whose body ends with an `async` block{}",
                shape::hint(function).unwrap_or_default()
            ),
        ));
    }
    let refused = [
        (
            args.key.as_ref().map(|arg| arg.name_span),
            "`key`: the ids come from `keys = \"<parameter>\"`, each id keys one entry",
        ),
        (
            args.cache_none.as_ref().map(|arg| arg.name_span),
            "`cache_none`: an id without a row is asked for again",
        ),
        (
            args.none_ttl.as_ref().map(|arg| arg.name_span),
            "`none_ttl`",
        ),
        (
            args.version.as_ref().map(|arg| arg.name_span),
            "`version`: it is for write-through (`cached_update`)",
        ),
        (
            args.fail_safe.as_ref().map(|arg| arg.name_span),
            "`fail_safe` (yet): single reads (`cached_get`) have it",
        ),
        (
            args.fail_safe_throttle.as_ref().map(|arg| arg.name_span),
            "`fail_safe_throttle` (yet)",
        ),
        (
            args.hard_timeout.as_ref().map(|arg| arg.name_span),
            "`hard_timeout` (yet)",
        ),
        (
            args.soft_timeout.as_ref().map(|arg| arg.name_span),
            "`soft_timeout` (yet)",
        ),
        (
            args.refresh_after.as_ref().map(|arg| arg.name_span),
            "`refresh_after` (yet)",
        ),
    ];
    for (span, what) in refused {
        if let Some(span) = span {
            errors.push(syn::Error::new(
                span,
                format!("#[cached_get_many] takes no {what}"),
            ));
        }
    }
    let prefix = required(KIND, args.prefix, "prefix = \"…\"", &mut errors).and_then(|prefix| {
        match prefix_problem(&prefix.value.value()) {
            Some(message) => {
                errors.push(syn::Error::new_spanned(&prefix.value, message));
                None
            }
            None => Some(prefix.value),
        }
    });
    let ids = required(
        KIND,
        args.keys,
        "keys = \"<the parameter holding the ids>\"",
        &mut errors,
    )
    .and_then(|keys| match ids_parameter(&keys, function) {
        Ok(ids) => Some(ids),
        Err(error) => {
            errors.push(error);
            None
        }
    });
    let schema =
        required(KIND, args.schema, "schema = <type>", &mut errors).map(|schema| schema.value);
    errors.extend(schema.as_ref().and_then(refuse::schema));
    let key_field = args.key_field.and_then(|arg| match field_member(&arg) {
        Ok(member) => Some((arg.value, member)),
        Err(error) => {
            errors.push(error);
            None
        }
    });
    let ttl_secs = args
        .ttl
        .and_then(|ttl| seconds("ttl", &ttl.value, &mut errors));
    let params = Params::of(function);
    let tags = args
        .tags
        .map(|tags| tags.value)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|literal| match parse_tag(KIND, literal, &params) {
            Ok(tag) => Some(tag),
            Err(error) => {
                errors.push(error);
                None
            }
        })
        .collect();
    if matches!(sig.output, ReturnType::Default) {
        errors.push(syn::Error::new_spanned(
            sig,
            "#[cached_get_many] needs a return type holding the rows: `Vec<S>` (with `key_field`), `Vec<Option<S>>`, `HashMap<K, S>`, or a `Result` of one",
        ));
    }
    let output = match (shape.and_then(Shape::future_output), &sig.output) {
        (Some(output), _) => output.clone(),
        (None, ReturnType::Type(_, ty)) => (**ty).clone(),
        (None, ReturnType::Default) => syn::parse_quote!(()),
    };
    if shape::has_impl_trait(&output) {
        errors.push(syn::Error::new_spanned(
            &output,
            "#[cached_get_many] needs the return type written out (`impl Trait` hides how its rows meet the ids)",
        ));
    }
    let krate = match args.krate {
        Some(krate) => krate.value.to_token_stream(),
        None => quote!(::cache_core),
    };
    errors.finish()?;
    match (prefix, ids, schema) {
        (Some(prefix), Some((ids, ids_mut, holding, keys_literal)), Some(schema)) => Ok(Checked {
            prefix,
            ids,
            ids_mut,
            holding,
            keys_literal,
            schema,
            key_field,
            ttl_secs,
            tags,
            cache: args.cache.map(|cache| cache.value),
            krate,
            output,
        }),
        // Each is reported above whenever missing.
        _ => Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            "invalid arguments",
        )),
    }
}

/// The parameter `keys` names, and how it holds the ids; an error at the literal when it
/// names none, or one that holds no list of ids.
fn ids_parameter(
    keys: &Arg<LitStr>,
    function: &ItemFn,
) -> syn::Result<(Ident, bool, Holding, LitStr)> {
    let literal = &keys.value;
    let name = literal.value();
    let parameter = function.sig.inputs.iter().find_map(|input| match input {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(pat)
                if syn::ext::IdentExt::unraw(&pat.ident) == name.trim_start_matches("r#") =>
            {
                Some((pat, &*typed.ty))
            }
            _ => None,
        },
        FnArg::Receiver(_) => None,
    });
    let Some((pat, ty)) = parameter else {
        return Err(syn::Error::new_spanned(
            literal,
            format!("`keys` names the parameter holding the ids (`keys = \"ids\"` for `ids: &[i64]`); this function has no parameter `{name}`"),
        ));
    };
    let holding = match ty {
        Type::Reference(reference) if reference.mutability.is_none() => match &*reference.elem {
            Type::Slice(_) => Some(Holding::Slice),
            elem if is_vec(elem) => Some(Holding::VecRef),
            _ => None,
        },
        ty if is_vec(ty) => Some(Holding::Vec),
        _ => None,
    };
    let Some(holding) = holding else {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "`{name}` holds the ids of a batch read, so it must be a slice `&[K]`, a `&Vec<K>` or a `Vec<K>`, not `{}`: each id keys one entry",
                refuse::text(ty)
            ),
        ));
    };
    Ok((
        pat.ident.clone(),
        pat.mutability.is_some(),
        holding,
        literal.clone(),
    ))
}

fn is_vec(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none()
        && path.path.segments.last().is_some_and(|last| last.ident == "Vec"
            && matches!(last.arguments, syn::PathArguments::AngleBracketed(_))))
}

/// `key_field = "id"`: a field name (or a tuple struct's index).
fn field_member(arg: &Arg<LitStr>) -> syn::Result<Member> {
    let text = arg.value.value();
    let member = if let Ok(index) = text.parse::<u32>() {
        Some(Member::Unnamed(syn::Index {
            index,
            span: arg.value.span(),
        }))
    } else {
        syn::parse_str::<Ident>(&text).ok().map(|mut ident| {
            ident.set_span(arg.value.span());
            Member::Named(ident)
        })
    };
    member.ok_or_else(|| {
        syn::Error::new_spanned(
            &arg.value,
            "`key_field` names the field of the schema that holds a row's id, such as `key_field = \"id\"`",
        )
    })
}

fn rewrite(checked: &Checked, function: &ItemFn, shape: &Shape<'_>) -> TokenStream {
    let krate = &checked.krate;
    let prefix = &checked.prefix;
    let schema = &checked.schema;
    let output = &checked.output;
    let ttl = optional_u64(checked.ttl_secs);
    let tagged = !checked.tags.is_empty();
    let (handle_ref, handle) = handle(checked.cache.as_ref(), krate);
    let (schema_codec, _) = adapters(krate, schema, output, false);
    let tags = get_tags(krate, &checked.tags, schema);
    let ids = &checked.ids;
    let keys_span = checked.keys_literal.span();
    let krate_at_keys = respan(krate, keys_span);
    // The parameter named at `keys`, so that an id type without `Display` is reported there.
    let ids_at_keys = Ident::new(&ids.to_string(), keys_span);
    let ids_check = quote_spanned! {keys_span=>
        // `[..]` makes a slice of any of the three forms; on a slice it is a no-op.
        #[allow(clippy::redundant_slicing)]
        let __cache_ids = #krate_at_keys::__private::ids_of(&#ids_at_keys[..]);
    };
    // The check that the rows say which id they answer, at the return type (or at
    // `key_field`, which only a `Vec<S>` takes), and the reader of a row's id.
    let krate_at_output = respan(krate, output.span());
    let (rows_check, key_field) = match &checked.key_field {
        Some((literal, member)) => {
            let krate_at_field = respan(krate, literal.span());
            (
                quote_spanned! {output.span()=>
                    #krate_at_output::__private::rows_by_field::<_, #schema, #output>(&__cache_ids);
                },
                quote_spanned! {literal.span()=>
                    ::core::option::Option::Some(
                        (|__cache_row: &#schema| -> ::std::string::String {
                            #krate_at_field::__private::key_text(&__cache_row.#member)
                        }) as fn(&#schema) -> ::std::string::String,
                    )
                },
            )
        }
        None => (
            quote_spanned! {output.span()=>
                #krate_at_output::__private::rows_by_ids::<_, #schema, #output>(&__cache_ids);
            },
            quote!(::core::option::Option::None),
        ),
    };
    let body = shape.body(function);
    let statements = body.statements;
    let pin_type = quote_spanned! {output.span()=>
        #[allow(
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::needless_return
        )]
        if false {
            let __cache_fake_return: #output = loop {};
            return __cache_fake_return;
        }
    };
    let mutability = checked.ids_mut.then(|| quote!(mut));
    let misses = match checked.holding {
        Holding::Slice => quote!(&__cache_missing[..]),
        Holding::VecRef => quote!(&__cache_missing),
        Holding::Vec => quote!(__cache_missing),
    };
    // The ids that missed, bound to the parameter's name for the body; the closure is
    // written in the call, where `get_many`'s bound gives its parameter's type.
    let loader = quote! {
        move |__cache_missing: ::std::vec::Vec<_>| async move {
            #[allow(unused_mut)]
            let #mutability #ids = #misses;
            #pin_type
            #(#statements)*
        }
    };
    // At the return type: a type that is no batch is reported there (as by `rows_by_ids`).
    let call = quote_spanned! {output.span()=>
        ::std::boxed::Box::pin(#krate_at_output::__private::get_many(
            __cache_handle, &__CACHE_SPEC, __cache_ids, __cache_schema, #key_field, __cache_tags,
            #loader,
        )).await
    };
    let rewritten = quote! {
        static __CACHE_SPEC: #krate::__private::Spec = #krate::__private::Spec {
            prefix: #prefix,
            ttl_secs: #ttl,
            none_ttl_secs: ::core::option::Option::None,
            tagged: #tagged,
            resilience: #krate::__private::Resilience::DEFAULT,
            learned: #krate::__private::Learned::new(),
        };
        #handle_ref
        let _ = __cache_handle_ref;
        #ids_check
        #rows_check
        let __cache_schema = #schema_codec;
        let __cache_handle: ::core::option::Option<#krate::Cache> = #handle;
        let __cache_tags = #tags;
        #call
    };
    let attrs = shape::outer_attrs(function);
    let inner_attrs = &body.inner_attrs;
    let vis = &function.vis;
    let sig = &function.sig;
    let block = shape.wrap(rewritten);
    quote! {
        #(#attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #block
        }
    }
}
