//! The kcp-compatible cache server HTTP API (`kcp-reference.md` §8).
//!
//! `[/services/cache]/shards/<shard|*>/clusters/<cluster|*>/apis/<g>/<v>/[namespaces/<ns>/]<r>[/<name>]`
//! with get, list, watch, create, update, delete and deletecollection over the [`Store`]. Only
//! members of `system:masters` may use it. Object semantics live in [`objects`]; the served
//! resources in [`resources`].

#![forbid(unsafe_code)]

pub mod discovery;
pub mod identity;
pub mod local;
pub mod objects;
pub mod openapi;
pub mod present_memo;
pub mod resources;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use kcp_model::is_cluster_name;
use kube_api::params::{ListOptions, name_selector};
use kube_api::user::RequestUser;
use kube_api::{Status, json_response};
use rest::{self, Collection, read_json, selected, to_vec};
use store::{GroupResource, Scope, Store, StoreError};

use objects::{Location, ObjectError};
use resources::ServedResource;
use serde_json::Value;
use std::sync::Arc;

/// Shared state of the cache server handlers.
#[derive(Clone)]
pub struct CacheServer {
    /// The storage.
    pub store: Arc<dyn Store>,
    /// Watch frames of recent events, made once for all watchers (see [`rest::FrameMemo`]).
    pub frames: Arc<rest::FrameMemo>,
    /// Objects as presented to readers, made once per revision (see [`present_memo`]).
    pub presented: Arc<present_memo::PresentMemo>,
}

/// The cache server's routes.
pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/services/cache/shards/{*rest}", any(handle))
        .route("/shards/{*rest}", any(handle))
        .route("/services/cache", any(shard_required))
        .route("/services/cache/{*rest}", any(shard_required))
        .with_state(CacheServer {
            store,
            frames: Arc::default(),
            presented: Arc::default(),
        })
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

/// `/metrics` reached under a shard or cluster prefix (kcp's `WithCacheShardLevelPaths`).
fn is_scoped_metrics(path: &str) -> bool {
    let path = path.strip_prefix("/services/cache").unwrap_or(path);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segs.as_slice(),
        ["shards", _, "metrics"] | ["shards", _, "clusters", _, "metrics"]
    )
}

async fn serve(cs: CacheServer, req: Request) -> Result<Response, Status> {
    let decoded = kube_api::params::decoded_path(req.uri().path());
    // Before authentication, as in kcp's handler chain.
    if is_scoped_metrics(&decoded) {
        return Ok((
            axum::http::StatusCode::NOT_IMPLEMENTED,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            "shard-level endpoint not available at shard or workspace scope",
        )
            .into_response());
    }
    let user = RequestUser::require(req.extensions())?;
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
    // The request as the edge read it: verb and query, decoded once.
    let info = kube_api::request::RequestInfo::of(&req);
    let verb = info.verb.clone();
    if !user.is_master() {
        return Err(Status::forbidden(format!(
            "{} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" at the cluster scope",
            kube_api::status::qualified(&path.group, &path.resource),
            user.name,
            path.resource,
            path.group
        )));
    }
    let res = match resources::find(&path.group, &path.version, &path.resource) {
        Some(res) => res,
        None => {
            let partial_metadata = req
                .headers()
                .get_all(axum::http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("as=PartialObjectMetadata"));
            identity_resource(
                cs.store.as_ref(),
                &path.group,
                &path.version,
                &path.resource,
                path.cluster.as_deref(),
                partial_metadata,
            )
            .await?
        }
    };
    let ns_given = !path.namespace.is_empty();
    if (ns_given && !res.namespaced) || (!ns_given && res.namespaced && path.name.is_some()) {
        return Err(Status::path_not_found());
    }
    let api_version = format!("{}/{}", res.group, path.version);
    let method = req.method().clone();
    let store = cs.store.as_ref();
    let collection = collection(res, &api_version, &cs.frames, &cs.presented);
    let accept = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match (method, path.name.clone()) {
        (Method::GET, None) => {
            let opts = ListOptions::from_pairs(&info.query, path.watch_path)?;
            let scope = scope_of(res, &path);
            if opts.watch {
                rest::watch(cs.store.clone(), collection, scope, opts, accept.as_deref()).await
            } else {
                rest::list(store, &collection, &scope, &opts, accept.as_deref()).await
            }
        }
        (Method::GET, Some(name)) => {
            let opts = ListOptions::from_pairs(&info.query, path.watch_path)?;
            if opts.watch {
                let mut opts = opts;
                opts.field_selector = name_selector(&opts.field_selector, &name)?;
                return rest::watch(
                    cs.store.clone(),
                    collection,
                    scope_of(res, &path),
                    opts,
                    accept.as_deref(),
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
            if collection.wants_table(accept.as_deref())?.is_none() {
                return Ok(json_response(
                    200,
                    presented(&cs.presented, &record, &api_version, res, &name)?,
                ));
            }
            let v = objects::present(&record.value, &record.key, record.revision, &api_version)
                .map_err(|e| e.to_status(res, &name))?;
            collection.object_response(200, &v, accept.as_deref())
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
            objects::check_annotations(res, &name, &body)?;
            let rec = objects::create(store, &loc, body)
                .await
                .map_err(|e| e.to_status(res, &name))?;
            Ok(json_response(
                201,
                presented(&cs.presented, &rec, &api_version, res, &name)?,
            ))
        }
        (Method::PUT, Some(name)) => {
            let (shard, cluster) = concrete(&path)?;
            let body = read_json(req).await?;
            objects::check_annotations(res, &name, &body)?;
            let loc = location(res, &path.version, &shard, &cluster, &path.namespace);
            let rec = objects::update(store, &loc, &name, body)
                .await
                .map_err(|e| e.to_status(res, &name))?;
            Ok(json_response(
                200,
                presented(&cs.presented, &rec, &api_version, res, &name)?,
            ))
        }
        (Method::DELETE, Some(name)) => {
            let (shard, cluster) = concrete(&path)?;
            let body = rest::read_body(req).await?;
            let (expected, _) = rest::preconditions(&body)?;
            let loc = location(res, &path.version, &shard, &cluster, &path.namespace);
            let rec = objects::delete(store, &loc.key(&name), expected)
                .await
                .map_err(|e| e.to_status(res, &name))?;
            Ok(json_response(
                200,
                presented(&cs.presented, &rec, &api_version, res, &name)?,
            ))
        }
        (Method::DELETE, None) => {
            let opts = ListOptions::from_pairs(&info.query, false)?;
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
        _ => Err(Status::method_not_allowed(&verb, res.group, res.resource)),
    }
}

/// The resource of a request for `<plural>:<identity>` (or a bare plural in a concrete cluster)
/// that the table does not have: synthesized from the ClusterCachedResources (main) and v0.32
/// CachedResources replicated into this cache (`kcp-head.md` §2.2). 404 when none publishes it
/// or the version is not one they publish; 400 for an empty identity.
pub async fn identity_resource(
    store: &dyn Store,
    group: &str,
    version: &str,
    segment: &str,
    cluster: Option<&str>,
    partial_metadata: bool,
) -> Result<&'static ServedResource, Status> {
    let (_, requested) =
        identity::split_identity(segment).map_err(|e| Status::bad_request(e.to_string()))?;
    if requested.is_none() && cluster.is_none() && !partial_metadata {
        return Err(Status::path_not_found());
    }
    let mut publishers = Vec::new();
    for resource in ["clustercachedresources", "cachedresources"] {
        let listing = store
            .list(&Scope {
                resource: Some(GroupResource::new("cache.kcp.io", resource)),
                ..Scope::default()
            })
            .await
            .map_err(Status::internal)?;
        publishers.extend(listing.records.iter().filter_map(|r| {
            let value: Value = serde_json::from_slice(&r.value).ok()?;
            identity::Publisher::from_json(&r.key.cluster, &value)
        }));
    }
    let request = identity::Request {
        group,
        segment,
        cluster: match cluster {
            Some(c) => identity::Cluster::Concrete(c),
            None => identity::Cluster::Wildcard,
        },
        partial_metadata,
    };
    match identity::resolve(
        &identity::Publishers::new(publishers),
        resources::is_system,
        request,
    ) {
        Ok(identity::Resolution::Identity(s)) if s.versions.iter().any(|v| v == version) => {
            Ok(resources::intern(&s))
        }
        Ok(_) | Err(identity::IdentityError::NotFound) => Err(Status::path_not_found()),
        Err(e @ identity::IdentityError::MissingIdentity(_)) => {
            Err(Status::bad_request(e.to_string()))
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

/// One stored object as its readers see it ([`objects::present`]), encoded: straight from its
/// stored text ([`objects::present_json`], byte for byte the same) without decoding it into a
/// value tree and encoding that again, which was two thirds of a GET's instructions.
fn presented(
    memo: &present_memo::PresentMemo,
    rec: &store::Record,
    api_version: &str,
    res: &'static ServedResource,
    name: &str,
) -> Result<Vec<u8>, Status> {
    let mut out = Vec::with_capacity(rec.value.len() + 128);
    if memo.present(
        &rec.key,
        rec.revision,
        rec.value.len(),
        api_version,
        &mut out,
        |out| objects::present_json(&rec.value, &rec.key, rec.revision, api_version, out).is_ok(),
    ) {
        return Ok(out);
    }
    let v = objects::present(&rec.value, &rec.key, rec.revision, api_version)
        .map_err(|e| e.to_status(res, name))?;
    to_vec(&v)
}

/// The generic list/watch view of a cache server resource.
fn collection(
    res: &'static ServedResource,
    api_version: &str,
    frames: &Arc<rest::FrameMemo>,
    presented: &Arc<present_memo::PresentMemo>,
) -> Collection {
    let av = api_version.to_string();
    Collection {
        group: res.group.to_string(),
        resource: res.resource.to_string(),
        kind: res.kind.to_string(),
        api_version: api_version.to_string(),
        namespaced: res.namespaced,
        present: Arc::new(move |value, key, revision| {
            objects::present(value, key, revision, &av).ok()
        }),
        present_json: Some({
            let av = api_version.to_string();
            let memo = presented.clone();
            Arc::new(move |value, key, revision, out| {
                memo.present(key, revision, value.len(), &av, out, |out| {
                    objects::present_json(value, key, revision, &av, out).is_ok()
                })
            })
        }),
        frames: Some(frames.clone()),
        columns: Some(Arc::new(Vec::new())),
    }
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
    fn metrics_under_a_shard_or_cluster_prefix_is_recognised() {
        for p in [
            "/services/cache/shards/root/metrics",
            "/shards/*/clusters/c1/metrics",
        ] {
            assert!(is_scoped_metrics(p), "{p}");
        }
        for p in [
            "/metrics",
            "/shards/root/clusters/c1/apis/g/v/metrics",
            "/shards/root/clusters/c1/api/v1/metrics",
        ] {
            assert!(!is_scoped_metrics(p), "{p}");
        }
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
