//! The server: TLS and identities ([`tls`], [`authn`]), the composed router with health,
//! readiness and metrics endpoints ([`app`]), and the three roles that wire store, seed, index,
//! controllers and listener together: the embedded all-in-one or a shard writing to a remote
//! cache ([`run`]), the cache server alone ([`run_cache_server`]) and the virtual workspace
//! alone ([`run_virtual_workspace`]). Roles talk to the cache only through the seams of
//! `cache_client`, in process or over HTTPS.

#![forbid(unsafe_code)]

pub mod authn;
pub mod flags;
pub mod layers;
pub mod limits;
pub mod metrics;
pub mod storage_admin;
pub mod tls;

use authn::Authenticator;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube_api::Status;
use kube_api::user::RequestUser;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use store::Store;
use tls::PeerIdentity;
use virtual_workspace::Index;

/// Which roles a process runs; [`app`] mounts the routes of these only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The cache server API (`/services/cache/shards/…`, `/shards/…`).
    pub cache_server: bool,
    /// The workspaces API and controllers (`/clusters/…`).
    pub shard: bool,
    /// The Replication virtual workspace (`/services/replication/…`).
    pub virtual_workspace: bool,
}

impl Roles {
    /// The embedded all-in-one.
    pub const ALL: Roles = Roles {
        cache_server: true,
        shard: true,
        virtual_workspace: true,
    };
    /// The cache server alone.
    pub const CACHE_SERVER: Roles = Roles {
        cache_server: true,
        shard: false,
        virtual_workspace: false,
    };
    /// The virtual workspace alone.
    pub const VIRTUAL_WORKSPACE: Roles = Roles {
        cache_server: false,
        shard: false,
        virtual_workspace: true,
    };
    /// A shard with its own virtual workspace, writing to a remote cache server.
    pub const SHARD: Roles = Roles {
        cache_server: false,
        shard: true,
        virtual_workspace: true,
    };
}

/// Everything the request handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The roles this process runs.
    pub roles: Roles,
    /// This process's id, new at every start; a cache server answers with it in
    /// [`cache_client::reader::INSTANCE_HEADER`] so readers notice a restart.
    pub instance: Arc<str>,
    /// The cache store.
    pub store: Arc<dyn Store>,
    /// The virtual workspace index.
    pub index: Arc<Index>,
    /// Resolves users.
    pub authenticator: Arc<Authenticator>,
    /// Set once the seed has been written.
    pub seed_loaded: Arc<AtomicBool>,
    /// The local shard's workspaces.
    pub workspaces: Arc<shard::workspaces::objects::Workspaces>,
    /// Request metrics (`/metrics`).
    pub metrics: metrics::Metrics,
    /// The local shard's controllers, once running (for `/metrics`).
    pub controllers: Arc<std::sync::OnceLock<Arc<shard::controllers::Controllers>>>,
    /// This process's durable stores by file name (`--storage local`), for snapshots and
    /// `/metrics`; empty with `--storage memory`.
    pub local_stores: Arc<Vec<(String, store::local::LocalStore)>>,
    /// This process's etcd stores by label (`--storage etcd`), for `/readyz`.
    pub etcd_stores: Arc<Vec<(String, store::etcd::EtcdStore)>>,
    /// Set when a graceful shutdown began: `/readyz` fails from then on.
    pub shutting_down: Arc<AtomicBool>,
    /// `--max-requests-inflight` and `--max-watches-per-user`.
    pub limits: limits::Limits,
}

impl AppState {
    /// State over a cache store and a fresh local shard, with no users but `system:masters`
    /// client certificates (tests replace the authenticator as they need).
    pub fn new(store: Arc<dyn Store>, index: Arc<Index>, authenticator: Authenticator) -> Self {
        AppState {
            roles: Roles::ALL,
            instance: Arc::from(uuid::Uuid::new_v4().to_string()),
            store,
            index,
            authenticator: Arc::new(authenticator),
            seed_loaded: Arc::new(AtomicBool::new(false)),
            workspaces: Arc::new(shard::workspaces::objects::Workspaces::new(Arc::new(
                store::memory::MemoryStore::default(),
            ))),
            controllers: Arc::new(std::sync::OnceLock::new()),
            metrics: metrics::Metrics::default(),
            local_stores: Arc::new(Vec::new()),
            etcd_stores: Arc::new(Vec::new()),
            shutting_down: Arc::new(AtomicBool::new(false)),
            limits: limits::Limits::default(),
        }
    }
}

/// The whole HTTP surface: cache server, Replication virtual workspace, health and metrics, as a
/// [`Router`] (for tests driving it with `oneshot`, and for nesting).
pub fn app(state: AppState) -> Router {
    Router::new().fallback_service(app_service(state))
}

/// [`app`] as the service the listener serves. A [`Router`] around it would match every request
/// against its fallback's catch-all route and store the path as a parameter (about 3% of a
/// virtual-workspace GET's instructions in callgrind); the layers and [`Dispatch`] route
/// themselves.
pub fn app_service(
    state: AppState,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let health = Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(SNAPSHOT_PATH, get(snapshot))
        .with_state(state.clone());
    let roles = state.roles;
    let mut router = Router::new();
    if roles.cache_server {
        router = router.merge(cache_server::router(state.store.clone()));
    }
    if roles.virtual_workspace {
        // HEAD only: the rest is [`Dispatch`]ed before the router (which strips HEAD's body).
        router = router.merge(virtual_workspace::router(state.index.clone()));
    }
    if roles.shard {
        router = router.merge(shard::workspaces::router(
            state.workspaces.clone(),
            virtual_workspace::router(state.index.clone()),
        ));
    } else if roles.virtual_workspace {
        router = router.route("/version", get(version));
    }
    let instance = HeaderValue::from_str(&state.instance).ok();
    let index = state.index.clone();
    let routes = router
        .merge(health)
        .fallback(|| async { Status::path_not_found() });
    // The layers wrap the routed whole once. Layered per route (`Router::layer`), every request
    // cloned its route's boxed stack, layer by layer: 43 allocations and eleven `AppState`
    // clones a request in callgrind.
    tower::ServiceBuilder::new()
        // The layers' body wrappers boxed into axum's one body type, as a router would.
        .map_response(IntoResponse::into_response)
        // Outermost, in one stack: the request id and the request's span (so every log line
        // of the request carries its id, 413s and timeouts included), then the body limit,
        // which drains what a handler left unread so early errors keep the connection, and
        // layers' own errors (504, 413 …) turned into Status objects.
        .layer(layers::edge())
        // A cache server names its instance on every answer (a plain function of the response:
        // no future of its own).
        .option_layer(instance.filter(|_| roles.cache_server).map(|v| {
            tower::util::MapResponseLayer::new(move |mut r: Response| {
                r.headers_mut()
                    .insert(cache_client::reader::INSTANCE_HEADER, v.clone());
                r
            })
        }))
        .layer(metrics::TrackLayer::new(state.metrics.clone()))
        // Requests other than watches answer within 60 s (a 504 Timeout Status), and large
        // successful ones are gzipped when asked, watches never: inside the metrics
        // middleware, which reads the request's RequestInfo once for both and counts 504s.
        .layer(layers::per_request(layers::REQUEST_TIMEOUT))
        // Authentication, then the limits, the request log and the audit of refusals.
        .layer(AuthenticateLayer(Arc::new(state)))
        .service(Dispatch {
            virtual_workspace: roles.virtual_workspace.then_some(index),
            routes,
        })
}

/// The virtual workspace's prefix, answered without the router.
const VW_PREFIX: &str = "/services/replication/";

/// Requests under [`VW_PREFIX`] straight to the virtual workspace, the rest to the router. The
/// router's catch-all route for that prefix decoded and stored its tail as a path parameter on
/// every request (about 5% of a GET's instructions in callgrind), which the virtual workspace
/// never reads: it parses the path itself.
#[derive(Clone)]
struct Dispatch {
    virtual_workspace: Option<Arc<Index>>,
    routes: Router,
}

impl tower::Service<Request> for Dispatch {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<Request>::poll_ready(&mut self.routes, cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // HEAD goes through the router, which answers it without a body.
        if let Some(index) = &self.virtual_workspace
            && req.uri().path().starts_with(VW_PREFIX)
            && req.method() != axum::http::Method::HEAD
        {
            let index = index.clone();
            return Box::pin(async move { Ok(virtual_workspace::serve_request(index, req).await) });
        }
        Box::pin(self.routes.call(req))
    }
}

/// Whether every request gets a log line (`--log-requests`); refusals are always logged.
static LOG_REQUESTS: AtomicBool = AtomicBool::new(false);

/// Turn the per-request log line on (`--log-requests`).
pub fn set_log_requests(on: bool) {
    LOG_REQUESTS.store(on, Ordering::Relaxed);
}

/// The logical cluster a path addresses (`/clusters/<c>/…`, the consumer of a virtual workspace
/// URL, or a cache server path's cluster), if any.
fn cluster_of(path: &str) -> &str {
    path.rsplit_once("/clusters/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("")
}

/// What the request log needs of a request, captured cheaply before it is handled.
struct Seen {
    method: axum::http::Method,
    uri: axum::http::Uri,
    id: Option<HeaderValue>,
}

impl Seen {
    fn of(req: &Request) -> Self {
        Seen {
            method: req.method().clone(),
            uri: req.uri().clone(),
            id: req.headers().get(layers::REQUEST_ID_HEADER).cloned(),
        }
    }

    /// One line per request with `--log-requests` (request id, user, verb, resource, cluster,
    /// code, bytes, latency; a watch when its response head is sent), and, always, an audit
    /// record of every refused write and every authentication or authorization refusal
    /// (target `audit`). The request's info is parsed again only for a line to write.
    fn log(&self, resp: &Response, user: &str, started: std::time::Instant) {
        let code = resp.status().as_u16();
        let write_method = matches!(
            self.method,
            axum::http::Method::POST
                | axum::http::Method::PUT
                | axum::http::Method::PATCH
                | axum::http::Method::DELETE
        );
        let refused = code == 401 || code == 403 || (write_method && code >= 400);
        let log = LOG_REQUESTS.load(Ordering::Relaxed);
        if !refused && !log {
            return;
        }
        let path = self.uri.path();
        let info = kube_api::request::RequestInfo::parse(&self.method, path, self.uri.query());
        let id = self.id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        let resource = if info.is_resource_request {
            metrics::resource_label_of(&info.group, &info.resource)
        } else {
            String::new()
        };
        let cluster = cluster_of(path);
        if refused {
            tracing::info!(
                target: "audit",
                request_id = %id, user = %user, verb = %info.verb, resource = %resource,
                name = %info.name, cluster, path = %path, code,
                "Request refused."
            );
        }
        if log {
            let bytes = http_body::Body::size_hint(resp.body()).exact();
            tracing::info!(
                target: "request",
                request_id = %id, user = %user, verb = %info.verb, resource = %resource,
                cluster, code, bytes, latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "Request."
            );
        }
    }
}

async fn version() -> Response {
    kube_api::json_response(200, kube_api::version_document())
}

/// The layer of [`Authenticate`].
#[derive(Clone)]
struct AuthenticateLayer(Arc<AppState>);

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            state: self.0.clone(),
            inner,
        }
    }
}

/// Authentication, then the limits (the watch limit is per user), the request log and the audit
/// of refusals, in one service: each layer costs on every request, and a `from_fn` middleware
/// also clones and boxes the whole stack below it per request.
#[derive(Clone)]
struct Authenticate<S> {
    state: Arc<AppState>,
    inner: S,
}

impl<S> tower::Service<Request> for Authenticate<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The connection's identity (shared by its requests), or one a test put on the request.
        let anonymous = PeerIdentity::default();
        let peer = req
            .extensions()
            .get::<Arc<PeerIdentity>>()
            .map(|p| &**p)
            .or_else(|| req.extensions().get::<PeerIdentity>())
            .unwrap_or(&anonymous);
        let user = match self
            .state
            .authenticator
            .authenticate_or_reject(peer, req.headers())
        {
            Ok(user) => user,
            Err(_) => {
                let resp = Status::unauthorized().into_response();
                Seen::of(&req).log(&resp, "system:anonymous", std::time::Instant::now());
                return Box::pin(std::future::ready(Ok(resp)));
            }
        };
        let started = std::time::Instant::now();
        let name = user
            .as_ref()
            .map_or("system:anonymous", |u| u.name.as_str())
            .to_string();
        let admitted = match self.state.limits.admit(&req, &name) {
            Ok(a) => a,
            Err(refused) => return Box::pin(std::future::ready(Ok(refused.into_response()))),
        };
        let seen = Seen::of(&req);
        req.extensions_mut().insert(RequestUser(user));
        let resp = self.inner.call(req);
        Box::pin(async move {
            let Ok(resp) = resp.await;
            seen.log(&resp, &name, started);
            Ok(admitted.attach(resp))
        })
    }
}

fn text(code: StatusCode, body: String) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn ok() -> Response {
    text(StatusCode::OK, "ok".into())
}

async fn readyz(State(state): State<AppState>, req: Request) -> Response {
    let roles = state.roles;
    let mut checks = vec![("ping".to_string(), true, String::new())];
    if state.shutting_down.load(Ordering::Acquire) {
        checks.push(("shutdown".into(), false, "shutting down".into()));
    }
    if roles.shard {
        let loaded = state.seed_loaded.load(Ordering::Acquire);
        checks.push(("seed-loaded".into(), loaded, String::new()));
    }
    if roles.virtual_workspace || roles.shard {
        // While the first list runs, say how far it is.
        let syncing = state
            .index
            .source_health()
            .and_then(|h| h.syncing)
            .filter(|_| !state.index.is_synced())
            .unwrap_or_default();
        checks.push((
            "replication-index-synced".into(),
            state.index.is_synced(),
            syncing,
        ));
        // Once synced, an outage keeps serving the last state: it shows, but stays ready.
        if let Some(h) = state.index.source_health()
            && h.source != "in-process"
        {
            let note = match h.outage {
                None => format!("{} reachable", h.source),
                Some(o) => format!("{} {o}; serving the last synced state", h.source),
            };
            checks.push(("cache-server".into(), state.index.is_synced(), note));
        }
    }
    // etcd down: reads go on from the watch cache (ready), writes are refused with 503.
    for (label, etcd) in state.etcd_stores.iter() {
        let note = match etcd.outage() {
            None => format!("prefix {} reachable", etcd.prefix()),
            Some(o) => format!("{o}; reads served from the watch cache, writes refused"),
        };
        checks.push((format!("etcd-{label}"), true, note));
    }
    let all = checks.iter().all(|(_, ok, _)| *ok);
    let verbose = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    if all && !verbose {
        return text(StatusCode::OK, "ok".into());
    }
    let mut body = String::new();
    for (name, ok, note) in checks {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        };
        if ok {
            body.push_str(&format!("[+]{name} ok{note}\n"));
        } else {
            let note = if note.is_empty() {
                ": reason withheld".to_string()
            } else {
                note
            };
            body.push_str(&format!("[-]{name} failed{note}\n"));
        }
    }
    if all {
        body.push_str("readyz check passed\n");
        text(StatusCode::OK, body)
    } else {
        body.push_str("readyz check failed\n");
        text(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}

/// The group kube grants metrics scraping to (besides `system:masters`).
pub const MONITORING_GROUP: &str = "system:monitoring";

async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    let Some(user) = req
        .extensions()
        .get::<RequestUser>()
        .and_then(|u| u.0.clone())
    else {
        return Status::unauthorized().into_response();
    };
    // kube's convention: system:masters and the system:monitoring group may scrape.
    if !user.is_master() && !user.groups.iter().any(|g| g == MONITORING_GROUP) {
        return Status::forbidden(format!(
            "forbidden: User \"{}\" cannot get path \"/metrics\"",
            user.name
        ))
        .into_response();
    }
    let c = &state.index.counters;
    let (index_objects, index_revision) = {
        let st = state.index.read();
        let mut by_resource: std::collections::BTreeMap<String, u64> = Default::default();
        for served in st.served.values() {
            if let Ok(api) = &served.api {
                *by_resource
                    .entry(metrics::resource_label_of(&api.group, &api.resource))
                    .or_default() += served.objects.len() as u64;
            }
        }
        (by_resource.into_iter().collect(), st.revision)
    };
    let store_revision = if state.roles.cache_server {
        state.store.revision().await.ok()
    } else {
        None
    };
    let refused_objects = state
        .index
        .read()
        .invalid_by_resource()
        .into_iter()
        .collect();
    let remotes = state
        .index
        .remote_sources_health()
        .into_iter()
        .map(|(source, h)| {
            let lag = h.lag.unwrap_or_default().as_secs_f64();
            (source, h.outage.is_none(), lag)
        })
        .collect();
    let snapshot = metrics::Snapshot {
        refused_objects,
        remotes,
        index_objects,
        index_revision,
        store_revision,
        invalid_objects: c.invalid_total.load(Ordering::Relaxed),
        store_events: c.events_total.load(Ordering::Relaxed),
        memo_served: c.memo_served_total.load(Ordering::Relaxed),
        controllers: state
            .controllers
            .get()
            .map(|ctl| (ctl.passes(), ctl.writes(), ctl.last_pass().as_secs_f64())),
        stores: state
            .local_stores
            .iter()
            .map(|(file, s)| (file.trim_end_matches(".db").to_string(), s.stats()))
            .chain(
                state
                    .etcd_stores
                    .iter()
                    .map(|(label, s)| (label.clone(), s.stats())),
            )
            .collect(),
    };
    let mut r = text(StatusCode::OK, state.metrics.render(&snapshot));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// Where a running server hands out a snapshot of its durable stores (`system:masters` only):
/// `replication-vw snapshot save` asks for it through the data directory's admin kubeconfig.
pub const SNAPSHOT_PATH: &str = "/storage/snapshot";

/// `GET /storage/snapshot`: every local store of this process frozen at one instant (each
/// writer paused between two commits, views taken, writers resumed), then streamed in the
/// format of `store::snapshot` while writes go on.
async fn snapshot(State(state): State<AppState>, req: Request) -> Response {
    let user = req
        .extensions()
        .get::<RequestUser>()
        .and_then(|u| u.0.clone());
    match user {
        None => return Status::unauthorized().into_response(),
        Some(u) if !u.is_master() => {
            return Status::forbidden(format!(
                "User \"{}\" cannot get path \"{SNAPSHOT_PATH}\"",
                u.name
            ))
            .into_response();
        }
        Some(_) => {}
    }
    if state.local_stores.is_empty() {
        return Status::bad_request(
            "this server keeps no durable store (--storage memory): there is nothing to snapshot",
        )
        .into_response();
    }
    let mut frozen = Vec::new();
    for (file, s) in state.local_stores.iter() {
        match s.freeze().await {
            Ok(f) => frozen.push((file.clone(), f)),
            Err(e) => {
                return Status::new(500, "InternalError", format!("freezing {file}: {e}"))
                    .into_response();
            }
        }
    }
    let views: Vec<(String, store::local::StoreView)> =
        frozen.into_iter().map(|(f, z)| (f, z.resume())).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let progress = store::progress::Progress::new("streaming a snapshot");
        match store::snapshot::write(&mut out, &views, &progress) {
            Ok(summary) => tracing::info!(stores = ?summary, "Snapshot sent."),
            Err(e) => {
                tracing::warn!(error = %e, "Sending a snapshot failed.");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

const CHUNK: usize = 256 * 1024;

/// A blocking writer feeding a response body, a chunk at a time.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

/// The storage backend of a role's stores (`--storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StorageKind {
    /// In memory only: everything is gone when the process ends.
    Memory,
    /// Crash-safe files under the data directory ([`CACHE_STORE_FILE`],
    /// [`WORKSPACES_STORE_FILE`]); every acknowledged write is on disk.
    #[default]
    Local,
    /// etcd (`--etcd-servers`): the data in etcd, every read from the watch cache in memory.
    Etcd,
}

/// Where etcd is and how to reach it (kcp's and kube-apiserver's `--etcd-*` flags).
#[derive(Debug, Clone)]
pub struct EtcdFlags {
    /// Client URLs.
    pub servers: Vec<String>,
    /// `--etcd-prefix`; the role's default when `None`.
    pub prefix: Option<String>,
    /// Client certificate (PEM).
    pub certfile: Option<PathBuf>,
    /// Client key (PEM).
    pub keyfile: Option<PathBuf>,
    /// CA bundle of etcd's serving certificate (PEM).
    pub cafile: Option<PathBuf>,
    /// How often etcd's history is compacted (zero: never).
    pub compaction_interval: std::time::Duration,
}

/// Which store of a role is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOf {
    /// The cache server's store (of `cache-server`, or embedded in `serve`).
    Cache {
        /// `cache-server` honours `--etcd-prefix` (other than `/registry`); the embedded cache
        /// always uses `/cache`.
        standalone: bool,
    },
    /// A shard's workspaces.
    Workspaces,
}

/// How a role keeps its stores: `--storage` and `--encryption-provider-config`.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// The backend.
    pub kind: StorageKind,
    /// A kube `EncryptionConfiguration` for values at rest.
    pub encryption_provider_config: Option<PathBuf>,
    /// etcd, for `--storage etcd`.
    pub etcd: Option<EtcdFlags>,
}

impl StorageOptions {
    /// Read and check the encryption configuration (identity without one). A config that does
    /// not parse, names an unknown provider or has a key of the wrong size is an error naming
    /// the entry. With `memory` it is still checked, though nothing reaches a disk.
    pub fn transformer(&self) -> anyhow::Result<Arc<store::encryption::Transformer>> {
        let Some(path) = &self.encryption_provider_config else {
            return Ok(Arc::new(store::encryption::Transformer::identity()));
        };
        let transformer = store::encryption::Transformer::from_file(path)?;
        match self.kind {
            StorageKind::Memory => tracing::info!(
                config = %path.display(),
                "Encryption configuration checked; with --storage memory nothing is written to disk."
            ),
            _ => {
                tracing::info!(config = %path.display(), providers = ?transformer, "Encryption at rest configured.")
            }
        }
        Ok(Arc::new(transformer))
    }
}

/// The cache server's store under the data directory (`--storage local`).
pub const CACHE_STORE_FILE: &str = "cache.db";
/// The shard's workspaces store under the data directory (`--storage local`).
pub const WORKSPACES_STORE_FILE: &str = "workspaces.db";

/// Open one store of `kind` (a `local` one from `data_dir/file`; its whole content is read
/// into memory, off the async workers).
async fn open_store(
    storage: &StorageOptions,
    transformer: &Arc<store::encryption::Transformer>,
    data_dir: &std::path::Path,
    which: StoreOf,
    shard: &str,
    opened: &mut OpenedStores,
) -> anyhow::Result<Arc<dyn Store>> {
    let file = match which {
        StoreOf::Cache { .. } => CACHE_STORE_FILE,
        StoreOf::Workspaces => WORKSPACES_STORE_FILE,
    };
    match storage.kind {
        StorageKind::Memory => Ok(metrics::MeteredStore::wrap(
            Arc::new(store::memory::MemoryStore::default()),
            store_label(which),
        )),
        StorageKind::Local => {
            let path = data_dir.join(file);
            if let Some(st) = &opened.status {
                st.set(format!("loading {}", path.display()));
            }
            let started = std::time::Instant::now();
            let progress = Arc::new(store::progress::Progress::new(format!("loading {file}")));
            let options = store::local::LocalOptions {
                label: file.to_string(),
                transformer: transformer.clone(),
                progress: Some(progress.clone()),
                ..Default::default()
            };
            // `/readyz` says how far the load is, as the log does.
            let mirror = opened.status.clone().map(|st| {
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        st.set(progress.describe());
                    }
                })
            });
            let local = tokio::task::spawn_blocking(move || {
                store::local::LocalStore::open_with(&path, options)
            })
            .await;
            if let Some(m) = mirror {
                m.abort();
            }
            let local = local??;
            let stats = local.stats();
            tracing::info!(
                file = %local.path().display(),
                objects = stats.loaded,
                skipped = stats.skipped,
                stale = stats.stale,
                elapsed = ?started.elapsed(),
                "Store opened."
            );
            opened.locals.push((file.to_string(), local.clone()));
            Ok(metrics::MeteredStore::wrap(
                Arc::new(local),
                store_label(which),
            ))
        }
        StorageKind::Etcd => {
            let Some(etcd) = &storage.etcd else {
                anyhow::bail!("--storage etcd needs --etcd-servers URL[,URL...]");
            };
            let store = open_etcd(etcd, transformer, which, shard, opened.status.clone()).await?;
            opened
                .etcd
                .push((store_label(which).to_string(), store.clone()));
            Ok(metrics::MeteredStore::wrap(
                Arc::new(store),
                store_label(which),
            ))
        }
    }
}

/// How metrics and `/readyz` name a store.
fn store_label(which: StoreOf) -> &'static str {
    match which {
        StoreOf::Cache { .. } => "cache",
        StoreOf::Workspaces => "workspaces",
    }
}

/// The durable stores a role opened, for its admin endpoints and `/readyz`.
#[derive(Default)]
pub struct OpenedStores {
    /// `--storage local` stores by file name.
    pub locals: Vec<(String, store::local::LocalStore)>,
    /// `--storage etcd` stores by label (`cache`, `workspaces`).
    pub etcd: Vec<(String, store::etcd::EtcdStore)>,
    /// Where the start says what it waits for (`/readyz` before serving).
    pub status: Option<Startup>,
}

/// The etcd key prefix of a store: kcp's defaults (`/cache` for the cache server, even when
/// given `/registry`; `/registry` for a shard), `--etcd-prefix` otherwise.
pub fn etcd_prefix(flag: Option<&str>, which: StoreOf) -> String {
    let flag = flag.map(|p| format!("/{}", p.trim_matches('/')));
    match (which, flag.as_deref()) {
        (StoreOf::Cache { standalone: true }, Some(p)) if p != "/registry" => p.to_string(),
        (StoreOf::Cache { .. }, _) => "/cache".to_string(),
        (StoreOf::Workspaces, Some(p)) => p.to_string(),
        (StoreOf::Workspaces, None) => "/registry".to_string(),
    }
}

async fn open_etcd(
    etcd: &EtcdFlags,
    transformer: &Arc<store::encryption::Transformer>,
    which: StoreOf,
    shard: &str,
    status: Option<Startup>,
) -> anyhow::Result<store::etcd::EtcdStore> {
    let tls = read_etcd_tls(etcd)?;
    let prefix = etcd_prefix(etcd.prefix.as_deref(), which);
    let label = match which {
        StoreOf::Cache { .. } => "cache",
        StoreOf::Workspaces => "workspaces",
    };
    tracing::info!(store = label, servers = ?etcd.servers, prefix = %prefix, tls = tls.is_some(), "Opening the etcd store.");
    if let Some(st) = &status {
        st.set(format!(
            "connecting to etcd {:?} for the {label} store",
            etcd.servers
        ));
    }
    let on_retry: Option<store::etcd::RetryHook> = status.map(|st| {
        let hook: store::etcd::RetryHook = Arc::new(move |why: &str| {
            st.set(format!(
                "etcd unreachable for the {label} store: {why}; retrying"
            ))
        });
        hook
    });
    let opened = store::etcd::EtcdStore::open(store::etcd::EtcdOptions {
        endpoints: etcd.servers.clone(),
        prefix: prefix.clone(),
        tls: tls.clone(),
        transformer: transformer.clone(),
        // A shard's keys have no shard segment; its workspaces store keys them all as "root".
        fixed_shard: (which == StoreOf::Workspaces)
            .then(|| shard::workspaces::objects::SHARD.to_string()),
        label: label.to_string(),
        on_retry,
        ..Default::default()
    })
    .await?;
    if which == StoreOf::Workspaces {
        opened.claim_prefix(shard).await?;
    }
    opened.spawn_compactor(etcd.compaction_interval);
    if let Some(tls) = tls {
        reload_etcd_tls(opened.clone(), etcd.clone(), tls);
    }
    Ok(opened)
}

/// The etcd TLS material the flags name (`None` without any of the three files).
fn read_etcd_tls(etcd: &EtcdFlags) -> anyhow::Result<Option<store::etcd::EtcdTls>> {
    let read = |p: &Option<PathBuf>, flag: &str| -> anyhow::Result<Option<Vec<u8>>> {
        p.as_ref()
            .map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display())))
            .transpose()
    };
    match (&etcd.certfile, &etcd.keyfile, &etcd.cafile) {
        (None, None, None) => Ok(None),
        (cert, key, ca) => {
            if cert.is_some() != key.is_some() {
                anyhow::bail!("--etcd-certfile and --etcd-keyfile go together");
            }
            Ok(Some(store::etcd::EtcdTls {
                ca: read(ca, "--etcd-cafile")?,
                cert: read(cert, "--etcd-certfile")?,
                key: read(key, "--etcd-keyfile")?,
            }))
        }
    }
}

/// Re-read `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile` as the serving certificate
/// is (every couple of seconds, cert-manager renewing them in a Secret volume) and move the
/// store to a new client once they changed and the key matches the certificate; a half-renewed
/// pair is skipped until it is whole. Runs as long as the process.
fn reload_etcd_tls(
    store: store::etcd::EtcdStore,
    etcd: EtcdFlags,
    mut current: store::etcd::EtcdTls,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tls::CERT_RELOAD_INTERVAL).await;
            let Ok(Some(read)) = read_etcd_tls(&etcd) else {
                continue;
            };
            if read.ca == current.ca && read.cert == current.cert && read.key == current.key {
                continue;
            }
            if let (Some(cert), Some(key)) = (&read.cert, &read.key)
                && let Err(e) = tls::key_matches_certificate(cert, key)
            {
                tracing::debug!(error = %e, "The etcd client certificate files are not a matching pair (yet).");
                continue;
            }
            match store.replace_tls(read.clone()).await {
                Ok(()) => current = read,
                Err(e) => {
                    tracing::warn!(error = %e, "The renewed etcd client certificates could not be used; retrying.")
                }
            }
        }
    });
}

/// Where a role finds a remote cache server.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Kubeconfig naming the cache server, its CA and a client certificate.
    pub kubeconfig: PathBuf,
    /// Overrides the kubeconfig's server URL.
    pub server: Option<String>,
}

/// Options every role shares: where it listens and keeps its certificates.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Listen address.
    pub listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Static token file.
    pub token_auth_file: Option<PathBuf>,
    /// Base URL published in endpoint slices (and put in the serving certificate).
    pub external_url: Option<String>,
    /// Serving certificate and client CA flags.
    pub tls: flags::TlsFlags,
    /// Front-proxy (request-header) authentication flags.
    pub front_proxy: flags::FrontProxyFlags,
    /// Graceful shutdown.
    pub shutdown: flags::ShutdownFlags,
    /// Request limits.
    pub limits: limits::LimitFlags,
}

/// Options of `replication-vw serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Listen address.
    pub listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Seed directories.
    pub seeds: Vec<PathBuf>,
    /// Static token file.
    pub token_auth_file: Option<PathBuf>,
    /// Base URL published in endpoint slices.
    pub external_url: Option<String>,
    /// Serving certificate and client CA flags.
    pub tls: flags::TlsFlags,
    /// Front-proxy flags.
    pub front_proxy: flags::FrontProxyFlags,
    /// Graceful shutdown.
    pub shutdown: flags::ShutdownFlags,
    /// Request limits.
    pub limits: limits::LimitFlags,
    /// A remote cache server: the process is then a shard writing into it (and a virtual
    /// workspace reading from it) instead of the embedded all-in-one.
    pub cache: Option<CacheOptions>,
    /// This shard's name (`kcp.io/shard`, the cache URL's shard segment).
    pub shard_name: String,
    /// The storage backend of the cache (embedded) and the workspaces.
    pub storage: StorageOptions,
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = if let Some(stripped) = authority.strip_prefix('[') {
        stripped.split(']').next()?.to_string()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    };
    (!host.is_empty()).then_some(host)
}

/// A bound listener with its TLS material, before any role is wired.
struct Listening {
    listener: tokio::net::TcpListener,
    /// `https://<reachable address>`.
    url: String,
    /// What endpoint slices publish.
    external_url: String,
    data_dir: PathBuf,
    pki: tls::Pki,
    tls_config: tls::ServerTls,
    authenticator: Authenticator,
    kubeconfig: PathBuf,
    shutdown: flags::ShutdownFlags,
    limits: limits::LimitFlags,
}

async fn listen(opts: &ListenOptions) -> anyhow::Result<Listening> {
    use anyhow::Context;
    tls::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    // A wildcard listen address is reached through loopback by local clients.
    let reachable = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let url = format!("https://{reachable}");
    let external_url = opts.external_url.clone().unwrap_or_else(|| url.clone());
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data directory {}", opts.data_dir.display()))?;
    let data_dir = opts
        .data_dir
        .canonicalize()
        .unwrap_or(opts.data_dir.clone());
    let mut hosts = Vec::new();
    if !addr.ip().is_unspecified() {
        hosts.push(addr.ip().to_string());
    }
    if let Some(h) = url_host(&external_url) {
        hosts.push(h);
    }
    let serving = tls::prepare(&data_dir, &hosts, &opts.tls, &opts.front_proxy)?;
    let kubeconfig = tls::write_admin_kubeconfig(&data_dir, &url, &serving.pki)?;
    let tokens = match &opts.token_auth_file {
        Some(p) => Some(authn::TokenFile::load(p)?),
        None => None,
    };
    let authenticator = Authenticator::new(tokens)
        .with_front_proxy_headers(serving.client_auth.request_headers().cloned());
    Ok(Listening {
        listener,
        url,
        external_url,
        data_dir,
        pki: serving.pki,
        tls_config: serving.server_config,
        authenticator,
        kubeconfig,
        shutdown: opts.shutdown.clone(),
        limits: opts.limits.clone(),
    })
}

/// What a role is doing before it serves: `/healthz` and `/livez` answer ok, `/readyz` says
/// what the start waits for (etcd unreachable, a store loading), everything else is a 503
/// Status. It serves on a duplicate of the role's listener and stops before the role serves.
#[derive(Clone)]
pub struct Startup {
    status: Arc<parking_lot::Mutex<String>>,
}

impl Startup {
    /// Say what the start waits for now (shown by `/readyz`).
    pub fn set(&self, status: impl Into<String>) {
        *self.status.lock() = status.into();
    }
}

/// Serve [`Startup`] answers on a duplicate of `l`'s listener until the returned sender fires.
fn serve_startup(
    l: &Listening,
) -> anyhow::Result<(
    Startup,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let startup = Startup {
        status: Arc::new(parking_lot::Mutex::new("opening the stores".into())),
    };
    let listener = tokio::net::TcpListener::from_std(l.listener_std_clone()?)?;
    let st = startup.clone();
    let router = Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route(
            "/readyz",
            get(move || {
                let st = st.clone();
                async move {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "[-]started failed ({})\nreadyz check failed\n",
                            st.status.lock()
                        ),
                    )
                }
            }),
        )
        .fallback(|| async {
            kube_api::Status::new(
                503,
                "ServiceUnavailable",
                "the server is starting; retry later".to_string(),
            )
            .into_response()
        });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tls = l.tls_config.clone();
    let task = tokio::spawn(async move {
        let _ = tls::serve(listener, tls, router, async move {
            let _ = stop_rx.await;
        })
        .await;
    });
    Ok((startup, stop_tx, task))
}

impl Listening {
    /// A second handle on the bound socket (for the startup answers).
    fn listener_std_clone(&self) -> std::io::Result<std::net::TcpListener> {
        use std::os::fd::{AsFd, OwnedFd};
        let fd: OwnedFd = self.listener.as_fd().try_clone_to_owned()?;
        let std_listener = std::net::TcpListener::from(fd);
        std_listener.set_nonblocking(true)?;
        Ok(std_listener)
    }
}

/// Run `open` while the startup answers are served; stop them before returning.
async fn while_starting<T>(
    l: &Listening,
    open: impl AsyncFnOnce(Startup) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (startup, stop, task) = serve_startup(l)?;
    let result = open(startup).await;
    let _ = stop.send(());
    let _ = task.await;
    result
}

/// Serve `state`'s routes on the listener until interrupted.
async fn serve_until_interrupted(
    l: Listening,
    state: AppState,
    ready: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let shutting_down = state.shutting_down.clone();
    let mut state = state;
    state.limits = limits::Limits::new(&l.limits);
    let router = app_service(state);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let flags = l.shutdown.clone();
    let mut server = tokio::spawn(tls::serve_draining(
        l.listener,
        l.tls_config
            .with_write_stall_timeout(l.limits.write_stall_timeout),
        router,
        async move {
            let _ = stop_rx.await;
        },
        flags.shutdown_timeout,
    ));
    tracing::info!(url = %l.url, kubeconfig = %l.kubeconfig.display(), "Serving.");
    tokio::select! {
        r = ready => r?,
        r = &mut server => { r??; return Ok(()); }
        signal = terminated() => {
            return shut_down(signal, &flags, &shutting_down, stop_tx, server).await;
        }
    }
    tokio::select! {
        signal = terminated() => shut_down(signal, &flags, &shutting_down, stop_tx, server).await,
        r = &mut server => { r??; Ok(()) }
    }
}

/// Resolves with the signal's name on SIGTERM or Ctrl-C (SIGINT).
async fn terminated() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops the server.");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Graceful shutdown: unready at once, keep accepting for the delay, end every watch, stop
/// accepting, let in-flight requests finish (at most the timeout).
async fn shut_down(
    signal: &str,
    flags: &flags::ShutdownFlags,
    shutting_down: &AtomicBool,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<()> {
    tracing::info!(signal, delay = ?flags.shutdown_delay_duration, timeout = ?flags.shutdown_timeout, "Shutting down: /readyz fails from now on.");
    shutting_down.store(true, Ordering::Release);
    tokio::time::sleep(flags.shutdown_delay_duration).await;
    kube_api::watch::begin_shutdown();
    let _ = stop.send(());
    let started = std::time::Instant::now();
    match tokio::time::timeout(
        flags.shutdown_timeout + std::time::Duration::from_secs(1),
        server,
    )
    .await
    {
        Ok(r) => {
            r??;
        }
        Err(_) => tracing::warn!("The shutdown timeout passed; exiting."),
    }
    tracing::info!(drained_in = ?started.elapsed(), "Stopped.");
    Ok(())
}

use std::future::Future;

/// A connection to the remote cache server of `--cache-kubeconfig`.
fn cache_connection(cache: &CacheOptions) -> anyhow::Result<cache_client::Connection> {
    tls::install_crypto_provider();
    Ok(cache_client::Connection::from_kubeconfig(
        &cache.kubeconfig,
        cache.server.as_deref(),
    )?)
}

/// `replication-vw cache-server`: the cache server API alone, over a store of `storage`.
pub async fn run_cache_server(opts: ListenOptions, storage: StorageOptions) -> anyhow::Result<()> {
    let transformer = storage.transformer()?;
    let l = listen(&opts).await?;
    let mut opened = OpenedStores::default();
    let store = while_starting(&l, async |startup| {
        opened.status = Some(startup);
        open_store(
            &storage,
            &transformer,
            &l.data_dir,
            StoreOf::Cache { standalone: true },
            "",
            &mut opened,
        )
        .await
    })
    .await?;
    let mut state = AppState::new(store, Arc::new(Index::new()), l.authenticator.clone());
    state.roles = Roles::CACHE_SERVER;
    state.local_stores = Arc::new(opened.locals);
    state.etcd_stores = Arc::new(opened.etcd);
    tracing::info!(
        kubeconfig = %l.kubeconfig.display(),
        "Cache server: shards and virtual workspaces reach it with this kubeconfig (--cache-kubeconfig)."
    );
    serve_until_interrupted(l, state, async { Ok(()) }).await
}

/// The virtual workspace's validation memo in the data directory
/// (`virtual_workspace::memo`): which stored objects it already validated, so a restart does not
/// validate them again.
pub const MEMO_FILE: &str = "validated.memo";

/// `replication-vw virtual-workspace`: the Replication virtual workspace alone, reading
/// everything it serves from the remote cache server. Keeps no API data of its own (only its
/// validation memo, [`MEMO_FILE`]).
pub async fn run_virtual_workspace(
    opts: ListenOptions,
    cache: CacheOptions,
    shard_kubeconfigs: &[std::path::PathBuf],
) -> anyhow::Result<()> {
    let conn = cache_connection(&cache)?;
    let mut shards = Vec::new();
    for path in shard_kubeconfigs {
        let shard = cache_client::Connection::from_kubeconfig(path, None)
            .map_err(|e| anyhow::anyhow!("--shard-kubeconfig {}: {e}", path.display()))?;
        shards.push(shard);
    }
    let l = listen(&opts).await?;
    let index = Arc::new(Index::new().with_memo_file(l.data_dir.join(MEMO_FILE)));
    let store: Arc<dyn Store> = Arc::new(store::memory::MemoryStore::default());
    let mut state = AppState::new(store, index.clone(), l.authenticator.clone());
    state.roles = Roles::VIRTUAL_WORKSPACE;
    tracing::info!(cache = %conn.base, "Reading the cache server.");
    tokio::spawn(
        index
            .clone()
            .run(Arc::new(cache_client::HttpsRead::new(conn))),
    );
    for (source, shard) in shards.into_iter().enumerate() {
        tracing::info!(shard = %shard.base, "Reading consumers (LogicalClusters, APIBindings) from a kcp shard.");
        tokio::spawn(
            index
                .clone()
                .run_shard(source, Arc::new(cache_client::HttpsRead::shard(shard))),
        );
    }
    serve_until_interrupted(l, state, async { Ok(()) }).await
}

/// Run `serve` until interrupted: the embedded all-in-one (cache server, shard and virtual
/// workspace in one process), or, with a cache kubeconfig, a shard writing into that remote
/// cache server plus a virtual workspace reading from it.
pub async fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let transformer = opts.storage.transformer()?;
    let remote = match &opts.cache {
        Some(c) => Some(cache_connection(c)?),
        None => None,
    };
    let l = listen(&ListenOptions {
        listen: opts.listen.clone(),
        data_dir: opts.data_dir.clone(),
        token_auth_file: opts.token_auth_file.clone(),
        external_url: opts.external_url.clone(),
        tls: opts.tls.clone(),
        front_proxy: opts.front_proxy.clone(),
        shutdown: opts.shutdown.clone(),
        limits: opts.limits.clone(),
    })
    .await?;
    // A shard writing to a remote cache keeps no cache store of its own.
    let mut opened = OpenedStores::default();
    let (store, ws_store) = while_starting(&l, async |startup| {
        opened.status = Some(startup);
        let store: Arc<dyn Store> = if remote.is_some() {
            Arc::new(store::memory::MemoryStore::default())
        } else {
            open_store(
                &opts.storage,
                &transformer,
                &l.data_dir,
                StoreOf::Cache { standalone: false },
                &opts.shard_name,
                &mut opened,
            )
            .await?
        };
        let ws_store = open_store(
            &opts.storage,
            &transformer,
            &l.data_dir,
            StoreOf::Workspaces,
            &opts.shard_name,
            &mut opened,
        )
        .await?;
        Ok((store, ws_store))
    })
    .await?;
    // The memo outlives a restart only where the cache's objects do.
    let index = if remote.is_none() && opts.storage.kind == StorageKind::Memory {
        Index::new()
    } else {
        Index::new().with_memo_file(l.data_dir.join(MEMO_FILE))
    };
    let index = Arc::new(index);
    let mut state = AppState::new(store.clone(), index.clone(), l.authenticator.clone());
    state.local_stores = Arc::new(opened.locals);
    state.etcd_stores = Arc::new(opened.etcd);
    state.workspaces = Arc::new(shard::workspaces::objects::Workspaces::new(
        ws_store.clone(),
    ));
    let (writer, reader): (
        Arc<dyn cache_client::CacheWrite>,
        Arc<dyn cache_client::CacheRead>,
    ) = match remote {
        Some(conn) => {
            state.roles = Roles::SHARD;
            state
                .workspaces
                .set_elsewhere(Arc::new(cache_client::HttpsWrite::new(conn.clone())));
            tracing::info!(cache = %conn.base, shard = %opts.shard_name, "Shard writing to a remote cache server.");
            (
                Arc::new(cache_client::HttpsWrite::new(conn.clone())),
                Arc::new(cache_client::HttpsRead::new(conn)),
            )
        }
        None => (
            Arc::new(cache_server::local::LocalWrite(store.clone())),
            Arc::new(cache_client::StoreRead(store.clone())),
        ),
    };
    let remote = state.roles != Roles::ALL;
    let controllers = Arc::new(shard::controllers::Controllers::new(
        state.workspaces.clone(),
        writer,
        &opts.shard_name,
        &l.external_url,
    ));
    let manifests = shard::seed::read_dirs(&opts.seeds)?;
    let (url, data_dir, pki) = (l.url.clone(), l.data_dir.clone(), l.pki.clone());
    let router_state = state.clone();
    let ready = async move {
        // A store that kept data from an earlier run is not seeded again: what the user changed
        // since stays.
        let kept = !ws_store
            .list(&store::Scope::all())
            .await
            .map_err(|e| anyhow::anyhow!("reading the workspaces store: {e}"))?
            .records
            .is_empty();
        let summary = if kept && !manifests.is_empty() {
            tracing::info!("The workspaces store holds data from an earlier run; --seed skipped.");
            shard::seed::Summary::default()
        } else {
            shard::seed::apply(&state.workspaces, manifests).await?
        };
        // A remote cache may be down: the controllers then keep retrying in the background.
        let passes = match controllers.settle(50).await {
            Ok(p) => p,
            Err(e) if remote => {
                tracing::warn!(error = %e, "The cache server is not reachable yet; retrying in the background.");
                0
            }
            Err(e) => return Err(e.into()),
        };
        tokio::spawn(controllers.clone().run());
        let _ = state.controllers.set(controllers.clone());
        // A context per workspace the store holds (seeded now or in an earlier run).
        let contexts: Vec<(String, String)> = workspace_names(&state.workspaces)
            .await
            .into_iter()
            .map(|name| (name.clone(), format!("{url}/clusters/{name}")))
            .collect();
        let kubeconfig = tls::write_admin_kubeconfig_with(&data_dir, &url, &pki, &contexts)?;
        state.seed_loaded.store(true, Ordering::Release);
        tracing::info!(
            objects = summary.written,
            workspaces = summary.workspaces.len(),
            controller_passes = passes,
            "Seed applied."
        );
        // A relist (a cache that restarted empty, an expired watch) makes the controllers
        // write everything back at once rather than at their next resync.
        // Another shard's bindings, exports or Shard object change what this shard publishes
        // (endpoint URLs, binding status): those events wake the controllers too.
        let mut relists = index.relists();
        // Embedded, there is no other shard: the shard's own writes would only wake it again.
        let mut catalog = remote.then(|| index.catalog_changes());
        let trigger = controllers.clone();
        tokio::spawn(async move {
            relists.borrow_and_update();
            loop {
                let foreign = async {
                    match catalog.as_mut() {
                        Some(c) => c.changed().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = relists.changed() => if r.is_err() { break },
                    r = foreign => if r.is_err() { break },
                }
                trigger.trigger();
            }
        });
        tokio::spawn(index.clone().run(reader));
        if !remote {
            while !index.is_synced() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // Let the index take in the seed's events before describing the endpoints.
            let target = store.revision().await.unwrap_or(0);
            let _ = index
                .wait_for_revision(target, std::time::Duration::from_secs(10))
                .await;
            log_endpoints(&index, &kubeconfig);
        }
        Ok(())
    };
    serve_until_interrupted(l, router_state, ready).await
}

/// Every workspace of the shard by its path (its logical cluster name when it has none).
async fn workspace_names(ws: &shard::workspaces::objects::Workspaces) -> Vec<String> {
    let Some(kind) = ws.builtin("core.kcp.io", "logicalclusters").cloned() else {
        return Vec::new();
    };
    let Ok(all) = ws.list_values(&kind, None).await else {
        return Vec::new();
    };
    let mut names: Vec<String> = all
        .into_iter()
        .map(|(v, key, _)| {
            v.pointer("/metadata/annotations/kcp.io~1path")
                .and_then(serde_json::Value::as_str)
                .filter(|p| !p.is_empty())
                .map_or_else(|| key.cluster.to_string(), str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Log as JSON (`--log-format json`): start-up hints become log records too.
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, Ordering::Relaxed);
}

/// Whether logs are JSON.
pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// A shell word for `arg`: as it is when it needs no quoting, else in single quotes.
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:-=,@+".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Show a command to try: on a line of its own that pastes into a shell as it is (text), or as
/// a log record with the command in its `command` field (JSON).
fn hint(command: &str) {
    if json_logs() {
        tracing::info!(command, "Try this command.");
    } else {
        eprintln!("    {command}");
    }
}

/// Log a ready-to-paste kubectl command per endpoint slice URL and bound consumer.
fn log_endpoints(index: &Index, kubeconfig: &std::path::Path) {
    let st = index.read();
    for ((cluster, slice_name), slice) in st.slices.iter().chain(&st.cc_slices) {
        let keyed_by_slice =
            slice.spec.export.is_some() || !slice.spec.cluster_cached_resource.name.is_empty();
        let cr_cluster = if keyed_by_slice || slice.spec.cached_resource.path.is_empty() {
            cluster.clone()
        } else {
            st.logical_clusters
                .iter()
                .find(|(_, lc)| {
                    lc.metadata.annotation(kcp_model::ANN_PATH) == slice.spec.cached_resource.path
                })
                .map(|(c, _)| c.clone())
                .unwrap_or_else(|| slice.spec.cached_resource.path.clone())
        };
        let key = if keyed_by_slice {
            (cluster.clone(), slice_name.clone())
        } else {
            (cr_cluster, slice.spec.cached_resource.name.clone())
        };
        let Some(served) = st.served.get(&key) else {
            continue;
        };
        let resource = served
            .api
            .as_ref()
            .map(|a| a.resource.clone())
            .unwrap_or_default();
        if !served.consumers.is_empty() {
            tracing::info!(slice = %format!("{cluster}|{slice_name}"), "Try these commands (each line pastes into a shell as it is):");
        }
        for ep in &slice.status.endpoints {
            for consumer in served.consumers.iter() {
                hint(&format!(
                    "kubectl --kubeconfig {} --server {} get {resource}",
                    shell_word(&kubeconfig.display().to_string()),
                    shell_word(&format!("{}/clusters/{consumer}", ep.url))
                ));
            }
        }
        // The same objects through each consumer's own workspace (a context of the kubeconfig).
        for consumer in served.consumers.iter() {
            let path = st
                .logical_clusters
                .get(consumer)
                .map(|lc| lc.metadata.annotation(kcp_model::ANN_PATH).to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| consumer.clone());
            hint(&format!(
                "kubectl --kubeconfig {} --context {} get {resource}",
                shell_word(&kubeconfig.display().to_string()),
                shell_word(&path)
            ));
        }
    }
}
