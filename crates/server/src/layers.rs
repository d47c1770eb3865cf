//! Tower layers around the whole HTTP surface: cross-cutting concerns (request ids and tracing,
//! compression, request timeouts) from tower-http, and the layers that keep errors and
//! connections right whatever answers a request.
//!
//! [`edge`] is the outermost stack: tower-http's request id (`x-request-id`, taken from the
//! request or a new UUID, echoed on the response) and trace layers open one span per request
//! (method, path, request id) in which everything the request logs is logged, and log its
//! status and latency when its answer is ready (debug; a warning for a 5xx). [`per_request`]
//! sits inside the metrics middleware and tells watches from other requests by their
//! `RequestInfo`: [`RequestTimeoutLayer`] answers any other request within
//! [`REQUEST_TIMEOUT`] or with a 504 `Timeout` Status, and [`GzipLayer`] gzips successful
//! responses of [`MIN_GZIP_SIZE`] or more for clients that ask for gzip; watches are neither
//! timed out nor compressed.
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

use axum::body::Body;
use axum::extract::Request;
use axum::http::{self as http, HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use kube_api::Status;
use kube_api::request::RequestInfo;
use parking_lot::Mutex;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::layer::util::Stack;
use tower::{Layer, Service, ServiceExt as _};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::{Compression, CompressionLevel};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::Timeout;
use tower_http::trace::{DefaultOnBodyChunk, MakeSpan, OnFailure, OnResponse, TraceLayer};
use tracing::Span;

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
        // The inner service is called here, not inside the future: each layer's future owning
        // a clone of everything below it cost every request a clone of the whole stack.
        // Nothing to limit or drain (most reads): no slot.
        if req.body().is_end_stream() {
            return Box::pin(self.inner.call(req));
        }
        let limits = self.limits;
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
        let answer = self
            .inner
            .call(Request::from_parts(parts, Body::new(guarded)));
        Box::pin(async move {
            let Ok(response) = answer.await;
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
        let plain = plain_text_path(req.uri().path());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let Ok(response) = answer.await;
            let error = response.status().is_client_error() || response.status().is_server_error();
            if !error || plain || structured(response.headers().get(header::CONTENT_TYPE)) {
                return Ok(response);
            }
            Ok(to_status(response).await)
        })
    }
}

/// How long a request other than a watch may take to answer (kube-apiserver's default
/// `--request-timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The smallest response gzipped for a client that asks for it (kube-apiserver's threshold);
/// smaller ones are sent as they are.
pub const MIN_GZIP_SIZE: u64 = 128 * 1024;
/// The request id header: taken from the request, or generated, and set on the response.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name, so a lookup does not parse the name first.
pub const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// Whether a request is a watch: by the [`RequestInfo`] the metrics middleware put in its
/// extensions, or by reading the request again when it did not pass there.
fn is_watch(req: &Request) -> bool {
    match req.extensions().get::<RequestInfo>() {
        Some(info) => info.verb == "watch",
        None => {
            RequestInfo::parse(req.method(), req.uri().path(), req.uri().query()).verb == "watch"
        }
    }
}

/// The layers that depend on what a request is (a watch or not): [`GzipLayer`] around
/// [`RequestTimeoutLayer`] with this timeout. They go inside the metrics middleware, which
/// reads the request's [`RequestInfo`] once for them, so that a timeout is counted as a 504.
pub fn per_request(request_timeout: Duration) -> Stack<RequestTimeoutLayer, GzipLayer> {
    Stack::new(RequestTimeoutLayer::new(request_timeout), GzipLayer::new())
}

/// A response body that holds `guard` until it is dropped (a watch's gauges and its slot under
/// the per-user watch limit). Its frames pass straight through: wrapping the body as a stream
/// and back cost every frame of every watch stream three more adapters.
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> Guarded<G> {
    /// `response` with its body holding `guard`.
    pub fn attach(response: Response, guard: G) -> Response {
        response.map(|inner| {
            Body::new(Guarded {
                inner,
                _guard: guard,
            })
        })
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The layers around everything, outermost first: a request id ([`REQUEST_ID`], taken from
/// the request or a new UUID), the request's span and its completion log, the request id
/// copied to the response, the body limit ([`RequestBodyLayer`]) and errors as Status objects
/// ([`StatusErrorsLayer`]). The span is outside every other layer so that whatever they and
/// the handler log carries the request id, 413s and timeouts included.
pub fn edge() -> EdgeLayer {
    Stack::new(
        Stack::new(
            Stack::new(
                Stack::new(StatusErrorsLayer, RequestBodyLayer::new()),
                PropagateRequestIdLayer::x_request_id(),
            ),
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                .on_request(())
                .on_response(LogResponse)
                .on_eos(())
                .on_failure(LogFailure),
        ),
        SetRequestIdLayer::x_request_id(MakeRequestUuid),
    )
}

/// The trace layer of [`edge`].
pub type RequestTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    RequestSpan,
    (),
    LogResponse,
    DefaultOnBodyChunk,
    (),
    LogFailure,
>;

/// The layer [`edge`] builds.
pub type EdgeLayer = Stack<
    Stack<
        Stack<Stack<StatusErrorsLayer, RequestBodyLayer>, PropagateRequestIdLayer>,
        RequestTraceLayer,
    >,
    SetRequestIdLayer<MakeRequestUuid>,
>;

/// The span of one request: method, path and request id. Whatever is logged while the
/// request is handled, or its response body is produced, is logged inside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &http::Request<B>) -> Span {
        let id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // A span's level only decides whether it is recorded: at ERROR it is recorded under any
        // filter that lets a handler's warning through, so that warning names its request.
        tracing::error_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %id,
        )
    }
}

/// Logs a request's status and latency once its response head is ready: at debug, or as a
/// warning for a 5xx.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogResponse;

impl<B> OnResponse<B> for LogResponse {
    fn on_response(self, response: &http::Response<B>, latency: Duration, _: &Span) {
        let status = response.status().as_u16();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        if response.status().is_server_error() {
            tracing::warn!(status, latency_ms, "Request failed.");
        } else {
            tracing::debug!(status, latency_ms, "Request done.");
        }
    }
}

/// Logs a response body that failed while it was sent; 5xx answers are logged by
/// [`LogResponse`] already.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFailure;

impl OnFailure<ServerErrorsFailureClass> for LogFailure {
    fn on_failure(&mut self, class: ServerErrorsFailureClass, latency: Duration, _: &Span) {
        if let ServerErrorsFailureClass::Error(error) = class {
            let latency_ms = latency.as_secs_f64() * 1000.0;
            tracing::warn!(%error, latency_ms, "Sending the response failed.");
        }
    }
}

/// Answers requests other than watches within a time limit, else with a plain 504 that
/// [`StatusErrorsLayer`] turns into a `Timeout` Status, as kube-apiserver's timeout handler
/// answers. Watches last as long as they are meant to (`timeoutSeconds`).
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeoutLayer {
    timeout: Duration,
}

impl RequestTimeoutLayer {
    /// Requests other than watches get `timeout`.
    pub fn new(timeout: Duration) -> Self {
        RequestTimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeoutService {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`RequestTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct RequestTimeoutService<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request> for RequestTimeoutService<S>
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
        if is_watch(&req) {
            return Box::pin(self.inner.call(req));
        }
        // Over `&mut` of the inner service: no clone of the stack below per request.
        let mut timed =
            Timeout::with_status_code(&mut self.inner, StatusCode::GATEWAY_TIMEOUT, self.timeout);
        Box::pin(timed.call(req))
    }
}

/// Whether the request's `Accept-Encoding` names gzip with a non-zero quality. Only then is a
/// response compressed: `*` does not count, as for kube-apiserver, and a request that accepts
/// nothing else still gets its answer uncompressed rather than a 406.
fn asks_for_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                && parts.all(|p| {
                    let Some((k, v)) = p.split_once('=') else {
                        return true;
                    };
                    !k.trim().eq_ignore_ascii_case("q")
                        || v.trim().parse::<f32>().is_ok_and(|q| q > 0.0)
                })
        })
}

/// A response whose body ends for good: polled after its end, it ends again.
fn fuse(response: Response) -> Response {
    response.map(|body| Body::new(Fused { body, ended: false }))
}

/// A body that is not polled again once it ended (see [`fuse`]).
struct Fused {
    body: Body,
    ended: bool,
}

impl http_body::Body for Fused {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.body.size_hint()
        }
    }
}

/// Which responses [`GzipLayer`] compresses: successful ones of [`MIN_GZIP_SIZE`] or more, or
/// of unknown size (a LIST streamed in chunks is only streamed when it is larger than one
/// chunk, 128 KiB).
#[derive(Debug, Clone, Copy)]
pub struct GzipPredicate {
    min_size: SizeAbove,
}

impl Default for GzipPredicate {
    fn default() -> Self {
        GzipPredicate {
            min_size: SizeAbove::new(MIN_GZIP_SIZE),
        }
    }
}

impl Predicate for GzipPredicate {
    fn should_compress<B: http_body::Body>(&self, response: &http::Response<B>) -> bool {
        response.status().is_success() && self.min_size.should_compress(response)
    }
}

/// gzip, through tower-http's compression, of large successful responses to requests that
/// ask for it ([`GzipPredicate`]), as kube-apiserver compresses them (fastest level, as its
/// level 1). Watches are never compressed: the encoder holds small events back until it has
/// a block's worth, so a watch would stall.
#[derive(Debug, Clone, Copy, Default)]
pub struct GzipLayer {
    predicate: GzipPredicate,
}

impl GzipLayer {
    /// Responses of [`MIN_GZIP_SIZE`] or more.
    pub fn new() -> Self {
        GzipLayer::default()
    }
}

impl<S> Layer<S> for GzipLayer {
    type Service = GzipService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GzipService {
            inner,
            predicate: self.predicate,
        }
    }
}

/// The service of [`GzipLayer`].
#[derive(Debug, Clone)]
pub struct GzipService<S> {
    inner: S,
    predicate: GzipPredicate,
}

impl<S> Service<Request> for GzipService<S>
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
        if is_watch(&req) || !asks_for_gzip(req.headers()) {
            return Box::pin(self.inner.call(req));
        }
        // The compression layer owns its service: the polled one, a clone left in its place.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        // tower-http polls a body again after its end (tower-http#732), which a body streamed
        // from `unfold` (a large LIST) does not survive: the body goes in fused.
        let fused = inner.map_response(fuse as fn(Response) -> Response);
        let mut gzip = Compression::new(fused)
            .compress_when(self.predicate)
            .quality(CompressionLevel::Fastest);
        let answer = gzip.call(req);
        Box::pin(async move {
            let Ok(response) = answer.await;
            Ok(response.map(Body::new))
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

    #[test]
    fn gzip_is_asked_for_by_name_with_a_non_zero_quality_only() {
        let asks = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            asks_for_gzip(&h)
        };
        assert!(asks("gzip"));
        assert!(asks("deflate, GZIP;q=0.5"));
        assert!(asks("gzip;q=1.0, identity;q=0"));
        assert!(!asks("gzip;q=0"));
        assert!(!asks("gzip; q=0.000"));
        assert!(!asks("*"));
        assert!(!asks("identity"));
        assert!(!asks_for_gzip(&HeaderMap::new()));
    }

    #[test]
    fn only_large_or_unsized_successful_responses_are_compressed() {
        let p = GzipPredicate::default();
        let sized = |code: u16, len: usize| {
            let mut r = Response::new(Body::from(vec![b'x'; len]));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        };
        assert!(p.should_compress(&sized(200, 128 * 1024)));
        assert!(!p.should_compress(&sized(200, 128 * 1024 - 1)));
        assert!(!p.should_compress(&sized(500, 1 << 20)));
        assert!(!p.should_compress(&sized(404, 1 << 20)));
        let chunks = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from("{}"))]);
        assert!(p.should_compress(&Response::new(Body::from_stream(chunks))));
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
