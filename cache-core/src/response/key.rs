//! What a request is to the response cache: the canonical text its entry is keyed by, and
//! whether it may use the cache at all. (The entry's Redis key is then made from that text
//! by `crate::key`, as for any entry.)
//!
//! Two requests share an entry only if the handler cannot tell them apart, so the key is made
//! from the request *as the handler reads it*, not as it was typed:
//!
//! - the whole path as the client sent it (the framework's adapter hands it over: under
//!   axum's `Router::nest` the request's own URI has lost the prefix, so it is
//!   `OriginalUri`), each segment percent-decoded and encoded again one fixed way (`/users/%31` and `/users/1` are one entry; `/a%2Fb` and `/a/b` are not);
//! - the query's parameters decoded (`%70age` is `page`, `+` is a space), filtered by name,
//!   sorted and encoded again; a name given twice makes the request uncacheable, since
//!   handlers differ in which value they take;
//! - the request headers the answer depends on (`Host` and the `Forwarded` family unless the
//!   route is host-independent, and the `vary` headers), and the user's hashed identity.
//!
//! Every part is encoded so that no separator can appear inside one: the key text is
//! injective in what it is made of. Framework-free: `http` types only.

use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderName};
use http::Uri;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters of RFC 3986 is encoded, `%` included, so that
/// the encoding of decoded bytes is one-to-one.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The request headers that say which site a request is for: a handler that renders links
/// or picks a tenant by host answers each differently.
pub(super) const HOST_HEADERS: [HeaderName; 5] = [
    header::HOST,
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-prefix"),
];

/// What makes the key besides the request itself.
pub(super) struct KeyedBy<'a> {
    /// `None`: every query parameter; else only these (decoded names).
    pub(super) query_params: Option<&'a [String]>,
    /// Request headers whose values are part of the key, in this order.
    pub(super) headers: &'a [HeaderName],
    /// The user's identity, already hashed.
    pub(super) user: Option<&'a str>,
}

/// The canonical key text of a request, or `None` when it must not use the cache (a query
/// parameter given twice, or a path or query that is not UTF-8 once decoded).
pub(super) fn key_text(uri: &Uri, headers: &HeaderMap, keyed_by: &KeyedBy<'_>) -> Option<String> {
    let mut key = String::with_capacity(uri.path().len() + 16);
    for (index, segment) in uri.path().split('/').enumerate() {
        if index > 0 {
            key.push('/');
        }
        let decoded = percent_decode_str(segment).decode_utf8().ok()?;
        key.extend(utf8_percent_encode(&decoded, COMPONENT));
    }
    let mut pairs = query_pairs(uri.query().unwrap_or_default())?;
    if let Some(kept) = keyed_by.query_params {
        pairs.retain(|(name, _)| kept.contains(name));
    }
    pairs.sort_unstable();
    if pairs.windows(2).any(|two| two[0].0 == two[1].0) {
        return None;
    }
    for (index, (name, value)) in pairs.iter().enumerate() {
        key.push(if index == 0 { '?' } else { '&' });
        key.extend(utf8_percent_encode(name, COMPONENT));
        key.push('=');
        key.extend(utf8_percent_encode(value, COMPONENT));
    }
    for name in keyed_by.headers {
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        let _ = write!(key, "\n{name}=");
        for (index, value) in values.enumerate() {
            if index > 0 {
                key.push(',');
            }
            // Header values hold no line breaks; other bytes are kept as they are.
            let text = String::from_utf8_lossy(value.as_bytes());
            if *name == header::HOST {
                key.push_str(&text.to_ascii_lowercase());
            } else {
                key.push_str(&text);
            }
        }
    }
    if let Some(user) = keyed_by.user {
        let _ = write!(key, "\nuser={user}");
    }
    Some(key)
}

/// The query's `name=value` pairs decoded as `application/x-www-form-urlencoded` (as axum's
/// `Query` reads them: `+` is a space, empty pairs are skipped); `None` when one is not
/// UTF-8 once decoded.
pub(super) fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    let decode = |text: &str| -> Option<String> {
        let spaced = text.replace('+', " ");
        percent_decode_str(&spaced)
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Whether the client asked not to be answered from a cache (`Cache-Control: no-cache`,
/// `no-store` or `max-age=0`, or `Pragma: no-cache`): the handler answers, and what it makes
/// is not stored in place of what others are served.
pub(super) fn refuses_stored_answers(headers: &HeaderMap) -> bool {
    let directives = |name: HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|directive| directive.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    directives(header::CACHE_CONTROL)
        .iter()
        .any(|directive| matches!(directive.as_str(), "no-cache" | "no-store" | "max-age=0"))
        || directives(header::PRAGMA)
            .iter()
            .any(|directive| directive == "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::request::Parts;
    use http::Request;
    use proptest::prelude::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn headers(uri: &str, headers: &[(&str, &str)]) -> HeaderMap {
        parts(uri, headers).headers
    }

    fn key(uri: &str) -> Option<String> {
        let everything = KeyedBy {
            query_params: None,
            headers: &[],
            user: None,
        };
        let parts = parts(uri, &[]);
        key_text(&parts.uri, &parts.headers, &everything)
    }

    #[test]
    fn spellings_the_handler_cannot_tell_apart_share_a_key() {
        assert_eq!(key("/users/%31"), key("/users/1"));
        assert_eq!(key("/p?b=2&a=1"), key("/p?a=1&b=2"));
        assert_eq!(key("/p?%70age=9"), key("/p?page=9"));
        assert_eq!(key("/p?q=a+b"), key("/p?q=a%20b"));
        assert_eq!(key("/p?a=1&&"), key("/p?a=1"));
        assert_eq!(key("/p?"), key("/p"));
    }

    #[test]
    fn requests_the_handler_can_tell_apart_do_not() {
        assert_ne!(key("/a%2Fb"), key("/a/b"));
        assert_ne!(key("/p?a=1%262"), key("/p?a=1&2"));
        assert_eq!(key("/p?a=1%3Db"), key("/p?a=1=b"));
        assert_ne!(key("/p?a%3D1=b"), key("/p?a=1=b"));
        assert_ne!(key("/p?q=a%2Bb"), key("/p?q=a+b"));
        assert_ne!(key("/users/1"), key("/users/1/"));
        assert_ne!(key("/p?page=1"), key("/p"));
    }

    #[test]
    fn a_parameter_given_twice_is_not_cached_nor_a_query_that_is_not_utf8() {
        assert_eq!(key("/p?last=10&last=0"), None);
        assert_eq!(key("/p?last=10&%6Cast=0"), None);
        assert_eq!(key("/p?a=%FF"), None);
        assert_eq!(key("/%FF"), None);
    }

    #[test]
    fn only_the_listed_parameters_key_and_may_repeat_the_others() {
        let only_page = ["page".to_owned()];
        let keyed_by = KeyedBy {
            query_params: Some(&only_page),
            headers: &[],
            user: None,
        };
        let of = |uri: &str| {
            let parts = parts(uri, &[]);
            key_text(&parts.uri, &parts.headers, &keyed_by)
        };
        assert_eq!(of("/p?junk=1&junk=2&page=3"), of("/p?page=3"));
        assert_eq!(of("/p?%70age=9"), of("/p?page=9"));
        assert_ne!(of("/p?%70age=9"), of("/p"));
    }

    #[test]
    fn hosts_and_headers_key_the_entry() {
        let keyed_by = KeyedBy {
            query_params: None,
            headers: &HOST_HEADERS,
            user: None,
        };
        let of = |headers: &[(&str, &str)]| {
            let parts = parts("/p", headers);
            key_text(&parts.uri, &parts.headers, &keyed_by)
        };
        assert_ne!(of(&[("host", "a.example")]), of(&[("host", "b.example")]));
        assert_eq!(of(&[("host", "A.example")]), of(&[("host", "a.example")]));
        assert_ne!(
            of(&[("host", "a"), ("x-forwarded-host", "evil")]),
            of(&[("host", "a")])
        );
    }

    #[test]
    fn clients_refusing_stored_answers_are_seen() {
        assert!(refuses_stored_answers(&headers(
            "/",
            &[("cache-control", "No-Cache")]
        )));
        assert!(refuses_stored_answers(&headers(
            "/",
            &[("cache-control", "max-stale, max-age=0")]
        )));
        assert!(refuses_stored_answers(&headers(
            "/",
            &[("pragma", "no-cache")]
        )));
        assert!(!refuses_stored_answers(&headers(
            "/",
            &[("cache-control", "max-age=60")]
        )));
    }

    proptest! {
        /// Two queries share a key exactly when they decode to the same parameters.
        #[test]
        fn queries_share_a_key_only_when_they_decode_alike(
            a in proptest::collection::vec(("[a-c%=&+:{} é]{0,3}", "[a-c%=&+:{} é]{0,3}"), 0..3),
            b in proptest::collection::vec(("[a-c%=&+:{} é]{0,3}", "[a-c%=&+:{} é]{0,3}"), 0..3),
        ) {
            let encode = |pairs: &[(String, String)]| {
                pairs
                    .iter()
                    .map(|(name, value)| {
                        format!(
                            "{}={}",
                            utf8_percent_encode(name, COMPONENT),
                            utf8_percent_encode(value, COMPONENT)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("&")
            };
            let canonical = |pairs: &[(String, String)]| {
                let mut pairs = pairs.to_vec();
                pairs.sort();
                pairs
            };
            let (key_a, key_b) = (key(&format!("/p?{}", encode(&a))), key(&format!("/p?{}", encode(&b))));
            if let (Some(key_a), Some(key_b)) = (key_a, key_b) {
                prop_assert_eq!(key_a == key_b, canonical(&a) == canonical(&b));
            }
        }
    }
}
