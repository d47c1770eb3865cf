//! The kcp-compatible cache server HTTP API (`kcp-reference.md` §8).
//!
//! `[/services/cache]/shards/<shard|*>/clusters/<cluster|*>/apis/<g>/<v>/[namespaces/<ns>/]<r>[/<name>]`
//! with get, list, watch, create, update, delete and deletecollection over the [`Store`]. Only
//! members of `system:masters` may use it. Object semantics live in [`objects`]; the served
//! resources in [`resources`].

pub mod discovery;
pub mod objects;
pub mod openapi;
pub mod resources;

use crate::api::params::{ListOptions, check_fields, name_selector, parse_revision};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::user::RequestUser;
use crate::api::watch::{self, EventType};
use crate::api::{Status, json_response, labels_of};
use crate::model::is_cluster_name;
use crate::store::{EventKind, GroupResource, Scope, Store, StoreError};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures_util::StreamExt;
use objects::{Location, ObjectError};
use resources::ServedResource;
use serde_json::Value;
use std::sync::Arc;

/// Largest accepted request body.
const MAX_BODY: usize = 16 << 20;

/// Shared state of the cache server handlers.
#[derive(Clone)]
pub struct CacheServer {
    /// The storage.
    pub store: Arc<dyn Store>,
}

/// The cache server's routes.
pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/services/cache/shards/{*rest}", any(handle))
        .route("/shards/{*rest}", any(handle))
        .route("/services/cache", any(shard_required))
        .route("/services/cache/{*rest}", any(shard_required))
        .with_state(CacheServer { store })
}

async fn shard_required() -> Response {
    Status::bad_request("a shard name is required").into_response()
}

/// A parsed cache server request path.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePath {
    /// Shard, `None` = wildcard.
    pub shard: Option<String>,
    /// Cluster, `None` = wildcard.
    pub cluster: Option<String>,
    /// Group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace ("" = none).
    pub namespace: String,
    /// Resource.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Legacy `/watch/` path form.
    pub watch_path: bool,
}

fn valid_shard(s: &str) -> bool {
    s.len() <= 61
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b':')
}

fn valid_cluster(s: &str) -> bool {
    let body = s.strip_prefix("system:").unwrap_or(s);
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b':')
        && !body.starts_with('-')
        && !body.ends_with('-')
}

/// Parse a path (with or without the `/services/cache` prefix).
pub fn parse_path(path: &str) -> Result<CachePath, Status> {
    let path = path.strip_prefix("/services/cache").unwrap_or(path);
    let Some(rest) = path.strip_prefix("/shards/") else {
        return Err(Status::bad_request("a shard name is required"));
    };
    let Some((shard, rest)) = rest.split_once('/') else {
        return Err(Status::bad_request(format!(
            "unable to parse shard: no `/` found in path {rest}"
        )));
    };
    let shard = match shard {
        "*" => None,
        s if valid_shard(s) => Some(s.to_string()),
        s => {
            return Err(Status::bad_request(format!(
                "invalid shard: \"{s}\" does not match the regex"
            )));
        }
    };
    let Some(rest) = rest.strip_prefix("clusters/") else {
        return Err(Status::path_not_found());
    };
    let (cluster, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let cluster = match cluster {
        "*" => None,
        c if !is_cluster_name(c) => {
            return Err(Status::bad_request(format!(
                "invalid cluster: \"{c}\" is not a logical cluster name"
            )));
        }
        c if valid_cluster(c) => Some(c.to_string()),
        c => {
            return Err(Status::bad_request(format!(
                "invalid cluster: \"{c}\" does not match the regex"
            )));
        }
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut tail) = match segs.as_slice() {
        ["apis", g, v, tail @ ..] => (g.to_string(), v.to_string(), tail),
        ["api", v, tail @ ..] => (String::new(), v.to_string(), tail),
        _ => return Err(Status::path_not_found()),
    };
    let mut watch_path = false;
    if let ["watch", t @ ..] = tail {
        watch_path = true;
        tail = t;
    }
    let (namespace, tail) = match tail {
        ["namespaces", ns, t @ ..] if !t.is_empty() => (ns.to_string(), t),
        t => (String::new(), t),
    };
    let (resource, name) = match tail {
        [r] => (r.to_string(), None),
        [r, n] => (r.to_string(), Some(n.to_string())),
        _ => return Err(Status::path_not_found()),
    };
    Ok(CachePath {
        shard,
        cluster,
        group,
        version,
        namespace,
        resource,
        name,
        watch_path,
    })
}

async fn handle(State(cs): State<CacheServer>, req: Request) -> Response {
    match serve(cs, req).await {
        Ok(r) => r,
        Err(s) => s.into_response(),
    }
}

fn to_vec(v: &Value) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(Status::internal)
}

async fn serve(cs: CacheServer, req: Request) -> Result<Response, Status> {
    let user = RequestUser::require(req.extensions())?;
    let decoded = crate::api::params::decoded_path(req.uri().path());
    let path = match parse_path(&decoded) {
        Ok(p) => p,
        Err(e) if e.code == 404 => {
            if let Some(tail) = discovery_tail(&decoded) {
                if !user.is_master() {
                    return Err(Status::forbidden(format!(
                        "forbidden: User \"{}\" cannot get path \"{}\"",
                        user.name,
                        req.uri().path()
                    )));
                }
                let accept = req
                    .headers()
                    .get(axum::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                if tail.first().is_some_and(|s| s == "openapi") {
                    return openapi::serve(&tail);
                }
                return discovery::serve(&tail, accept);
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let verb = verb_of(
        req.method(),
        path.name.is_some(),
        req.uri().query(),
        path.watch_path,
    );
    if !user.is_master() {
        return Err(Status::forbidden(format!(
            "{} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" at the cluster scope",
            crate::api::status::qualified(&path.group, &path.resource),
            user.name,
            path.resource,
            path.group
        )));
    }
    let Some(res) = resources::find(&path.group, &path.version, &path.resource) else {
        return Err(Status::path_not_found());
    };
    let ns_given = !path.namespace.is_empty();
    if (ns_given && !res.namespaced) || (!ns_given && res.namespaced && path.name.is_some()) {
        return Err(Status::path_not_found());
    }
    let api_version = format!("{}/{}", res.group, path.version);
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let store = cs.store.as_ref();
    match (method, path.name.clone()) {
        (Method::GET, None) => {
            let opts = ListOptions::from_query(query.as_deref(), path.watch_path)?;
            let scope = scope_of(res, &path);
            if opts.watch {
                watch_objects(cs.store.clone(), res, scope, opts, api_version).await
            } else {
                list_objects(store, res, &scope, &opts, &api_version).await
            }
        }
        (Method::GET, Some(name)) => {
            let opts = ListOptions::from_query(query.as_deref(), path.watch_path)?;
            if opts.watch {
                let mut opts = opts;
                opts.field_selector = name_selector(&opts.field_selector, &name)?;
                return watch_objects(
                    cs.store.clone(),
                    res,
                    scope_of(res, &path),
                    opts,
                    api_version,
                )
                .await;
            }
            let cluster = path.cluster.clone().ok_or_else(|| {
                Status::bad_request("a concrete cluster is required to get an object")
            })?;
            let record = match &path.shard {
                Some(shard) => {
                    let loc = location(res, &path.version, shard, &cluster, &path.namespace);
                    store
                        .get(&loc.key(&name))
                        .await
                        .map_err(|e| ObjectError::from(e).to_status(res, &name))?
                }
                None => {
                    let listing = store
                        .list(&scope_of(res, &path))
                        .await
                        .map_err(|e| ObjectError::from(e).to_status(res, &name))?;
                    listing.records.into_iter().find(|r| r.key.name == name)
                }
            };
            let record = record.ok_or_else(|| Status::not_found(res.group, res.resource, &name))?;
            let v = objects::present(&record.value, &record.key, record.revision, &api_version)
                .map_err(|e| e.to_status(res, &name))?;
            Ok(json_response(200, to_vec(&v)?))
        }
        (Method::POST, None) => {
            let (shard, cluster) = concrete(&path)?;
            let body = read_json(req).await?;
            let loc = location(res, &path.version, &shard, &cluster, &path.namespace);
            let name = body
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let rec = objects::create(store, &loc, body)
                .await
                .map_err(|e| e.to_status(res, &name))?;
            let v = objects::present(&rec.value, &rec.key, rec.revision, &api_version)
                .map_err(|e| e.to_status(res, &name))?;
            Ok(json_response(201, to_vec(&v)?))
        }
        (Method::PUT, Some(name)) => {
            let (shard, cluster) = concrete(&path)?;
            let body = read_json(req).await?;
            let loc = location(res, &path.version, &shard, &cluster, &path.namespace);
            let rec = objects::update(store, &loc, &name, body)
                .await
                .map_err(|e| e.to_status(res, &name))?;
            let v = objects::present(&rec.value, &rec.key, rec.revision, &api_version)
                .map_err(|e| e.to_status(res, &name))?;
            Ok(json_response(200, to_vec(&v)?))
        }
        (Method::DELETE, Some(name)) => {
            let (shard, cluster) = concrete(&path)?;
            let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
                .await
                .map_err(|e| Status::bad_request(e.to_string()))?;
            let expected = precondition(&body)?;
            let loc = location(res, &path.version, &shard, &cluster, &path.namespace);
            let rec = objects::delete(store, &loc.key(&name), expected)
                .await
                .map_err(|e| e.to_status(res, &name))?;
            let v = objects::present(&rec.value, &rec.key, rec.revision, &api_version)
                .map_err(|e| e.to_status(res, &name))?;
            Ok(json_response(200, to_vec(&v)?))
        }
        (Method::DELETE, None) => {
            let opts = ListOptions::from_query(query.as_deref(), false)?;
            let scope = scope_of(res, &path);
            let listing = store
                .list(&scope)
                .await
                .map_err(|e| ObjectError::from(e).to_status(res, ""))?;
            let mut items = Vec::new();
            for record in listing.records {
                let v = match objects::present(
                    &record.value,
                    &record.key,
                    record.revision,
                    &api_version,
                ) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if !selected(&v, &opts.label_selector, &opts.field_selector) {
                    continue;
                }
                match store.delete(&record.key, None).await {
                    Ok(_) | Err(StoreError::NotFound) => items.push(v),
                    Err(e) => return Err(ObjectError::from(e).to_status(res, &record.key.name)),
                }
            }
            let rv = store.revision().await.map_err(Status::internal)?;
            let list = serde_json::json!({
                "apiVersion": api_version, "kind": format!("{}List", res.kind),
                "metadata": {"resourceVersion": rv.to_string()}, "items": items,
            });
            Ok(json_response(200, to_vec(&list)?))
        }
        (m, name) => {
            let verb = verb_of(&m, name.is_some(), query.as_deref(), false);
            Err(Status::method_not_allowed(&verb, res.group, res.resource))
        }
    }
}

/// The segments after `/shards/<s>/clusters/<c>` when they address discovery.
fn discovery_tail(path: &str) -> Option<Vec<String>> {
    let path = path.strip_prefix("/services/cache").unwrap_or(path);
    let rest = path.strip_prefix("/shards/")?;
    let (_, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("clusters/")?;
    let (_, rest) = rest.split_once('/')?;
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let shape: Vec<&str> = segs.iter().map(String::as_str).collect();
    matches!(
        shape.as_slice(),
        ["api"]
            | ["api", "v1"]
            | ["apis"]
            | ["apis", _]
            | ["apis", _, _]
            | ["openapi", "v3"]
            | ["openapi", "v3", "apis", _, _]
    )
    .then_some(segs)
}

/// The Kubernetes verb of a request.
pub fn verb_of(method: &Method, named: bool, query: Option<&str>, watch_path: bool) -> String {
    let watch = watch_path
        || crate::api::params::parse_query(query)
            .iter()
            .any(|(k, v)| k == "watch" && crate::api::params::truthy(v));
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return method.as_str().to_ascii_lowercase(),
    }
    .to_string()
}

fn location<'a>(
    res: &'static ServedResource,
    version: &'a str,
    shard: &'a str,
    cluster: &'a str,
    ns: &'a str,
) -> Location<'a> {
    Location {
        res,
        version,
        shard,
        cluster,
        namespace: ns,
    }
}

fn concrete(path: &CachePath) -> Result<(String, String), Status> {
    match (&path.shard, &path.cluster) {
        (Some(s), Some(c)) => Ok((s.clone(), c.clone())),
        _ => Err(Status::bad_request(
            "writes need a concrete shard and cluster, not *",
        )),
    }
}

fn scope_of(res: &ServedResource, path: &CachePath) -> Scope {
    Scope {
        resource: Some(GroupResource::new(res.group, res.resource)),
        shard: path.shard.clone(),
        cluster: path.cluster.clone(),
        namespace: (!path.namespace.is_empty()).then(|| path.namespace.clone()),
    }
}

async fn read_json(req: Request) -> Result<Value, Status> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| Status::bad_request(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Status::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

fn precondition(body: &Bytes) -> Result<Option<u64>, Status> {
    if body.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Status::bad_request(format!("invalid DeleteOptions: {e}")))?;
    parse_revision(
        v.pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str),
    )
}

/// Whether a presented object passes the label and field selectors.
fn selected(v: &Value, ls: &LabelSelector, fs: &FieldSelector) -> bool {
    if !ls.is_everything() && !ls.matches(&labels_of(v)) {
        return false;
    }
    fs.is_everything()
        || fs.matches_with(|f| match f {
            "metadata.name" => v.pointer("/metadata/name").and_then(Value::as_str),
            "metadata.namespace" => v.pointer("/metadata/namespace").and_then(Value::as_str),
            _ => None,
        })
}

/// A cache server `continue` token: the snapshot revision and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: [String; 6],
}

fn key_parts(k: &crate::store::Key) -> [String; 6] {
    [
        k.group.clone(),
        k.resource.clone(),
        k.shard.clone(),
        k.cluster.clone(),
        k.namespace.clone(),
        k.name.clone(),
    ]
}

async fn list_objects(
    store: &dyn Store,
    res: &ServedResource,
    scope: &Scope,
    opts: &ListOptions,
    api_version: &str,
) -> Result<Response, Status> {
    use crate::api::params::RvMatch;
    use base64::Engine;
    check_fields(&opts.field_selector, res.namespaced)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let requested = opts.revision()?;
    let resume: Option<ContinueToken> = match &opts.continue_token {
        Some(t) => Some(
            b64.decode(t.trim_end_matches('='))
                .ok()
                .and_then(|raw| serde_json::from_slice(&raw).ok())
                .ok_or_else(|| Status::bad_request("continue key is not valid"))?,
        ),
        None => None,
    };
    let exact = match (opts.resource_version_match, requested, opts.limit) {
        (Some(RvMatch::Exact), Some(n), _) | (None, Some(n), Some(_)) => Some(n),
        _ => None,
    };
    let listing = match (resume.as_ref().map(|t| t.rv), exact) {
        (Some(rv), _) => store.list_at(scope, rv).await.map_err(|e| match e {
            StoreError::Expired { .. } => Status::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."),
            other => Status::internal(other),
        })?,
        (None, Some(rv)) => store.list_at(scope, rv).await.map_err(|e| match e {
            StoreError::Expired { .. } => Status::expired("The resourceVersion for the provided list is too old."),
            other => Status::internal(other),
        })?,
        (None, None) => store.list(scope).await.map_err(|e| ObjectError::from(e).to_status(res, ""))?,
    };
    let limit = opts.limit.map_or(usize::MAX, |l| l as usize);
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut last_key = None;
    let mut more = 0u64;
    for record in &listing.records {
        if let Some(t) = &resume
            && key_parts(&record.key) <= t.start
        {
            continue;
        }
        let v = match objects::present(&record.value, &record.key, record.revision, api_version) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(key = %record.key, error = %e, "Skipping a stored object that does not decode.");
                continue;
            }
        };
        if !selected(&v, &opts.label_selector, &opts.field_selector) {
            continue;
        }
        if items.len() >= limit {
            more += 1;
            continue;
        }
        items.push(to_vec(&v)?);
        last_key = Some(key_parts(&record.key));
    }
    let mut metadata = serde_json::json!({"resourceVersion": listing.revision.to_string()});
    if more > 0
        && let Some(start) = last_key
    {
        let token = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv: listing.revision,
            start,
        };
        metadata["continue"] = Value::String(b64.encode(to_vec(
            &serde_json::to_value(&token).map_err(Status::internal)?,
        )?));
        if opts.label_selector.is_everything() && opts.field_selector.is_everything() {
            metadata["remainingItemCount"] = Value::from(more);
        }
    }
    let size: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut body = Vec::with_capacity(256 + size);
    body.extend_from_slice(b"{\"apiVersion\":");
    body.extend_from_slice(&to_vec(&Value::String(api_version.to_string()))?);
    body.extend_from_slice(format!(",\"kind\":\"{}List\",\"metadata\":", res.kind).as_bytes());
    body.extend_from_slice(&to_vec(&metadata)?);
    body.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    Ok(json_response(200, body))
}

async fn watch_objects(
    store: Arc<dyn Store>,
    res: &'static ServedResource,
    scope: Scope,
    opts: ListOptions,
    api_version: String,
) -> Result<Response, Status> {
    check_fields(&opts.field_selector, res.namespaced)?;
    let requested = opts.revision()?;
    let initial = opts.send_initial_events.unwrap_or(requested.is_none());
    let mut frames: Vec<Bytes> = Vec::new();
    let after = if initial {
        let listing = store
            .list(&scope)
            .await
            .map_err(|e| ObjectError::from(e).to_status(res, ""))?;
        for record in &listing.records {
            if let Ok(v) =
                objects::present(&record.value, &record.key, record.revision, &api_version)
                && selected(&v, &opts.label_selector, &opts.field_selector)
            {
                frames.push(watch::frame(EventType::Added, &[&to_vec(&v)?]));
            }
        }
        if opts.send_initial_events == Some(true) && opts.allow_watch_bookmarks {
            frames.push(watch::bookmark_frame(
                &api_version,
                res.kind,
                listing.revision,
                true,
            ));
        }
        listing.revision
    } else {
        match requested {
            Some(rv) => rv,
            None => store.revision().await.map_err(Status::internal)?,
        }
    };
    let stream = match store.watch(scope, after).await {
        Ok(s) => s,
        Err(StoreError::Expired { requested, oldest }) => {
            let st = Status::expired(format!("too old resource version: {requested} ({oldest})"));
            let one = futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(watch::error_frame(&st))
            });
            return Ok(watch::response(one));
        }
        Err(e) => return Err(Status::internal(e)),
    };
    let ls = opts.label_selector.clone();
    let fs = opts.field_selector.clone();
    let bookmarks = opts.allow_watch_bookmarks;
    let kind = res.kind;
    let deadline = tokio::time::Instant::now() + watch::timeout(opts.timeout_seconds);
    let live = futures_util::stream::unfold(
        (stream, 0u64, false),
        move |(mut stream, mut last, done)| {
            let ls = ls.clone();
            let fs = fs.clone();
            let api_version = api_version.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let tick = tokio::time::sleep(watch::BOOKMARK_INTERVAL);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => return None,
                        _ = tick, if bookmarks && last > 0 => {
                            return Some((Ok(watch::bookmark_frame(&api_version, kind, last, false)), (stream, last, false)));
                        }
                        next = stream.next() => {
                            let event = match next {
                                None => return None,
                                Some(Err(StoreError::Expired { requested, oldest })) => {
                                    let st = Status::expired(format!("too old resource version: {requested} ({oldest})"));
                                    return Some((Ok(watch::error_frame(&st)), (stream, last, true)));
                                }
                                Some(Err(e)) => {
                                    return Some((Ok(watch::error_frame(&Status::internal(e))), (stream, last, true)));
                                }
                                Some(Ok(e)) => e,
                            };
                            last = event.revision;
                            if let Some(frame) = event_frame(&event, &ls, &fs, &api_version) {
                                return Some((Ok(frame), (stream, last, false)));
                            }
                        }
                    }
                }
            }
        },
    );
    let initial = futures_util::stream::iter(frames.into_iter().map(Ok));
    Ok(watch::response(initial.chain(live)))
}

/// The frame for one store event as a selector-filtered watcher sees it (kube's transitions).
fn event_frame(
    event: &crate::store::Event,
    ls: &LabelSelector,
    fs: &FieldSelector,
    api_version: &str,
) -> Option<Bytes> {
    let present = |b: &[u8]| objects::present(b, &event.key, event.revision, api_version).ok();
    let new = present(&event.value)?;
    let new_match = selected(&new, ls, fs);
    let old_match = event
        .prev
        .as_ref()
        .and_then(|p| present(p))
        .is_some_and(|old| selected(&old, ls, fs));
    let kind = match event.kind {
        EventKind::Created if new_match => EventType::Added,
        EventKind::Updated if new_match && old_match => EventType::Modified,
        EventKind::Updated if new_match => EventType::Added,
        EventKind::Updated if old_match => EventType::Deleted,
        EventKind::Deleted if new_match => EventType::Deleted,
        _ => return None,
    };
    let bytes = serde_json::to_vec(&new).ok()?;
    Some(watch::frame(kind, &[&bytes]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_digested_as_kcp_does() {
        let p = parse_path("/services/cache/shards/shard-1/clusters/c1/apis/cache.kcp.io/v1alpha1/cachedobjects/abc").unwrap();
        assert_eq!(p.shard.as_deref(), Some("shard-1"));
        assert_eq!(p.cluster.as_deref(), Some("c1"));
        assert_eq!(p.name.as_deref(), Some("abc"));
        let p = parse_path("/shards/*/clusters/*/apis/apis.kcp.io/v1alpha2/apiexports").unwrap();
        assert!(p.shard.is_none() && p.cluster.is_none() && p.name.is_none());
    }

    #[test]
    fn path_shaped_cluster_names_are_rejected() {
        let e = parse_path("/shards/s/clusters/root:org/apis/g/v/r").unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "invalid cluster: \"root:org\" is not a logical cluster name"
        );
    }

    #[test]
    fn a_missing_shard_segment_is_a_bad_request() {
        assert_eq!(
            parse_path("/services/cache/version").unwrap_err().message,
            "a shard name is required"
        );
        assert_eq!(
            parse_path("/shards/abc").unwrap_err().message,
            "unable to parse shard: no `/` found in path abc"
        );
        let e = parse_path("/shards/Bad_Shard/clusters/c/apis/g/v/r").unwrap_err();
        assert_eq!(
            e.message,
            "invalid shard: \"Bad_Shard\" does not match the regex"
        );
    }
}
