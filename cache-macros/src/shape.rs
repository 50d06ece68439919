//! Which shape of function the attribute is on, and where its asynchronous body is.
//!
//! Three shapes carry an `async` body the macros can wrap:
//!
//! - an `async fn` (free, in an `impl`, native in a trait or a trait's default method);
//! - a method rewritten by `#[async_trait]`, which expands before the attributes of the
//!   methods it holds: `fn m(..) -> Pin<Box<dyn Future<Output = R> + Send + '_>>` whose body
//!   is `Box::pin(async move { … })`, recognised as tracing's `#[instrument]` does;
//! - a `fn m(..) -> impl Future<Output = R> + Send` whose body ends with an `async` block,
//!   the way a trait method promises `Send`.
//!
//! In the last two the function itself runs nothing of ours: the cache's work goes inside
//! the `async` block, where the parameters are already captured.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{
    Attribute, Expr, ExprAsync, GenericArgument, ItemFn, PathArguments, ReturnType, Stmt, Type,
    TypeParamBound,
};

/// Where the function's asynchronous body is.
pub(crate) enum Shape<'a> {
    /// `async fn`: the body is the function's block.
    AsyncFn,
    /// A function returning a future made by an `async` block: the statements before it run
    /// when the function is called; `boxed` is the `Box::pin` call around it, if any.
    FutureBlock {
        before: &'a [Stmt],
        boxed: Option<&'a Expr>,
        block: &'a ExprAsync,
        /// `R` of the returned `Future<Output = R>` (boxed: a type is large, and this shape
        /// is the rarer one).
        output: Box<Type>,
    },
}

/// The asynchronous body: its statements, and its inner attributes (`#![allow(…)]`), which
/// syn keeps with the function's outer ones.
pub(crate) struct Body<'a> {
    pub(crate) statements: &'a [Stmt],
    pub(crate) inner_attrs: Vec<&'a Attribute>,
}

impl<'a> Shape<'a> {
    /// The shape of `function`, or `None` when it has no asynchronous body to wrap.
    pub(crate) fn of(function: &'a ItemFn) -> Option<Shape<'a>> {
        if function.sig.asyncness.is_some() {
            return Some(Shape::AsyncFn);
        }
        let ReturnType::Type(_, returned) = &function.sig.output else {
            return None;
        };
        let output = future_output(returned)?;
        let (last, before) = function.block.stmts.split_last()?;
        let Stmt::Expr(last, None) = last else {
            return None;
        };
        let (boxed, block) = match last {
            Expr::Async(block) => (None, block),
            Expr::Call(call) if is_box_pin(&call.func) && call.args.len() == 1 => {
                match &call.args[0] {
                    Expr::Async(block) => (Some(&*call.func), block),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(Shape::FutureBlock {
            before,
            boxed,
            block,
            output: Box::new(output),
        })
    }

    /// The type the caller gets once the future is awaited, as written; `None` for an
    /// `async fn` (its declared return type, which the caller knows).
    pub(crate) fn future_output(&self) -> Option<&Type> {
        match self {
            Shape::AsyncFn => None,
            Shape::FutureBlock { output, .. } => Some(output),
        }
    }

    pub(crate) fn body(&self, function: &'a ItemFn) -> Body<'a> {
        let inner_attrs = function
            .attrs
            .iter()
            .filter(|attr| matches!(attr.style, syn::AttrStyle::Inner(_)))
            .collect();
        let statements = match self {
            Shape::AsyncFn => &function.block.stmts,
            Shape::FutureBlock { block, .. } => &block.block.stmts,
        };
        Body {
            statements,
            inner_attrs,
        }
    }

    /// The function's block with `rewritten` as its asynchronous body: as is for an
    /// `async fn`; in place of the `async` block's statements otherwise.
    pub(crate) fn wrap(&self, rewritten: TokenStream) -> TokenStream {
        match self {
            Shape::AsyncFn => rewritten,
            Shape::FutureBlock {
                before,
                boxed,
                block,
                ..
            } => {
                let ExprAsync {
                    attrs,
                    async_token,
                    capture,
                    ..
                } = block;
                let future = quote::quote!(#(#attrs)* #async_token #capture { #rewritten });
                let future = match boxed {
                    Some(pin) => quote::quote!(#pin(#future)),
                    None => future,
                };
                quote::quote!(#(#before)* #future)
            }
        }
    }
}

/// Why a function that is not `async` has no shape the macros can wrap, when a likely cause
/// is visible: an `#[async_trait]` body that another attribute rewrote first.
pub(crate) fn hint(function: &ItemFn) -> Option<&'static str> {
    let Some(Stmt::Expr(Expr::Call(call), None)) = function.block.stmts.last() else {
        return None;
    };
    (is_box_pin(&call.func) && !matches!(call.args.first(), Some(Expr::Async(_)))).then_some(
        "; the body is `Box::pin(…)` of something other than an `async` block: if another attribute (`#[instrument]`, …) rewrote this `#[async_trait]` method first, put this one above it",
    )
}

/// The function's attributes outside its body (doc comments, `#[allow]`, `#[instrument]`, …).
pub(crate) fn outer_attrs(function: &ItemFn) -> impl Iterator<Item = &Attribute> {
    function
        .attrs
        .iter()
        .filter(|attr| matches!(attr.style, syn::AttrStyle::Outer))
}

/// `Box::pin`, however the path is written (`Box::pin`, `::std::boxed::Box::pin`, …).
fn is_box_pin(func: &Expr) -> bool {
    let Expr::Path(path) = func else {
        return false;
    };
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    segments.ends_with(&["Box".to_owned(), "pin".to_owned()])
}

/// `R` in a return type naming `Future<Output = R>`: `impl Future<Output = R> + Send`,
/// `Pin<Box<dyn Future<Output = R> + Send + 'a>>` (async-trait's), and the like.
fn future_output(returned: &Type) -> Option<Type> {
    match returned {
        Type::Paren(paren) => future_output(&paren.elem),
        Type::Group(group) => future_output(&group.elem),
        Type::ImplTrait(bounds) => bounds_output(bounds.bounds.iter()),
        Type::TraitObject(bounds) => bounds_output(bounds.bounds.iter()),
        Type::Path(path) => path.path.segments.iter().find_map(|segment| {
            let PathArguments::AngleBracketed(arguments) = &segment.arguments else {
                return None;
            };
            arguments.args.iter().find_map(|argument| match argument {
                GenericArgument::AssocType(assoc)
                    if segment.ident == "Future" && assoc.ident == "Output" =>
                {
                    Some(assoc.ty.clone())
                }
                GenericArgument::Type(inner) => future_output(inner),
                _ => None,
            })
        }),
        _ => None,
    }
}

fn bounds_output<'a>(mut bounds: impl Iterator<Item = &'a TypeParamBound>) -> Option<Type> {
    bounds.find_map(|bound| match bound {
        TypeParamBound::Trait(bound) => future_output(&Type::Path(syn::TypePath {
            qself: None,
            path: bound.path.clone(),
        })),
        _ => None,
    })
}

/// Whether a type hides what it is behind `impl Trait` somewhere.
pub(crate) fn has_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}
