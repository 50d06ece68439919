//! Refusals read from the types as written, before the compiler sees them: a schema that can
//! never be stored as a hash (a `Vec`, a tuple, an `Option`, a number…), and a key that names
//! a whole list parameter (`&[Uuid]`, `Vec<i64>`). Each is an error at the type or the key,
//! in words that say what to write instead. What the written type does not show (a type
//! alias, a user enum) is left to the runtime, which finds it when the function first runs
//! (`cache-core/src/codec/schema.rs`: the schema's `Deserialize` must ask for a struct).

use syn::ext::IdentExt as _;
use syn::{FnArg, GenericArgument, ItemFn, LitStr, Pat, PathArguments, Type};

/// Why `schema` can never be cached, when its written form shows it.
pub(crate) fn schema(schema: &Type) -> Option<syn::Error> {
    let what = not_a_struct(schema)?;
    Some(syn::Error::new_spanned(
        schema,
        format!(
            "`schema = {}`: {what}; a schema is a struct with named fields, stored as a hash \
             of them (`#[derive(Serialize, Deserialize)] struct …`)",
            text(schema)
        ),
    ))
}

const LIST: &str = "a list is many values, and each is an entry of its own: read them with \
                    `#[cached_get_many(keys = \"ids\", schema = Item, …)]`, whose schema is \
                    the item";

/// What `ty` is, if its written form shows it is not a struct with named fields.
fn not_a_struct(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Paren(inner) => not_a_struct(&inner.elem),
        Type::Group(inner) => not_a_struct(&inner.elem),
        Type::Tuple(tuple) if tuple.elems.is_empty() => Some("`()` has no fields"),
        Type::Tuple(_) => Some("a tuple has no field names"),
        Type::Array(_) | Type::Slice(_) => Some(LIST),
        Type::Reference(_) | Type::Ptr(_) => {
            Some("a reference cannot be read back from the cache (the value is owned)")
        }
        Type::TraitObject(_) | Type::ImplTrait(_) => Some("a trait is not a type with fields"),
        Type::Never(_) => Some("`!` has no values"),
        Type::Path(path) if path.qself.is_none() => {
            let segments = &path.path.segments;
            let last = segments.last()?;
            let name = last.ident.unraw().to_string();
            let generic = !matches!(last.arguments, PathArguments::None);
            let qualified = |prefix: &[&str]| {
                segments.len() == prefix.len() + 1
                    && segments.iter().zip(prefix).all(|(s, p)| s.ident == p)
            };
            match name.as_str() {
                "Vec" | "VecDeque" | "LinkedList" | "HashSet" | "BTreeSet" | "BinaryHeap"
                    if generic =>
                {
                    Some(LIST)
                }
                "HashMap" | "BTreeMap" if generic => {
                    Some("a map's keys are not known at compile time")
                }
                "Option" if generic => Some(
                    "an `Option` is not a struct (write `schema = T` and return `Option<T>`: `None` is not cached, or cached with `cache_none = true`)",
                ),
                "Result" if generic => {
                    Some("a `Result` is not a struct (write `schema = T` and return `Result<T, E>`)")
                }
                "bool" | "char" | "str" | "String" | "i8" | "i16" | "i32" | "i64" | "i128"
                | "isize" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "f32" | "f64"
                    if !generic && segments.len() <= 3 =>
                {
                    Some("a single value has no field names")
                }
                "Value" if qualified(&["serde_json"]) => {
                    Some("a `serde_json::Value` has no fields known at compile time")
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A key that names a whole parameter whose written type is a list (`ids` on `&[Uuid]`):
/// one call is one entry, keyed by one value.
pub(crate) fn list_key(key: &LitStr, function: &ItemFn) -> Option<syn::Error> {
    let written = key.value();
    let names: Vec<&str> = if written.contains('{') {
        written
            .split('{')
            .skip(1)
            .filter_map(|part| part.split_once('}').map(|(name, _)| name.trim()))
            .collect()
    } else {
        vec![written.trim()]
    };
    for name in names {
        if name.contains('.') {
            continue;
        }
        let Some(ty) = parameter_type(function, name) else {
            continue;
        };
        if let Some(list) = list_type(ty) {
            return Some(syn::Error::new_spanned(
                key,
                format!(
                    "`{name}` is a list (`{}`), and one call of `cached_get` caches one entry under \
                     one key: for one entry per id, use `#[cached_get_many(keys = \"{name}\", …)]`, \
                     which reads them all in one round trip and calls the function once with \
                     the misses; or key by a field path that identifies the call \
                     (`key = \"{{req.tenant}}\"`)",
                    text(list)
                ),
            ));
        }
    }
    None
}

/// The written type of the parameter `name`.
fn parameter_type<'a>(function: &'a ItemFn, name: &str) -> Option<&'a Type> {
    function.sig.inputs.iter().find_map(|input| match input {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(pat) if pat.ident.unraw() == name.trim_start_matches("r#") => {
                Some(&*typed.ty)
            }
            _ => None,
        },
        FnArg::Receiver(_) => None,
    })
}

/// `ty` itself, if it is a list behind any references: `&[T]`, `[T; N]`, `Vec<T>`, `&Vec<T>`.
fn list_type(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(reference) => list_type(&reference.elem).map(|_| ty),
        Type::Paren(inner) => list_type(&inner.elem).map(|_| ty),
        Type::Slice(_) | Type::Array(_) => Some(ty),
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            let generic = matches!(&last.arguments, PathArguments::AngleBracketed(args)
                if args.args.iter().any(|arg| matches!(arg, GenericArgument::Type(_))));
            (generic
                && matches!(
                    last.ident.to_string().as_str(),
                    "Vec" | "VecDeque" | "HashSet" | "BTreeSet"
                ))
            .then_some(ty)
        }
        _ => None,
    }
}

pub(crate) fn text(ty: &Type) -> String {
    quote::ToTokens::to_token_stream(ty)
        .to_string()
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace("& ", "&")
        .replace(" :: ", "::")
        .replace(" ,", ",")
        .replace("[ ", "[")
        .replace(" ]", "]")
        .replace(" ;", ";")
}

#[cfg(test)]
mod tests {
    use super::{list_type, not_a_struct};

    #[test]
    fn schemas_refused_by_their_written_form() {
        for refused in [
            "Vec<ProductSummary>",
            "std::vec::Vec<P>",
            "(A, B)",
            "()",
            "[P; 2]",
            "&P",
            "Option<P>",
            "HashMap<String, P>",
            "String",
            "i64",
            "serde_json::Value",
        ] {
            let ty = syn::parse_str(refused).unwrap();
            assert!(not_a_struct(&ty).is_some(), "{refused}");
        }
        for accepted in ["P", "models::P", "Box<P>", "Generic<P>", "Value", "my::Vec"] {
            let ty = syn::parse_str(accepted).unwrap();
            assert!(not_a_struct(&ty).is_none(), "{accepted}");
        }
    }

    #[test]
    fn list_keys_found_behind_references() {
        for list in ["&[Uuid]", "Vec<i64>", "&Vec<i64>", "[u8; 4]", "&&[u8]"] {
            let ty = syn::parse_str(list).unwrap();
            assert!(list_type(&ty).is_some(), "{list}");
        }
        for one in ["Uuid", "&str", "i64", "Option<i64>", "&Request"] {
            let ty = syn::parse_str(one).unwrap();
            assert!(list_type(&ty).is_none(), "{one}");
        }
    }
}
