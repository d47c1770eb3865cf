//! The workspaces API: the local kcp shard's Kubernetes API for source workspaces,
//! `/clusters/<logical cluster | path | *>/…`, backed by the local store.
//!
//! Built-in kinds ([`registry`]), custom resources of each workspace's CRDs, get, list, watch,
//! create, update, patch (merge, JSON and strategic merge patch), delete, deletecollection and
//! `/status`; discovery (legacy and aggregated) and OpenAPI v3 ([`openapi`]) so kubectl's
//! `apply`, `create`, `edit` and `explain` work. Object semantics live in [`objects`].
//! `system:masters` may do anything; other users what the workspace's own RBAC grants them
//! (ClusterRoleBindings, and RoleBindings in their namespace; Kubernetes RBAC semantics).

pub mod objects;
pub mod openapi;
pub mod registry;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use kube_api::Status;
use kube_api::params::{ListOptions, name_selector};
use kube_api::patch::PatchType;
use kube_api::user::RequestUser;
use objects::{Part, Workspaces, WsError};
use registry::Kind;
use rest::{self, Collection, read_body, to_vec};
use serde_json::{Value, json};
use std::sync::Arc;
use store::Scope;

/// Shared state of the workspaces API handlers.
#[derive(Clone)]
struct WsState {
    ws: Arc<Workspaces>,
    /// The Replication virtual workspace, which serves the virtual resources bound here.
    vw: Router,
}

/// The workspaces API routes; `vw` serves the virtual resources APIBindings provide (reads of
/// them in a consumer workspace are answered by the virtual workspace, as kcp's shard proxies
/// them to the endpoint slice's URL).
pub fn router(ws: Arc<Workspaces>, vw: Router) -> Router {
    Router::new()
        .route("/clusters/{*rest}", any(handle))
        .with_state(WsState { ws, vw })
}

async fn handle(State(st): State<WsState>, req: Request) -> Response {
    match serve(st, req).await {
        Ok(r) => r,
        Err(s) => s.into_response(),
    }
}

/// A parsed resource request path below `/clusters/<c>`.
#[derive(Debug, Clone, PartialEq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: String,
    resource: String,
    name: Option<String>,
    status: bool,
    watch_path: bool,
}

fn parse_resource(segs: &[&str]) -> Option<ResourcePath> {
    let (group, version, mut tail) = match segs {
        ["api", v, tail @ ..] if !tail.is_empty() => (String::new(), v.to_string(), tail),
        ["apis", g, v, tail @ ..] if !tail.is_empty() => (g.to_string(), v.to_string(), tail),
        _ => return None,
    };
    let mut watch_path = false;
    if let ["watch", t @ ..] = tail {
        watch_path = true;
        tail = t;
    }
    let (namespace, tail) = match tail {
        ["namespaces", ns, t @ ..] if !t.is_empty() && t != ["status"] => (ns.to_string(), t),
        t => (String::new(), t),
    };
    let (resource, name, status) = match tail {
        [r] => (r.to_string(), None, false),
        [r, n] => (r.to_string(), Some(n.to_string()), false),
        [r, n, "status"] => (r.to_string(), Some(n.to_string()), true),
        _ => return None,
    };
    Some(ResourcePath {
        group,
        version,
        namespace,
        resource,
        name,
        status,
        watch_path,
    })
}

fn ws_status(e: WsError) -> Status {
    e.to_status()
}

async fn serve(st: WsState, req: Request) -> Result<Response, Status> {
    let ws = st.ws;
    let user = RequestUser::require(req.extensions())?;
    let decoded = kube_api::params::decoded_path(req.uri().path());
    let rest = decoded.strip_prefix("/clusters/").unwrap_or("");
    let (reference, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let segs: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    let resource_path = parse_resource(&segs);
    // The request as the edge read it: verb and query, decoded once.
    let info = kube_api::request::RequestInfo::of(&req);
    let verb = info.verb.clone();
    let wildcard = reference == "*";
    let cluster = if wildcard {
        String::new()
    } else {
        ws.resolve(reference).await.map_err(ws_status)?
    };
    if !user.is_master() {
        authorize(
            &ws,
            &user,
            wildcard,
            &cluster,
            resource_path.as_ref(),
            &verb,
            req.uri().path(),
        )
        .await?;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(path) = resource_path else {
        return non_resource(&ws, &cluster, wildcard, &segs, accept.as_deref()).await;
    };
    // Reads of a workspace that does not exist find nothing (so `kubectl apply` goes on to
    // create its LogicalCluster); writes other than that creation are refused.
    let read = req.method() == Method::GET;
    let creating_workspace = req.method() == Method::POST && path.resource == "logicalclusters";
    if !wildcard
        && !read
        && !creating_workspace
        && ws
            .logical_cluster(&cluster)
            .await
            .map_err(ws_status)?
            .is_none()
    {
        return Err(ws_status(WsError::NoWorkspace(reference.to_string())));
    }
    let kind = ws
        .find(&cluster, &path.group, &path.version, &path.resource)
        .await
        .map_err(ws_status)?;
    if let Some((cr_cluster, cr_name)) = &kind.virtual_source {
        let target = if wildcard { "*" } else { cluster.as_str() };
        let mut uri =
            format!("/services/replication/{cr_cluster}/{cr_name}/clusters/{target}/{tail}");
        if let Some(q) = req.uri().query() {
            uri.push('?');
            uri.push_str(q);
        }
        let (mut parts, body) = req.into_parts();
        parts.uri = uri
            .parse()
            .map_err(|_| Status::bad_request("the request path cannot be forwarded"))?;
        use tower::ServiceExt;
        return st
            .vw
            .oneshot(Request::from_parts(parts, body))
            .await
            .map_err(Status::internal);
    }
    let ns_given = !path.namespace.is_empty();
    if (ns_given && !kind.namespaced) || (path.status && !kind.status_subresource) {
        return Err(Status::path_not_found());
    }
    let part = if path.status {
        Part::Status
    } else {
        Part::Main
    };
    let method = req.method().clone();
    let collection = collection(&kind);
    let scope = Workspaces::scope(
        &kind,
        (!wildcard).then_some(cluster.as_str()),
        Some(path.namespace.as_str()),
    );
    if wildcard && !(method == Method::GET && (path.name.is_none() || verb == "watch")) {
        return Err(Status::bad_request(
            "a concrete workspace is required for this request, not *",
        ));
    }
    let params = &info.query;
    let strict = params
        .iter()
        .any(|(k, v)| k == "fieldValidation" && v == "Strict");
    // Writes are never simulated: refuse a dry run rather than perform it.
    if method != Method::GET
        && let Some((_, v)) = params.iter().find(|(k, v)| k == "dryRun" && !v.is_empty())
    {
        return Err(Status::bad_request(format!(
            "dryRun={v} is not supported by this server; retry without --dry-run=server"
        )));
    }
    match (method, path.name.clone()) {
        (Method::GET, None) => {
            let opts = ListOptions::from_pairs(&info.query, path.watch_path)?;
            if opts.watch {
                rest::watch(ws.store.clone(), collection, scope, opts, accept.as_deref()).await
            } else {
                rest::list(
                    ws.store.as_ref(),
                    &collection,
                    &scope,
                    &opts,
                    accept.as_deref(),
                )
                .await
            }
        }
        (Method::GET, Some(name)) => {
            let opts = ListOptions::from_pairs(&info.query, path.watch_path)?;
            if opts.watch {
                let mut opts = opts;
                opts.field_selector = name_selector(&opts.field_selector, &name)?;
                return rest::watch(ws.store.clone(), collection, scope, opts, accept.as_deref())
                    .await;
            }
            let rec = ws
                .get(&kind, &cluster, &path.namespace, &name)
                .await
                .map_err(ws_status)?;
            let v = objects::present(&rec.value, &rec.key, rec.revision, &kind.api_version())
                .ok_or_else(|| Status::internal("stored object does not decode"))?;
            collection.object_response(200, &v, accept.as_deref())
        }
        (Method::POST, None) => {
            let body = read_object(req).await?;
            check_strict(strict, &kind, &body)?;
            let rec = ws
                .create(&kind, &cluster, &path.namespace, body)
                .await
                .map_err(ws_status)?;
            respond(&kind, 201, &rec)
        }
        (Method::PUT, Some(name)) => {
            let body = read_object(req).await?;
            check_strict(strict, &kind, &body)?;
            let d = ws
                .update(&kind, &cluster, &path.namespace, &name, body, part)
                .await
                .map_err(ws_status)?;
            respond(&kind, 200, &d.record)
        }
        (Method::PATCH, Some(name)) => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Some(pt) = PatchType::from_content_type(&ct) else {
                return Err(Status::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json{}",
                        if kind.strategic {
                            ", application/strategic-merge-patch+json"
                        } else {
                            ""
                        }
                    ),
                ));
            };
            if pt == PatchType::StrategicMerge && !kind.strategic {
                return Err(Status::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json",
                ));
            }
            let body = read_body(req).await?;
            let d = ws
                .patch(
                    &kind,
                    &cluster,
                    &path.namespace,
                    &name,
                    pt,
                    &body,
                    part,
                    strict,
                )
                .await
                .map_err(ws_status)?;
            respond(&kind, 200, &d.record)
        }
        (Method::DELETE, Some(name)) => {
            let body = read_body(req).await?;
            let pre = rest::preconditions(&body)?;
            let d = ws
                .delete(&kind, &cluster, &path.namespace, &name, pre)
                .await
                .map_err(ws_status)?;
            respond(&kind, 200, &d.record)
        }
        (Method::DELETE, None) => {
            let opts = ListOptions::from_pairs(&info.query, false)?;
            delete_collection(&ws, &kind, &cluster, scope, &opts).await
        }
        _ => Err(Status::method_not_allowed(
            &verb,
            &kind.group,
            &kind.resource,
        )),
    }
}

/// The request body as JSON: JSON as sent, or Kubernetes protobuf (what kubectl's typed
/// commands such as `kubectl create namespace` send) decoded.
/// Authorization of callers outside `system:masters`: the workspace's own RBAC, evaluated with
/// Kubernetes semantics (a ClusterRoleBinding grants in every namespace, a RoleBinding in its
/// own). Discovery and OpenAPI need some binding naming the user (kcp's workspace access);
/// wildcard requests across workspaces are for `system:masters` only.
async fn authorize(
    ws: &Workspaces,
    user: &kube_api::user::UserInfo,
    wildcard: bool,
    cluster: &str,
    path: Option<&ResourcePath>,
    verb: &str,
    raw_path: &str,
) -> Result<(), Status> {
    use kube_api::rbac::{self, ClusterRole, ClusterRoleBinding, ResourceAttributes, UserRef};
    let denied = || {
        Status::forbidden(match path {
            Some(p) => {
                let scope = if p.namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace \"{}\"", p.namespace)
                };
                format!(
                    "{}{} is forbidden: User \"{}\" cannot {verb} resource \"{}{}\" in API group \"{}\" {scope}",
                    kube_api::status::qualified(&p.group, &p.resource),
                    p.name
                        .as_ref()
                        .map(|n| format!(" \"{n}\""))
                        .unwrap_or_default(),
                    user.name,
                    p.resource,
                    if p.status { "/status" } else { "" },
                    p.group
                )
            }
            None => format!(
                "forbidden: User \"{}\" cannot get path \"{raw_path}\"",
                user.name
            ),
        })
    };
    if wildcard {
        return Err(denied());
    }
    let load = |group: &str, resource: &str| {
        ws.builtin(group, resource)
            .cloned()
            .ok_or_else(|| Status::internal("RBAC kinds are not served"))
    };
    let role_kind = load("rbac.authorization.k8s.io", "clusterroles")?;
    let binding_kind = load("rbac.authorization.k8s.io", "clusterrolebindings")?;
    let roles: Vec<ClusterRole> = ws
        .list_values(&role_kind, Some(cluster))
        .await
        .map_err(ws_status)?
        .into_iter()
        .filter_map(|(v, _, _)| serde_json::from_value(v).ok())
        .collect();
    let bindings: Vec<ClusterRoleBinding> = ws
        .list_values(&binding_kind, Some(cluster))
        .await
        .map_err(ws_status)?
        .into_iter()
        .filter_map(|(v, _, _)| serde_json::from_value(v).ok())
        .collect();
    let who = UserRef {
        name: &user.name,
        groups: &user.groups,
    };
    let Some(p) = path else {
        // Workspace access: some binding (cluster-wide or in a namespace) names the user.
        if bindings.iter().any(|b| rbac::binds(b, &who)) {
            return Ok(());
        }
        let rb_kind = load("rbac.authorization.k8s.io", "rolebindings")?;
        let any_role_binding = ws
            .list_values(&rb_kind, Some(cluster))
            .await
            .map_err(ws_status)?
            .into_iter()
            .filter_map(|(v, _, _)| serde_json::from_value::<ClusterRoleBinding>(v).ok())
            .any(|b| rbac::binds(&b, &who));
        return if any_role_binding {
            Ok(())
        } else {
            Err(denied())
        };
    };
    let attrs = ResourceAttributes {
        verb,
        group: &p.group,
        resource: &p.resource,
        subresource: if p.status { "status" } else { "" },
        name: p.name.as_deref().unwrap_or(""),
    };
    let cluster_role = |name: &str| roles.iter().find(|r| r.metadata.name == name);
    if rbac::allows(cluster_role, &bindings, &who, &attrs).is_some() {
        return Ok(());
    }
    if p.namespace.is_empty() {
        return Err(denied());
    }
    // In a namespace, its RoleBindings grant too: of ClusterRoles, or of the namespace's Roles
    // (a Role has a ClusterRole's shape; a binding of one is evaluated against the Roles).
    let namespaced = |kind: Kind| {
        let scope = Workspaces::scope(&kind, Some(cluster), Some(&p.namespace));
        async move {
            let listing = ws.store.list(&scope).await.map_err(Status::internal)?;
            Ok::<Vec<Value>, Status>(
                listing
                    .records
                    .iter()
                    .filter_map(|r| serde_json::from_slice(&r.value).ok())
                    .collect(),
            )
        }
    };
    let ns_roles: Vec<ClusterRole> = namespaced(load("rbac.authorization.k8s.io", "roles")?)
        .await?
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let role_bindings: Vec<ClusterRoleBinding> =
        namespaced(load("rbac.authorization.k8s.io", "rolebindings")?)
            .await?
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
    let (of_roles, of_cluster_roles): (Vec<_>, Vec<_>) = role_bindings
        .into_iter()
        .partition(|b| b.role_ref.kind == "Role");
    if rbac::allows(cluster_role, &of_cluster_roles, &who, &attrs).is_some() {
        return Ok(());
    }
    let as_cluster_bindings: Vec<ClusterRoleBinding> = of_roles
        .into_iter()
        .map(|mut b| {
            b.role_ref.kind = "ClusterRole".into();
            b
        })
        .collect();
    let role = |name: &str| ns_roles.iter().find(|r| r.metadata.name == name);
    if rbac::allows(role, &as_cluster_bindings, &who, &attrs).is_some() {
        Ok(())
    } else {
        Err(denied())
    }
}

/// `fieldValidation=Strict` for a created or replaced body (patches check their result).
fn check_strict(strict: bool, kind: &Kind, body: &Value) -> Result<(), Status> {
    if strict {
        objects::check_strict(kind, body).map_err(ws_status)?;
    }
    Ok(())
}

async fn read_object(req: Request) -> Result<Value, Status> {
    use kube_api::protobuf::{self, ProtoError};
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = read_body(req).await?;
    if content_type.starts_with(protobuf::MEDIA_TYPE) {
        return protobuf::decode(&body).map_err(|e| match e {
            ProtoError::Malformed(m) => Status::bad_request(m),
            other => Status::new(415, "UnsupportedMediaType", other.to_string()),
        });
    }
    rest::decode_json(&body)
}

fn collection(kind: &Kind) -> Collection {
    let av = kind.api_version();
    Collection {
        group: kind.group.clone(),
        resource: kind.resource.clone(),
        kind: kind.kind.clone(),
        api_version: av.clone(),
        namespaced: kind.namespaced,
        present: Arc::new(move |value, key, revision| objects::present(value, key, revision, &av)),
        present_json: None,
        frames: None,
        columns: Some(Arc::new(rest::table::columns_from(&kind.printer_columns))),
    }
}

fn respond(kind: &Kind, code: u16, rec: &store::Record) -> Result<Response, Status> {
    let v = objects::present(&rec.value, &rec.key, rec.revision, &kind.api_version())
        .ok_or_else(|| Status::internal("stored object does not decode"))?;
    Ok(kube_api::json_response(code, to_vec(&v)?))
}

async fn delete_collection(
    ws: &Workspaces,
    kind: &Kind,
    cluster: &str,
    scope: Scope,
    opts: &ListOptions,
) -> Result<Response, Status> {
    let listing = ws.store.list(&scope).await.map_err(Status::internal)?;
    let mut items = Vec::new();
    for record in listing.records {
        let Some(v) = objects::present(
            &record.value,
            &record.key,
            record.revision,
            &kind.api_version(),
        ) else {
            continue;
        };
        if !rest::selected(&v, &opts.label_selector, &opts.field_selector) {
            continue;
        }
        match ws
            .delete(
                kind,
                cluster,
                &record.key.namespace,
                &record.key.name,
                (None, None),
            )
            .await
        {
            Ok(_) | Err(WsError::NotFound { .. }) => items.push(v),
            Err(e) => return Err(e.to_status()),
        }
    }
    let rv = ws.store.revision().await.map_err(Status::internal)?;
    let list = json!({
        "apiVersion": kind.api_version(), "kind": kind.list_kind,
        "metadata": {"resourceVersion": rv.to_string()}, "items": items,
    });
    Ok(kube_api::json_response(200, to_vec(&list)?))
}

/// Discovery, OpenAPI and `/version` of a workspace.
async fn non_resource(
    ws: &Workspaces,
    cluster: &str,
    wildcard: bool,
    segs: &[&str],
    accept: Option<&str>,
) -> Result<Response, Status> {
    let kinds = if wildcard {
        ws.builtins().to_vec()
    } else {
        ws.kinds(cluster).await.map_err(ws_status)?
    };
    match segs {
        ["version"] => Ok(kube_api::json_response(200, kube_api::version_document())),
        ["openapi", "v3"] => {
            let mut entries = Vec::new();
            for (g, v) in group_versions(&kinds) {
                let (_, hash) = openapi::render(&openapi_doc(&kinds, &g, &v));
                entries.push((openapi::gv_path(&g, &v), hash));
            }
            Ok(kube_api::json_response(
                200,
                to_vec(&openapi::index(&entries))?,
            ))
        }
        ["openapi", "v3", "api", "v1"] => openapi_response(&kinds, "", "v1"),
        ["openapi", "v3", "apis", g, v] => openapi_response(&kinds, g, v),
        ["api"] | ["api", "v1"] | ["apis"] | ["apis", _] | ["apis", _, _] => {
            let resources: Vec<_> = kinds.iter().map(Kind::discovery).collect();
            let tail: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
            rest::discovery::serve(&resources, &tail, accept, None)
        }
        _ => Err(Status::path_not_found()),
    }
}

fn group_versions(kinds: &[Kind]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for k in kinds {
        let gv = (k.group.clone(), k.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

fn openapi_doc(kinds: &[Kind], group: &str, version: &str) -> Value {
    let types: Vec<openapi::ApiType> = kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(Kind::openapi)
        .collect();
    openapi::document(group, version, &types)
}

fn openapi_response(kinds: &[Kind], group: &str, version: &str) -> Result<Response, Status> {
    if !kinds
        .iter()
        .any(|k| k.group == group && k.version == version)
    {
        return Err(Status::path_not_found());
    }
    let (body, _) = openapi::render(&openapi_doc(kinds, group, version));
    let mut r = kube_api::json_response(200, body);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths_cover_namespaced_cluster_scoped_status_and_watch_forms() {
        let p = parse_resource(&["api", "v1", "namespaces", "kcp-system", "secrets", "x"]).unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.resource.as_str(), p.name.as_deref()),
            ("kcp-system", "secrets", Some("x"))
        );
        let p = parse_resource(&["api", "v1", "namespaces", "default"]).unwrap();
        assert_eq!(
            (p.resource.as_str(), p.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let p = parse_resource(&["api", "v1", "namespaces", "default", "status"]).unwrap();
        assert!(p.status && p.namespace.is_empty());
        let p = parse_resource(&[
            "apis",
            "cache.kcp.io",
            "v1alpha1",
            "cachedresources",
            "a",
            "status",
        ])
        .unwrap();
        assert!(p.status);
        let p = parse_resource(&["apis", "g", "v1", "watch", "things"]).unwrap();
        assert!(p.watch_path && p.name.is_none());
        assert!(parse_resource(&["apis", "g", "v1"]).is_none());
    }
}
