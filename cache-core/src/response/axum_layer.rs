//! The response cache as a tower layer for axum (feature `axum`): a thin adapter that hands
//! an axum request and response to the framework-free logic of the parent module and runs
//! axum's extractors for `tags_from` / `per_user`. It decides nothing itself.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody as _};
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use tower_layer::Layer;
use tower_service::Service;

use super::{Answer, Config, Exchange, Extractor, Handled, ResponseCache};

/// Something read from a request by an axum extractor (`Path`, `Query`, `Extension`, a
/// tuple of them, …): `None` when the extractor rejects the request.
pub(super) type Extract<T> = dyn for<'a> Fn(&'a mut Parts) -> Pin<Box<dyn Future<Output = Option<T>> + Send + 'a>>
    + Send
    + Sync;

/// Runs the extractor `E` on a request's parts and `then` on what it produced.
fn extractor<E, T>(then: impl Fn(E) -> Option<T> + Send + Sync + 'static) -> Extractor<T>
where
    E: FromRequestParts<()> + Send + 'static,
    T: 'static,
{
    let then = Arc::new(then);
    Extractor::Axum(Arc::new(move |parts: &mut Parts| {
        let then = Arc::clone(&then);
        Box::pin(async move {
            let extracted = E::from_request_parts(parts, &()).await.ok()?;
            then(extracted)
        })
    }))
}

impl ResponseCache {
    /// Tags made from the request by an axum extractor, the same the handler takes (`Path`,
    /// `Query`, a tuple of them, …), so that they are rendered from the values the handler
    /// reads, as `#[cached_get]` renders its tags: `Path(id): Path<i64>` gives `user:1` for
    /// `/users/01` and `/users/+1` alike. A request the extractor rejects is not looked up.
    /// Added to the [`tags`](Self::tags). (With actix-web:
    /// [`actix_tags_from`](Self::actix_tags_from).)
    #[must_use]
    pub fn tags_from<E, F, I>(self, tags: F) -> Self
    where
        E: FromRequestParts<()> + Send + 'static,
        F: Fn(E) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = String>,
    {
        let extract = extractor(move |extracted: E| Some(tags(extracted).into_iter().collect()));
        self.configure(|config| config.tags_from = Some(extract))
    }

    /// Caches the route per user: `user` receives what the route's authentication produced,
    /// through an axum extractor (an `Extension` an auth middleware outside this layer set,
    /// or an extractor that verifies the token itself), and names the user (`Some(id)`), or
    /// `None` to answer without the cache. A request the extractor rejects (no session, a
    /// revoked or expired token) is not looked up, so the handler answers it. The name is
    /// hashed (SHA-256) before it joins the key: tokens reach neither Redis nor the logs.
    ///
    /// The extractor runs on every request, hits included: it is what authenticates a hit,
    /// since the handler does not run. An extractor that trusts an unverified claim lets
    /// anyone read anyone's page. (With actix-web: [`actix_per_user`](Self::actix_per_user).)
    #[must_use]
    pub fn per_user<E, F>(self, user: F) -> Self
    where
        E: FromRequestParts<()> + Send + 'static,
        F: Fn(E) -> Option<String> + Send + Sync + 'static,
    {
        let extract = extractor(user);
        self.configure(|config| config.per_user = Some(extract))
    }
}

/// # Panics
///
/// When the options hold an actix-web extractor (`actix_tags_from`, `actix_per_user`).
impl<S> Layer<S> for ResponseCache {
    type Service = ResponseCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.config.check_framework("axum");
        self.config.spec();
        ResponseCacheService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`ResponseCache`] wraps an axum route in.
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
        let (parts, body) = request.into_parts();
        let key_uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|original| original.0.clone());
        Box::pin(async move {
            let exchange = AxumExchange {
                parts,
                key_uri,
                body: Some(body),
                inner: Some(inner),
            };
            Ok(config.respond(exchange).await)
        })
    }
}

/// An axum request on its way through the cache.
struct AxumExchange<S> {
    parts: Parts,
    /// `OriginalUri`: under `Router::nest` the request's own URI has lost the prefix.
    key_uri: Option<Uri>,
    body: Option<Body>,
    inner: Option<S>,
}

impl<S> Exchange for AxumExchange<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    type Response = Response;

    fn parts(&self) -> &Parts {
        &self.parts
    }

    fn key_uri(&self) -> &Uri {
        self.key_uri.as_ref().unwrap_or(&self.parts.uri)
    }

    async fn extract<T: 'static>(&mut self, extractor: &Extractor<T>) -> Option<T> {
        #[allow(unreachable_patterns)]
        match extractor {
            Extractor::Axum(extract) => extract(&mut self.parts).await,
            // Refused when the layer was built (`check_framework`).
            _ => None,
        }
    }

    fn make_get(&mut self) -> bool {
        self.parts.method = Method::GET;
        true
    }

    fn answer(&self, answer: Answer) -> Response {
        let mut response = Response::new(Body::from(answer.body));
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        response
    }

    async fn run(&mut self) -> Response {
        let (Some(mut inner), Some(body)) = (self.inner.take(), self.body.take()) else {
            // `respond` calls the handler once.
            return Response::new(Body::empty());
        };
        let parts = std::mem::replace(&mut self.parts, Request::new(()).into_parts().0);
        match inner.call(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

impl Handled for Response {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }

    fn headers(&self) -> HeaderMap {
        Response::headers(self).clone()
    }

    fn announced(&self) -> Option<u64> {
        self.body().size_hint().upper()
    }

    async fn read_body(self, max: usize) -> (Self, Option<Bytes>) {
        let (parts, body) = self.into_parts();
        match axum::body::to_bytes(body, max).await {
            Ok(bytes) => (
                Response::from_parts(parts, Body::from(bytes.clone())),
                Some(bytes),
            ),
            // The body failed while being read: answer with what the handler's status says
            // and nothing stored.
            Err(_) => (Response::from_parts(parts, Body::empty()), None),
        }
    }

    fn without_body(mut self) -> Self {
        if let Some(length) = self.body().size_hint().exact() {
            if !Response::headers(&self).contains_key(header::CONTENT_LENGTH) {
                self.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
        }
        *self.body_mut() = Body::empty();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_uri_of_a_nested_route_keys_it() {
        let mut parts = Request::builder()
            .uri("/users/1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        parts
            .extensions
            .insert(OriginalUri("/tenant-a/users/1".parse().unwrap()));
        let key_uri = parts.extensions.get::<OriginalUri>().map(|o| o.0.clone());
        let exchange = AxumExchange::<axum::routing::Route> {
            parts,
            key_uri,
            body: None,
            inner: None,
        };
        assert_eq!(exchange.key_uri().path(), "/tenant-a/users/1");
    }
}
