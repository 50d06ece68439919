//! The response cache as an actix-web 4 middleware (feature `actix`): a thin adapter that
//! hands an actix-web request and response to the framework-free logic of the parent
//! module, converting actix-web's `http` 0.2 method, URI and headers to `http` 1 at the
//! boundary, and runs actix-web's extractors for `actix_tags_from` / `actix_per_user`. It
//! decides nothing itself, and pulls neither axum nor tower into the build.
//!
//! The request is never shared while the wrapped service runs (actix-web's router needs it
//! unshared to record the matched path), so no copy of it is kept across the call.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{to_bytes_limited, BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{StatusCode, Uri};

use super::{Answer, Config, Exchange, Extractor, Handled, ResponseCache};

/// Something read from a request by an actix-web extractor (`web::Path`, `web::Query`,
/// `web::ReqData`, a tuple of them, …): `None` when the extractor rejects the request.
pub(super) type Extract<T> =
    dyn Fn(&HttpRequest) -> Pin<Box<dyn Future<Output = Option<T>>>> + Send + Sync;

/// Runs the extractor `E` on a request and `then` on what it produced.
fn extractor<E, T>(then: impl Fn(E) -> Option<T> + Send + Sync + 'static) -> Extractor<T>
where
    E: FromRequest + 'static,
    T: 'static,
{
    let then = Arc::new(then);
    Extractor::Actix(Arc::new(move |request: &HttpRequest| {
        let then = Arc::clone(&then);
        let extracting = E::extract(request);
        Box::pin(async move { then(extracting.await.ok()?) })
    }))
}

impl ResponseCache {
    /// Tags made from the request by an actix-web extractor, the same the handler takes
    /// (`web::Path`, `web::Query`, a tuple of them, …), so that they are rendered from the
    /// values the handler reads: `web::Path<i64>` gives `user:1` for `/users/01` and
    /// `/users/+1` alike. A request the extractor rejects is not looked up. Added to the
    /// [`tags`](Self::tags). The actix-web form of `tags_from` (feature `axum`).
    ///
    /// Path parameters are known once the route matched: wrap the resource or scope
    /// (`web::resource("/users/{id}").wrap(cache)`), not the whole `App`, for a `web::Path`.
    ///
    /// ```no_run
    /// use actix_web::{web, App, HttpResponse};
    /// use cache_core::{Cache, ResponseCache};
    ///
    /// # fn main() -> Result<(), cache_core::Error> {
    /// # let runtime = tokio::runtime::Runtime::new().unwrap(); let _guard = runtime.enter();
    /// let cache = Cache::builder().url("redis://127.0.0.1:6379").build()?;
    /// let users = ResponseCache::new(cache, "resp_user")?
    ///     .actix_tags_from(|id: web::Path<i64>| [format!("user:{}", id.into_inner())]);
    /// let app = App::new().service(
    ///     web::resource("/api/users/{id}")
    ///         .wrap(users)
    ///         .route(web::get().to(|| async { HttpResponse::Ok().body("…") })),
    /// );
    /// # let _ = app; Ok(()) }
    /// ```
    #[must_use]
    pub fn actix_tags_from<E, F, I>(self, tags: F) -> Self
    where
        E: FromRequest + 'static,
        F: Fn(E) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = String>,
    {
        let extract = extractor(move |extracted: E| Some(tags(extracted).into_iter().collect()));
        self.configure(|config| config.tags_from = Some(extract))
    }

    /// Caches the route per user, naming the user from an actix-web extractor (a
    /// `web::ReqData` an auth middleware outside this one set, or an extractor that verifies
    /// the token itself): `Some(id)`, or `None` to answer without the cache. The actix-web
    /// form of `per_user` (feature `axum`), with the same rules: a request the extractor
    /// rejects is not looked up; the name is hashed before it joins the key; the extractor
    /// runs on every request, hits included, since it is what authenticates a hit.
    #[must_use]
    pub fn actix_per_user<E, F>(self, user: F) -> Self
    where
        E: FromRequest + 'static,
        F: Fn(E) -> Option<String> + Send + Sync + 'static,
    {
        let extract = extractor(user);
        self.configure(|config| config.per_user = Some(extract))
    }
}

/// # Panics
///
/// When the options hold an axum extractor (`tags_from`, `per_user`).
impl<S, B> Transform<S, ServiceRequest> for ResponseCache
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = ResponseCacheMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        self.config.check_framework("actix");
        self.config.spec();
        ready(Ok(ResponseCacheMiddleware {
            service: Rc::new(service),
            config: Arc::clone(&self.config),
        }))
    }
}

/// The service [`ResponseCache`] wraps an actix-web app, scope or resource in.
pub struct ResponseCacheMiddleware<S> {
    service: Rc<S>,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for ResponseCacheMiddleware<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheMiddleware")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for ResponseCacheMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            // Only a `GET` may use the cache (a `HEAD` goes to its own route, see
            // `make_get`); and a request not expressible as `http` 1 types (never seen from
            // a real client) is not looked up either. Nothing is converted for the others.
            let parts = (request.method() == actix_web::http::Method::GET)
                .then(|| parts_of(&request))
                .flatten();
            let Some(parts) = parts else {
                let response = service.call(request).await?;
                return Ok(response.map_into_left_body());
            };
            let exchange = ActixExchange {
                parts,
                request: Some(request),
                answered: None,
                service,
            };
            match config.respond(exchange).await {
                ActixResponse::Made(response) => Ok(response),
                ActixResponse::Failed(error) => Err(error),
            }
        })
    }
}

/// The method, URI and headers of a request as `http` 1 types.
fn parts_of(request: &ServiceRequest) -> Option<Parts> {
    let mut parts = http::Request::builder()
        .method(request.method().as_str())
        .uri(Uri::try_from(request.uri().to_string()).ok()?)
        .body(())
        .ok()?
        .into_parts()
        .0;
    parts.headers = headers_of(request.headers().iter())?;
    Some(parts)
}

/// actix-web's (`http` 0.2) headers as `http` 1 ones; `None` if one does not convert.
fn headers_of<'a>(
    headers: impl Iterator<
        Item = (
            &'a actix_web::http::header::HeaderName,
            &'a actix_web::http::header::HeaderValue,
        ),
    >,
) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
            HeaderValue::from_bytes(value.as_bytes()).ok()?,
        );
    }
    Some(map)
}

/// An actix-web request on its way through the cache.
struct ActixExchange<S> {
    parts: Parts,
    /// Until the wrapped service runs.
    request: Option<ServiceRequest>,
    /// The request, back from the wrapped service's response, for the answer made after it.
    answered: Option<HttpRequest>,
    service: Rc<S>,
}

/// What the wrapped service gave: a response, or an error for actix-web to render.
pub(super) enum ActixResponse<B> {
    Made(ServiceResponse<EitherBody<B>>),
    Failed(actix_web::Error),
}

impl<S, B> Exchange for ActixExchange<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ActixResponse<B>;

    fn parts(&self) -> &Parts {
        &self.parts
    }

    /// actix-web's scopes leave the URI as the client sent it.
    fn key_uri(&self) -> &Uri {
        &self.parts.uri
    }

    async fn extract<T: 'static>(&mut self, extractor: &Extractor<T>) -> Option<T> {
        let request = self.request.as_ref()?.request();
        #[allow(unreachable_patterns)]
        match extractor {
            Extractor::Actix(extract) => extract(request).await,
            // Refused when the middleware was built (`check_framework`).
            _ => None,
        }
    }

    /// Making it a `GET` needs the request unshared, which actix-web asserts by panicking
    /// (and its routes do not answer a `HEAD` with their `GET` handler anyway): a `HEAD` is
    /// answered by the app's own `HEAD` route, without the cache.
    fn make_get(&mut self) -> bool {
        false
    }

    fn answer(&self, answer: Answer) -> ActixResponse<B> {
        let request = match (&self.request, &self.answered) {
            (Some(request), _) => request.request().clone(),
            (None, Some(request)) => request.clone(),
            (None, None) => {
                return ActixResponse::Failed(actix_web::error::ErrorInternalServerError(
                    "the response cache lost its request",
                ))
            }
        };
        let status = actix_web::http::StatusCode::from_u16(answer.status.as_u16())
            .unwrap_or(actix_web::http::StatusCode::OK);
        let mut response = HttpResponse::with_body(status, answer.body);
        for (name, value) in &answer.headers {
            if let (Ok(name), Ok(value)) = (
                actix_web::http::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        let response = response.map_into_boxed_body().map_into_right_body();
        ActixResponse::Made(ServiceResponse::new(request, response))
    }

    async fn run(&mut self) -> ActixResponse<B> {
        let Some(request) = self.request.take() else {
            return ActixResponse::Failed(actix_web::error::ErrorInternalServerError(
                "the response cache lost its request",
            ));
        };
        match self.service.call(request).await {
            Ok(response) => {
                self.answered = Some(response.request().clone());
                ActixResponse::Made(response.map_into_left_body())
            }
            Err(error) => ActixResponse::Failed(error),
        }
    }
}

impl<B: MessageBody + 'static> Handled for ActixResponse<B> {
    fn status(&self) -> StatusCode {
        match self {
            ActixResponse::Made(response) => StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            // Never stored.
            ActixResponse::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn headers(&self) -> HeaderMap {
        match self {
            // A header that does not convert is one the cache cannot judge: `Vary: *`
            // makes the response not stored.
            ActixResponse::Made(response) => {
                headers_of(response.headers().iter()).unwrap_or_else(|| {
                    HeaderMap::from_iter([(http::header::VARY, HeaderValue::from_static("*"))])
                })
            }
            ActixResponse::Failed(_) => HeaderMap::new(),
        }
    }

    fn announced(&self) -> Option<u64> {
        match self {
            ActixResponse::Made(response) => match response.response().body().size() {
                BodySize::None => Some(0),
                BodySize::Sized(size) => Some(size),
                BodySize::Stream => None,
            },
            ActixResponse::Failed(_) => None,
        }
    }

    async fn read_body(self, max: usize) -> (Self, Option<Bytes>) {
        let ActixResponse::Made(response) = self else {
            return (self, None);
        };
        let (request, response) = response.into_parts();
        let (response, body) = response.into_parts();
        let (body, bytes) = match to_bytes_limited(body, max).await {
            Ok(Ok(bytes)) => (BoxBody::new(bytes.clone()), Some(bytes)),
            // The body failed or was longer than announced: answer with what the handler's
            // status says and nothing stored.
            _ => (BoxBody::new(()), None),
        };
        let response = response.set_body(EitherBody::right(body));
        (
            ActixResponse::Made(ServiceResponse::new(request, response)),
            bytes,
        )
    }

    /// Kept as it is: actix-http sends a `HEAD`'s response without its body, with the
    /// `Content-Length` of the body, and would send `0` for a body taken away here.
    fn without_body(self) -> Self {
        self
    }
}
