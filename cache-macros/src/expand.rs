//! Rewriting the function: the signature, attributes and body stay as written; the body
//! becomes an `async move` block handed to the runtime in `::cache_core::__private`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::ItemFn;

use crate::args::{CacheArgs, MacroKind};
use crate::shape::{self, Shape};
use crate::valid::{self, Checked, Template, TemplatePart};

/// Entry point of all three macros. On any error the function is emitted unchanged next to
/// the errors, so the user sees the mistakes in the attribute and nothing else.
pub(crate) fn attribute(kind: MacroKind, args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = misplaced(kind, &item);
            return with_item(error, item);
        }
    };
    let shape = Shape::of(&function);
    if kind == MacroKind::GetMany {
        let expanded = syn::parse2::<CacheArgs>(args)
            .and_then(|args| crate::many::expand(args, &function, shape.as_ref()));
        return match expanded {
            Ok(tokens) => tokens,
            Err(error) => with_item(error, item),
        };
    }
    let expanded = syn::parse2::<CacheArgs>(args)
        .and_then(|args| valid::check(kind, args, &function, shape.as_ref()))
        .map(|checked| {
            // `check` refuses a function without a shape.
            let shape = shape.as_ref().expect("checked");
            expand(kind, &checked, &function, shape)
        });
    match expanded {
        Ok(tokens) => tokens,
        Err(error) => with_item(error, item),
    }
}

/// What to write instead, for an attribute on something that is not a function with a body,
/// at the token that shows it.
fn misplaced(kind: MacroKind, item: &TokenStream) -> syn::Error {
    let name = kind.name();
    if let Ok(block) = syn::parse2::<syn::ItemImpl>(item.clone()) {
        return syn::Error::new_spanned(block.impl_token, on_block(name));
    }
    if let Ok(block) = syn::parse2::<syn::ItemTrait>(item.clone()) {
        return syn::Error::new_spanned(block.trait_token, on_block(name));
    }
    if let Ok(method) = syn::parse2::<syn::TraitItemFn>(item.clone()) {
        return syn::Error::new_spanned(
            method.sig,
            format!("#[{name}] goes on a method with a body: on the method in each `impl`, or on a default method"),
        );
    }
    syn::Error::new_spanned(item, format!("#[{name}] goes on an `async fn` with a body"))
}

fn on_block(name: &str) -> String {
    format!("#[{name}] goes on each method to cache, not on the `impl` or `trait` (`#[async_trait]` stays where it is, on the `impl` or `trait`)")
}

fn with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #item)
}

fn expand(kind: MacroKind, checked: &Checked, function: &ItemFn, shape: &Shape<'_>) -> TokenStream {
    let krate = &checked.krate;
    let output = &checked.output;
    let prefix = &checked.prefix;
    let ttl = optional_u64(checked.ttl_secs);
    let none_ttl = optional_u64(checked.none_ttl_secs);
    let tagged = !checked.tags.is_empty();
    let resilience = {
        let fail_safe = optional_u64(checked.fail_safe_ms);
        let throttle = optional_u64(checked.fail_safe_throttle_ms);
        let hard_timeout = optional_u64(checked.hard_timeout_ms);
        let soft_timeout = optional_u64(checked.soft_timeout_ms);
        let refresh_after = match checked.refresh_after {
            Some(fraction) => quote!(::core::option::Option::Some(#fraction)),
            None => quote!(::core::option::Option::None),
        };
        quote! {
            #krate::__private::Resilience {
                fail_safe_ms: #fail_safe,
                fail_safe_throttle_ms: #throttle,
                hard_timeout_ms: #hard_timeout,
                soft_timeout_ms: #soft_timeout,
                refresh_after: #refresh_after,
            }
        }
    };
    let (handle_ref, handle) = handle(checked.cache.as_ref(), krate);
    let key = key(&checked.key, krate);
    // Pins the block's type to the declared return type before anything else in it is
    // checked, so `?` and type errors in the user's code read as they would without us (not
    // possible when the type is `impl Trait`, which cannot be named here).
    // The body's statements are spliced in, not its block: a block as the last expression
    // would trip `unused_braces` on a one-line body (`{ Some(x) }`), pointing at user code.
    let async_body = shape.body(function);
    let statements = async_body.statements;
    let pin_type = (!checked.output_opaque).then(|| {
        quote_spanned! {output.span()=>
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
        }
    });
    let body = quote_spanned! {output.span()=>
        async move {
            #pin_type
            #(#statements)*
        }
    };
    let prologue = quote! {
        static __CACHE_SPEC: #krate::__private::Spec =
            #krate::__private::Spec {
                prefix: #prefix,
                ttl_secs: #ttl,
                none_ttl_secs: #none_ttl,
                tagged: #tagged,
                resilience: #resilience,
                learned: #krate::__private::Learned::new(),
            };
        #handle_ref
        let __cache_key: ::core::option::Option<::std::string::String> = #key;
    };
    let rewritten = match (kind, &checked.schema) {
        (MacroKind::Get, Some(schema)) => {
            let (schema_codec, mut output_adapter) =
                adapters(krate, schema, output, checked.cache_none);
            if let Some(span) = checked.hard_timeout_span {
                // The user's conversion, checked at the argument: a return type that is not a
                // `Result` whose error converts from `LoadTimeout` is an error there.
                output_adapter = quote_spanned! {span=>
                    #output_adapter.on_timeout(
                        |__cache_timeout: #krate::LoadTimeout| -> #output {
                            ::core::result::Result::Err(
                                #krate::__private::TimeoutError::timed_out(__cache_timeout),
                            )
                        }
                    )
                };
            }
            let tags = get_tags(krate, &checked.tags, schema);
            let call = match checked.detached {
                Some(span) => {
                    let loader = crate::detach::loader(
                        krate,
                        function,
                        quote!(#pin_type #(#statements)*),
                        span,
                    );
                    quote! {
                        let __cache_loader = #loader;
                        ::std::boxed::Box::pin(#krate::__private::get_or_fill_detached(
                            __cache_handle, &__CACHE_SPEC, __cache_key, __cache_schema,
                            __cache_adapter, __cache_tags, __cache_loader,
                        )).await
                    }
                }
                None => quote! {
                    ::std::boxed::Box::pin(#krate::__private::get_or_fill(
                        __cache_handle, &__CACHE_SPEC, __cache_key, __cache_schema,
                        __cache_adapter, __cache_tags, #body,
                    )).await
                },
            };
            quote! {
                #prologue
                let __cache_schema = #schema_codec;
                let __cache_adapter = #output_adapter;
                if let ::core::option::Option::Some(__cache_hit) = #krate::__private::near_hit(
                    __cache_handle_ref, &__CACHE_SPEC, ::core::option::Option::as_deref(&__cache_key),
                    &__cache_schema, &__cache_adapter,
                ) {
                    return __cache_hit;
                }
                let __cache_handle: ::core::option::Option<#krate::Cache> = #handle;
                let __cache_tags = #tags;
                // Boxed: the Redis path's future (about 4 KB, most of it redis-rs' send
                // future) would otherwise be part of this function's future, created and
                // moved by every call, near hits included.
                #call
            }
        }
        _ => {
            let tags = checked
                .tags
                .iter()
                .map(|tag| render_tag(tag, |expr| tag_value(krate, tag, expr)));
            let after_success = match (&checked.schema, &checked.version) {
                (Some(schema), Some(version)) => {
                    let (schema_codec, output_adapter) = adapters(krate, schema, output, false);
                    quote! {
                        #krate::__private::write_through(
                            __cache_handle, &__CACHE_SPEC, __cache_key, __cache_tags,
                            #schema_codec, #output_adapter, #version, &__cache_output,
                        ).await;
                    }
                }
                _ => quote! {
                    #krate::__private::invalidate(__cache_handle, &__CACHE_SPEC, __cache_key, __cache_tags).await;
                },
            };
            let output_type = (!checked.output_opaque).then(|| quote!(: #output));
            quote! {
                #prologue
                let __cache_handle: ::core::option::Option<#krate::Cache> = #handle;
                let __cache_tags: ::std::vec::Vec<::std::string::String> = ::std::vec![#(#tags),*];
                let __cache_output #output_type = #body.await;
                #[allow(unused_imports)]
                use #krate::__private::{AnyOutcome as _, ResultOutcome as _};
                if !(&#krate::__private::Outcome(&__cache_output)).is_failure() {
                    #after_success
                }
                __cache_output
            }
        }
    };
    let attrs = shape::outer_attrs(function);
    let inner_attrs = &async_body.inner_attrs;
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

/// The handle, borrowed for the key and the near cache (a near hit clones nothing), and the
/// expression cloning it for the call's future; the borrow ends before the body's future
/// takes the function's parameters (`&mut self` included).
pub(crate) fn handle(cache: Option<&syn::Expr>, krate: &TokenStream) -> (TokenStream, TokenStream) {
    match cache {
        // The expression may be a `Cache`, a reference, an `Arc` or a `LazyLock`: deref
        // coercion to `&Cache` accepts all of them, and errors point at the expression.
        Some(cache) => (
            quote_spanned! {cache.span()=>
                let __cache_ref: &#krate::Cache = &(#cache);
                let __cache_handle_ref: ::core::option::Option<&#krate::Cache> =
                    ::core::option::Option::Some(__cache_ref);
            },
            quote! {
                ::core::option::Option::map(__cache_handle_ref, ::core::clone::Clone::clone)
            },
        ),
        None => (
            quote! {
                let __cache_installed: ::core::option::Option<#krate::Cache> =
                    #krate::__private::installed(&__CACHE_SPEC);
                let __cache_handle_ref: ::core::option::Option<&#krate::Cache> =
                    ::core::option::Option::as_ref(&__cache_installed);
            },
            quote!(__cache_installed),
        ),
    }
}

/// The entry key: `None` (bypass) when a place holding an `Option` is `None`.
fn key(key: &Template, krate: &TokenStream) -> TokenStream {
    let span = key.literal.span();
    let krate_at_key = respan(krate, span);
    let mut template = String::new();
    let mut values = Vec::new();
    for part in &key.parts {
        match part {
            TemplatePart::Text(text) => template.push_str(text),
            TemplatePart::Param(place) => {
                template.push_str("{}");
                // Autoref specialization: `Option`s give `None` for `None`, other values
                // are taken as they display; `key_value` asks for `Display`, in our words.
                values.push(quote_spanned! {span=>
                    #krate_at_key::__private::key_value((&&#krate::__private::KeyPart(&#place)).key_part())
                });
            }
            // `valid` reads no value fields into keys.
            TemplatePart::Field(_) => {}
        }
    }
    let names: Vec<_> = (0..values.len())
        .map(|index| format_ident!("__cache_key_part{}", index))
        .collect();
    let key_value = if template == "{}" {
        quote!(#(#names)*)
    } else if names.len() == 1 {
        quote!(&::core::format_args!(#template #(, #names)*))
    } else {
        // Parts escaped, so that no two tuples of values make one key (`valid` made sure a
        // `:` separates them).
        quote!(&::core::format_args!(#template #(, #krate::__private::KeySegment(#names))*))
    };
    quote! {
        {
            #[allow(unused_imports)]
            use #krate::__private::{OptionalKey as _, PlainKey as _};
            match (#(#values,)*) {
                (#(::core::option::Option::Some(#names),)*) => #krate::__private::entry_key(
                    __cache_handle_ref, &__CACHE_SPEC, #key_value,
                ),
                #[allow(unreachable_patterns)]
                _ => ::core::option::Option::None,
            }
        }
    }
}

/// The schema's codec and the return type's adapters. The two constructors carry the type
/// checks: a schema without serde is reported at the schema, a return type that does not
/// carry it at the return type, once each.
pub(crate) fn adapters(
    krate: &TokenStream,
    schema: &syn::Type,
    output: &syn::Type,
    cache_none: bool,
) -> (TokenStream, TokenStream) {
    let schema_codec = quote_spanned! {schema.span()=>
        #krate::__private::schema::<#schema>().with_near({
            // Autoref specialization: `Some` when the schema can live in the near cache.
            #[allow(unused_imports)]
            use #krate::__private::{NearCapable as _, NearIncapable as _};
            (&&#krate::__private::NearProbe::<#schema>::NEW).near_ops()
        })
    };
    let output_adapter = if cache_none {
        quote_spanned! {output.span()=>
            #krate::__private::output_caching_absence::<#schema, #output>()
        }
    } else {
        quote_spanned! {output.span()=>
            #krate::__private::output::<#schema, #output>()
        }
    };
    (schema_codec, output_adapter)
}

pub(crate) fn optional_u64(value: Option<u64>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

/// A `format!` of one tag template. Parameters are read where they are (`param` says how:
/// before the body takes them, or from a copy made then); fields are read from
/// `__cache_value`, with the tag literal's span so that a field that does not exist is
/// reported on the tag.
fn render_tag(tag: &Template, mut param: impl FnMut(&TokenStream) -> TokenStream) -> TokenStream {
    let mut template = String::new();
    let mut values = Vec::new();
    for part in &tag.parts {
        match part {
            TemplatePart::Text(text) => template.push_str(text),
            TemplatePart::Param(place) => {
                template.push_str("{}");
                values.push(param(place));
            }
            TemplatePart::Field(members) => {
                template.push_str("{}");
                values.push(quote_spanned!(tag.literal.span()=> __cache_value #members));
            }
        }
    }
    quote!(::std::format!(#template #(, #values)*))
}

/// A parameter read into a tag, through `tag_value`: a value without `Display` is an error
/// at the tag, in the library's words.
fn tag_value(krate: &TokenStream, tag: &Template, place: &TokenStream) -> TokenStream {
    let span = tag.literal.span();
    let krate = respan(krate, span);
    quote_spanned!(span=> #krate::__private::tag_value(&#place))
}

/// `tokens` (a path) with every token at `span`, so that an error about a call of it points
/// at the user's token alone, not at the whole attribute.
pub(crate) fn respan(tokens: &TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

/// `cached_get`'s tags: those made of parameters only are rendered before the call; those
/// naming fields of the value are rendered from it, with their parameters rendered before
/// the call too (the body may take ownership of them).
pub(crate) fn get_tags(krate: &TokenStream, tags: &[Template], schema: &syn::Type) -> TokenStream {
    let (from_value, from_parameters): (Vec<&Template>, Vec<&Template>) =
        tags.iter().partition(|tag| tag.reads_value());
    let from_parameters = from_parameters
        .into_iter()
        .map(|tag| render_tag(tag, |place| tag_value(krate, tag, place)));
    let mut captured = Vec::new();
    let from_value: Vec<TokenStream> = from_value
        .into_iter()
        .map(|tag| {
            render_tag(tag, |place| {
                let name = format_ident!("__cache_tag_param{}", captured.len());
                let value = tag_value(krate, tag, place);
                captured.push(quote! {
                    let #name = ::std::string::ToString::to_string(#value);
                });
                quote!(#name)
            })
        })
        .collect();
    quote! {
        #krate::__private::Tags {
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
