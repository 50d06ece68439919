//! Whole responses of `GET`/`HEAD` routes cached in Redis (feature `axum` or `actix`): a
//! tower layer or an actix-web middleware over the same [`Cache`] handle and the same protocol as `#[cached_get]`, so that the writes
//! that invalidate the data (`#[cached_update]` / `#[cached_delete]` tags, `invalidate_tag`)
//! drop the responses made from it, with the entries' guarantees: a response computed before
//! a write is never stored after the write's invalidation, concurrent misses run the handler
//! once, and Redis down means the handler answers.
//!
//! A response is stored as one hash (`{namespace}:{prefix}:{path}?{query}…`) whose fields are
//! its status, the headers kept, the body (UTF-8), a strong `ETag` and when it was made.
//!
//! One implementation, two thin adapters: this module, `key` and `stored` hold everything
//! the cache decides (the options, which requests are looked up, the key, what is stored,
//! the answer, `304`s, tags) over `http` 1 types; an adapter ([`Exchange`] for a request,
//! [`Handled`] for the handler's response) only moves a framework's request and response in
//! and out: `axum` (a tower `Layer`) and `actix` (an actix-web 4 `Transform`, converting its
//! `http` 0.2 types at the boundary). Neither adapter decides anything.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode, Uri};
use sha2::{Digest as _, Sha256};

use crate::adapt::{near_ops, output, schema, Tags};
use crate::builder::MAX_DURATION;
use crate::function::{Learned, Resilience, Spec};
use crate::key::check_segment;
use crate::read_through::{get_or_fill, near_hit};
use crate::{Cache, Error};

#[cfg(feature = "actix")]
mod actix_middleware;
#[cfg(feature = "axum")]
mod axum_layer;
mod key;
mod stored;

#[cfg(feature = "actix")]
pub use self::actix_middleware::ResponseCacheMiddleware;
#[cfg(feature = "axum")]
pub use self::axum_layer::ResponseCacheService;
use key::{key_text, refuses_stored_answers, KeyedBy, HOST_HEADERS};
use stored::{answer, storable_head, stored_form, Answer, Answering, NotStored, StoredResponse};

/// The default largest body cached: larger ones are answered, not stored.
const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// Caches whole responses of a route's `GET` and `HEAD` requests: with feature `axum`, a
/// `tower_layer::Layer` for axum's `MethodRouter::layer` / `Router::route_layer`; with
/// feature `actix`, an actix-web `Transform` for `App::wrap` / `Scope::wrap` /
/// `Resource::wrap` (see [`actix_tags_from`](Self::actix_tags_from)). The key, the storage
/// and the HTTP rules below are the same for both.
///
/// ```no_run
/// # #[cfg(feature = "axum")] {
/// use std::time::Duration;
/// use axum::{extract::Path, routing::get, Router};
/// use cache_core::{Cache, ResponseCache};
///
/// # async fn user() -> &'static str { "" }
/// # fn main() -> Result<(), cache_core::Error> {
/// # let runtime = tokio::runtime::Runtime::new().unwrap(); let _guard = runtime.enter();
/// let cache = Cache::builder().url("redis://127.0.0.1:6379").build()?;
/// let app: Router = Router::new().route(
///     "/api/users/{user_id}",
///     get(user).layer(
///         ResponseCache::new(cache, "resp_user")?
///             .ttl(Duration::from_secs(60))
///             // Dropped by every write that invalidates `user:{user_id}`: the tag is made
///             // from the id as the handler reads it (`/api/users/01` is user 1).
///             .tags_from(|Path(user_id): Path<i64>| [format!("user:{user_id}")]),
///     ),
/// );
/// # Ok(()) }
/// # }
/// ```
///
/// A hit does not run the handler: whatever the handler checks (authentication,
/// authorization) must happen before this layer, in a middleware outside it or in the
/// [`per_user`](Self::per_user) extractor, or the route must be public.
///
/// - **Key**: the request as the handler reads it — the whole path as sent (nest prefixes
///   included), each segment decoded; the query parameters decoded and sorted (all of them,
///   or those [`query_params`](Self::query_params) lists); `Host` and the `Forwarded` /
///   `X-Forwarded-*` headers (unless [`host_independent`](Self::host_independent)); the
///   [`vary`](Self::vary) headers; the user's hashed identity with `per_user`. `GET` and
///   `HEAD` share it. Two requests share an entry only if these are equal.
/// - **Not looked up** (the handler answers, nothing is stored): methods other than
///   `GET`/`HEAD`; a query parameter given twice, or a path or query that is not UTF-8 once
///   decoded; a client's `Cache-Control: no-cache` / `no-store` / `max-age=0` or `Pragma:
///   no-cache`; requests [`cache_if`](Self::cache_if) refuses; requests carrying one of the
///   [`private_headers`](Self::private_headers) (`Authorization`, `Cookie`,
///   `Proxy-Authorization`, `X-Api-Key`) unless `per_user` names their user; requests whose
///   `tags_from` or `per_user` extractor rejects them.
/// - **What is stored**: responses with status 200, 203, 204, 300, 301 or 308 (never `206`),
///   a body that announces its size, is at most [`max_body`](Self::max_body) and is UTF-8, no
///   `Set-Cookie`, no `Cache-Control: no-store` or `private`, and a `Vary` that names only
///   headers the key holds (else a warning, once per layer, says which header to add to
///   `vary`).
/// - **HTTP**: a strong `ETag` (the handler's own if it set one), `If-None-Match` answered
///   with `304 Not Modified` (from the cache without running the handler), `HEAD` with the
///   stored length, `Age` on hits, [`cache_control`](Self::cache_control) if set, `Vary`
///   listing the handler's and the layer's vary headers, and `X-Cache: hit` or `miss`.
#[derive(Clone)]
pub struct ResponseCache {
    config: Arc<Config>,
}

/// Something read from a request by the framework's own extractors (axum's
/// `FromRequestParts`, actix-web's `FromRequest`): `None` when the extractor rejects it.
/// Each adapter runs only its own framework's kind and refuses the other at build time.
enum Extractor<T> {
    #[cfg(feature = "axum")]
    Axum(Arc<self::axum_layer::Extract<T>>),
    #[cfg(feature = "actix")]
    Actix(Arc<self::actix_middleware::Extract<T>>),
}

impl<T> Clone for Extractor<T> {
    fn clone(&self) -> Self {
        match self {
            #[cfg(feature = "axum")]
            Extractor::Axum(extract) => Extractor::Axum(Arc::clone(extract)),
            #[cfg(feature = "actix")]
            Extractor::Actix(extract) => Extractor::Actix(Arc::clone(extract)),
        }
    }
}

impl<T> Extractor<T> {
    /// The framework the extractor is for, for the message of an adapter refusing it.
    fn framework(&self) -> &'static str {
        match self {
            #[cfg(feature = "axum")]
            Extractor::Axum(_) => "axum",
            #[cfg(feature = "actix")]
            Extractor::Actix(_) => "actix",
        }
    }
}

/// Whether a request may use the cache at all.
type Admits = dyn Fn(&Parts) -> bool + Send + Sync;

/// The headers that make a request private by default.
const DEFAULT_PRIVATE_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
];

#[derive(Clone)]
struct Config {
    cache: Cache,
    prefix: String,
    ttl: Option<Duration>,
    /// Tags every response of the route carries.
    tags: Vec<String>,
    /// Tags made from the request by the handler's own extractors.
    tags_from: Option<Extractor<Vec<String>>>,
    vary: Vec<HeaderName>,
    host_independent: bool,
    /// The request headers that key an entry: the host headers (unless host-independent),
    /// then `vary`. Made again whenever either changes.
    keyed_headers: Vec<HeaderName>,
    cache_control: Option<HeaderValue>,
    max_body: usize,
    per_user: Option<Extractor<String>>,
    private_headers: Vec<HeaderName>,
    /// `None`: every query parameter is part of the key; else only these.
    query_params: Option<Vec<String>>,
    admits: Option<Arc<Admits>>,
    /// Whether the warning about a `Vary` the key does not hold was logged.
    warned_vary: Arc<AtomicBool>,
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
                tagged: !self.tags.is_empty() || self.tags_from.is_some(),
                // Pages have no fail-safe: a handler's error is a response, not an `Err`.
                resilience: Resilience {
                    fail_safe_ms: Some(0),
                    ..Resilience::DEFAULT
                },
                learned: Learned::new(),
            }))
        })
    }

    /// Panics when an option was given for another framework than the adapter's: its tags
    /// or users would be missing, and pages served stale or to the wrong user.
    fn check_framework(&self, framework: &str) {
        for (option, extractor) in [
            (
                "tags_from",
                self.tags_from.as_ref().map(Extractor::framework),
            ),
            ("per_user", self.per_user.as_ref().map(Extractor::framework)),
        ] {
            if let Some(given) = extractor.filter(|given| *given != framework) {
                panic!(
                    "ResponseCache wrapped by {framework} holds an extractor for {given} \
                     ({option}): give it the {framework} form of the option"
                );
            }
        }
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("prefix", &self.config.prefix)
            .field("ttl", &self.config.ttl)
            .field("tags", &self.config.tags)
            .field("tags_from", &self.config.tags_from.is_some())
            .field("keyed_headers", &self.config.keyed_headers)
            .field("max_body", &self.config.max_body)
            .field("per_user", &self.config.per_user.is_some())
            .field("private_headers", &self.config.private_headers)
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
                tags_from: None,
                vary: Vec::new(),
                host_independent: false,
                keyed_headers: HOST_HEADERS.to_vec(),
                cache_control: None,
                max_body: DEFAULT_MAX_BODY,
                per_user: None,
                private_headers: DEFAULT_PRIVATE_HEADERS.to_vec(),
                query_params: None,
                admits: None,
                warned_vary: Arc::new(AtomicBool::new(false)),
                spec: OnceLock::new(),
            }),
        })
    }

    /// Changes the options; a layer already built from them keeps the old ones.
    fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let config = Arc::make_mut(&mut self.config);
        change(config);
        config.keyed_headers = if config.host_independent {
            Vec::new()
        } else {
            HOST_HEADERS.to_vec()
        };
        for name in &config.vary {
            if !config.keyed_headers.contains(name) {
                config.keyed_headers.push(name.clone());
            }
        }
        config.spec = OnceLock::new();
        self
    }

    /// How long a response is kept (whole seconds, at least one). Default: the handle's
    /// `default_ttl`.
    ///
    /// # Panics
    ///
    /// When `ttl` is over ten years (the longest any option of the library takes): a
    /// mistake, as a route that does not parse is to axum.
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        assert!(
            ttl <= MAX_DURATION,
            "ResponseCache::ttl({ttl:?}) is over ten years: give the time the responses may be served for"
        );
        self.configure(|config| config.ttl = Some(ttl))
    }

    /// Tags every response of the route is registered under (`"users:list"`): a write that
    /// invalidates one of them drops the responses carrying it. For tags made from the
    /// request, use [`tags_from`](Self::tags_from).
    ///
    /// # Panics
    ///
    /// When a tag holds `{`: a tag made from the request's text would miss the writes made
    /// from the value the handler parsed (`/users/01` is user 1), so it must come from the
    /// handler's own extractor, through `tags_from`.
    #[must_use]
    pub fn tags<I, T>(self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tags: Vec<String> = tags.into_iter().map(Into::into).collect();
        if let Some(template) = tags.iter().find(|tag| tag.contains('{')) {
            panic!(
                "ResponseCache::tags: `{template}` is made from the request; write \
                 `.tags_from(|Path(id): Path<i64>| [format!(\"user:{{id}}\")])` with the \
                 handler's own extractor, so that the tag is the one its writes invalidate"
            );
        }
        self.configure(|config| config.tags = tags)
    }

    /// Request headers whose values are part of the key (`Accept`, `Accept-Language`, …),
    /// listed in the responses' `Vary`. A response whose own `Vary` names a header not keyed
    /// is answered and not stored.
    #[must_use]
    pub fn vary<I>(self, headers: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        let headers: Vec<HeaderName> = headers.into_iter().collect();
        self.configure(|config| config.vary = headers)
    }

    /// Leaves `Host`, `Forwarded` and `X-Forwarded-Host/-Proto/-Prefix` out of the key: for
    /// a route whose answer is the same whatever site it is asked on. By default they key
    /// the entry, so that a page rendering links from them is never served to another host.
    #[must_use]
    pub fn host_independent(self) -> Self {
        self.configure(|config| config.host_independent = true)
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

    /// Only these query parameters (decoded names) are part of the key; the others are left
    /// out of it (the route must ignore them), so that a client adding `?junk=1` cannot make
    /// new entries. Default: every parameter, sorted.
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

    /// The request headers that make a request private: one carrying any of them is not
    /// looked up unless [`per_user`](Self::per_user) names its user. Default:
    /// `Authorization`, `Cookie`, `Proxy-Authorization`, `X-Api-Key`.
    #[must_use]
    pub fn private_headers<I>(self, headers: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        let headers: Vec<HeaderName> = headers.into_iter().collect();
        self.configure(|config| config.private_headers = headers)
    }
}

/// A framework's request as the response cache handles it: its head as `http` 1 types,
/// what its extractors say, and the handler that answers it.
trait Exchange: Sized {
    /// The framework's response.
    type Response: Handled;

    /// The request's method, URI and headers (the URI as the handler's router received it).
    fn parts(&self) -> &Parts;

    /// The URI the key is made from: the one the client sent.
    fn key_uri(&self) -> &Uri;

    /// Runs an extractor of this framework on the request; `None` when it rejects it.
    fn extract<T: 'static>(&mut self, extractor: &Extractor<T>) -> impl Future<Output = Option<T>>;

    /// Makes the request a `GET`, so that the handler makes the whole response of a `HEAD`;
    /// `false` when the framework cannot, and the `HEAD` is then answered by the handler.
    fn make_get(&mut self) -> bool;

    /// The framework's response for an answer of the cache.
    fn answer(&self, answer: Answer) -> Self::Response;

    /// The handler's response (called once).
    fn run(&mut self) -> impl Future<Output = Self::Response>;
}

/// A framework's response as the response cache reads it.
trait Handled: Sized {
    /// Its status.
    fn status(&self) -> StatusCode;

    /// Its headers, as `http` 1 types.
    fn headers(&self) -> HeaderMap;

    /// The exact size its body announces, if it does.
    fn announced(&self) -> Option<u64>;

    /// Reads the body (at most `max` bytes): the response with the same body in memory and
    /// its bytes, or the response (with an empty body) and `None` when reading it failed.
    fn read_body(self, max: usize) -> impl Future<Output = (Self, Option<Bytes>)>;

    /// The response to a `HEAD`: without its body, with its length.
    fn without_body(self) -> Self;
}

impl Config {
    /// Answers a request: from the cache, or through the handler (storing what it made).
    async fn respond<X: Exchange>(&self, mut exchange: X) -> X::Response {
        let method = exchange.parts().method.clone();
        let head = method == Method::HEAD;
        if !(head || method == Method::GET) || !self.cache.is_enabled() {
            return exchange.run().await;
        }
        let looked_up = self.lookup(&mut exchange).await;
        let Some(looked_up) = looked_up.filter(|_| !head || exchange.make_get()) else {
            let response = exchange.run().await;
            return if head {
                response.without_body()
            } else {
                response
            };
        };
        let if_none_match = exchange.parts().headers.get(header::IF_NONE_MATCH).cloned();

        let cache = Some(&self.cache);
        let spec = self.spec();
        let entry_key = Some(self.cache.engine().key(spec.prefix, &looked_up.key));
        let schema = schema::<StoredResponse>().with_near(near_ops::<StoredResponse>());
        let adapter = output::<StoredResponse, Result<StoredResponse, X::Response>>();
        let answering = |hit| Answering {
            if_none_match: if_none_match.as_ref(),
            head,
            hit,
            cache_control: self.cache_control.as_ref(),
            vary: &self.vary,
        };
        if let Some(Ok(stored)) = near_hit(cache, spec, entry_key.as_deref(), &schema, &adapter) {
            return exchange.answer(answer(stored, &answering(true)));
        }
        let ran = AtomicBool::new(false);
        let load = async {
            ran.store(true, Ordering::Relaxed);
            let response = exchange.run().await;
            self.storable(response).await
        };
        let tags = Tags {
            from_parameters: looked_up.tags,
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
            Ok(stored) => exchange.answer(answer(stored, &answering(!ran.load(Ordering::Relaxed)))),
            Err(response) if head => response.without_body(),
            Err(response) => response,
        }
    }

    /// The key and tags of a request that may use the cache; `None` when it may not.
    async fn lookup<X: Exchange>(&self, exchange: &mut X) -> Option<LookedUp> {
        let parts = exchange.parts();
        if refuses_stored_answers(&parts.headers)
            || self.admits.as_ref().is_some_and(|admits| !admits(parts))
        {
            return None;
        }
        let private = self
            .private_headers
            .iter()
            .any(|name| parts.headers.contains_key(name));
        let user = match &self.per_user {
            Some(user_of) => Some(hashed(&exchange.extract(user_of).await?)),
            None if private => return None,
            None => None,
        };
        let key = key_text(
            exchange.key_uri(),
            &exchange.parts().headers,
            &KeyedBy {
                query_params: self.query_params.as_deref(),
                headers: &self.keyed_headers,
                user: user.as_deref(),
            },
        )?;
        let mut tags = self.tags.clone();
        if let Some(tags_of) = &self.tags_from {
            tags.extend(exchange.extract(tags_of).await?);
        }
        Some(LookedUp { key, tags })
    }

    /// The stored form of the response the handler made, or the response back when it is
    /// not to be stored.
    async fn storable<R: Handled>(&self, response: R) -> Result<StoredResponse, R> {
        let headers = response.headers();
        let status = response.status();
        match storable_head(
            status,
            &headers,
            response.announced(),
            self.max_body,
            &self.keyed_headers,
        ) {
            Ok(()) => {
                let (response, bytes) = response.read_body(self.max_body).await;
                bytes
                    .and_then(|bytes| stored_form(status, &headers, &bytes))
                    .ok_or(response)
            }
            Err(NotStored::VariesBy(name)) => {
                if !self.warned_vary.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        prefix = %self.prefix,
                        header = %name,
                        "a response varies by a request header the response cache does not key by: \
                         not stored; add it to ResponseCache::vary"
                    );
                }
                Err(response)
            }
            Err(NotStored::Unsuitable) => Err(response),
        }
    }
}

/// What a request that may use the cache is looked up by.
struct LookedUp {
    key: String,
    tags: Vec<String>,
}

/// A user's name as it joins a key: the first 128 bits of its SHA-256, in hex, so that a
/// token used as the name is never stored or logged, and names cannot be made to collide.
fn hashed(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changing_a_shared_configuration_keeps_the_rest_of_it() {
        let cache = Cache::builder().url("mem://").build().unwrap();
        let first = ResponseCache::new(cache, "resp")
            .unwrap()
            .ttl(Duration::from_secs(30))
            .tags(["users:list"]);
        let kept = first.clone();
        let second = first.max_body(10);
        assert_eq!(second.config.tags, ["users:list"]);
        assert_eq!(second.config.spec().ttl_secs, Some(30));
        assert_eq!(second.config.max_body, 10);
        assert_eq!(
            kept.config.max_body, DEFAULT_MAX_BODY,
            "the shared one is unchanged"
        );
    }

    #[tokio::test]
    #[should_panic(expected = "tags_from")]
    async fn a_tag_made_from_the_request_text_is_refused() {
        let cache = Cache::builder().url("mem://").build().unwrap();
        let _ = ResponseCache::new(cache, "resp")
            .unwrap()
            .tags(["user:{id}"]);
    }

    #[tokio::test]
    #[should_panic(expected = "over ten years")]
    async fn a_ttl_past_every_bound_is_refused() {
        let cache = Cache::builder().url("mem://").build().unwrap();
        let _ = ResponseCache::new(cache, "resp")
            .unwrap()
            .ttl(Duration::MAX);
    }

    #[test]
    fn users_are_hashed_apart_and_never_kept_as_given() {
        assert_eq!(hashed("token-a"), hashed("token-a"));
        assert_ne!(hashed("token-a"), hashed("token-b"));
        assert_eq!(hashed("token-a").len(), 32);
        assert!(!hashed("token-a").contains("token"));
    }
}
