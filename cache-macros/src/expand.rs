//! Rewriting the function: the signature, attributes and body stay as written; the body
//! becomes an `async move` block handed to the runtime in `::cache_core::__private`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::ItemFn;

use crate::args::{CacheArgs, MacroKind};
use crate::valid::{self, Checked};

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
    let ItemFn { attrs, vis, sig, block } = function;
    let output = &checked.output;
    let prefix = &checked.prefix;
    let ttl = match checked.ttl_secs {
        Some(secs) => quote!(::core::option::Option::Some(#secs)),
        None => quote!(::core::option::Option::None),
    };
    let handle = match &checked.cache {
        // The expression may be a `Cache`, a reference, an `Arc` or a `LazyLock`: deref
        // coercion to `&Cache` accepts all of them, and errors point at the expression.
        Some(cache) => quote_spanned! {cache.span()=>
            ::core::option::Option::Some(<::cache_core::Cache as ::core::clone::Clone>::clone({
                let __cache_ref: &::cache_core::Cache = &(#cache);
                __cache_ref
            }))
        },
        None => quote!(::cache_core::__private::installed()),
    };
    let key_ident = &checked.key.ident;
    let key = if checked.key.optional {
        quote! {
            match &#key_ident {
                ::core::option::Option::Some(__cache_key_value) => ::cache_core::__private::entry_key(
                    __cache_handle.as_ref(), &__CACHE_SPEC, __cache_key_value,
                ),
                ::core::option::Option::None => ::core::option::Option::None,
            }
        }
    } else {
        quote!(::cache_core::__private::entry_key(__cache_handle.as_ref(), &__CACHE_SPEC, &#key_ident))
    };
    // Pins the block's type to the declared return type before anything else in it is
    // checked, so `?` and type errors in the user's code read as they would without us.
    let body = quote_spanned! {output.span()=>
        async move {
            #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
            if false {
                let __cache_fake_return: #output = loop {};
                return __cache_fake_return;
            }
            #block
        }
    };
    let prologue = quote! {
        static __CACHE_SPEC: ::cache_core::__private::Spec =
            ::cache_core::__private::Spec { prefix: #prefix, ttl_secs: #ttl };
        let __cache_handle: ::core::option::Option<::cache_core::Cache> = #handle;
        let __cache_key: ::core::option::Option<::std::string::String> = #key;
    };
    let rewritten = match (kind, &checked.schema) {
        (MacroKind::Get, Some(schema)) => {
            let assert_schema = quote_spanned! {schema.span()=>
                let _ = ::cache_core::__private::assert_schema::<#schema>;
            };
            let assert_output = quote_spanned! {output.span()=>
                let _ = ::cache_core::__private::assert_output::<#schema, #output>;
            };
            quote! {
                #assert_schema
                #assert_output
                #prologue
                ::cache_core::__private::get_or_fill::<#schema, #output, _>(
                    __cache_handle, &__CACHE_SPEC, __cache_key, #body,
                ).await
            }
        }
        _ => quote! {
            #prologue
            let __cache_output: #output = #body.await;
            #[allow(unused_imports)]
            use ::cache_core::__private::{AnyOutcome as _, ResultOutcome as _};
            if !(&::cache_core::__private::Outcome(&__cache_output)).is_failure() {
                ::cache_core::__private::invalidate(__cache_handle, __cache_key).await;
            }
            __cache_output
        },
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #rewritten
        }
    }
}
