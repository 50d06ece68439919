//! The function as a loader that can run after the call returned (`refresh_after`,
//! `soft_timeout`): a closure that owns copies of the receiver (`Clone`) and of every
//! parameter (an owned parameter is cloned, a borrowed one copied into its owned type), and
//! makes the body's future from them. The body is the function's own statements with `self`
//! renamed, since a closure cannot take `self`: the approach of async-trait, which does the
//! same for the futures it boxes.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, Type};

/// The name `self` becomes in the loader's body.
const THIS: &str = "__cache_this";

/// Whether `function` can be detached: named parameters, no `&mut self`.
pub(crate) fn check(function: &ItemFn, asked_at: Span) -> syn::Result<()> {
    for input in &function.sig.inputs {
        match input {
            FnArg::Receiver(receiver)
                if receiver.mutability.is_some() && receiver.reference.is_some() =>
            {
                return Err(syn::Error::new(
                    asked_at,
                    "`refresh_after` and `soft_timeout` run the function again in the background, on a copy of `self`: a `&mut self` method cannot be copied (take `&self`)",
                ));
            }
            FnArg::Typed(typed) if matches!(&*typed.ty, Type::Reference(reference) if reference.mutability.is_some()) =>
            {
                return Err(syn::Error::new_spanned(
                    &typed.ty,
                    "`refresh_after` and `soft_timeout` run the function again in the background, on copies of its parameters: a `&mut` parameter cannot be copied",
                ));
            }
            FnArg::Typed(typed) if !matches!(&*typed.pat, Pat::Ident(_)) => {
                return Err(syn::Error::new_spanned(
                    &typed.pat,
                    "`refresh_after` and `soft_timeout` copy each parameter for the background load: give this one a name (`path: Path<i64>`, then `path.0` in the body)",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `move || async move { … }` over copies made now; `statements` are the body's.
pub(crate) fn loader(
    krate: &TokenStream,
    function: &ItemFn,
    statements: TokenStream,
    span: Span,
) -> TokenStream {
    let mut copies = Vec::new();
    let mut rebinds = Vec::new();
    let this = format_ident!("{}", THIS);
    for (index, input) in function.sig.inputs.iter().enumerate() {
        let copy = format_ident!("__cache_copy{}", index);
        match input {
            FnArg::Receiver(receiver) => {
                let by_reference = receiver.reference.is_some();
                copies.push(if by_reference {
                    quote_spanned!(span=> let #copy = #krate::__private::Detachable::detached(self);)
                } else {
                    quote_spanned!(span=> let #copy = #krate::__private::Detachable::detached(&self);)
                });
                let mutability = receiver.mutability;
                rebinds.push(if by_reference {
                    quote!(let #this = &#copy;)
                } else {
                    quote!(let #mutability #this = #copy;)
                });
            }
            FnArg::Typed(typed) => {
                let Pat::Ident(pat) = &*typed.pat else {
                    continue; // refused by `check`
                };
                let name = &pat.ident;
                match &*typed.ty {
                    Type::Reference(reference) => {
                        let target = &reference.elem;
                        copies.push(quote_spanned! {typed.ty.span()=>
                            let #copy = #krate::__private::DetachableRef::detached_ref(#name);
                        });
                        rebinds.push(quote! {
                            let #pat: &#target = ::std::borrow::Borrow::borrow(&#copy);
                        });
                    }
                    ty => {
                        copies.push(quote_spanned! {ty.span()=>
                            let #copy: #ty = #krate::__private::Detachable::detached(&#name);
                        });
                        rebinds.push(quote!(let #pat = #copy;));
                    }
                }
            }
        }
    }
    let statements = rename_self(statements);
    quote! {
        {
            #(#copies)*
            move || async move {
                #(#rebinds)*
                #statements
            }
        }
    }
}

/// `self` as an expression becomes [`THIS`] (`self::path` stays a path).
fn rename_self(tokens: TokenStream) -> TokenStream {
    let mut out = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Ident(ident) if ident == "self" => {
                let is_path = matches!(tokens.peek(), Some(TokenTree::Punct(punct)) if punct.as_char() == ':');
                if is_path {
                    out.push(TokenTree::Ident(ident));
                } else {
                    out.push(TokenTree::Ident(proc_macro2::Ident::new(
                        THIS,
                        ident.span(),
                    )));
                }
            }
            TokenTree::Group(group) => {
                let mut renamed = Group::new(group.delimiter(), rename_self(group.stream()));
                renamed.set_span(group.span());
                out.push(TokenTree::Group(renamed));
            }
            other => out.push(other),
        }
    }
    out.into_iter().collect()
}
