//! Rewriting the function: the signature, attributes and body stay as written; the body
//! becomes an `async move` block handed to the runtime in `::cache_core::__private`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::ItemFn;

use crate::args::{CacheArgs, MacroKind};
use crate::valid::{self, Checked, Tag, TagPart};

/// Entry point of all three macros. On any error the function is emitted unchanged next to
/// the errors, so the user sees the mistakes in the attribute and nothing else.
pub(crate) fn attribute(kind: MacroKind, args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new_spanned(
                &item,
                format!("#[{}] goes on an `async fn` with a body", kind.name()),
            );
            return with_item(error, item);
        }
    };
    let expanded = syn::parse2::<CacheArgs>(args)
        .and_then(|args| valid::check(kind, args, &function))
        .map(|checked| expand(kind, &checked, &function));
    match expanded {
        Ok(tokens) => tokens,
        Err(error) => with_item(error, item),
    }
}

fn with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #item)
}

fn expand(kind: MacroKind, checked: &Checked, function: &ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let output = &checked.output;
    let prefix = &checked.prefix;
    let ttl = optional_u64(checked.ttl_secs);
    let none_ttl = optional_u64(checked.none_ttl_secs);
    let tagged = !checked.tags.is_empty();
    // The handle is borrowed for the key and the near cache (a near hit clones nothing) and
    // cloned only for the call's future; the borrow ends before the body's future takes
    // the function's parameters (`&mut self` included).
    let (handle_ref, handle) = match &checked.cache {
        // The expression may be a `Cache`, a reference, an `Arc` or a `LazyLock`: deref
        // coercion to `&Cache` accepts all of them, and errors point at the expression.
        Some(cache) => (
            quote_spanned! {cache.span()=>
                let __cache_ref: &::cache_core::Cache = &(#cache);
                let __cache_handle_ref: ::core::option::Option<&::cache_core::Cache> =
                    ::core::option::Option::Some(__cache_ref);
            },
            quote! {
                ::core::option::Option::map(__cache_handle_ref, ::core::clone::Clone::clone)
            },
        ),
        None => (
            quote! {
                let __cache_installed: ::core::option::Option<::cache_core::Cache> =
                    ::cache_core::__private::installed();
                let __cache_handle_ref: ::core::option::Option<&::cache_core::Cache> =
                    ::core::option::Option::as_ref(&__cache_installed);
            },
            quote!(__cache_installed),
        ),
    };
    let key_ident = &checked.key.ident;
    let key = if checked.key.optional {
        quote! {
            match &#key_ident {
                ::core::option::Option::Some(__cache_key_value) => ::cache_core::__private::entry_key(
                    __cache_handle_ref, &__CACHE_SPEC, __cache_key_value,
                ),
                ::core::option::Option::None => ::core::option::Option::None,
            }
        }
    } else {
        quote!(::cache_core::__private::entry_key(__cache_handle_ref, &__CACHE_SPEC, &#key_ident))
    };
    // Pins the block's type to the declared return type before anything else in it is
    // checked, so `?` and type errors in the user's code read as they would without us.
    // The body's statements are spliced in, not its block: a block as the last expression
    // would trip `unused_braces` on a one-line body (`{ Some(x) }`), pointing at user code.
    let statements = &block.stmts;
    let body = quote_spanned! {output.span()=>
        async move {
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
            #(#statements)*
        }
    };
    let prologue = quote! {
        static __CACHE_SPEC: ::cache_core::__private::Spec =
            ::cache_core::__private::Spec {
                prefix: #prefix,
                ttl_secs: #ttl,
                none_ttl_secs: #none_ttl,
                tagged: #tagged,
                learned: ::cache_core::__private::Learned::new(),
            };
        #handle_ref
        let __cache_key: ::core::option::Option<::std::string::String> = #key;
    };
    let rewritten = match (kind, &checked.schema) {
        (MacroKind::Get, Some(schema)) => {
            let (schema_codec, output_adapter) = adapters(schema, output, checked.cache_none);
            let tags = get_tags(&checked.tags, schema);
            quote! {
                #prologue
                let __cache_schema = #schema_codec;
                let __cache_adapter = #output_adapter;
                if let ::core::option::Option::Some(__cache_hit) = ::cache_core::__private::near_hit(
                    __cache_handle_ref, ::core::option::Option::as_deref(&__cache_key),
                    &__cache_schema, &__cache_adapter,
                ) {
                    return __cache_hit;
                }
                let __cache_handle: ::core::option::Option<::cache_core::Cache> = #handle;
                let __cache_tags = #tags;
                // Boxed: the Redis path's future (about 4 KB, most of it redis-rs' send
                // future) would otherwise be part of this function's future, created and
                // moved by every call, near hits included.
                ::std::boxed::Box::pin(::cache_core::__private::get_or_fill(
                    __cache_handle, &__CACHE_SPEC, __cache_key, __cache_schema, __cache_adapter,
                    __cache_tags, #body,
                )).await
            }
        }
        _ => {
            let tags = checked.tags.iter().map(render_tag);
            let after_success = match (&checked.schema, &checked.version) {
                (Some(schema), Some(version)) => {
                    let (schema_codec, output_adapter) = adapters(schema, output, false);
                    quote! {
                        ::cache_core::__private::write_through(
                            __cache_handle, &__CACHE_SPEC, __cache_key, __cache_tags,
                            #schema_codec, #output_adapter, #version, &__cache_output,
                        ).await;
                    }
                }
                _ => quote! {
                    ::cache_core::__private::invalidate(__cache_handle, __cache_key, __cache_tags).await;
                },
            };
            quote! {
                #prologue
                let __cache_handle: ::core::option::Option<::cache_core::Cache> = #handle;
                let __cache_tags: ::std::vec::Vec<::std::string::String> = ::std::vec![#(#tags),*];
                let __cache_output: #output = #body.await;
                #[allow(unused_imports)]
                use ::cache_core::__private::{AnyOutcome as _, ResultOutcome as _};
                if !(&::cache_core::__private::Outcome(&__cache_output)).is_failure() {
                    #after_success
                }
                __cache_output
            }
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #rewritten
        }
    }
}

/// The schema's codec and the return type's adapters. The two constructors carry the type
/// checks: a schema without serde is reported at the schema, a return type that does not
/// carry it at the return type, once each.
fn adapters(
    schema: &syn::Type,
    output: &syn::Type,
    cache_none: bool,
) -> (TokenStream, TokenStream) {
    let schema_codec = quote_spanned! {schema.span()=>
        ::cache_core::__private::schema::<#schema>().with_near({
            // Autoref specialization: `Some` when the schema can live in the near cache.
            #[allow(unused_imports)]
            use ::cache_core::__private::{NearCapable as _, NearIncapable as _};
            (&&::cache_core::__private::NearProbe::<#schema>::NEW).near_ops()
        })
    };
    let output_adapter = if cache_none {
        quote_spanned! {output.span()=>
            ::cache_core::__private::output_caching_absence::<#schema, #output>()
        }
    } else {
        quote_spanned! {output.span()=>
            ::cache_core::__private::output::<#schema, #output>()
        }
    };
    (schema_codec, output_adapter)
}

fn optional_u64(value: Option<u64>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

/// A `format!` of one tag template. Parameters are borrowed where they are (before the body
/// takes them); fields are read from `__cache_value`, with the tag literal's span so that a
/// field that does not exist is reported on the tag.
fn render_tag(tag: &Tag) -> TokenStream {
    let mut template = String::new();
    let mut values = Vec::new();
    for part in &tag.parts {
        match part {
            TagPart::Text(text) => template.push_str(text),
            TagPart::Param(param) => {
                template.push_str("{}");
                values.push(quote!(#param));
            }
            TagPart::Field(field) => {
                template.push_str("{}");
                values.push(quote_spanned!(tag.literal.span()=> __cache_value.#field));
            }
        }
    }
    quote!(::std::format!(#template #(, #values)*))
}

/// `cached_get`'s tags: those made of parameters only are rendered before the call; those
/// naming fields of the value are rendered from it, with their parameters rendered before
/// the call too (the body may take ownership of them).
fn get_tags(tags: &[Tag], schema: &syn::Type) -> TokenStream {
    let (from_value, from_parameters): (Vec<&Tag>, Vec<&Tag>) = tags.iter().partition(|tag| {
        tag.parts
            .iter()
            .any(|part| matches!(part, TagPart::Field(_)))
    });
    let from_parameters = from_parameters.into_iter().map(render_tag);
    let captured: Vec<TokenStream> = from_value
        .iter()
        .flat_map(|tag| &tag.parts)
        .filter_map(|part| match part {
            TagPart::Param(param) => Some(quote! {
                let #param = ::std::string::ToString::to_string(&#param);
            }),
            _ => None,
        })
        .collect();
    let from_value = from_value.into_iter().map(render_tag);
    quote! {
        ::cache_core::__private::Tags {
            from_parameters: ::std::vec![#(#from_parameters),*],
            from_value: {
                #(#captured)*
                move |__cache_value: &#schema| -> ::std::vec::Vec<::std::string::String> {
                    ::std::vec![#(#from_value),*]
                }
            },
        }
    }
}
