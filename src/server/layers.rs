//! Tower layers around the whole HTTP surface that keep errors and connections right whatever
//! answers a request.
//!
//! [`RequestBodyLayer`] hands every handler its request body through a shared slot. The slot
//! enforces kube-apiserver's write limit (3 MiB: a body over it fails to read and the response
//! becomes a 413 `RequestEntityTooLarge` Status), and it keeps the connection's body after the
//! handler is done with it, so that whatever the handler left unread (an early 401, 403, 404,
//! 405, 415 …) is read and discarded, up to 256 KiB as Go's `net/http` does, before the
//! response goes out: the HTTP/1.1 connection then stays usable. Only a larger, failed or
//! stalled rest ends with `Connection: close`. [`StatusErrorsLayer`] turns an error response
//! whose body is not a `metav1.Status` (plain text or empty, as layers answer) into one, so
//! clients always get a code, a reason and a message; the health endpoints keep their plain
//! text.

use crate::api::Status;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// The largest request body kube-apiserver reads (`--max-request-bytes` default): 3 MiB.
pub const MAX_REQUEST_BODY: u64 = 3 * 1024 * 1024;
/// How much of a body a handler did not read is discarded to keep the connection (Go's
/// `net/http` reads up to 256 KiB after the handler).
pub const MAX_DRAIN: u64 = 256 * 1024;
/// How long discarding an unread body may take before the connection is given up instead.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Failures reading a request body through the slot.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the limit (by its Content-Length or by what arrived).
    #[error("request body too large: limit is {0}")]
    TooLarge(u64),
    /// The connection failed while the body was read.
    #[error("reading the request body: {0}")]
    Read(#[source] axum::Error),
}

/// The limits a [`RequestBodyLayer`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Bytes a handler may read; beyond them the request is a 413.
    pub max_body: u64,
    /// Unread bytes discarded after the handler to keep an HTTP/1 connection.
    pub max_drain: u64,
    /// Time allowed for that.
    pub drain_timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_body: MAX_REQUEST_BODY,
            max_drain: MAX_DRAIN,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

/// Request body limit and post-response drain (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestBodyLayer {
    limits: BodyLimits,
}

impl RequestBodyLayer {
    /// kube-apiserver's limits: 3 MiB bodies, 256 KiB drained.
    pub fn new() -> Self {
        RequestBodyLayer::default()
    }

    /// Other limits (tests).
    pub fn with_limits(limits: BodyLimits) -> Self {
        RequestBodyLayer { limits }
    }
}

impl<S> Layer<S> for RequestBodyLayer {
    type Service = RequestBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBodyService {
            inner,
            limits: self.limits,
        }
    }
}

/// The service of [`RequestBodyLayer`].
#[derive(Debug, Clone)]
pub struct RequestBodyService<S> {
    inner: S,
    limits: BodyLimits,
}

/// The connection's request body, shared between the handler's [`GuardedBody`] and the layer.
struct Slot {
    /// The real body; the layer takes it back once the handler answered.
    body: Option<Body>,
    /// Bytes handed to the handler.
    read: u64,
    /// The handler polled the body at least once (so a `100 Continue` went out).
    polled: bool,
    /// The handler read to the end.
    ended: bool,
    /// The handler hit the size limit.
    overflowed: bool,
}

/// The body a handler sees: reads go through the slot, counted against the limit.
struct GuardedBody {
    slot: Arc<Mutex<Slot>>,
    limit: u64,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let limit = self.limit;
        let mut slot = self.slot.lock();
        slot.polled = true;
        if slot.overflowed {
            return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
        }
        let read = slot.read;
        let Some(body) = slot.body.as_mut() else {
            return Poll::Ready(None);
        };
        // A declared length over the limit is refused before anything is read.
        if read.saturating_add(body.size_hint().lower()) > limit {
            slot.overflowed = true;
            return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
        }
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                slot.read = slot.read.saturating_add(len);
                if slot.read > limit {
                    slot.overflowed = true;
                    return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Read(e)))),
            Poll::Ready(None) => {
                slot.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let slot = self.slot.lock();
        slot.ended || slot.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let slot = self.slot.lock();
        slot.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<S> Service<Request> for RequestBodyService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was polled ready serves this request.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let limits = self.limits;
        Box::pin(async move {
            // Nothing to limit or drain (most reads): no slot.
            if req.body().is_end_stream() {
                let Ok(response) = inner.call(req).await;
                return Ok(response);
            }
            let http1 = req.version() < Version::HTTP_2;
            let expects_continue = req
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let (parts, body) = req.into_parts();
            let slot = Arc::new(Mutex::new(Slot {
                body: Some(body),
                read: 0,
                polled: false,
                ended: false,
                overflowed: false,
            }));
            let guarded = GuardedBody {
                slot: slot.clone(),
                limit: limits.max_body,
            };
            let req = Request::from_parts(parts, Body::new(guarded));
            let Ok(response) = inner.call(req).await;
            let (body, polled, ended, overflowed) = {
                let mut s = slot.lock();
                (s.body.take(), s.polled, s.ended, s.overflowed)
            };
            let mut response = if overflowed {
                Status::request_entity_too_large(limits.max_body).into_response()
            } else {
                response
            };
            // HTTP/2 streams end on their own; only an HTTP/1 connection needs the rest read.
            if http1
                && !ended
                && let Some(body) = body
                && !body.is_end_stream()
            {
                // Go does not read a body the client has not sent yet because it waits for
                // `100 Continue`; nor do we read past a refused oversized body.
                let awaits_continue = expects_continue && !polled;
                let keep = !overflowed && !awaits_continue && drain(body, &limits).await;
                if !keep {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            Ok(response)
        })
    }
}

/// Read and discard what is left of `body`, at most `max_drain` bytes within `drain_timeout`;
/// whether it ended.
async fn drain(mut body: Body, limits: &BodyLimits) -> bool {
    if body.size_hint().lower() > limits.max_drain {
        return false;
    }
    let max = limits.max_drain;
    let discard = async move {
        let mut seen: u64 = 0;
        loop {
            match body.frame().await {
                None => return true,
                Some(Ok(frame)) => {
                    seen = seen.saturating_add(frame.data_ref().map_or(0, |d| d.len() as u64));
                    if seen > max {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(limits.drain_timeout, discard)
        .await
        .unwrap_or(false)
}

/// Turns error responses without a `metav1.Status` body into Status objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusErrorsLayer;

impl<S> Layer<S> for StatusErrorsLayer {
    type Service = StatusErrorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusErrorsService { inner }
    }
}

/// The service of [`StatusErrorsLayer`].
#[derive(Debug, Clone)]
pub struct StatusErrorsService<S> {
    inner: S,
}

/// Paths whose errors are plain text on purpose, as kube-apiserver's are.
fn plain_text_path(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Whether a Content-Type names a structured body (JSON, YAML, protobuf), as every handler's
/// Status is.
fn structured(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ct = ct.trim().to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence == "application/json"
        || essence == "application/yaml"
        || essence == "application/vnd.kubernetes.protobuf"
        || essence.ends_with("+json")
}

/// The longest layer error text taken over as a Status message.
const MAX_MESSAGE: usize = 4096;

/// The Status for an error response a layer wrote: its text as the message when it has a short
/// one, the headers it set (e.g. `Retry-After`) kept.
async fn to_status(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(collected) => String::from_utf8(collected.to_bytes().to_vec()).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let status = Status::for_code(parts.status.as_u16(), &text);
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
    ] {
        parts.headers.remove(h);
    }
    let mut fresh = status.into_response();
    let mut headers = std::mem::take(&mut parts.headers);
    headers.extend(fresh.headers_mut().drain());
    *fresh.headers_mut() = headers;
    fresh
}

impl<S> Service<Request> for StatusErrorsService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let plain = plain_text_path(req.uri().path());
        Box::pin(async move {
            let Ok(response) = inner.call(req).await;
            let error = response.status().is_client_error() || response.status().is_server_error();
            if !error || plain || structured(response.headers().get(header::CONTENT_TYPE)) {
                return Ok(response);
            }
            Ok(to_status(response).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use futures_util::StreamExt as _;
    use tower::ServiceExt;

    /// A handler that answers 403 without reading the body, or echoes the body's length.
    fn app(read: bool) -> tower::util::BoxCloneService<Request, Response, Infallible> {
        tower::util::BoxCloneService::new(tower::service_fn(move |req: Request| async move {
            if !read {
                return Ok(Status::forbidden("no").into_response());
            }
            match axum::body::to_bytes(req.into_body(), usize::MAX).await {
                Ok(b) => Ok(format!("{}", b.len()).into_response()),
                Err(e) => Ok(Status::bad_request(e.to_string()).into_response()),
            }
        }))
    }

    fn post(body: Vec<u8>) -> Request {
        Request::builder()
            .method("POST")
            .uri("/x")
            .body(Body::from(body))
            .unwrap()
    }

    async fn json(resp: Response) -> serde_json::Value {
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413_status_and_the_connection_closes() {
        let svc = RequestBodyLayer::new().layer(app(true));
        let resp = svc.oneshot(post(vec![b'a'; 4 << 20])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        let v = json(resp).await;
        assert_eq!(v["reason"], "RequestEntityTooLarge");
        assert_eq!(v["message"], "Request entity too large: limit is 3145728");
    }

    #[tokio::test]
    async fn a_body_within_the_limit_reaches_the_handler() {
        let svc = RequestBodyLayer::new().layer(app(true));
        let resp = svc.oneshot(post(vec![b'a'; 3 << 20])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn an_unread_small_body_is_drained_and_the_connection_kept() {
        let svc = RequestBodyLayer::new().layer(app(false));
        let resp = svc.oneshot(post(vec![b'a'; 20 << 10])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get(header::CONNECTION).is_none());
    }

    /// A body of `chunks` 4 KiB chunks that counts how many were read.
    fn counted(chunks: usize) -> (Body, Arc<std::sync::atomic::AtomicUsize>) {
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = read.clone();
        let stream = futures_util::stream::iter(0..chunks).map(move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'a'; 4096])))
        });
        (Body::new(http_body_util::StreamBody::new(stream)), read)
    }

    #[tokio::test]
    async fn the_unread_rest_of_a_streamed_body_is_read_before_the_answer_goes_out() {
        let svc = RequestBodyLayer::new().layer(app(false));
        let (body, read) = counted(5);
        let req = Request::builder()
            .method("PUT")
            .uri("/x")
            .body(body)
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 5);
        assert!(resp.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn a_body_awaiting_100_continue_is_not_read_and_the_connection_closes() {
        let svc = RequestBodyLayer::new().layer(app(false));
        let (body, read) = counted(5);
        let req = Request::builder()
            .method("PUT")
            .uri("/x")
            .header(header::EXPECT, "100-continue")
            .body(body)
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn an_unread_body_over_256_kib_closes_the_connection_but_keeps_the_answer() {
        let svc = RequestBodyLayer::new().layer(app(false));
        let resp = svc.oneshot(post(vec![b'a'; 300 << 10])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_chunked_body_that_grows_past_the_limit_is_refused_while_reading() {
        let limits = BodyLimits {
            max_body: 10,
            ..BodyLimits::default()
        };
        let svc = RequestBodyLayer::with_limits(limits).layer(app(true));
        let chunks = futures_util::stream::iter(
            (0..4).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"abcd")))),
        );
        let body = Body::new(http_body_util::StreamBody::new(chunks));
        let req = Request::builder()
            .method("POST")
            .uri("/x")
            .body(body)
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn plain_text_and_empty_layer_errors_become_status_objects() {
        let svc = StatusErrorsLayer.layer(tower::service_fn(|req: Request| async move {
            let mut r = match req.uri().path() {
                "/slow" => (StatusCode::REQUEST_TIMEOUT, "").into_response(),
                "/busy" => (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response(),
                "/readyz" => (StatusCode::INTERNAL_SERVER_ERROR, "[-]x failed").into_response(),
                _ => Status::not_found("g", "things", "n").into_response(),
            };
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok::<_, Infallible>(r)
        }));
        let get = |p: &str| Request::builder().uri(p).body(Body::empty()).unwrap();
        let resp = svc.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let v = json(resp).await;
        assert_eq!(
            (v["kind"].as_str(), v["reason"].as_str()),
            (Some("Status"), Some("Timeout"))
        );
        let v = json(svc.clone().oneshot(get("/busy")).await.unwrap()).await;
        assert_eq!(v["reason"], "ServiceUnavailable");
        assert_eq!(v["message"], "overloaded");
        assert_eq!(v["code"], 503);
        let v = json(svc.clone().oneshot(get("/nope")).await.unwrap()).await;
        assert_eq!(v["message"], "things.g \"n\" not found");
        let resp = svc.oneshot(get("/readyz")).await.unwrap();
        let b = axum::body::to_bytes(resp.into_body(), 100).await.unwrap();
        assert_eq!(&b[..], b"[-]x failed");
    }
}
