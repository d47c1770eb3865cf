//! The server: TLS and identities ([`tls`], [`authn`]), the composed router with health,
//! readiness and metrics endpoints ([`app`]), and the `serve` command that wires store, seed,
//! index and listener together ([`run`]).

pub mod authn;
pub mod tls;

use crate::api::Status;
use crate::api::user::RequestUser;
use crate::replication::Index;
use crate::store::Store;
use authn::Authenticator;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tls::PeerIdentity;

/// Everything the request handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The cache store.
    pub store: Arc<dyn Store>,
    /// The virtual workspace index.
    pub index: Arc<Index>,
    /// Resolves users.
    pub authenticator: Arc<Authenticator>,
    /// Set once the seed has been written.
    pub seed_loaded: Arc<AtomicBool>,
    /// The local shard's workspaces.
    pub workspaces: Arc<crate::workspaces::objects::Workspaces>,
    /// The local shard's controllers, once running (for `/metrics`).
    pub controllers: Arc<std::sync::OnceLock<Arc<crate::controllers::Controllers>>>,
}

impl AppState {
    /// State over a cache store and a fresh local shard, with no users but `system:masters`
    /// client certificates (tests replace the authenticator as they need).
    pub fn new(store: Arc<dyn Store>, index: Arc<Index>, authenticator: Authenticator) -> Self {
        AppState {
            store,
            index,
            authenticator: Arc::new(authenticator),
            seed_loaded: Arc::new(AtomicBool::new(false)),
            workspaces: Arc::new(crate::workspaces::objects::Workspaces::new(Arc::new(
                crate::store::memory::MemoryStore::default(),
            ))),
            controllers: Arc::new(std::sync::OnceLock::new()),
        }
    }
}

/// The whole HTTP surface: cache server, Replication virtual workspace, health and metrics.
pub fn app(state: AppState) -> Router {
    let health = Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    Router::new()
        .merge(crate::cache_server::router(state.store.clone()))
        .merge(crate::replication::router(state.index.clone()))
        .merge(crate::workspaces::router(
            state.workspaces.clone(),
            crate::replication::router(state.index.clone()),
        ))
        .merge(health)
        .fallback(|| async { Status::path_not_found() })
        .layer(middleware::from_fn_with_state(state, authenticate))
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .cloned()
        .unwrap_or_default();
    match state
        .authenticator
        .authenticate_or_reject(&peer, req.headers())
    {
        Ok(user) => {
            req.extensions_mut().insert(RequestUser(user));
            next.run(req).await
        }
        Err(_) => Status::unauthorized().into_response(),
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
    let checks = [
        ("ping", true),
        ("seed-loaded", state.seed_loaded.load(Ordering::Acquire)),
        ("replication-index-synced", state.index.is_synced()),
    ];
    let all = checks.iter().all(|(_, ok)| *ok);
    let verbose = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    if all && !verbose {
        return text(StatusCode::OK, "ok".into());
    }
    let mut body = String::new();
    for (name, ok) in checks {
        if ok {
            body.push_str(&format!("[+]{name} ok\n"));
        } else {
            body.push_str(&format!("[-]{name} failed: reason withheld\n"));
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

async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    if req
        .extensions()
        .get::<RequestUser>()
        .is_none_or(|u| u.0.is_none())
    {
        return Status::unauthorized().into_response();
    }
    let c = &state.index.counters;
    let mut body = format!(
        "# HELP replication_vw_invalid_objects_total Cached objects refused at ingest (failed to unwrap or validate).\n\
         # TYPE replication_vw_invalid_objects_total counter\n\
         replication_vw_invalid_objects_total {}\n\
         # HELP replication_vw_store_events_total Store events applied to the virtual workspace index.\n\
         # TYPE replication_vw_store_events_total counter\n\
         replication_vw_store_events_total {}\n",
        c.invalid_total.load(Ordering::Relaxed),
        c.events_total.load(Ordering::Relaxed),
    );
    if let Some(ctl) = state.controllers.get() {
        body.push_str(&format!(
            "# HELP replication_vw_controller_passes_total Passes of the local shard's controllers.\n\
             # TYPE replication_vw_controller_passes_total counter\n\
             replication_vw_controller_passes_total {}\n\
             # HELP replication_vw_controller_writes_total Writes the controllers made (workspaces and cache).\n\
             # TYPE replication_vw_controller_writes_total counter\n\
             replication_vw_controller_writes_total {}\n\
             # HELP replication_vw_controller_last_pass_seconds Duration of the last controller pass.\n\
             # TYPE replication_vw_controller_last_pass_seconds gauge\n\
             replication_vw_controller_last_pass_seconds {:.6}\n",
            ctl.passes(),
            ctl.writes(),
            ctl.last_pass().as_secs_f64(),
        ));
    }
    text(StatusCode::OK, body)
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

/// Run the embedded server until interrupted.
pub async fn run(opts: ServeOptions) -> anyhow::Result<()> {
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
    let listen_url = format!("https://{reachable}");
    let external_url = opts
        .external_url
        .clone()
        .unwrap_or_else(|| listen_url.clone());
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
    let pki = tls::ensure_pki(&data_dir, &hosts)?;
    let kubeconfig = tls::write_admin_kubeconfig(&data_dir, &listen_url, &pki)?;
    let tls_config = tls::server_config(&pki)?;
    let tokens = match &opts.token_auth_file {
        Some(p) => Some(authn::TokenFile::load(p)?),
        None => None,
    };
    let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::default());
    let index = Arc::new(Index::new());
    let state = AppState::new(store.clone(), index.clone(), Authenticator::new(tokens));
    let controllers = Arc::new(crate::controllers::Controllers::new(
        state.workspaces.clone(),
        store.clone(),
        crate::seed::LOCAL_SHARD,
        &external_url,
    ));
    let manifests = crate::seed::read_dirs(&opts.seeds)?;
    let router = app(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tls::serve(listener, tls_config, router, async move {
        let _ = stop_rx.await;
    }));
    tracing::info!(url = %listen_url, kubeconfig = %kubeconfig.display(), "Serving.");
    let summary = crate::seed::apply(&state.workspaces, manifests).await?;
    let passes = controllers.settle(50).await?;
    tokio::spawn(controllers.clone().run());
    let _ = state.controllers.set(controllers.clone());
    let contexts: Vec<(String, String)> = summary
        .workspaces
        .iter()
        .map(|(cluster, path)| {
            let name = if path.is_empty() { cluster } else { path };
            (name.clone(), format!("{listen_url}/clusters/{name}"))
        })
        .collect();
    let kubeconfig = tls::write_admin_kubeconfig_with(&data_dir, &listen_url, &pki, &contexts)?;
    state.seed_loaded.store(true, Ordering::Release);
    tracing::info!(
        objects = summary.written,
        workspaces = summary.workspaces.len(),
        controller_passes = passes,
        "Seed applied."
    );
    tokio::spawn(index.clone().run(store.clone()));
    while !index.is_synced() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Let the index take in the seed's events before describing the endpoints.
    let target = store.revision().await.unwrap_or(0);
    while index.read().revision < target {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    log_endpoints(&index, &kubeconfig);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Interrupted; shutting down."),
        r = server => { r??; }
    }
    let _ = stop_tx.send(());
    Ok(())
}

/// Log a ready-to-paste kubectl command per endpoint slice URL and bound consumer.
fn log_endpoints(index: &Index, kubeconfig: &std::path::Path) {
    let st = index.read();
    for ((cluster, slice_name), slice) in &st.slices {
        let cr_cluster = if slice.spec.cached_resource.path.is_empty() {
            cluster.clone()
        } else {
            st.logical_clusters
                .iter()
                .find(|(_, lc)| {
                    lc.metadata.annotation(crate::model::ANN_PATH)
                        == slice.spec.cached_resource.path
                })
                .map(|(c, _)| c.clone())
                .unwrap_or_else(|| slice.spec.cached_resource.path.clone())
        };
        let key = (cr_cluster, slice.spec.cached_resource.name.clone());
        let Some(served) = st.served.get(&key) else {
            continue;
        };
        let resource = served
            .api
            .as_ref()
            .map(|a| a.resource.clone())
            .unwrap_or_default();
        for ep in &slice.status.endpoints {
            for consumer in served.consumers.iter() {
                tracing::info!(
                    slice = %format!("{cluster}|{slice_name}"),
                    "Try: kubectl --kubeconfig {} --server {}/clusters/{consumer} get {resource}",
                    kubeconfig.display(),
                    ep.url
                );
            }
        }
        // The same objects through each consumer's own workspace (a context of the kubeconfig).
        for consumer in served.consumers.iter() {
            let path = st
                .logical_clusters
                .get(consumer)
                .map(|lc| lc.metadata.annotation(crate::model::ANN_PATH).to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| consumer.clone());
            tracing::info!(
                "Try: kubectl --kubeconfig {} --context {path} get {resource}",
                kubeconfig.display()
            );
        }
    }
}
