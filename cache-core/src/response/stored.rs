//! A response as the response cache keeps it: which responses may be stored (RFC 9111's
//! rules, narrowed to what is safe to serve to another request with the same key), the
//! stored form, and the answer made from it (`304`, `HEAD`, `Age`, `ETag`, `Vary`).
//! Framework-free: statuses, header maps and bytes of the `http` crate; each framework's
//! adapter turns an [`Answer`] into its own response.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use serde::{Deserialize, Serialize};

/// A response as stored: one field each. The texts are shared (`Arc<str>`), so that a copy
/// the near cache hands out costs reference counts, and the body goes out without a copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredResponse {
    status: u16,
    /// `name: value` lines of the headers kept.
    headers: Arc<str>,
    body: Arc<str>,
    etag: Arc<str>,
    /// When the handler made it, in ms since the epoch (for `Age`).
    made_at_ms: u64,
}

/// Headers never stored: about the connection or the message's framing, or set per answer.
const NOT_STORED: [HeaderName; 8] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::DATE,
    header::AGE,
    header::SET_COOKIE,
    header::ETAG,
    HeaderName::from_static("keep-alive"),
];

/// The statuses stored: those RFC 9111 lets a cache reuse without explicit freshness
/// (heuristically cacheable) among the successes and redirects. Never `206 Partial
/// Content` (it answers a `Range`, which is not part of the key), errors, or the redirects
/// that are per request (`302`, `303`, `307`).
const STORED_STATUSES: [u16; 6] = [200, 203, 204, 300, 301, 308];

/// Why a response the handler made is answered as it is and not stored.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NotStored {
    /// A status, `Set-Cookie`, `no-store`/`private`, a body without a known size or too large,
    /// or a body that is not UTF-8.
    Unsuitable,
    /// The handler's `Vary` names a request header the key does not hold (or is `*`): two
    /// requests with one key may get different answers.
    VariesBy(String),
}

/// Whether a response may be stored, given its status, headers and the size its body
/// announces, and the request headers that key it.
pub(super) fn storable_head(
    status: StatusCode,
    headers: &HeaderMap,
    announced: Option<u64>,
    max_body: usize,
    keyed_headers: &[HeaderName],
) -> Result<(), NotStored> {
    let refused_by_cache_control = headers.get_all(header::CACHE_CONTROL).iter().any(|value| {
        let value = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        value.contains("no-store") || value.contains("private")
    });
    if !STORED_STATUSES.contains(&status.as_u16())
        || headers.contains_key(header::SET_COOKIE)
        || refused_by_cache_control
        || announced.is_none_or(|size| size > max_body as u64)
    {
        return Err(NotStored::Unsuitable);
    }
    for name in vary_names(headers) {
        if name == "*"
            || !keyed_headers
                .iter()
                .any(|keyed| keyed.as_str().eq_ignore_ascii_case(&name))
        {
            return Err(NotStored::VariesBy(name));
        }
    }
    Ok(())
}

/// The header names a `Vary` lists, lowercased.
fn vary_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The stored form of a response [`storable_head`] accepted, once its body is read; `None`
/// when the body is not UTF-8.
pub(super) fn stored_form(
    status: StatusCode,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Option<StoredResponse> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = String::new();
    for (name, value) in headers {
        if NOT_STORED.contains(name) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            let _ = writeln!(lines, "{name}: {value}");
        }
    }
    let etag = match headers
        .get(header::ETAG)
        .and_then(|etag| etag.to_str().ok())
    {
        Some(etag) => etag.to_owned(),
        None => format!("\"{:016x}\"", fnv1a(status.as_u16(), bytes)),
    };
    Some(StoredResponse {
        status: status.as_u16(),
        headers: lines.into(),
        body: text.into(),
        etag: etag.into(),
        made_at_ms: now_ms(),
    })
}

/// The response made from a stored one, for the framework's adapter to send as it is.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    /// Empty for a `304` and a `HEAD` (whose `Content-Length` is the `GET`'s).
    pub(super) body: Bytes,
}

/// How a stored response is sent.
pub(super) struct Answering<'a> {
    pub(super) if_none_match: Option<&'a HeaderValue>,
    pub(super) head: bool,
    pub(super) hit: bool,
    pub(super) cache_control: Option<&'a HeaderValue>,
    /// Request headers the layer keys by and names in `Vary`.
    pub(super) vary: &'a [HeaderName],
}

/// The response to send from a stored one: `304` when the client has it.
pub(super) fn answer(stored: StoredResponse, how: &Answering<'_>) -> Answer {
    let mut headers = HeaderMap::new();
    for line in stored.headers.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Ok(etag) = HeaderValue::from_str(&stored.etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(cache_control) = how.cache_control {
        headers.insert(header::CACHE_CONTROL, cache_control.clone());
    }
    // The handler's own `Vary` (kept with the headers) and the layer's, each name once.
    let mut vary = vary_names(&headers);
    for name in how.vary {
        if !vary.iter().any(|listed| listed == name.as_str()) {
            vary.push(name.as_str().to_owned());
        }
    }
    if !vary.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&vary.join(", ")) {
            headers.insert(header::VARY, value);
        }
    }
    if how.hit {
        let age = now_ms().saturating_sub(stored.made_at_ms) / 1000;
        headers.insert(header::AGE, HeaderValue::from(age));
    }
    headers.insert(
        HeaderName::from_static("x-cache"),
        HeaderValue::from_static(if how.hit { "hit" } else { "miss" }),
    );
    let not_modified = how
        .if_none_match
        .is_some_and(|tags| matches_etag(tags, &stored.etag));
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if how.head {
        // A `HEAD` says how long the `GET`'s body is (RFC 9110 §9.3.2).
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
        (status_of(stored.status), Bytes::new())
    } else {
        (
            status_of(stored.status),
            Bytes::from_owner(SharedText(stored.body)),
        )
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A shared text as the bytes of a body, without copying it.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for this header).
fn matches_etag(if_none_match: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    list.split(',')
        .any(|tag| tag.trim() == "*" || bare(tag) == bare(etag))
}

/// A stable 64-bit hash (FNV-1a) of the status and body, for the strong `ETag`: the same
/// response gives the same tag in every process and version.
fn fnv1a(status: u16, body: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in status.to_be_bytes().iter().chain(body) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_stars() {
        let value = |text: &'static str| HeaderValue::from_static(text);
        assert!(matches_etag(&value("\"a\""), "\"a\""));
        assert!(matches_etag(&value("W/\"a\""), "\"a\""));
        assert!(matches_etag(&value("\"b\", \"a\""), "\"a\""));
        assert!(matches_etag(&value("*"), "\"a\""));
        assert!(!matches_etag(&value("\"b\""), "\"a\""));
    }

    #[test]
    fn etags_are_stable_and_tell_bodies_and_statuses_apart() {
        assert_eq!(fnv1a(200, b"{}"), fnv1a(200, b"{}"));
        assert_ne!(fnv1a(200, b"{}"), fnv1a(200, b"[]"));
        assert_ne!(fnv1a(200, b"{}"), fnv1a(201, b"{}"));
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (StatusCode::from_u16(status).unwrap(), map)
    }

    fn storable(
        (status, headers): &(StatusCode, HeaderMap),
        max_body: usize,
        keyed: &[HeaderName],
    ) -> Result<(), NotStored> {
        storable_head(*status, headers, Some(4), max_body, keyed)
    }

    #[test]
    fn only_reusable_statuses_are_stored_never_partial_content() {
        for status in [200, 203, 204, 301, 308] {
            assert_eq!(storable(&response(status, &[]), 1024, &[]), Ok(()));
        }
        for status in [201, 206, 302, 303, 307, 404, 500] {
            assert_eq!(
                storable(&response(status, &[]), 1024, &[]),
                Err(NotStored::Unsuitable),
                "{status}"
            );
        }
    }

    #[test]
    fn a_vary_the_key_does_not_hold_is_not_stored() {
        let accept = [header::ACCEPT];
        let varies = response(200, &[("vary", "Accept, Accept-Encoding")]);
        assert_eq!(
            storable(&varies, 1024, &accept),
            Err(NotStored::VariesBy("accept-encoding".to_owned()))
        );
        let star = response(200, &[("vary", "*")]);
        assert!(storable(&star, 1024, &accept).is_err());
        let keyed = response(200, &[("vary", "accept")]);
        assert_eq!(storable(&keyed, 1024, &accept), Ok(()));
    }
}
