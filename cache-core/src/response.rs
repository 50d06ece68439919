//! Whole responses of `GET`/`HEAD` routes cached in Redis (feature `axum`): a tower layer
//! over the same [`Cache`] handle and the same protocol as `#[cached_get]`, so that the writes
//! that invalidate the data (`#[cached_update]` / `#[cached_delete]` tags, `invalidate_tag`)
//! drop the responses made from it, with the entries' guarantees: a response computed before
//! a write is never stored after the write's invalidation, concurrent misses run the handler
//! once, and Redis down means the handler answers.
//!
//! A response is stored as one hash (`{namespace}:{prefix}:{path}?{query}…`) whose fields are
//! its status, the headers kept, the body (UTF-8), a strong `ETag` and when it was made.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, HttpBody as _};
use axum::extract::{FromRequestParts as _, RawPathParams};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tower_layer::Layer;
use tower_service::Service;

use crate::adapt::{near_ops, output, schema, Tags};
use crate::function::{Learned, Spec};
use crate::key::check_segment;
use crate::read_through::{get_or_fill, near_hit};
use crate::{Cache, Error};

/// The default largest body cached: larger ones are answered, not stored.
const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// Caches whole responses of a route's `GET` and `HEAD` requests; a [`tower_layer::Layer`]
/// for axum's `MethodRouter::layer` / `Router::route_layer`.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use cache_core::{Cache, ResponseCache};
///
/// # async fn user() -> &'static str { "" }
/// # fn main() -> Result<(), cache_core::Error> {
/// # let runtime = tokio::runtime::Runtime::new().unwrap(); let _guard = runtime.enter();
/// let cache = Cache::builder().url("redis://127.0.0.1:6379").build()?;
/// let app: Router = Router::new().route(
///     "/api/users/{user_id}",
///     // Dropped by every write that invalidates the tag `user:{user_id}`.
///     get(user).layer(
///         ResponseCache::new(cache, "resp_user")?
///             .ttl(Duration::from_secs(60))
///             .tags(["user:{user_id}"]),
///     ),
/// );
/// # Ok(()) }
/// ```
///
/// - **Key**: the path, the query with its parameters sorted, and the values of the
///   [`vary`](Self::vary) headers (`GET` and `HEAD` share it).
/// - **What is stored**: responses with a 2xx status, a body that announces its size, is at
///   most [`max_body`](Self::max_body) and is UTF-8, no `Set-Cookie`, and no
///   `Cache-Control: no-store` or `private`. Everything else is answered as the handler made
///   it, and not stored.
/// - **Bypassed**: requests other than `GET`/`HEAD`, and requests with `Authorization` or
///   `Cookie` unless [`per_user`](Self::per_user) says whose they are.
/// - **HTTP**: a strong `ETag` (the handler's own if it set one), `If-None-Match` answered
///   with `304 Not Modified` (from the cache without running the handler), `Age` on hits,
///   [`cache_control`](Self::cache_control) if set, `Vary` listing the vary headers, and
///   `X-Cache: hit` or `miss`.
#[derive(Clone)]
pub struct ResponseCache {
    config: Arc<Config>,
}

/// Who a request is for, when a route serves each user their own responses.
type UserOf = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// Whether a request may use the cache at all.
type Admits = dyn Fn(&Parts) -> bool + Send + Sync;

#[derive(Clone)]
struct Config {
    cache: Cache,
    prefix: String,
    ttl: Option<Duration>,
    tags: Vec<String>,
    vary: Vec<HeaderName>,
    cache_control: Option<HeaderValue>,
    max_body: usize,
    per_user: Option<Arc<UserOf>>,
    /// `None`: every query parameter is part of the key; else only these.
    query_params: Option<Vec<String>>,
    admits: Option<Arc<Admits>>,
    /// What the protocol needs of the options, made when a layer is first built from them
    /// and kept for the process, as an annotated function's `static`.
    spec: OnceLock<&'static Spec>,
}

impl Config {
    fn spec(&self) -> &'static Spec {
        self.spec.get_or_init(|| {
            Box::leak(Box::new(Spec {
                prefix: Box::leak(self.prefix.clone().into_boxed_str()),
                ttl_secs: self.ttl.map(|ttl| ttl.as_secs().max(1)),
                none_ttl_secs: None,
                tagged: !self.tags.is_empty(),
                learned: Learned::new(),
            }))
        })
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("prefix", &self.config.prefix)
            .field("ttl", &self.config.ttl)
            .field("tags", &self.config.tags)
            .field("vary", &self.config.vary)
            .field("max_body", &self.config.max_body)
            .field("per_user", &self.config.per_user.is_some())
            .field("query_params", &self.config.query_params)
            .field("cache_if", &self.config.admits.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// Responses of one route (or a few), stored under `prefix` (as a macro's: not empty,
    /// no `:` or whitespace, not starting with `__`), with the handle's default TTL.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad prefix.
    pub fn new(cache: Cache, prefix: &str) -> Result<Self, Error> {
        check_segment("prefix", prefix)?;
        Ok(ResponseCache {
            config: Arc::new(Config {
                cache,
                prefix: prefix.to_owned(),
                ttl: None,
                tags: Vec::new(),
                vary: Vec::new(),
                cache_control: None,
                max_body: DEFAULT_MAX_BODY,
                per_user: None,
                query_params: None,
                admits: None,
                spec: OnceLock::new(),
            }),
        })
    }

    /// Changes the options; a layer already built from them keeps the old ones.
    fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let config = Arc::make_mut(&mut self.config);
        change(config);
        config.spec = OnceLock::new();
        self
    }

    /// How long a response is kept (whole seconds, at least one). Default: the handle's
    /// `default_ttl`.
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.configure(|config| config.ttl = Some(ttl))
    }

    /// Tags the responses are registered under, as `#[cached_get]`'s: `{name}` is a path
    /// parameter of the route, or else a query parameter (empty when neither is there). A
    /// write that invalidates one of them drops the responses carrying it.
    #[must_use]
    pub fn tags<I, T>(self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tags: Vec<String> = tags.into_iter().map(Into::into).collect();
        self.configure(|config| config.tags = tags)
    }

    /// Request headers whose values are part of the key (`Accept-Language`, …), listed in
    /// the responses' `Vary`.
    #[must_use]
    pub fn vary<I>(self, headers: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        let headers: Vec<HeaderName> = headers.into_iter().collect();
        self.configure(|config| config.vary = headers)
    }

    /// The `Cache-Control` header of the responses served through this layer (hits and
    /// misses), e.g. `"public, max-age=0, must-revalidate"`. Default: the handler's.
    #[must_use]
    pub fn cache_control(self, value: HeaderValue) -> Self {
        self.configure(|config| config.cache_control = Some(value))
    }

    /// The largest body stored, in bytes (default 256 KiB); larger ones are answered as the
    /// handler made them.
    #[must_use]
    pub fn max_body(self, bytes: usize) -> Self {
        self.configure(|config| config.max_body = bytes)
    }

    /// Only these query parameters are part of the key; the others are left out of it (the
    /// route must ignore them), so that a client adding `?junk=1` cannot make new entries.
    /// Default: every parameter, sorted.
    #[must_use]
    pub fn query_params<I, T>(self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        self.configure(|config| config.query_params = Some(names))
    }

    /// Uses the cache only for requests `admits` accepts; the others go to the handler
    /// without a lookup. Bounds what clients can make the cache hold (every distinct key is
    /// an entry): e.g. only the first pages of a list, at the usual sizes.
    #[must_use]
    pub fn cache_if(self, admits: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        let admits: Arc<Admits> = Arc::new(admits);
        self.configure(|config| config.admits = Some(admits))
    }

    /// Caches requests that carry `Authorization` or `Cookie`, per user: `user` names whose
    /// request it is (from the token, the session, …), and that name is part of the key.
    /// `None` bypasses the cache for that request.
    #[must_use]
    pub fn per_user(self, user: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        let user: Arc<UserOf> = Arc::new(user);
        self.configure(|config| config.per_user = Some(user))
    }
}

impl<S> Layer<S> for ResponseCache {
    type Service = ResponseCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.config.spec();
        ResponseCacheService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`ResponseCache`] wraps a route in.
#[derive(Clone)]
pub struct ResponseCacheService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for ResponseCacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheService")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for ResponseCacheService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh one waits for the
        // next `poll_ready` (tower's rule for services that are cloned into futures).
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let config = Arc::clone(&self.config);
        Box::pin(async move { Ok(config.respond(request, inner).await) })
    }
}

/// A response as stored: one field each. The texts are shared (`Arc<str>`), so that a copy
/// the near cache hands out costs reference counts, and the body goes out without a copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    /// `name: value` lines of the headers kept.
    headers: Arc<str>,
    body: Arc<str>,
    etag: Arc<str>,
    /// When the handler made it, in ms since the epoch (for `Age`).
    made_at_ms: u64,
}

/// Headers never stored: about the connection or the message's framing, or set per answer.
const NOT_STORED: [HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::DATE,
    header::AGE,
    header::SET_COOKIE,
    header::HeaderName::from_static("keep-alive"),
];

impl Config {
    async fn respond<S>(&self, request: Request<Body>, inner: S) -> Response
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible> + Send,
        S::Future: Send,
    {
        let head = request.method() == Method::HEAD;
        if !(head || request.method() == Method::GET) || !self.cache.is_enabled() {
            return call(inner, request).await;
        }
        let (mut parts, body) = request.into_parts();
        if self.admits.as_ref().is_some_and(|admits| !admits(&parts)) {
            return call(inner, Request::from_parts(parts, body)).await;
        }
        let user = match &self.per_user {
            Some(user_of) => match user_of(&parts) {
                Some(user) => Some(user),
                None => return call(inner, Request::from_parts(parts, body)).await,
            },
            None if parts.headers.contains_key(header::AUTHORIZATION)
                || parts.headers.contains_key(header::COOKIE) =>
            {
                return call(inner, Request::from_parts(parts, body)).await;
            }
            None => None,
        };
        let key = self.key_text(&parts, user.as_deref());
        let tags = if self.tags.iter().any(|tag| tag.contains('{')) {
            let params = RawPathParams::from_request_parts(&mut parts, &())
                .await
                .ok();
            self.render_tags(&parts, params.as_ref())
        } else {
            self.tags.clone()
        };
        let if_none_match = parts.headers.get(header::IF_NONE_MATCH).cloned();
        // The handler makes the whole response (a `HEAD` is answered from it without body).
        parts.method = Method::GET;
        let request = Request::from_parts(parts, body);

        let cache = Some(&self.cache);
        let spec = self.spec();
        let entry_key = Some(self.cache.key(spec.prefix, &key));
        let schema = schema::<StoredResponse>().with_near(near_ops::<StoredResponse>());
        let adapter = output::<StoredResponse, Result<StoredResponse, Response>>();
        if let Some(Ok(stored)) = near_hit(cache, spec, entry_key.as_deref(), &schema, &adapter) {
            return self.answer(stored, if_none_match.as_ref(), head, true);
        }
        let ran = AtomicBool::new(false);
        let load = async {
            ran.store(true, Ordering::Relaxed);
            self.storable(call(inner, request).await).await
        };
        let tags = Tags {
            from_parameters: tags,
            from_value: |_: &StoredResponse| Vec::new(),
        };
        let made = Box::pin(get_or_fill(
            cache.cloned(),
            spec,
            entry_key,
            schema,
            adapter,
            tags,
            load,
        ))
        .await;
        match made {
            Ok(stored) => {
                let hit = !ran.load(Ordering::Relaxed);
                self.answer(stored, if_none_match.as_ref(), head, hit)
            }
            Err(mut response) => {
                if head {
                    *response.body_mut() = Body::empty();
                }
                response
            }
        }
    }

    /// The key: path, sorted query, vary header values, user.
    fn key_text(&self, parts: &Parts, user: Option<&str>) -> String {
        let mut key = parts.uri.path().to_owned();
        if let Some(query) = parts.uri.query() {
            let kept = |pair: &&str| match &self.query_params {
                None => !pair.is_empty(),
                Some(names) => {
                    let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
                    names.iter().any(|kept| kept == name)
                }
            };
            let mut pairs: Vec<&str> = query.split('&').filter(kept).collect();
            if !pairs.is_empty() {
                pairs.sort_unstable();
                key.push('?');
                key.push_str(&pairs.join("&"));
            }
        }
        for name in &self.vary {
            let value = parts
                .headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            let _ = write!(key, "\n{name}={value}");
        }
        if let Some(user) = user {
            let _ = write!(key, "\nuser={user}");
        }
        key
    }

    /// The tags with `{name}` replaced by the path parameter, else the query parameter.
    fn render_tags(&self, parts: &Parts, params: Option<&RawPathParams>) -> Vec<String> {
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|query| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let value_of = |name: &str| -> String {
            params
                .and_then(|params| params.iter().find(|(param, _)| *param == name))
                .map(|(_, value)| value.to_owned())
                .or_else(|| {
                    query
                        .iter()
                        .find(|(param, _)| param == name)
                        .map(|(_, value)| value.clone())
                })
                .unwrap_or_default()
        };
        self.tags
            .iter()
            .map(|template| {
                let mut tag = String::new();
                let mut rest = template.as_str();
                while let Some(open) = rest.find('{') {
                    let Some(close) = rest[open..].find('}').map(|at| open + at) else {
                        break;
                    };
                    tag.push_str(&rest[..open]);
                    tag.push_str(&value_of(&rest[open + 1..close]));
                    rest = &rest[close + 1..];
                }
                tag.push_str(rest);
                tag
            })
            .collect()
    }

    /// The stored form of a response the handler made, or the response back when it is not
    /// to be stored.
    async fn storable(&self, response: Response) -> Result<StoredResponse, Response> {
        let status = response.status();
        let headers = response.headers();
        let refused_by_cache_control = headers.get_all(header::CACHE_CONTROL).iter().any(|value| {
            let value = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
            value.contains("no-store") || value.contains("private")
        });
        let announced = response.body().size_hint().upper();
        if !status.is_success()
            || headers.contains_key(header::SET_COOKIE)
            || refused_by_cache_control
            || announced.is_none_or(|size| size > self.max_body as u64)
        {
            return Err(response);
        }
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, self.max_body).await {
            Ok(bytes) => bytes,
            // The body failed while being read: answer with what the handler's status says
            // and nothing stored.
            Err(_) => return Err(Response::from_parts(parts, Body::empty())),
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(Response::from_parts(parts, Body::from(bytes)));
        };
        let mut lines = String::new();
        for (name, value) in &parts.headers {
            if NOT_STORED.contains(name) || *name == header::ETAG {
                continue;
            }
            if let Ok(value) = value.to_str() {
                let _ = writeln!(lines, "{name}: {value}");
            }
        }
        let etag = match parts
            .headers
            .get(header::ETAG)
            .and_then(|etag| etag.to_str().ok())
        {
            Some(etag) => etag.to_owned(),
            None => format!("\"{:016x}\"", fnv1a(parts.status.as_u16(), &bytes)),
        };
        Ok(StoredResponse {
            status: parts.status.as_u16(),
            headers: lines.into(),
            body: text.into(),
            etag: etag.into(),
            made_at_ms: now_ms(),
        })
    }

    /// The response to send from a stored one: `304` when the client has it.
    fn answer(
        &self,
        stored: StoredResponse,
        if_none_match: Option<&HeaderValue>,
        head: bool,
        hit: bool,
    ) -> Response {
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
        if let Some(cache_control) = &self.cache_control {
            headers.insert(header::CACHE_CONTROL, cache_control.clone());
        }
        if !self.vary.is_empty() {
            let names: Vec<&str> = self.vary.iter().map(HeaderName::as_str).collect();
            if let Ok(vary) = HeaderValue::from_str(&names.join(", ")) {
                headers.insert(header::VARY, vary);
            }
        }
        if hit {
            let age = now_ms().saturating_sub(stored.made_at_ms) / 1000;
            headers.insert(header::AGE, HeaderValue::from(age));
        }
        headers.insert(
            HeaderName::from_static("x-cache"),
            HeaderValue::from_static(if hit { "hit" } else { "miss" }),
        );
        let not_modified = if_none_match.is_some_and(|tags| matches_etag(tags, &stored.etag));
        let (status, body) = if not_modified {
            (StatusCode::NOT_MODIFIED, Body::empty())
        } else if head {
            (status_of(stored.status), Body::empty())
        } else {
            let body = axum::body::Bytes::from_owner(SharedText(stored.body));
            (status_of(stored.status), Body::from(body))
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// A shared text as the bytes of a body, without copying it.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

async fn call<S>(mut inner: S, request: Request<Body>) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
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

    #[tokio::test]
    async fn changing_a_shared_configuration_keeps_the_rest_of_it() {
        let cache = Cache::builder().url("mem://").build().unwrap();
        let first = ResponseCache::new(cache, "resp")
            .unwrap()
            .ttl(Duration::from_secs(30))
            .tags(["user:{id}"]);
        let kept = first.clone();
        let second = first.max_body(10);
        assert_eq!(second.config.tags, ["user:{id}"]);
        assert_eq!(second.config.spec().ttl_secs, Some(30));
        assert_eq!(second.config.max_body, 10);
        assert_eq!(
            kept.config.max_body, DEFAULT_MAX_BODY,
            "the shared one is unchanged"
        );
    }

    #[test]
    fn etags_are_stable_and_tell_bodies_and_statuses_apart() {
        assert_eq!(fnv1a(200, b"{}"), fnv1a(200, b"{}"));
        assert_ne!(fnv1a(200, b"{}"), fnv1a(200, b"[]"));
        assert_ne!(fnv1a(200, b"{}"), fnv1a(201, b"{}"));
    }
}
