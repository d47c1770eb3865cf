//! In-process tests of the cross-cutting layers every surface shares (`server::layers`): gzip of
//! large responses (never of watches), the `x-request-id` of every response and the request
//! span around what a handler logs, and the request timeout that spares watches. Compression
//! and request ids are driven through the composed router (`server::app`) over the
//! `examples/cloud-co` seed; the timeout and the logs through a small router of slow and
//! talkative handlers wrapped in the same layers, with a 50 ms timeout; and once end to end,
//! the release binary over TLS read by the real kubectl, which asks for gzip.

mod common;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use replication_vw::api::Status;
use replication_vw::api::user::UserInfo;
use replication_vw::replication::Index;
use replication_vw::seed;
use replication_vw::server::authn::Authenticator;
use replication_vw::server::layers;
use replication_vw::server::tls::PeerIdentity;
use replication_vw::server::{AppState, app};
use replication_vw::store::memory::MemoryStore;
use replication_vw::store::{Scope, Store};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// root:cloudco, the provider holding the flavors.
const PROVIDER: &str = "1p5f2x8rkq0vd7wz";
/// root:team-a, which binds the `compute` export.
const TEAM_A: &str = "3h9tqa6m2cxe1kbn";
/// Upper bound for anything a test waits on.
const WAIT: Duration = Duration::from_secs(10);
/// The short request timeout of the slow-handler router.
const SHORT: Duration = Duration::from_millis(50);

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cloud-co")
}

/// The cloud-co seed in a memory store, an index synced to it, and the router over both.
struct Fixture {
    store: Arc<MemoryStore>,
    index: Arc<Index>,
    router: Router,
}

impl Fixture {
    async fn new() -> Result<Self> {
        let store = Arc::new(MemoryStore::default());
        let manifests = seed::read_dirs(&[example_dir()])?;
        seed::load(store.clone(), manifests, "https://127.0.0.1:6443").await?;
        let index = Arc::new(Index::new());
        index.reset(&store.list(&Scope::all()).await?);
        let dyn_store: Arc<dyn Store> = store.clone();
        let state = AppState::new(dyn_store, index.clone(), Authenticator::new(None));
        Ok(Fixture {
            store,
            index,
            router: app(state),
        })
    }

    /// Apply every store event the index has not seen yet, as its background task would.
    async fn catch_up(&self) -> Result<()> {
        let target = self.store.revision().await?;
        let after = self.index.read().revision;
        let mut events = self.store.watch(Scope::all(), after).await?;
        while self.index.read().revision < target {
            let event = tokio::time::timeout(WAIT, events.next())
                .await
                .context("waiting for a store event")?
                .context("the store watch ended")??;
            self.index.apply(&event);
        }
        Ok(())
    }

    /// GET `uri` as the admin (a `system:masters` client certificate) with these headers.
    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Result<Response<Body>> {
        let mut builder = Request::builder()
            .uri(uri)
            .extension(PeerIdentity::from_user(UserInfo {
                name: "admin".into(),
                groups: vec!["system:masters".into()],
                ..UserInfo::default()
            }));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        Ok(self
            .router
            .clone()
            .oneshot(builder.body(Body::empty())?)
            .await?)
    }

    /// Add `count` public CPU flavors with a 5 KiB description each through the cache API,
    /// so that lists of them are well over 128 KiB, and let the index apply them.
    async fn add_wordy_flavors(&self, count: usize) -> Result<()> {
        for i in 0..count {
            let name = format!("cpu-wordy-{i}");
            let object = cpu_flavor(&name, json!({"cores": 2, "description": "x".repeat(5000)}));
            let request = Request::builder()
                .method(Method::POST)
                .uri(cache_uri(""))
                .header(header::CONTENT_TYPE, "application/json")
                .extension(PeerIdentity::from_user(UserInfo {
                    name: "admin".into(),
                    groups: vec!["system:masters".into()],
                    ..UserInfo::default()
                }))
                .body(Body::from(serde_json::to_vec(&object)?))?;
            let response = self.router.clone().oneshot(request).await?;
            if response.status() != StatusCode::CREATED {
                bail!("creating {name}: {}", response.status());
            }
        }
        self.catch_up().await
    }
}

/// The provider's CachedObjects in the cache server API, followed by `rest`.
fn cache_uri(rest: &str) -> String {
    format!(
        "/services/cache/shards/root/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1/cachedobjects{rest}"
    )
}

/// team-a's CPU flavors in the virtual workspace, followed by `rest`.
fn cpuflavors(rest: &str) -> String {
    format!(
        "/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{TEAM_A}/apis/cloud.example.com/v1/cpuflavors{rest}"
    )
}

/// A CachedObject as a shard writes it for a public CPU flavor of the provider.
fn cpu_flavor(name: &str, spec: Value) -> Value {
    common::cpu_flavor_cached_object(name, &format!("uid-{name}"), spec)
}

async fn body_bytes(response: Response<Body>) -> Result<Vec<u8>> {
    let collected = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .context("reading a response body")??;
    Ok(collected.to_bytes().to_vec())
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .context("the body is not gzip")?;
    Ok(out)
}

fn content_encoding(response: &Response<Body>) -> Option<String> {
    response
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_large_list_comes_back_gzip_encoded_when_asked_and_decodes_to_the_same_json() -> Result<()>
{
    let fx = Fixture::new().await?;
    fx.add_wordy_flavors(40).await?;
    // The virtual workspace streams this list in chunks, the cache server answers in one piece.
    for uri in [cpuflavors(""), cache_uri("")] {
        let plain = fx.get(&uri, &[]).await?;
        assert_eq!(plain.status(), StatusCode::OK, "{uri}");
        assert_eq!(content_encoding(&plain), None, "{uri}");
        let plain = body_bytes(plain).await?;
        assert!(plain.len() > 200_000, "{uri}: {} bytes", plain.len());

        let zipped = fx.get(&uri, &[("accept-encoding", "gzip")]).await?;
        assert_eq!(zipped.status(), StatusCode::OK, "{uri}");
        assert_eq!(content_encoding(&zipped).as_deref(), Some("gzip"), "{uri}");
        assert_eq!(zipped.headers()[header::VARY], "accept-encoding", "{uri}");
        assert!(zipped.headers().get(header::CONTENT_LENGTH).is_none());
        let zipped = body_bytes(zipped).await?;
        assert!(
            zipped.len() < plain.len() / 10,
            "{uri}: {} bytes",
            zipped.len()
        );
        let unzipped: Value = serde_json::from_slice(&gunzip(&zipped)?)?;
        let plain: Value = serde_json::from_slice(&plain)?;
        assert_eq!(unzipped, plain, "{uri}");
        // The seed's flavors (and, in the cache, its other objects) and the forty added.
        let items = unzipped["items"].as_array().map_or(0, Vec::len);
        assert!(items >= 43, "{uri}: {items} items");
    }
    Ok(())
}

#[tokio::test]
async fn a_large_list_is_not_compressed_for_a_client_that_does_not_ask_for_gzip() -> Result<()> {
    let fx = Fixture::new().await?;
    fx.add_wordy_flavors(40).await?;
    for accept in ["identity", "*", "gzip;q=0", "br", "identity;q=0"] {
        let response = fx
            .get(&cpuflavors(""), &[("accept-encoding", accept)])
            .await?;
        assert_eq!(response.status(), StatusCode::OK, "{accept}");
        assert_eq!(content_encoding(&response), None, "{accept}");
        let list: Value = serde_json::from_slice(&body_bytes(response).await?)?;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(43), "{accept}");
    }
    Ok(())
}

#[tokio::test]
async fn a_watch_is_never_gzip_encoded_even_when_asked() -> Result<()> {
    let fx = Fixture::new().await?;
    fx.add_wordy_flavors(40).await?;
    // The initial events alone are over 200 KiB.
    let query = "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let response = fx
        .get(&cpuflavors(query), &[("accept-encoding", "gzip")])
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_encoding(&response), None);
    // Every event arrives as a JSON line while the watch stays open.
    let mut body = response.into_body();
    let mut buf = Vec::new();
    let mut added = 0;
    loop {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .context("waiting for a watch event")?
            .context("the watch ended")??;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(at) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            let event: Value = serde_json::from_slice(&line[..at])?;
            match event["type"].as_str() {
                Some("ADDED") => added += 1,
                Some("BOOKMARK") => {
                    assert_eq!(added, 43);
                    return Ok(());
                }
                _ => bail!("unexpected event {event}"),
            }
        }
    }
}

#[tokio::test]
async fn a_small_response_is_not_compressed_even_when_asked() -> Result<()> {
    let fx = Fixture::new().await?;
    for uri in [
        cpuflavors("/cpu-small"),
        cpuflavors(""),
        "/healthz".to_string(),
    ] {
        let response = fx.get(&uri, &[("accept-encoding", "gzip")]).await?;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(content_encoding(&response), None, "{uri}");
        assert!(response.headers().get(header::VARY).is_none(), "{uri}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_an_x_request_id_and_echoes_a_given_one() -> Result<()> {
    let fx = Fixture::new().await?;
    for uri in [
        cpuflavors("/cpu-small"),
        cpuflavors("/nope"),
        "/healthz".to_string(),
    ] {
        let response = fx.get(&uri, &[]).await?;
        let id = response
            .headers()
            .get("x-request-id")
            .with_context(|| format!("{uri}: no x-request-id"))?
            .to_str()?;
        uuid::Uuid::parse_str(id).with_context(|| format!("{uri}: {id} is not a UUID"))?;

        let response = fx.get(&uri, &[("x-request-id", "trace-me-42")]).await?;
        assert_eq!(response.headers()["x-request-id"], "trace-me-42", "{uri}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The layers around small handlers: timeouts and logs
// ---------------------------------------------------------------------------------------------

/// Handlers that take long or log, wrapped in the layers `app` uses, with a 50 ms timeout.
fn slow_router() -> Router {
    Router::new()
        .route(
            "/clusters/c/api/v1/configmaps",
            get(|| async {
                // Four times the timeout: a watch is allowed that, anything else is not.
                tokio::time::sleep(SHORT * 4).await;
                "watched"
            }),
        )
        .route(
            "/clusters/c/api/v1/namespaces/default/configmaps/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "too late"
            }),
        )
        .route(
            "/talk",
            get(|| async {
                tracing::warn!("The handler speaks.");
                Status::internal("broken on purpose").into_response()
            }),
        )
        .layer(layers::per_request(SHORT))
        .layer(layers::edge())
}

async fn send(router: &Router, uri: &str) -> Result<Response<Body>> {
    let request = Request::builder()
        .uri(uri)
        .header("x-request-id", "req-42")
        .body(Body::empty())?;
    let response = tokio::time::timeout(WAIT, router.clone().oneshot(request))
        .await
        .context("waiting for an answer")??;
    Ok(response)
}

#[tokio::test]
async fn a_slow_request_gets_a_504_timeout_status() -> Result<()> {
    let router = slow_router();
    let response = send(
        &router,
        "/clusters/c/api/v1/namespaces/default/configmaps/slow",
    )
    .await?;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let status: Value = serde_json::from_slice(&body_bytes(response).await?)?;
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "Timeout", "{status}");
    assert_eq!(status["code"], 504, "{status}");
    assert_eq!(
        status["message"],
        "the server was unable to return a response in the time allotted, but may still be processing the request"
    );
    Ok(())
}

#[tokio::test]
async fn a_watch_outlives_the_request_timeout() -> Result<()> {
    let router = slow_router();
    for uri in [
        "/clusters/c/api/v1/configmaps?watch=true",
        "/clusters/c/api/v1/configmaps?watch=1&resourceVersion=0",
    ] {
        let response = send(&router, uri).await?;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(body_bytes(response).await?, b"watched", "{uri}");
    }
    // The same collection listed is not a watch.
    let response = send(&router, "/clusters/c/api/v1/configmaps").await?;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    Ok(())
}

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn what_a_handler_logs_carries_the_request_id_and_a_5xx_is_a_warning() -> Result<()> {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let router = slow_router();
    let response = send(&router, "/talk").await?;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let response = send(
        &router,
        "/clusters/c/api/v1/namespaces/default/configmaps/slow",
    )
    .await?;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);

    let text = captured
        .0
        .lock()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .unwrap_or_default();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .with_context(|| format!("no line with {needle:?} in:\n{text}"))
            .map(str::to_string)
    };
    let spoke = line("The handler speaks.")?;
    assert!(spoke.contains("WARN"), "{spoke}");
    assert!(spoke.contains("request_id=req-42"), "{spoke}");
    assert!(spoke.contains("path=/talk"), "{spoke}");
    assert!(spoke.contains("method=GET"), "{spoke}");
    let failed = line("status=500")?;
    assert!(failed.contains("WARN"), "{failed}");
    assert!(failed.contains("request_id=req-42"), "{failed}");
    let timed_out = line("status=504")?;
    assert!(timed_out.contains("path=/clusters/c/api/v1/namespaces/default/configmaps/slow"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reads_a_large_list_that_comes_gzip_encoded_over_tls() -> Result<()> {
    let s = common::Server::cloud_co();
    let client = s.admin_client();
    let collection = s.cache(PROVIDER, "cache.kcp.io/v1alpha1/cachedobjects");
    for i in 0..40 {
        let object = cpu_flavor(
            &format!("cpu-wordy-{i}"),
            json!({"cores": 2, "description": "x".repeat(5000)}),
        );
        let response = client.post(&collection).json(&object).send().await?;
        if !response.status().is_success() {
            bail!("POST {collection}: {}", response.text().await?);
        }
    }
    let server = s.vw("cpuflavors-v1", TEAM_A);
    // The virtual workspace applies the writes in the background: wait for all of them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let list = loop {
        let mut c = s.kubectl_admin(&server);
        c.args(["get", "cpuflavors", "-o", "json"]);
        let out = common::run(c);
        if !out.status.success() {
            bail!("kubectl failed: {}", common::stderr(&out));
        }
        let list: Value = serde_json::from_slice(&out.stdout)?;
        if list["items"].as_array().map_or(0, Vec::len) == 43
            || std::time::Instant::now() > deadline
        {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let items = list["items"].as_array().map_or(0, Vec::len);
    assert_eq!(items, 43);

    // The same list on the wire, as kubectl's transport received it.
    let url = format!("{server}/apis/cloud.example.com/v1/cpuflavors");
    let response = client
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await?;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(response.headers().get("x-request-id").is_some());
    let zipped = response.bytes().await?;
    let unzipped: Value = serde_json::from_slice(&gunzip(&zipped)?)?;
    assert_eq!(unzipped["items"].as_array().map_or(0, Vec::len), 43);
    Ok(())
}
