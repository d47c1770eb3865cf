//! Request limits with kube-apiserver's names and defaults: `--max-requests-inflight` (400
//! requests other than watches at once; `0` no limit) and `--max-watches-per-user` (200,000 open
//! watches per user). Over either, the request is refused with a `429 TooManyRequests` Status and
//! `Retry-After: 1`, before it reaches a handler; health, readiness and metrics are exempt, so
//! probes and scrapes keep working under load. `--write-stall-timeout` (30 s) closes a
//! connection whose client stopped accepting bytes (applied by [`crate::tls`]).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kube_api::Status;
use kube_api::request::RequestInfo;
use kube_api::user::RequestUser;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// `--max-requests-inflight` and `--max-watches-per-user`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct LimitFlags {
    /// Requests other than watches served at once; more are refused with 429 (0: no limit).
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Open watches per user; more are refused with 429 (0: no limit).
    #[arg(long, default_value_t = 200_000)]
    pub max_watches_per_user: usize,
    /// Close a connection once the client has accepted none of the bytes the server has for it
    /// for this long (a watcher that stopped reading: it relists when it reconnects; 0: never).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::flags::parse_duration)]
    pub write_stall_timeout: std::time::Duration,
}

impl Default for LimitFlags {
    fn default() -> Self {
        LimitFlags {
            max_requests_inflight: 400,
            max_watches_per_user: 200_000,
            write_stall_timeout: crate::tls::WRITE_STALL_TIMEOUT,
        }
    }
}

/// The counters the limits are checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    inflight: Option<Arc<Semaphore>>,
    max_watches: usize,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Limits {
    /// Limits as the flags say.
    pub fn new(flags: &LimitFlags) -> Self {
        Limits {
            inflight: (flags.max_requests_inflight > 0)
                .then(|| Arc::new(Semaphore::new(flags.max_requests_inflight))),
            max_watches: flags.max_watches_per_user,
            watches: Arc::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(&LimitFlags::default())
    }
}

/// One open watch of a user, counted until its response body is dropped.
struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self.watches.lock();
        if let Some(n) = w.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.user);
            }
        }
    }
}

/// A request refused over a limit: answered `429 TooManyRequests` with `Retry-After`.
#[derive(Debug)]
pub struct TooMany(String);

impl IntoResponse for TooMany {
    fn into_response(self) -> Response {
        Status::new(
            429,
            "TooManyRequests",
            format!("Too many requests, please try again later: {}", self.0),
        )
        .into_response()
    }
}

fn too_many(what: &str) -> TooMany {
    TooMany(what.to_string())
}

/// What a request holds while it runs: an in-flight slot, or a watch slot of its user.
pub struct Admitted {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    watch: Option<WatchSlot>,
}

impl Admitted {
    /// Keep a watch counted while its body streams; anything else is released when this is
    /// dropped (when the handler has answered).
    pub fn attach(self, response: Response) -> Response {
        let Some(slot) = self.watch else {
            return response;
        };
        crate::layers::Guarded::attach(response, slot)
    }
}

impl Limits {
    /// Admit a request of `user` (its name), or the 429 answer. Health, readiness and metrics
    /// are always admitted.
    pub fn admit(&self, req: &Request, user: &str) -> Result<Admitted, TooMany> {
        let free = Admitted {
            _permit: None,
            watch: None,
        };
        let path = req.uri().path();
        if matches!(path, "/healthz" | "/livez" | "/readyz" | "/metrics") {
            return Ok(free);
        }
        let watch = match req.extensions().get::<RequestInfo>() {
            Some(info) => info.verb == "watch",
            None => RequestInfo::parse(req.method(), path, req.uri().query()).verb == "watch",
        };
        if !watch {
            return match &self.inflight {
                Some(s) => match s.clone().try_acquire_owned() {
                    Ok(p) => Ok(Admitted {
                        _permit: Some(p),
                        watch: None,
                    }),
                    Err(_) => Err(too_many("the server is serving its maximum of requests")),
                },
                None => Ok(free),
            };
        }
        if self.max_watches == 0 {
            return Ok(free);
        }
        let mut w = self.watches.lock();
        let n = w.entry(user.to_string()).or_insert(0);
        if *n >= self.max_watches {
            return Err(too_many(&format!(
                "user \"{user}\" has its maximum of open watches"
            )));
        }
        *n += 1;
        Ok(Admitted {
            _permit: None,
            watch: Some(WatchSlot {
                watches: self.watches.clone(),
                user: user.to_string(),
            }),
        })
    }
}

/// The limits as a middleware of their own (for routers without the server's authentication).
pub async fn limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let user = req
        .extensions()
        .get::<RequestUser>()
        .and_then(|u| u.0.as_ref().map(|u| u.name.clone()))
        .unwrap_or_else(|| "system:anonymous".to_string());
    match limits.admit(&req, &user) {
        Ok(admitted) => {
            let response = next.run(req).await;
            admitted.attach(response)
        }
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use std::sync::Arc;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_over_the_inflight_limit_is_429_with_retry_after_and_health_still_answers() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let limits = Limits::new(&LimitFlags {
            max_requests_inflight: 1,
            max_watches_per_user: 0,
            ..LimitFlags::default()
        });
        let app = Router::new()
            .route(
                "/slow",
                get(move || {
                    let g = g.clone();
                    async move {
                        g.notified().await;
                        "done"
                    }
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(limits, limit));
        let first = tokio::spawn(
            app.clone()
                .oneshot(Request::get("/slow").body(Body::empty()).expect("request")),
        );
        // Let the first request take the only slot.
        tokio::task::yield_now().await;
        let mut second = None;
        for _ in 0..100 {
            let r = app
                .clone()
                .oneshot(Request::get("/fast").body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            if r.status() == 429 {
                second = Some(r);
                break;
            }
            tokio::task::yield_now().await;
        }
        let second = second.expect("a request over the limit is refused");
        assert_eq!(second.headers()["retry-after"], "1");
        let health = app
            .clone()
            .oneshot(
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(health.status(), 200);
        gate.notify_waiters();
        assert_eq!(
            first.await.expect("joined").expect("infallible").status(),
            200
        );
    }
}
