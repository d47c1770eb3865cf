//! In-process tests of the composed router (`server::app`): the Replication virtual workspace
//! and the cache server API over the `examples/cloud-co` seed, driven request by request with
//! `tower::ServiceExt::oneshot`. The index is synced by hand (`Index::reset`, then
//! `Index::apply` of the store's events) instead of by its background task, so every test
//! decides exactly when cache writes become visible to the virtual workspace.

mod common;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use common::cpu_flavor_cached_object;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use replication_vw::api::user::UserInfo;
use replication_vw::model::{ANN_CLUSTER, ANN_ORIGINAL_UID, ANN_SHARD, LABEL_OBJECT_RESOURCE};
use replication_vw::replication::Index;
use replication_vw::seed;
use replication_vw::server::authn::{Authenticator, TokenFile};
use replication_vw::server::tls::PeerIdentity;
use replication_vw::server::{AppState, app};
use replication_vw::store::memory::MemoryStore;
use replication_vw::store::{Scope, Store};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// root:cloudco, the provider holding the flavors, the CachedResources and the APIExport.
const PROVIDER: &str = "1p5f2x8rkq0vd7wz";
/// root:team-a, which binds the `compute` export.
const TEAM_A: &str = "3h9tqa6m2cxe1kbn";
/// root:team-b, which binds nothing.
const TEAM_B: &str = "5k8rw2n7j4tz6cqa";
/// The virtual workspace URL the seed publishes in its endpoint slices.
const EXTERNAL_URL: &str = "https://127.0.0.1:6443";
/// The Accept header kubectl sends for `/api` and `/apis`.
const AGGREGATED_ACCEPT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
/// The Content-Type of an aggregated discovery document.
const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// Upper bound for anything a test waits on; nothing here should take more than a moment.
const WAIT: Duration = Duration::from_secs(10);
/// The cache server's CachedObject collection, before `?` or `/<name>`.
const CACHED_OBJECTS: &str = "apis/cache.kcp.io/v1alpha1/cachedobjects";

/// Who sends a request.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// A client certificate in `system:masters`.
    Admin,
    /// `Authorization: Bearer <token>`.
    Token(&'static str),
    /// No credentials at all.
    Anonymous,
}

const ALICE: Caller = Caller::Token("alice-token");
const BOB: Caller = Caller::Token("bob-token");

/// The cloud-co seed in a memory store, an index synced to it, and the router over both.
struct Fixture {
    store: Arc<MemoryStore>,
    index: Arc<Index>,
    router: Router,
}

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cloud-co")
}

impl Fixture {
    async fn new() -> Result<Self> {
        let store = Arc::new(MemoryStore::default());
        let manifests = seed::read_dirs(&[example_dir()])?;
        seed::load(store.clone(), manifests, EXTERNAL_URL).await?;
        let index = Arc::new(Index::new());
        index.reset(&store.list(&Scope::all()).await?);
        let tokens = std::fs::read_to_string(example_dir().join("tokens.csv"))?;
        let dyn_store: Arc<dyn Store> = store.clone();
        let state = AppState::new(
            dyn_store,
            index.clone(),
            Authenticator::new(Some(TokenFile::parse(&tokens)?)),
        );
        state
            .seed_loaded
            .store(true, std::sync::atomic::Ordering::Release);
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
        loop {
            let seen = self.index.read().revision;
            if seen >= target {
                return Ok(());
            }
            let event = tokio::time::timeout(WAIT, events.next())
                .await
                .context("waiting for a store event")?
                .context("the store watch ended")??;
            self.index.apply(&event);
        }
    }

    /// Send one request.
    async fn send(
        &self,
        caller: Caller,
        method: Method,
        uri: &str,
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Response<Body>> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(a) = accept {
            builder = builder.header(header::ACCEPT, a);
        }
        match caller {
            Caller::Admin => {
                builder = builder.extension(PeerIdentity::from_user(UserInfo {
                    name: "admin".into(),
                    groups: vec!["system:masters".into()],
                    ..UserInfo::default()
                }));
            }
            Caller::Token(t) => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            Caller::Anonymous => {}
        }
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v)?)
            }
            None => Body::empty(),
        };
        let response = self.router.clone().oneshot(builder.body(body)?).await?;
        Ok(response)
    }

    /// Send one request and decode its whole body as JSON.
    async fn json(
        &self,
        caller: Caller,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let response = self.send(caller, method, uri, None, body).await?;
        read_json(response).await
    }

    /// GET as JSON.
    async fn get(&self, caller: Caller, uri: &str) -> Result<(StatusCode, Value)> {
        self.json(caller, Method::GET, uri, None).await
    }

    /// Set cpu-small's cores through the cache server API, as the shard would, and let the
    /// index apply it.
    async fn update_cpu_small_cores(&mut self, cores: i64) -> Result<()> {
        let mut wrapper = self.cached_object("cpu-small").await?;
        let name = wrapper["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        wrapper["spec"]["raw"]["spec"]["cores"] = json!(cores);
        let uri = cache_uri("root", PROVIDER, &format!("/{name}"));
        let (code, body) = self
            .json(Caller::Admin, Method::PUT, &uri, Some(&wrapper))
            .await?;
        assert_eq!(code, StatusCode::OK, "{body}");
        self.catch_up().await
    }

    /// The CachedObject wrapping source object `name` of the provider, as the cache API shows it.
    async fn cached_object(&self, name: &str) -> Result<Value> {
        let uri = cache_uri(
            "*",
            PROVIDER,
            &format!("?labelSelector=cache.kcp.io%2Fobject-original-name%3D{name}"),
        );
        let (code, list) = self.get(Caller::Admin, &uri).await?;
        assert_eq!(code, StatusCode::OK, "{list}");
        match list["items"].as_array().map(Vec::as_slice) {
            Some([one]) => Ok(one.clone()),
            _ => bail!("expected exactly one CachedObject for {name}, got {list}"),
        }
    }
}

async fn read_json(response: Response<Body>) -> Result<(StatusCode, Value)> {
    let code = response.status();
    let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .context("reading a response body")??
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .with_context(|| format!("a {code} body is not JSON: {bytes:?}"))?;
    Ok((code, value))
}

/// A URL of the `cpuflavors-v1` CachedResource's virtual workspace for `target`.
fn vw(target: &str, kube_path: &str) -> String {
    vw_of("cpuflavors-v1", target, kube_path)
}

fn vw_of(cached_resource: &str, target: &str, kube_path: &str) -> String {
    format!("/services/replication/{PROVIDER}/{cached_resource}/clusters/{target}{kube_path}")
}

/// The served CPU flavors collection for `target`, followed by `rest` (`/<name>` or `?query`).
fn cpuflavors(target: &str, rest: &str) -> String {
    vw(
        target,
        &format!("/apis/cloud.example.com/v1/cpuflavors{rest}"),
    )
}

/// A cache server CachedObject URL; `rest` is `/<name>` or `?query` or empty.
fn cache_uri(shard: &str, cluster: &str, rest: &str) -> String {
    format!("/services/cache/shards/{shard}/clusters/{cluster}/{CACHED_OBJECTS}{rest}")
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Assert that `v` is a failure Status with this code and reason.
fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
}

/// Reads a watch response body event by event (one JSON document per `\n`-terminated line).
struct WatchReader {
    body: Body,
    buf: Vec<u8>,
}

impl WatchReader {
    fn new(response: Response<Body>) -> Self {
        WatchReader {
            body: response.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` once the stream has ended.
    async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                let event = serde_json::from_slice(&line[..at])
                    .with_context(|| format!("a watch line is not JSON: {line:?}"))?;
                return Ok(Some(event));
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .context("waiting for a watch event")?;
            match frame {
                None if self.buf.is_empty() => return Ok(None),
                None => bail!(
                    "the watch ended inside an unterminated line: {:?}",
                    self.buf
                ),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event, which must exist.
    async fn event(&mut self) -> Result<Value> {
        self.next().await?.context("the watch ended early")
    }
}

// ---------------------------------------------------------------------------------------------
// The virtual workspace: reads
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn team_a_lists_the_three_public_cpu_flavors_as_a_cpu_flavor_list() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, list) = fx.get(ALICE, &cpuflavors(TEAM_A, "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "CPUFlavorList");
    assert_eq!(list["apiVersion"], "cloud.example.com/v1");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the list resourceVersion is not a string")?;
    assert!(rv.parse::<u64>().is_ok_and(|n| n > 0), "{rv}");
    assert_eq!(names(&list), ["cpu-large", "cpu-medium", "cpu-small"]);
    for item in list["items"].as_array().into_iter().flatten() {
        assert_eq!(item["apiVersion"], "cloud.example.com/v1", "{item}");
        assert_eq!(item["kind"], "CPUFlavor", "{item}");
        assert_eq!(item["metadata"]["annotations"][ANN_CLUSTER], TEAM_A);
    }
    Ok(())
}

#[tokio::test]
async fn cpu_small_carries_only_the_consumer_cluster_annotation_and_the_original_uid() -> Result<()>
{
    let fx = Fixture::new().await?;
    let wrapper = fx.cached_object("cpu-small").await?;
    let original_uid = wrapper["spec"]["raw"]["metadata"]["annotations"][ANN_ORIGINAL_UID]
        .as_str()
        .context("the CachedObject has no original-resource-UID")?
        .to_string();
    assert!(!original_uid.is_empty());

    let (code, flavor) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-small")).await?;
    assert_eq!(code, StatusCode::OK, "{flavor}");
    assert_eq!(
        flavor["metadata"]["annotations"],
        json!({ANN_CLUSTER: TEAM_A})
    );
    assert_eq!(flavor["metadata"]["uid"], original_uid.as_str());
    assert!(
        flavor["metadata"]["resourceVersion"].is_string(),
        "{flavor}"
    );
    assert_eq!(flavor["kind"], "CPUFlavor");
    assert_eq!(flavor["spec"]["cores"], 2);
    assert_eq!(
        flavor["metadata"]["labels"]["cloud.example.com/tier"],
        "small"
    );
    Ok(())
}

#[tokio::test]
async fn the_internal_cpu_flavor_is_not_found() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, status) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-internal")).await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_status(&status, 404, "NotFound");
    assert_eq!(
        status["message"],
        "cpuflavors.cloud.example.com \"cpu-internal\" not found"
    );
    Ok(())
}

#[tokio::test]
async fn getting_one_flavor_across_all_clusters_is_a_bad_request() -> Result<()> {
    let fx = Fixture::new().await?;
    for caller in [Caller::Admin, ALICE] {
        let (code, status) = fx.get(caller, &cpuflavors("*", "/cpu-small")).await?;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
        assert_status(&status, 400, "BadRequest");
        assert_eq!(status["message"], "Wildcard request not supported");
    }
    Ok(())
}

#[tokio::test]
async fn a_wildcard_list_returns_one_copy_per_bound_consumer() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, list) = fx.get(ALICE, &cpuflavors("*", "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    // Only team-a binds the export, so every flavor appears once, as team-a's.
    assert_eq!(names(&list), ["cpu-large", "cpu-medium", "cpu-small"]);
    for item in list["items"].as_array().into_iter().flatten() {
        assert_eq!(item["metadata"]["annotations"][ANN_CLUSTER], TEAM_A);
    }
    Ok(())
}

#[tokio::test]
async fn alice_is_forbidden_to_read_team_b_which_binds_nothing() -> Result<()> {
    let fx = Fixture::new().await?;
    for (uri, verb) in [
        (cpuflavors(TEAM_B, ""), "list"),
        (cpuflavors(TEAM_B, "/cpu-small"), "get"),
    ] {
        let (code, status) = fx.get(ALICE, &uri).await?;
        assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
        assert_status(&status, 403, "Forbidden");
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "User \"alice\" cannot {verb} resource \"cpuflavors\""
            )),
            "{message}"
        );
        assert!(
            message.ends_with("virtual.replication.content.authorization.kcp.io: access denied"),
            "{message}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_admin_sees_an_empty_list_and_not_found_for_an_unbound_consumer() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, list) = fx.get(Caller::Admin, &cpuflavors(TEAM_B, "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "CPUFlavorList");
    assert_eq!(list["items"], json!([]));
    let (code, status) = fx
        .get(Caller::Admin, &cpuflavors(TEAM_B, "/cpu-small"))
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND, "{status}");
    assert_status(&status, 404, "NotFound");
    Ok(())
}

#[tokio::test]
async fn bob_without_a_grant_is_forbidden_everywhere() -> Result<()> {
    let fx = Fixture::new().await?;
    for uri in [
        cpuflavors(TEAM_A, ""),
        cpuflavors(TEAM_A, "/cpu-small"),
        cpuflavors("*", ""),
        vw(TEAM_A, "/apis"),
    ] {
        let (code, status) = fx.get(BOB, &uri).await?;
        assert_eq!(code, StatusCode::FORBIDDEN, "{uri}: {status}");
        assert_status(&status, 403, "Forbidden");
    }
    Ok(())
}

#[tokio::test]
async fn a_label_selector_set_narrows_the_list_to_small_and_large() -> Result<()> {
    let fx = Fixture::new().await?;
    let uri = cpuflavors(
        TEAM_A,
        "?labelSelector=cloud.example.com%2Ftier%20in%20%28small%2Clarge%29",
    );
    let (code, list) = fx.get(ALICE, &uri).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["cpu-large", "cpu-small"]);
    Ok(())
}

#[tokio::test]
async fn a_field_selector_on_the_name_returns_one_flavor() -> Result<()> {
    let fx = Fixture::new().await?;
    let uri = cpuflavors(TEAM_A, "?fieldSelector=metadata.name%3Dcpu-small");
    let (code, list) = fx.get(ALICE, &uri).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["cpu-small"]);
    Ok(())
}

#[tokio::test]
async fn a_field_selector_on_an_unsupported_field_is_a_bad_request() -> Result<()> {
    let fx = Fixture::new().await?;
    let uri = cpuflavors(TEAM_A, "?fieldSelector=spec.cores%3D2");
    let (code, status) = fx.get(ALICE, &uri).await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    assert_status(&status, 400, "BadRequest");
    assert_eq!(status["message"], "field label not supported: spec.cores");
    Ok(())
}

#[tokio::test]
async fn kubectls_table_accept_gets_printer_columns_and_metadata_rows() -> Result<()> {
    let fx = Fixture::new().await?;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let response = fx
        .send(
            ALICE,
            Method::GET,
            &cpuflavors(TEAM_A, ""),
            Some(accept),
            None,
        )
        .await?;
    let (code, table) = read_json(response).await?;
    assert_eq!(code, StatusCode::OK, "{table}");
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns[0], "Name");
    assert!(columns.contains(&"Cores"), "{columns:?}");
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let small = rows.iter().find(|r| r["cells"][0] == "cpu-small").unwrap();
    let cores_at = columns.iter().position(|c| *c == "Cores").unwrap();
    assert_eq!(small["cells"][cores_at], 2);
    assert_eq!(small["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(
        small["object"]["metadata"]["annotations"]["kcp.io/cluster"],
        TEAM_A
    );
    assert!(small["object"].get("spec").is_none());
    Ok(())
}

#[tokio::test]
async fn a_metadata_client_gets_a_partial_object_metadata_list() -> Result<()> {
    let fx = Fixture::new().await?;
    let accept =
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let response = fx
        .send(
            ALICE,
            Method::GET,
            &cpuflavors(TEAM_A, ""),
            Some(accept),
            None,
        )
        .await?;
    let (code, list) = read_json(response).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(names(&list).len(), 3);
    assert!(list["items"][0].get("spec").is_none());
    let single = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let response = fx
        .send(
            ALICE,
            Method::GET,
            &cpuflavors(TEAM_A, ""),
            Some(single),
            None,
        )
        .await?;
    let (code, status) = read_json(response).await?;
    assert_eq!(code, StatusCode::NOT_ACCEPTABLE, "{status}");
    Ok(())
}

#[tokio::test]
async fn an_unknown_bearer_token_is_unauthorized() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, status) = fx
        .get(Caller::Token("mallory-token"), &cpuflavors(TEAM_A, ""))
        .await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{status}");
    assert_status(&status, 401, "Unauthorized");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The virtual workspace: writes
// ---------------------------------------------------------------------------------------------

/// Every write an API client could attempt: (method, URI, verb, body).
fn write_attempts() -> Vec<(Method, String, &'static str, Option<Value>)> {
    let small = cpuflavors(TEAM_A, "/cpu-small");
    let object = json!({"apiVersion": "cloud.example.com/v1", "kind": "CPUFlavor",
        "metadata": {"name": "cpu-small"}, "spec": {"cores": 64}});
    vec![
        (Method::DELETE, small.clone(), "delete", None),
        (
            Method::POST,
            cpuflavors(TEAM_A, ""),
            "create",
            Some(object.clone()),
        ),
        (Method::PUT, small.clone(), "update", Some(object)),
        (
            Method::PATCH,
            small,
            "patch",
            Some(json!({"spec": {"cores": 64}})),
        ),
        (
            Method::DELETE,
            cpuflavors(TEAM_A, ""),
            "deletecollection",
            None,
        ),
    ]
}

async fn assert_cpu_small_unchanged(fx: &Fixture) -> Result<()> {
    let (code, flavor) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-small")).await?;
    assert_eq!(code, StatusCode::OK, "{flavor}");
    assert_eq!(flavor["spec"]["cores"], 2);
    let (_, list) = fx.get(ALICE, &cpuflavors(TEAM_A, "")).await?;
    assert_eq!(names(&list).len(), 3);
    Ok(())
}

#[tokio::test]
async fn writes_by_an_admin_are_method_not_allowed_and_change_nothing() -> Result<()> {
    let fx = Fixture::new().await?;
    for (method, uri, verb, body) in write_attempts() {
        let (code, status) = fx.json(Caller::Admin, method, &uri, body.as_ref()).await?;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{verb}: {status}");
        assert_status(&status, 405, "MethodNotAllowed");
        assert_eq!(
            status["message"],
            format!(
                "{verb} is not supported on resources of kind \"cpuflavors.cloud.example.com\""
            )
        );
    }
    fx.catch_up().await?;
    assert_cpu_small_unchanged(&fx).await
}

#[tokio::test]
async fn writes_by_alice_are_forbidden_and_change_nothing() -> Result<()> {
    let fx = Fixture::new().await?;
    for (method, uri, verb, body) in write_attempts() {
        let (code, status) = fx.json(ALICE, method, &uri, body.as_ref()).await?;
        assert_eq!(code, StatusCode::FORBIDDEN, "{verb}: {status}");
        assert_status(&status, 403, "Forbidden");
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "User \"alice\" cannot {verb} resource \"cpuflavors\" in API group \"cloud.example.com\""
            )),
            "{message}"
        );
    }
    fx.catch_up().await?;
    assert_cpu_small_unchanged(&fx).await
}

#[tokio::test]
async fn anonymous_callers_are_unauthorized_and_change_nothing() -> Result<()> {
    let fx = Fixture::new().await?;
    let mut attempts = write_attempts();
    attempts.push((Method::GET, cpuflavors(TEAM_A, ""), "list", None));
    attempts.push((Method::GET, vw(TEAM_A, "/apis"), "get", None));
    for (method, uri, verb, body) in attempts {
        let (code, status) = fx
            .json(Caller::Anonymous, method, &uri, body.as_ref())
            .await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{verb}: {status}");
        assert_status(&status, 401, "Unauthorized");
    }
    fx.catch_up().await?;
    assert_cpu_small_unchanged(&fx).await
}

#[tokio::test]
async fn the_status_subresource_is_method_not_allowed_because_nothing_stores_it() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, status) = fx
        .get(Caller::Admin, &cpuflavors(TEAM_A, "/cpu-small/status"))
        .await?;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{status}");
    assert_status(&status, 405, "MethodNotAllowed");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The virtual workspace: discovery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn aggregated_discovery_of_apis_names_the_resource_with_its_response_kind() -> Result<()> {
    let fx = Fixture::new().await?;
    let response = fx
        .send(
            ALICE,
            Method::GET,
            &vw(TEAM_A, "/apis"),
            Some(AGGREGATED_ACCEPT),
            None,
        )
        .await?;
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some(AGGREGATED_CT)
    );
    let (code, doc) = read_json(response).await?;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(doc["kind"], "APIGroupDiscoveryList");
    assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
    let group = &doc["items"][0];
    assert_eq!(group["metadata"]["name"], "cloud.example.com");
    let version = &group["versions"][0];
    assert_eq!(version["version"], "v1");
    let resource = &version["resources"][0];
    assert_eq!(resource["resource"], "cpuflavors");
    assert_eq!(
        resource["responseKind"],
        json!({"group": "cloud.example.com", "version": "v1", "kind": "CPUFlavor"})
    );
    assert_eq!(resource["scope"], "Cluster");
    assert_eq!(resource["verbs"], json!(["get", "list", "watch"]));
    assert_eq!(resource["shortNames"], json!(["cpuf"]));
    Ok(())
}

#[tokio::test]
async fn plain_discovery_of_apis_is_an_api_group_list() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, doc) = fx.get(ALICE, &vw(TEAM_A, "/apis")).await?;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(doc["kind"], "APIGroupList");
    let gv = json!({"groupVersion": "cloud.example.com/v1", "version": "v1"});
    assert_eq!(
        doc["groups"],
        json!([{"name": "cloud.example.com", "versions": [gv.clone()], "preferredVersion": gv}])
    );
    Ok(())
}

#[tokio::test]
async fn the_group_version_lists_only_read_verbs_and_the_short_name() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, doc) = fx
        .get(ALICE, &vw(TEAM_A, "/apis/cloud.example.com/v1"))
        .await?;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(doc["kind"], "APIResourceList");
    assert_eq!(doc["groupVersion"], "cloud.example.com/v1");
    let main = &doc["resources"][0];
    assert_eq!(main["name"], "cpuflavors");
    assert_eq!(main["singularName"], "cpuflavor");
    assert_eq!(main["kind"], "CPUFlavor");
    assert_eq!(main["namespaced"], false);
    assert_eq!(main["verbs"], json!(["get", "list", "watch"]));
    assert_eq!(main["shortNames"], json!(["cpuf"]));
    assert_eq!(doc["resources"][1]["name"], "cpuflavors/status");
    Ok(())
}

#[tokio::test]
async fn the_core_group_version_is_an_empty_resource_list() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, doc) = fx.get(ALICE, &vw(TEAM_A, "/api/v1")).await?;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(doc["kind"], "APIResourceList");
    assert_eq!(doc["groupVersion"], "v1");
    assert_eq!(doc["resources"], json!([]));
    Ok(())
}

#[tokio::test]
async fn other_groups_under_the_virtual_root_are_not_found() -> Result<()> {
    let fx = Fixture::new().await?;
    for path in ["/apis/apps/v1", "/apis/cloud.example.com/v2", "/openapi/v2"] {
        let (code, status) = fx.get(Caller::Admin, &vw(TEAM_A, path)).await?;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {status}");
        assert_status(&status, 404, "NotFound");
    }
    Ok(())
}

/// Whether `v` is `v<major>.<minor>.<patch>[-<pre-release>][+<build>]` as semver defines it.
fn is_semver_git_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (rest, build) = rest
        .split_once('+')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let (core, pre) = rest
        .split_once('-')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let numbers: Vec<&str> = core.split('.').collect();
    let numeric = |s: &&str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s.len() == 1 || !s.starts_with('0'))
    };
    let identifiers = |s: &str| {
        s.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    numbers.len() == 3
        && numbers.iter().all(numeric)
        && pre.is_none_or(identifiers)
        && build.is_none_or(identifiers)
}

#[tokio::test]
async fn version_reports_a_semver_git_version() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, doc) = fx.get(ALICE, &vw(TEAM_A, "/version")).await?;
    assert_eq!(code, StatusCode::OK, "{doc}");
    let git_version = doc["gitVersion"].as_str().unwrap_or_default();
    assert!(is_semver_git_version(git_version), "{git_version}");
    assert!(
        doc["major"].is_string() && doc["minor"].is_string(),
        "{doc}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The cache server API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_cache_api_refuses_users_outside_system_masters() -> Result<()> {
    let fx = Fixture::new().await?;
    for caller in [ALICE, BOB] {
        let (code, status) = fx.get(caller, &cache_uri("*", "*", "")).await?;
        assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
        assert_status(&status, 403, "Forbidden");
    }
    let (code, status) = fx.get(Caller::Anonymous, &cache_uri("*", "*", "")).await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{status}");
    Ok(())
}

#[tokio::test]
async fn an_unknown_cache_resource_is_not_found() -> Result<()> {
    let fx = Fixture::new().await?;
    let uri = format!(
        "/services/cache/shards/*/clusters/{PROVIDER}/apis/cloud.example.com/v1/cpuflavors"
    );
    let (code, status) = fx.get(Caller::Admin, &uri).await?;
    assert_eq!(code, StatusCode::NOT_FOUND, "{status}");
    assert_status(&status, 404, "NotFound");
    Ok(())
}

#[tokio::test]
async fn a_put_with_a_stale_resource_version_conflicts() -> Result<()> {
    let fx = Fixture::new().await?;
    let wrapper = fx.cached_object("cpu-small").await?;
    let name = wrapper["metadata"]["name"].as_str().unwrap_or_default();
    let uri = cache_uri("root", PROVIDER, &format!("/{name}"));
    let mut first = wrapper.clone();
    first["spec"]["raw"]["spec"]["cores"] = json!(3);
    let (code, updated) = fx
        .json(Caller::Admin, Method::PUT, &uri, Some(&first))
        .await?;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        wrapper["metadata"]["resourceVersion"]
    );
    let mut stale = wrapper.clone();
    stale["spec"]["raw"]["spec"]["cores"] = json!(5);
    let (code, status) = fx
        .json(Caller::Admin, Method::PUT, &uri, Some(&stale))
        .await?;
    assert_eq!(code, StatusCode::CONFLICT, "{status}");
    assert_status(&status, 409, "Conflict");
    let (_, now) = fx.get(Caller::Admin, &uri).await?;
    assert_eq!(now["spec"]["raw"]["spec"]["cores"], 3);
    Ok(())
}

#[tokio::test]
async fn a_path_shaped_cluster_is_rejected_with_kcps_message() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, status) = fx
        .get(Caller::Admin, &cache_uri("root", "root:org", ""))
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    assert_status(&status, 400, "BadRequest");
    assert_eq!(
        status["message"],
        "invalid cluster: \"root:org\" is not a logical cluster name"
    );
    Ok(())
}

#[tokio::test]
async fn deletecollection_with_a_label_selector_removes_only_matching_objects() -> Result<()> {
    let fx = Fixture::new().await?;
    let uri = cache_uri(
        "root",
        PROVIDER,
        "?labelSelector=cache.kcp.io%2Fobject-resource%3Dmemflavors",
    );
    let (code, deleted) = fx.json(Caller::Admin, Method::DELETE, &uri, None).await?;
    assert_eq!(code, StatusCode::OK, "{deleted}");
    let resources = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                i["metadata"]["labels"][LABEL_OBJECT_RESOURCE]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(resources(&deleted), ["memflavors"; 3]);

    let (code, left) = fx.get(Caller::Admin, &cache_uri("*", "*", "")).await?;
    assert_eq!(code, StatusCode::OK, "{left}");
    assert_eq!(resources(&left), ["cpuflavors"; 3]);

    // The virtual workspace follows once it has seen the deletions.
    fx.catch_up().await?;
    let memflavors = vw_of(
        "memflavors-v1",
        TEAM_A,
        "/apis/cloud.example.com/v1/memflavors",
    );
    let (code, list) = fx.get(ALICE, &memflavors).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([]));
    let (_, list) = fx.get(ALICE, &cpuflavors(TEAM_A, "")).await?;
    assert_eq!(names(&list).len(), 3);
    Ok(())
}

#[tokio::test]
async fn cache_objects_report_the_cluster_and_shard_of_their_key() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, list) = fx.get(Caller::Admin, &cache_uri("*", "*", "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    for item in list["items"].as_array().into_iter().flatten() {
        assert_eq!(item["metadata"]["annotations"][ANN_CLUSTER], PROVIDER);
        assert_eq!(item["metadata"]["annotations"][ANN_SHARD], "root");
    }

    // Whatever a writer claims in the body, readers see the key's cluster and shard.
    let roles = "apis/rbac.authorization.k8s.io/v1/clusterroles";
    let body = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "claims-elsewhere",
            "annotations": {ANN_CLUSTER: "somewhere-else", ANN_SHARD: "other-shard"}},
        "rules": []});
    let create = format!("/services/cache/shards/shard-2/clusters/{TEAM_B}/{roles}");
    let (code, created) = fx
        .json(Caller::Admin, Method::POST, &create, Some(&body))
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let (code, list) = fx
        .get(
            Caller::Admin,
            &format!("/services/cache/shards/*/clusters/*/{roles}?fieldSelector=metadata.name%3Dclaims-elsewhere"),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    let annotations = &list["items"][0]["metadata"]["annotations"];
    assert_eq!(annotations[ANN_CLUSTER], TEAM_B, "{list}");
    assert_eq!(annotations[ANN_SHARD], "shard-2", "{list}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cache writes reaching the virtual workspace
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_cached_object_failing_its_schema_is_not_served_while_the_others_are() -> Result<()> {
    let fx = Fixture::new().await?;
    let create = cache_uri("root", PROVIDER, "");
    let broken = cpu_flavor_cached_object("cpu-broken", "uid-broken", json!({"cores": "many"}));
    let good = cpu_flavor_cached_object("cpu-xlarge", "uid-xlarge", json!({"cores": 16}));
    for body in [&broken, &good] {
        let (code, created) = fx
            .json(Caller::Admin, Method::POST, &create, Some(body))
            .await?;
        assert_eq!(code, StatusCode::CREATED, "{created}");
    }
    fx.catch_up().await?;

    let (code, list) = fx.get(ALICE, &cpuflavors(TEAM_A, "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(
        names(&list),
        ["cpu-large", "cpu-medium", "cpu-small", "cpu-xlarge"]
    );
    let (code, status) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-broken")).await?;
    assert_eq!(code, StatusCode::NOT_FOUND, "{status}");
    let (code, xlarge) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-xlarge")).await?;
    assert_eq!(code, StatusCode::OK, "{xlarge}");
    assert_eq!(xlarge["metadata"]["uid"], "uid-xlarge");

    let response = fx
        .send(Caller::Admin, Method::GET, "/metrics", None, None)
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.lines()
            .any(|l| l == "replication_vw_invalid_objects_total 1"),
        "{text}"
    );
    // Refused objects are a gauge per resource, the bounded label.
    assert!(
        text.lines()
            .any(|l| l
                == "replication_vw_refused_objects{resource=\"cloud.example.com/cpuflavors\"} 1"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn only_system_masters_and_system_monitoring_may_scrape_metrics() -> Result<()> {
    let fx = Fixture::new().await?;
    // alice is authenticated but in neither group.
    let response = fx.send(ALICE, Method::GET, "/metrics", None, None).await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = fx
        .send(Caller::Anonymous, Method::GET, "/metrics", None, None)
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A member of system:monitoring (a client certificate with O=system:monitoring).
    let request = Request::builder()
        .uri("/metrics")
        .extension(PeerIdentity::from_user(UserInfo {
            name: "prometheus".into(),
            groups: vec!["system:monitoring".into()],
            ..UserInfo::default()
        }))
        .body(Body::empty())?;
    let response = fx.router.clone().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    // The families an operator reads, with bounded labels (`<group>/<resource>`).
    for family in [
        "replication_vw_index_objects{resource=\"cloud.example.com/cpuflavors\"} 3",
        "replication_vw_watch_frames_sent_total ",
        "replication_vw_watch_bookmarks_sent_total ",
        "replication_vw_watches_closed_behind_total ",
        "replication_vw_index_revision ",
        "replication_vw_store_revision ",
    ] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------------

/// The list resourceVersion team-a sees right now.
async fn list_revision(fx: &Fixture) -> Result<String> {
    let (code, list) = fx.get(Caller::Admin, &cpuflavors(TEAM_A, "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    Ok(list["metadata"]["resourceVersion"]
        .as_str()
        .context("no list resourceVersion")?
        .to_string())
}

/// Set `spec.cores` of a CPU flavor through the cache API, as its shard would.
async fn set_cores(fx: &Fixture, flavor: &str, cores: u32) -> Result<()> {
    let mut wrapper = fx.cached_object(flavor).await?;
    let name = wrapper["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wrapper["spec"]["raw"]["spec"]["cores"] = json!(cores);
    let uri = cache_uri("root", PROVIDER, &format!("/{name}"));
    let (code, updated) = fx
        .json(Caller::Admin, Method::PUT, &uri, Some(&wrapper))
        .await?;
    assert_eq!(code, StatusCode::OK, "{updated}");
    Ok(())
}

#[tokio::test]
async fn a_watch_from_the_list_revision_receives_cpu_small_modified() -> Result<()> {
    let fx = Fixture::new().await?;
    let rv = list_revision(&fx).await?;
    let response = fx
        .send(
            Caller::Admin,
            Method::GET,
            &cpuflavors(TEAM_A, &format!("?watch=true&resourceVersion={rv}")),
            None,
            None,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = WatchReader::new(response);

    set_cores(&fx, "cpu-small", 3).await?;
    fx.catch_up().await?;

    let event = watch.event().await?;
    assert_eq!(event["type"], "MODIFIED", "{event}");
    let object = &event["object"];
    assert_eq!(object["metadata"]["name"], "cpu-small");
    assert_eq!(object["spec"]["cores"], 3);
    assert_eq!(
        object["metadata"]["annotations"],
        json!({ANN_CLUSTER: TEAM_A})
    );
    let new_rv: u64 = object["metadata"]["resourceVersion"]
        .as_str()
        .context("no event resourceVersion")?
        .parse()?;
    assert!(new_rv > rv.parse::<u64>()?, "{new_rv} after {rv}");
    Ok(())
}

#[tokio::test]
async fn a_head_of_a_served_flavor_answers_its_get_headers_without_a_body() -> Result<()> {
    let fx = Fixture::new().await?;
    let uri = cpuflavors(TEAM_A, "/cpu-small");
    let get = fx.send(ALICE, Method::GET, &uri, None, None).await?;
    assert_eq!(get.status(), StatusCode::OK);
    let get_type = get.headers().get(header::CONTENT_TYPE).cloned();
    let get_body = get.into_body().collect().await?.to_bytes();
    assert!(!get_body.is_empty());
    let head = fx.send(ALICE, Method::HEAD, &uri, None, None).await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers().get(header::CONTENT_TYPE).cloned(), get_type);
    let head_body = head.into_body().collect().await?.to_bytes();
    assert!(head_body.is_empty(), "{head_body:?}");
    Ok(())
}

/// The `replication_vw_open_watches` gauge of the virtual workspace, from `/metrics`.
async fn open_vw_watches(fx: &Fixture) -> Result<String> {
    let response = fx
        .send(Caller::Admin, Method::GET, "/metrics", None, None)
        .await?;
    let text = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    let prefix = "replication_vw_open_watches{role=\"virtual-workspace\"} ";
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or("absent")
        .to_string())
}

#[tokio::test]
async fn an_open_watch_is_counted_until_its_client_drops_the_stream() -> Result<()> {
    let fx = Fixture::new().await?;
    let rv = list_revision(&fx).await?;
    let response = fx
        .send(
            ALICE,
            Method::GET,
            &cpuflavors(TEAM_A, &format!("?watch=true&resourceVersion={rv}")),
            None,
            None,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = WatchReader::new(response);
    assert_eq!(open_vw_watches(&fx).await?, "1");
    set_cores(&fx, "cpu-small", 5).await?;
    fx.catch_up().await?;
    assert_eq!(watch.event().await?["type"], "MODIFIED");
    assert_eq!(open_vw_watches(&fx).await?, "1");
    drop(watch);
    assert_eq!(open_vw_watches(&fx).await?, "0");
    Ok(())
}

#[tokio::test]
async fn a_watch_list_sends_three_added_then_the_initial_events_end_bookmark() -> Result<()> {
    let fx = Fixture::new().await?;
    let query = "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let response = fx
        .send(ALICE, Method::GET, &cpuflavors(TEAM_A, query), None, None)
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = WatchReader::new(response);
    let mut added = Vec::new();
    for _ in 0..3 {
        let event = watch.event().await?;
        assert_eq!(event["type"], "ADDED", "{event}");
        added.push(
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    added.sort();
    assert_eq!(added, ["cpu-large", "cpu-medium", "cpu-small"]);
    let bookmark = watch.event().await?;
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    let object = &bookmark["object"];
    assert_eq!(object["kind"], "CPUFlavor");
    assert_eq!(object["apiVersion"], "cloud.example.com/v1");
    assert_eq!(
        object["metadata"]["annotations"],
        json!({"k8s.io/initial-events-end": "true"})
    );
    assert_eq!(
        object["metadata"]["resourceVersion"],
        list_revision(&fx).await?.as_str()
    );
    Ok(())
}

#[tokio::test]
async fn send_initial_events_without_not_older_than_is_invalid() -> Result<()> {
    let fx = Fixture::new().await?;
    let uri = cpuflavors(TEAM_A, "?watch=true&sendInitialEvents=true");
    let (code, status) = fx.get(ALICE, &uri).await?;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_status(&status, 422, "Invalid");
    Ok(())
}

#[tokio::test]
async fn a_watch_from_before_the_retained_history_gets_an_expired_error_event() -> Result<()> {
    let fx = Fixture::new().await?;
    // The index's history starts at the revision it was synced at; revision 1 predates it.
    let response = fx
        .send(
            Caller::Admin,
            Method::GET,
            &cpuflavors(TEAM_A, "?watch=true&resourceVersion=1"),
            None,
            None,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = WatchReader::new(response);
    let event = watch.event().await?;
    assert_eq!(event["type"], "ERROR", "{event}");
    assert_status(&event["object"], 410, "Expired");
    assert!(
        watch.next().await?.is_none(),
        "the watch must end after 410"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_cached_object_sends_deleted_to_watchers_and_hides_the_flavor() -> Result<()> {
    let fx = Fixture::new().await?;
    let rv = list_revision(&fx).await?;
    let watch_uri = cpuflavors(TEAM_A, &format!("?watch=true&resourceVersion={rv}"));
    let response = fx
        .send(Caller::Admin, Method::GET, &watch_uri, None, None)
        .await?;
    let mut watch = WatchReader::new(response);
    let wrapper = fx.cached_object("cpu-medium").await?;
    let name = wrapper["metadata"]["name"].as_str().unwrap_or_default();
    let uri = cache_uri("root", PROVIDER, &format!("/{name}"));
    let (code, deleted) = fx.json(Caller::Admin, Method::DELETE, &uri, None).await?;
    assert_eq!(code, StatusCode::OK, "{deleted}");
    fx.catch_up().await?;

    let event = watch.event().await?;
    assert_eq!(event["type"], "DELETED", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "cpu-medium");
    // The event carries the deletion's revision, so a watch resumed from it does not replay it.
    let deleted_rv: u64 = event["object"]["metadata"]["resourceVersion"]
        .as_str()
        .context("no event resourceVersion")?
        .parse()?;
    assert!(deleted_rv > rv.parse::<u64>()?, "{deleted_rv} after {rv}");
    let resumed = cpuflavors(TEAM_A, &format!("?watch=true&resourceVersion={deleted_rv}"));
    let response = fx
        .send(Caller::Admin, Method::GET, &resumed, None, None)
        .await?;
    let mut resumed = WatchReader::new(response);
    set_cores(&fx, "cpu-small", 3).await?;
    fx.catch_up().await?;
    let next = resumed.event().await?;
    assert_eq!(next["type"], "MODIFIED", "{next}");
    assert_eq!(next["object"]["metadata"]["name"], "cpu-small");
    let (code, _) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-medium")).await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn a_flavor_leaving_the_label_selector_of_a_watch_arrives_as_deleted() -> Result<()> {
    let fx = Fixture::new().await?;
    let rv = list_revision(&fx).await?;
    let query =
        format!("?watch=true&resourceVersion={rv}&labelSelector=cloud.example.com%2Ftier%3Dsmall");
    let response = fx
        .send(ALICE, Method::GET, &cpuflavors(TEAM_A, &query), None, None)
        .await?;
    let mut watch = WatchReader::new(response);
    let mut wrapper = fx.cached_object("cpu-small").await?;
    let name = wrapper["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wrapper["spec"]["raw"]["metadata"]["labels"]["cloud.example.com/tier"] = json!("tiny");
    let uri = cache_uri("root", PROVIDER, &format!("/{name}"));
    let (code, updated) = fx
        .json(Caller::Admin, Method::PUT, &uri, Some(&wrapper))
        .await?;
    assert_eq!(code, StatusCode::OK, "{updated}");
    fx.catch_up().await?;

    let event = watch.event().await?;
    assert_eq!(event["type"], "DELETED", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "cpu-small");
    Ok(())
}

#[tokio::test]
async fn a_cache_path_without_a_shard_is_a_bad_request() -> Result<()> {
    let fx = Fixture::new().await?;
    for (uri, message) in [
        ("/services/cache/version", "a shard name is required"),
        (
            "/services/cache/shards/abc",
            "unable to parse shard: no `/` found in path abc",
        ),
    ] {
        let (code, status) = fx.get(Caller::Admin, uri).await?;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {status}");
        assert_status(&status, 400, "BadRequest");
        assert_eq!(status["message"], message, "{uri}");
    }
    Ok(())
}

#[tokio::test]

async fn a_schema_rollout_that_invalidates_two_flavors_sends_two_deleted_events() -> Result<()> {
    let fx = Fixture::new().await?;
    let rv = list_revision(&fx).await?;
    let watch_uri = cpuflavors(TEAM_A, &format!("?watch=true&resourceVersion={rv}"));
    let response = fx
        .send(Caller::Admin, Method::GET, &watch_uri, None, None)
        .await?;
    let mut watch = WatchReader::new(response);

    // The provider rolls out a stricter schema (2 < cores <= 4) and points the export at it.
    let base = format!("/services/cache/shards/root/clusters/{PROVIDER}/apis/apis.kcp.io");
    let schemas = format!("{base}/v1alpha1/apiresourceschemas");
    let (code, mut schema) = fx
        .get(
            Caller::Admin,
            &format!("{schemas}/v250801.cpuflavors.cloud.example.com"),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{schema}");
    schema["metadata"]["name"] = json!("v250901.cpuflavors.cloud.example.com");
    for field in ["resourceVersion", "uid"] {
        if let Some(md) = schema["metadata"].as_object_mut() {
            md.remove(field);
        }
    }
    schema["spec"]["versions"][0]["schema"]["properties"]["spec"]["properties"]["cores"] =
        json!({"type": "integer", "minimum": 3, "maximum": 4});
    let (code, created) = fx
        .json(Caller::Admin, Method::POST, &schemas, Some(&schema))
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let export_uri = format!("{base}/v1alpha2/apiexports/compute");
    let (code, mut export) = fx.get(Caller::Admin, &export_uri).await?;
    assert_eq!(code, StatusCode::OK, "{export}");
    export["spec"]["resources"][0]["schema"] = json!("v250901.cpuflavors.cloud.example.com");
    let (code, updated) = fx
        .json(Caller::Admin, Method::PUT, &export_uri, Some(&export))
        .await?;
    assert_eq!(code, StatusCode::OK, "{updated}");
    fx.catch_up().await?;

    let (_, list) = fx.get(ALICE, &cpuflavors(TEAM_A, "")).await?;
    assert_eq!(names(&list), ["cpu-medium"]);
    let mut deleted = Vec::new();
    for _ in 0..2 {
        let event = watch.event().await?;
        assert_eq!(event["type"], "DELETED", "{event}");
        deleted.push(
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    deleted.sort();
    assert_eq!(deleted, ["cpu-large", "cpu-small"]);
    Ok(())
}

#[tokio::test]

async fn a_live_watch_sees_every_change_applied_at_one_revision() -> Result<()> {
    let fx = Fixture::new().await?;
    let rv = list_revision(&fx).await?;
    let response = fx
        .send(
            Caller::Admin,
            Method::GET,
            &cpuflavors(TEAM_A, &format!("?watch=true&resourceVersion={rv}")),
            None,
            None,
        )
        .await?;
    let mut watch = WatchReader::new(response);
    set_cores(&fx, "cpu-small", 3).await?;
    set_cores(&fx, "cpu-large", 9).await?;
    // A relist (what the index task does after its store watch expires) applies both changes
    // at the listing's revision.
    fx.index.reset(&fx.store.list(&Scope::all()).await?);
    let mut modified = Vec::new();
    for _ in 0..2 {
        let event = watch.event().await?;
        assert_eq!(event["type"], "MODIFIED", "{event}");
        modified.push(
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    modified.sort();
    assert_eq!(modified, ["cpu-large", "cpu-small"]);
    Ok(())
}

#[tokio::test]
async fn openapi_v3_indexes_the_group_version_and_describes_the_kind_for_kubectl_explain()
-> Result<()> {
    let fx = Fixture::new().await?;
    let base = format!("/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{TEAM_A}");
    let (code, index) = fx.get(ALICE, &format!("{base}/openapi/v3")).await?;
    assert_eq!(code, StatusCode::OK, "{index}");
    let url = index["paths"]["apis/cloud.example.com/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with("/openapi/v3/apis/cloud.example.com/v1?hash="),
        "{url}"
    );
    let (code, doc) = fx.get(ALICE, &format!("{base}{url}")).await?;
    assert_eq!(code, StatusCode::OK, "{doc}");
    let get = &doc["paths"]["/apis/cloud.example.com/v1/cpuflavors/{name}"]["get"];
    assert_eq!(get["x-kubernetes-group-version-kind"]["kind"], "CPUFlavor");
    let kind = &doc["components"]["schemas"]["com.example.cloud.v1.CPUFlavor"];
    assert_eq!(
        kind["x-kubernetes-group-version-kind"][0]["kind"],
        "CPUFlavor"
    );
    assert_eq!(
        kind["properties"]["spec"]["properties"]["cores"]["type"],
        "integer"
    );
    Ok(())
}

#[tokio::test]
async fn pages_of_a_limited_list_continue_from_the_first_pages_revision() -> Result<()> {
    let mut fx = Fixture::new().await?;
    let (code, first) = fx.get(ALICE, &cpuflavors(TEAM_A, "?limit=2")).await?;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(names(&first), ["cpu-large", "cpu-medium"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 1);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let rv = first["metadata"]["resourceVersion"].clone();
    // A change after the first page is not seen by the continuation.
    fx.update_cpu_small_cores(16).await?;
    let (code, second) = fx
        .get(
            ALICE,
            &cpuflavors(TEAM_A, &format!("?limit=2&continue={token}")),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{second}");
    assert_eq!(names(&second), ["cpu-small"]);
    assert_eq!(second["items"][0]["spec"]["cores"], 2);
    assert_eq!(second["metadata"]["resourceVersion"], rv);
    assert!(second["metadata"].get("continue").is_none());
    let (_, now) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-small")).await?;
    assert_eq!(now["spec"]["cores"], 16);
    Ok(())
}

#[tokio::test]
async fn a_malformed_continue_token_is_a_bad_request_and_an_old_one_is_expired() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, status) = fx
        .get(ALICE, &cpuflavors(TEAM_A, "?limit=2&continue=not-a-token"))
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    use base64::Engine;
    let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        br#"{"v":"meta.k8s.io/v1","rv":1,"start":"\u0000cpu-large\u00003h9tqa6m2cxe1kbn"}"#,
    );
    let (code, status) = fx
        .get(
            ALICE,
            &cpuflavors(TEAM_A, &format!("?limit=2&continue={old}")),
        )
        .await?;
    assert_eq!(code, StatusCode::GONE, "{status}");
    assert_eq!(status["reason"], "Expired");
    Ok(())
}

#[tokio::test]
async fn objects_are_pruned_and_defaulted_at_ingest_as_their_schema_says() -> Result<()> {
    let fx = Fixture::new().await?;
    let src = json!({"apiVersion": "cloud.example.com/v1", "kind": "CPUFlavor",
        "metadata": {"name": "cpu-plain", "uid": "u-plain", "resourceVersion": "7000",
            "labels": {"cloud.example.com/visibility": "Public"}, "annotations": {"kcp.io/cluster": PROVIDER}},
        "spec": {"cores": 1, "turbo": true}});
    let wrapped =
        replication_vw::controllers::wrap(&src, "cloud.example.com", "v1", "cpuflavors", "root");
    let (code, body) = fx
        .json(
            Caller::Admin,
            Method::POST,
            &cache_uri("root", PROVIDER, ""),
            Some(&wrapped),
        )
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    fx.catch_up().await?;
    let (code, flavor) = fx.get(ALICE, &cpuflavors(TEAM_A, "/cpu-plain")).await?;
    assert_eq!(code, StatusCode::OK, "{flavor}");
    assert_eq!(flavor["spec"], json!({"cores": 1, "architecture": "amd64"}));
    Ok(())
}

#[tokio::test]
async fn yaml_is_served_on_request_but_not_for_watches() -> Result<()> {
    let fx = Fixture::new().await?;
    let response = fx
        .send(
            ALICE,
            Method::GET,
            &cpuflavors(TEAM_A, "/cpu-small"),
            Some("application/yaml"),
            None,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/yaml");
    let bytes = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8(bytes.to_vec())?;
    assert!(text.contains("name: cpu-small"), "{text}");
    let response = fx
        .send(
            ALICE,
            Method::GET,
            &cpuflavors(TEAM_A, "?watch=true"),
            Some("application/yaml"),
            None,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    Ok(())
}

#[tokio::test]
async fn a_schemas_selectable_field_works_in_field_selectors() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, list) = fx
        .get(
            ALICE,
            &cpuflavors(TEAM_A, "?fieldSelector=spec.architecture%3Darm64"),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["cpu-large"]);
    let (code, list) = fx
        .get(
            ALICE,
            &cpuflavors(TEAM_A, "?fieldSelector=spec.architecture!%3Darm64"),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["cpu-medium", "cpu-small"]);
    Ok(())
}

#[tokio::test]
async fn the_cache_api_pages_lists_from_one_revision_and_serves_discovery() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, first) = fx
        .get(Caller::Admin, &cache_uri("*", PROVIDER, "?limit=2"))
        .await?;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    let token = first["metadata"]["continue"]
        .as_str()
        .context("a continue token")?
        .to_string();
    let mut seen: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let (code, page) = fx
            .get(
                Caller::Admin,
                &cache_uri("*", PROVIDER, &format!("?limit=2&continue={t}")),
            )
            .await?;
        assert_eq!(code, StatusCode::OK, "{page}");
        assert_eq!(
            page["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        token = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    let (_, all) = fx.get(Caller::Admin, &cache_uri("*", PROVIDER, "")).await?;
    assert_eq!(seen.len(), all["items"].as_array().unwrap().len());
    let (code, apis) = fx
        .get(
            Caller::Admin,
            &format!("/services/cache/shards/*/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1"),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{apis}");
    let names: Vec<&str> = apis["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"cachedobjects"), "{names:?}");
    Ok(())
}

#[tokio::test]
async fn the_cache_api_serves_openapi_for_its_kcp_types() -> Result<()> {
    let fx = Fixture::new().await?;
    let base = format!("/services/cache/shards/*/clusters/{PROVIDER}");
    let (code, index) = fx.get(Caller::Admin, &format!("{base}/openapi/v3")).await?;
    assert_eq!(code, StatusCode::OK, "{index}");
    let url = index["paths"]["apis/cache.kcp.io/v1alpha1"]["serverRelativeURL"]
        .as_str()
        .context("cache.kcp.io is indexed")?
        .to_string();
    let (code, doc) = fx.get(Caller::Admin, &format!("{base}{url}")).await?;
    assert_eq!(code, StatusCode::OK, "{doc}");
    let kind = &doc["components"]["schemas"]["io.kcp.cache.v1alpha1.CachedObject"];
    assert_eq!(
        kind["x-kubernetes-group-version-kind"][0]["kind"],
        "CachedObject"
    );
    Ok(())
}

#[tokio::test]
async fn the_instances_example_serves_the_seven_labelled_instances_to_its_consumer() -> Result<()> {
    let store = Arc::new(MemoryStore::default());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/instances");
    seed::load(store.clone(), seed::read_dirs(&[dir])?, EXTERNAL_URL).await?;
    let index = Arc::new(Index::new());
    index.reset(&store.list(&Scope::all()).await?);
    let router = app(AppState::new(store, index, Authenticator::new(None)));
    let uri = "/services/replication/2q6w9e3r7t1y5u8i/instances/clusters/8o4p2a6s9d3f7g1h/apis/machines.svm.io/v1alpha1/instances";
    let request = Request::builder()
        .uri(uri)
        .extension(PeerIdentity::from_user(UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
            ..UserInfo::default()
        }))
        .body(Body::empty())?;
    let (status, list) = read_json(router.oneshot(request).await?).await?;
    assert_eq!(status, StatusCode::OK, "{list}");
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "analytics-1",
            "analytics-2",
            "analytics-3",
            "analytics-4",
            "analytics-5",
            "database-1",
            "web-server-1"
        ]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors that tell nobody which clusters exist, and kube-apiserver's request limits

/// A logical cluster name no workspace has.
const NOWHERE: &str = "7n0w4e9r3e2x5y8z";

#[tokio::test]
async fn a_consumer_cluster_that_does_not_exist_is_refused_exactly_like_one_without_a_binding()
-> Result<()> {
    let fx = Fixture::new().await?;
    for rest in ["", "/cpu-small", "?watch=true"] {
        let unbound = fx.get(ALICE, &cpuflavors(TEAM_B, rest)).await?;
        let missing = fx.get(ALICE, &cpuflavors(NOWHERE, rest)).await?;
        assert_eq!(missing.0, StatusCode::FORBIDDEN, "{rest}: {}", missing.1);
        assert_status(&missing.1, 403, "Forbidden");
        assert_eq!(missing, unbound, "{rest}");
    }
    Ok(())
}

#[tokio::test]
async fn an_admin_sees_an_empty_list_and_not_found_for_a_consumer_that_does_not_exist() -> Result<()>
{
    let fx = Fixture::new().await?;
    let (code, list) = fx.get(Caller::Admin, &cpuflavors(NOWHERE, "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([]));
    assert_eq!(
        list,
        fx.get(Caller::Admin, &cpuflavors(TEAM_B, "")).await?.1
    );
    let (code, status) = fx
        .get(Caller::Admin, &cpuflavors(NOWHERE, "/cpu-small"))
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND, "{status}");
    assert_status(&status, 404, "NotFound");
    assert_eq!(
        status["message"],
        "cpuflavors.cloud.example.com \"cpu-small\" not found"
    );
    Ok(())
}

#[tokio::test]
async fn a_cached_resource_that_does_not_exist_is_not_found_for_every_caller() -> Result<()> {
    let fx = Fixture::new().await?;
    for caller in [Caller::Admin, ALICE, BOB] {
        for target in [TEAM_A, "*"] {
            for path in [
                "/apis/cloud.example.com/v1/cpuflavors",
                "/apis/cloud.example.com/v1/cpuflavors?watch=true",
                "/apis",
                "/apis/cloud.example.com/v1",
                "/openapi/v3",
            ] {
                let uri = vw_of("no-such-resource", target, path);
                let (code, status) = fx.get(caller, &uri).await?;
                assert_eq!(code, StatusCode::NOT_FOUND, "{caller:?} {uri}: {status}");
                assert_status(&status, 404, "NotFound");
                assert_eq!(
                    status["message"],
                    "cachedresources.cache.kcp.io \"no-such-resource\" not found"
                );
            }
        }
        let uri = vw_of(
            "no-such-resource",
            TEAM_A,
            "/apis/cloud.example.com/v1/cpuflavors/cpu-small",
        );
        let (code, status) = fx.get(caller, &uri).await?;
        assert_eq!(code, StatusCode::NOT_FOUND, "{caller:?} {uri}: {status}");
    }
    let uri = vw_of("no-such-resource", TEAM_A, "/apis");
    let (code, _) = fx.get(Caller::Anonymous, &uri).await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn cluster_segments_that_are_not_logical_cluster_names_are_bad_requests() -> Result<()> {
    let fx = Fixture::new().await?;
    let cases = [
        ("..", TEAM_A, ".."),
        ("%2e%2e", TEAM_A, ".."),
        ("root:cloudco", TEAM_A, "root:cloudco"),
        ("*", TEAM_A, "*"),
        (PROVIDER, "..", ".."),
        (PROVIDER, "%2E%2E", ".."),
        (PROVIDER, "root:team-a", "root:team-a"),
        (PROVIDER, "Team-A", "Team-A"),
    ];
    for (cr_cluster, target, shown) in cases {
        let uri = format!(
            "/services/replication/{cr_cluster}/cpuflavors-v1/clusters/{target}/apis/cloud.example.com/v1/cpuflavors"
        );
        for caller in [Caller::Admin, ALICE] {
            let (code, status) = fx.get(caller, &uri).await?;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {status}");
            assert_status(&status, 400, "BadRequest");
            let message = status["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(&format!("invalid cluster: \"{shown}\"")),
                "{uri}: {message}"
            );
        }
        let (code, _) = fx.get(Caller::Anonymous, &uri).await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (_, status) = fx.get(ALICE, &cpuflavors("root:team-a", "")).await?;
    assert_eq!(
        status["message"],
        "invalid cluster: \"root:team-a\" is not a logical cluster name"
    );
    Ok(())
}

/// Four MiB of text, more than kube-apiserver's 3 MiB write limit.
fn four_mib() -> String {
    "a".repeat(4 << 20)
}

/// Assert kube-apiserver's 413 for a write body over 3 MiB.
fn assert_too_large(code: StatusCode, status: &Value) {
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{status}");
    assert_status(status, 413, "RequestEntityTooLarge");
    assert_eq!(
        status["message"],
        "Request entity too large: limit is 3145728"
    );
}

/// Create workspace `cluster` (its LogicalCluster, which brings the `default` namespace).
async fn create_workspace(fx: &Fixture, cluster: &str) -> Result<()> {
    let uri = format!("/clusters/{cluster}/apis/core.kcp.io/v1alpha1/logicalclusters");
    let lc = json!({"apiVersion": "core.kcp.io/v1alpha1", "kind": "LogicalCluster",
        "metadata": {"name": "cluster"}});
    let (code, body) = fx
        .json(Caller::Admin, Method::POST, &uri, Some(&lc))
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    Ok(())
}

/// The ConfigMaps collection of namespace `default` in workspace `cluster`.
fn configmaps(cluster: &str, rest: &str) -> String {
    format!("/clusters/{cluster}/api/v1/namespaces/default/configmaps{rest}")
}

/// An admin request whose body arrives in 64 KiB chunks of unknown total length.
fn streamed_admin_request(method: Method, uri: &str, body: Vec<u8>) -> Result<Request<Body>> {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .chunks(64 << 10)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Ok(Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .extension(PeerIdentity::from_user(UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
            ..UserInfo::default()
        }))
        .body(Body::from_stream(futures_util::stream::iter(chunks)))?)
}

#[tokio::test]
async fn a_write_body_over_3_mib_is_a_413_status_on_every_surface_and_nothing_is_stored()
-> Result<()> {
    let fx = Fixture::new().await?;
    // The cache server API: a ClusterRole and a replaced CachedObject.
    let roles = format!(
        "/services/cache/shards/root/clusters/{PROVIDER}/apis/rbac.authorization.k8s.io/v1/clusterroles"
    );
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "huge"}, "rules": [{"apiGroups": [four_mib()], "resources": ["*"], "verbs": ["get"]}]});
    let (code, status) = fx
        .json(Caller::Admin, Method::POST, &roles, Some(&role))
        .await?;
    assert_too_large(code, &status);
    let (code, _) = fx.get(Caller::Admin, &format!("{roles}/huge")).await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let mut wrapper = fx.cached_object("cpu-small").await?;
    let name = wrapper["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wrapper["spec"]["raw"]["spec"]["description"] = json!(four_mib());
    let uri = cache_uri("root", PROVIDER, &format!("/{name}"));
    let (code, status) = fx
        .json(Caller::Admin, Method::PUT, &uri, Some(&wrapper))
        .await?;
    assert_too_large(code, &status);
    let (_, now) = fx.get(Caller::Admin, &uri).await?;
    assert_ne!(now["spec"]["raw"]["spec"]["description"], json!(four_mib()));
    // The workspaces API, with a declared length and streamed without one.
    create_workspace(&fx, "limits").await?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"},
        "data": {"blob": four_mib()}});
    let (code, status) = fx
        .json(
            Caller::Admin,
            Method::POST,
            &configmaps("limits", ""),
            Some(&cm),
        )
        .await?;
    assert_too_large(code, &status);
    let request = streamed_admin_request(
        Method::POST,
        &configmaps("limits", ""),
        serde_json::to_vec(&cm)?,
    )?;
    let (code, status) = read_json(fx.router.clone().oneshot(request).await?).await?;
    assert_too_large(code, &status);
    let (code, _) = fx
        .get(Caller::Admin, &configmaps("limits", "/huge"))
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // The virtual workspace refuses the write before reading it: its answer stays.
    let (code, status) = fx
        .json(ALICE, Method::POST, &cpuflavors(TEAM_A, ""), Some(&cm))
        .await?;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
    Ok(())
}

#[tokio::test]
async fn a_write_body_just_under_3_mib_is_read_and_judged_on_its_content() -> Result<()> {
    let fx = Fixture::new().await?;
    create_workspace(&fx, "limits").await?;
    // 2.9 MiB of data is within the body limit but over ConfigMap's 1 MiB: 422, not 413.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"blob": "a".repeat(2900 << 10)}});
    let (code, status) = fx
        .json(
            Caller::Admin,
            Method::POST,
            &configmaps("limits", ""),
            Some(&cm),
        )
        .await?;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    Ok(())
}

#[tokio::test]
async fn annotations_over_256_kib_are_invalid_on_the_workspaces_and_cache_apis() -> Result<()> {
    let fx = Fixture::new().await?;
    create_workspace(&fx, "limits").await?;
    let annotations = json!({"example.com/big": "a".repeat(300 << 10)});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "annotated", "annotations": annotations}});
    let (code, status) = fx
        .json(
            Caller::Admin,
            Method::POST,
            &configmaps("limits", ""),
            Some(&cm),
        )
        .await?;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_status(&status, 422, "Invalid");
    assert_eq!(
        status["message"],
        "ConfigMap \"annotated\" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueTooLong"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "metadata.annotations"
    );
    let (code, _) = fx
        .get(Caller::Admin, &configmaps("limits", "/annotated"))
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // An update that adds them is refused the same way and changes nothing.
    let small = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "annotated"}});
    let (code, created) = fx
        .json(
            Caller::Admin,
            Method::POST,
            &configmaps("limits", ""),
            Some(&small),
        )
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let (code, status) = fx
        .json(
            Caller::Admin,
            Method::PUT,
            &configmaps("limits", "/annotated"),
            Some(&cm),
        )
        .await?;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    let (_, now) = fx
        .get(Caller::Admin, &configmaps("limits", "/annotated"))
        .await?;
    assert_eq!(
        now["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    // The cache server API.
    let roles = format!(
        "/services/cache/shards/root/clusters/{PROVIDER}/apis/rbac.authorization.k8s.io/v1/clusterroles"
    );
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "annotated", "annotations": annotations}, "rules": []});
    let (code, status) = fx
        .json(Caller::Admin, Method::POST, &roles, Some(&role))
        .await?;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(
        status["message"],
        "ClusterRole.rbac.authorization.k8s.io \"annotated\" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"
    );
    let (code, _) = fx.get(Caller::Admin, &format!("{roles}/annotated")).await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn configmap_and_secret_data_over_1_mib_is_invalid_and_not_stored() -> Result<()> {
    let fx = Fixture::new().await?;
    create_workspace(&fx, "limits").await?;
    use base64::Engine;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    let over = 1100 << 10;
    let objects = [
        (
            "configmaps",
            "ConfigMap",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "data"},
                "data": {"blob": "a".repeat(over)}}),
        ),
        (
            "configmaps",
            "ConfigMap",
            // Each half is within the limit; together they are not.
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "split"},
                "data": {"text": "a".repeat(over / 2)}, "binaryData": {"bin": b64(over / 2)}}),
        ),
        (
            "secrets",
            "Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "data"},
                "data": {"blob": b64(over)}}),
        ),
        (
            "secrets",
            "Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "strings"},
                "stringData": {"blob": "a".repeat(over)}}),
        ),
    ];
    for (resource, kind, object) in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let collection = format!("/clusters/limits/api/v1/namespaces/default/{resource}");
        let (code, status) = fx
            .json(Caller::Admin, Method::POST, &collection, Some(&object))
            .await?;
        assert_eq!(
            code,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{kind} {name}: {status}"
        );
        assert_status(&status, 422, "Invalid");
        assert_eq!(
            status["message"],
            format!(
                "{kind} \"{name}\" is invalid: data: Too long: must have at most 1048576 bytes"
            )
        );
        let (code, _) = fx
            .get(Caller::Admin, &format!("{collection}/{name}"))
            .await?;
        assert_eq!(code, StatusCode::NOT_FOUND, "{kind} {name}");
    }
    // Exactly 1 MiB is fine.
    let fits = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fits"},
        "data": {"blob": b64(1 << 20)}});
    let (code, body) = fx
        .json(
            Caller::Admin,
            Method::POST,
            "/clusters/limits/api/v1/namespaces/default/secrets",
            Some(&fits),
        )
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Identity-based storage of kcp v0.32 and main (kcp-head.md §2)
// ---------------------------------------------------------------------------------------------

/// A publisher as a v0.32/main shard's generic replication writes it into the cache: a
/// ClusterCachedResource (`main`) or a v0.32 CachedResource with identity and both annotations.
fn publisher(kind: &str, name: &str, identity: &str, version: &str) -> Value {
    json!({"apiVersion": "cache.kcp.io/v1alpha1", "kind": kind,
        "metadata": {"name": name, "annotations": {
            ANN_SHARD: "root",
            "cache.kcp.io/resource-kind": "Sheriff",
            "cache.kcp.io/resource-scope": "Cluster"}},
        "spec": {"group": "wildwest.dev", "version": version, "resource": "sheriffs"},
        "status": {"identityHash": identity}})
}

#[tokio::test]
async fn objects_stored_as_themselves_under_an_identity_list_by_identity_across_clusters()
-> Result<()> {
    let fx = Fixture::new().await?;
    let (a, b) = ("aaaa1111", "bbbb2222");
    let cache = "/services/cache/shards";
    // Two provider workspaces share identity A (one publishes through a main
    // ClusterCachedResource, one through a v0.32 CachedResource); a third has identity B.
    for (cluster, resource, kind, identity) in [
        (
            "provider-one",
            "clustercachedresources",
            "ClusterCachedResource",
            a,
        ),
        ("provider-two", "cachedresources", "CachedResource", a),
        (
            "provider-three",
            "clustercachedresources",
            "ClusterCachedResource",
            b,
        ),
    ] {
        let uri = format!("{cache}/root/clusters/{cluster}/apis/cache.kcp.io/v1alpha1/{resource}");
        let body = publisher(kind, "sheriffs", identity, "v1alpha1");
        let (code, created) = fx
            .json(Caller::Admin, Method::POST, &uri, Some(&body))
            .await?;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        for i in 0..7 {
            let uri = format!(
                "{cache}/root/clusters/{cluster}/apis/wildwest.dev/v1alpha1/sheriffs:{identity}"
            );
            let object = json!({"apiVersion": "wildwest.dev/v1alpha1", "kind": "Sheriff",
                "metadata": {"name": format!("sheriff-{i}"), "labels": {"n": i.to_string()}},
                "spec": {"intent": format!("keep {cluster} safe")}});
            let (code, created) = fx
                .json(Caller::Admin, Method::POST, &uri, Some(&object))
                .await?;
            assert_eq!(code, StatusCode::CREATED, "{created}");
            assert!(
                created["metadata"]["uid"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty())
            );
        }
    }

    let list = |identity: &str| {
        format!("{cache}/*/clusters/*/apis/wildwest.dev/v1alpha1/sheriffs:{identity}")
    };
    let (code, by_a) = fx.get(Caller::Admin, &list(a)).await?;
    assert_eq!(code, StatusCode::OK, "{by_a}");
    assert_eq!(by_a["kind"], "SheriffList");
    assert_eq!(by_a["items"].as_array().map(Vec::len), Some(14));
    let (code, by_b) = fx.get(Caller::Admin, &list(b)).await?;
    assert_eq!(code, StatusCode::OK, "{by_b}");
    assert_eq!(by_b["items"].as_array().map(Vec::len), Some(7));
    let first = &by_b["items"][0];
    assert_eq!(
        first["metadata"]["annotations"][ANN_CLUSTER],
        "provider-three"
    );
    assert_eq!(first["metadata"]["annotations"][ANN_SHARD], "root");

    // In a concrete provider cluster the plural alone names that cluster's identity.
    let (code, one) = fx
        .get(
            Caller::Admin,
            &format!(
                "{cache}/root/clusters/provider-two/apis/wildwest.dev/v1alpha1/sheriffs/sheriff-3"
            ),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{one}");
    assert_eq!(one["spec"]["intent"], "keep provider-two safe");

    // An unknown identity, a version nobody publishes, a plural alone across clusters: 404;
    // an empty identity: 400.
    for uri in [
        list("cccc3333"),
        format!("{cache}/*/clusters/*/apis/wildwest.dev/v1/sheriffs:{a}"),
        format!("{cache}/*/clusters/*/apis/wildwest.dev/v1alpha1/sheriffs"),
        format!("{cache}/root/clusters/consumer/apis/wildwest.dev/v1alpha1/sheriffs"),
    ] {
        let (code, status) = fx.get(Caller::Admin, &uri).await?;
        assert_eq!(code, StatusCode::NOT_FOUND, "{uri}: {status}");
    }
    let (code, status) = fx.get(Caller::Admin, &list("")).await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    assert_status(&status, 400, "BadRequest");

    // The writer's PUT carries the cached copy's resourceVersion and uid; the counter is a GET
    // of the collection, the purge a DELETE of it (kcp-head.md §2.3).
    let collection =
        format!("{cache}/root/clusters/provider-one/apis/wildwest.dev/v1alpha1/sheriffs:{a}");
    let (_, mut copy) = fx
        .get(Caller::Admin, &format!("{collection}/sheriff-0"))
        .await?;
    let uid = copy["metadata"]["uid"].clone();
    copy["spec"]["intent"] = json!("retire");
    let (code, updated) = fx
        .json(
            Caller::Admin,
            Method::PUT,
            &format!("{collection}/sheriff-0"),
            Some(&copy),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(updated["spec"]["intent"], "retire");
    assert_eq!(updated["metadata"]["uid"], uid, "the cache keeps its uid");
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        copy["metadata"]["resourceVersion"]
    );
    let (code, counted) = fx.get(Caller::Admin, &collection).await?;
    assert_eq!(code, StatusCode::OK, "{counted}");
    assert_eq!(counted["items"].as_array().map(Vec::len), Some(7));
    let (code, purged) = fx
        .json(Caller::Admin, Method::DELETE, &collection, None)
        .await?;
    assert_eq!(code, StatusCode::OK, "{purged}");
    assert_eq!(purged["items"].as_array().map(Vec::len), Some(7));
    let (_, by_a) = fx.get(Caller::Admin, &list(a)).await?;
    assert_eq!(
        by_a["items"].as_array().map(Vec::len),
        Some(7),
        "only provider-one's copies were purged"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_under_a_shard_or_cluster_prefix_of_the_cache_is_not_implemented() -> Result<()> {
    let fx = Fixture::new().await?;
    for uri in [
        "/services/cache/shards/root/metrics",
        "/services/cache/shards/root/clusters/provider-one/metrics",
    ] {
        for caller in [Caller::Admin, Caller::Anonymous] {
            let response = fx.send(caller, Method::GET, uri, None, None).await?;
            assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED, "{uri}");
            // kcp answers text/plain; our error layer makes every error a Status.
            let body = response.into_body().collect().await?.to_bytes();
            let status: Value = serde_json::from_slice(&body)?;
            assert_eq!(
                (&status["kind"], &status["code"]),
                (&json!("Status"), &json!(501))
            );
            assert_eq!(
                status["message"],
                "shard-level endpoint not available at shard or workspace scope"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_cached_resource_of_the_v032_generation_is_not_served_on_its_v030_url() -> Result<()> {
    let fx = Fixture::new().await?;
    let (code, list) = fx.get(ALICE, &cpuflavors(TEAM_A, "")).await?;
    assert_eq!(code, StatusCode::OK, "{list}");

    // The same CachedResource, as a v0.32 controller marks it.
    let uri = format!(
        "/services/cache/shards/root/clusters/{PROVIDER}/apis/cache.kcp.io/v1alpha1/cachedresources/cpuflavors-v1"
    );
    let (code, mut cr) = fx.get(Caller::Admin, &uri).await?;
    assert_eq!(code, StatusCode::OK, "{cr}");
    cr["metadata"]["annotations"]["cache.kcp.io/resource-kind"] = json!("CPUFlavor");
    let (code, updated) = fx.json(Caller::Admin, Method::PUT, &uri, Some(&cr)).await?;
    assert_eq!(code, StatusCode::OK, "{updated}");
    fx.catch_up().await?;

    for path in ["", "/cpu-small"] {
        let (code, status) = fx.get(ALICE, &cpuflavors(TEAM_A, path)).await?;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {status}");
    }
    Ok(())
}
