//! The Replication content authorizer (`kcp-reference.md` §6), with the SubjectAccessReview
//! answered locally from the RBAC objects cached in the export's logical cluster.
//!
//! Only `get`, `list` and `watch` can ever be allowed. A concrete consumer needs a binding for
//! the resource in its LogicalCluster; wildcard and non-resource requests consider every export
//! that carries the CachedResource's virtual resource. Every matching export must grant
//! `apis.kcp.io apiexports/content <export>` with the request's verb. `system:masters` never
//! reaches this authorizer. A consumer cluster that does not exist is denied like one without
//! a binding, so answers never tell which logical clusters exist.
//!
//! A slice-keyed URL (kcp v0.32 and main, `kcp-head.md` §4.3) is decided by [`authorize_slice`]:
//! the slice's export must exist (else 404), a concrete consumer must bind the export's
//! resource that references the slice, and one check of `apiexports/content` in the export's
//! cluster decides.

use super::index::{ObjKey, State};
use super::slices::{Domain, SliceKind};
use super::url::Target;
use kcp_model::types::ApiExport;
use kube_api::rbac::{self, ResourceAttributes, UserRef};
use kube_api::user::UserInfo;
use std::sync::Arc;

/// An authorization decision with kcp's raw reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow(String),
    /// Denied.
    Deny(String),
    /// No opinion; with an error this becomes a 500.
    NoOpinion(String, Option<String>),
    /// Something the URL names does not exist: (group, resource, name) of the 404.
    NotFound(&'static str, &'static str, String),
}

/// The request as the authorizer sees it.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// The user.
    pub user: &'a UserInfo,
    /// Kubernetes verb (`get` for non-resource requests).
    pub verb: &'a str,
    /// Whether this is a resource request (not discovery/OpenAPI).
    pub resource_request: bool,
    /// The CachedResource `(cluster, name)` of the URL.
    pub key: &'a ObjKey,
    /// The target consumer.
    pub target: &'a Target,
}

/// Reads allowed through the virtual workspace.
pub fn is_read_only(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// Decide one request (§6.1).
pub fn authorize(state: &State, a: &Attributes<'_>) -> Decision {
    if !is_read_only(a.verb) {
        return Decision::Deny(
            "write access to Replication virtual workspace is not allowed".into(),
        );
    }
    if let Some(Domain::Slice(kind)) = state.served.get(a.key).map(|s| s.domain) {
        return authorize_slice(state, a, kind);
    }
    let Some(cr) = state.cached_resource(a.key) else {
        return Decision::NoOpinion(
            String::new(),
            Some(format!(
                "cachedresources.cache.kcp.io \"{}\" not found",
                a.key.1
            )),
        );
    };
    let (group, resource, hash) = (&cr.spec.group, &cr.spec.resource, &cr.status.identity_hash);
    let candidates: Vec<(ObjKey, Arc<ApiExport>)> = match (a.target, a.resource_request) {
        (Target::Cluster(cluster), true) => {
            let gr = kube_api::status::qualified(group, resource);
            let binding = match bound_binding(state, cluster, Some(gr)) {
                Ok(b) => b,
                Err(decision) => return decision,
            };
            let Some(binding) = binding else {
                return Decision::Deny(
                    "could not find suitable APIBinding in target logical cluster".into(),
                );
            };
            match state.binding_export(cluster, binding) {
                Some((k, e)) => vec![(k.clone(), e.clone())],
                None => {
                    let name = binding
                        .spec
                        .reference
                        .export
                        .as_ref()
                        .map_or("", |r| r.name.as_str());
                    return Decision::NoOpinion(
                        "APIExport not found".into(),
                        Some(format!("apiexports.apis.kcp.io \"{name}\" not found")),
                    );
                }
            }
        }
        _ => state
            .exports_for(hash, group, resource)
            .into_iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect(),
    };
    let groups = a.user.groups.clone();
    let user = UserRef {
        name: &a.user.name,
        groups: &groups,
    };
    let mut seen = false;
    for ((export_cluster, export_name), export) in &candidates {
        for (_, v) in export.virtual_resources(hash, group, resource) {
            let r = &v.reference;
            if r.api_group.as_deref() != Some("cache.kcp.io")
                || r.kind != "CachedResourceEndpointSlice"
                || r.name != a.key.1
            {
                continue;
            }
            if let Some(denied) = content_denied(state, &user, a.verb, export_cluster, export_name)
            {
                return Decision::Deny(denied);
            }
            seen = true;
        }
    }
    if seen {
        Decision::Allow("found CachedResource reference".into())
    } else {
        Decision::Deny("failed to find suitable reason to allow access to CachedResource".into())
    }
}

/// The SubjectAccessReview of `apiexports/content <export>` in the export's cluster, answered
/// from the cached RBAC objects: `None` when allowed, the denial reason otherwise.
fn content_denied(
    state: &State,
    user: &UserRef<'_>,
    verb: &str,
    export_cluster: &str,
    export_name: &str,
) -> Option<String> {
    let attrs = ResourceAttributes {
        verb,
        group: "apis.kcp.io",
        resource: "apiexports",
        subresource: "content",
        name: export_name,
    };
    let roles = |name: &str| {
        state
            .roles
            .get(&(export_cluster.to_string(), name.to_string()))
    };
    let bindings = state
        .role_bindings
        .range((export_cluster.to_string(), String::new())..)
        .take_while(|(k, _)| k.0 == export_cluster)
        .map(|(_, b)| b);
    match rbac::allows(roles, bindings, user, &attrs) {
        Some(_) => None,
        None => Some(format!(
            "RBAC: user \"{}\" cannot {verb} apiexports/content \"{export_name}\" in workspace \"{export_cluster}\"",
            user.name
        )),
    }
}

/// The APIBinding a consumer's LogicalCluster binds group-resource `gr` to, if it exists
/// (`Ok(None)`: no such binding), or the decision when the consumer cannot be read. A consumer
/// that does not exist is refused exactly like one that binds nothing (kcp: a 500 naming the
/// missing LogicalCluster), so nobody learns which exist.
fn bound_binding<'s>(
    state: &'s State,
    cluster: &str,
    gr: Option<String>,
) -> Result<Option<&'s Arc<kcp_model::types::ApiBinding>>, Decision> {
    let Some(lc) = state.logical_cluster(cluster) else {
        return Err(Decision::Deny("logical cluster not found".into()));
    };
    let bindings = lc.resource_bindings().map_err(|e| {
        Decision::NoOpinion(
            "failed to retrieve bound resources".into(),
            Some(e.to_string()),
        )
    })?;
    Ok(gr
        .and_then(|gr| bindings.get(&gr).cloned())
        .filter(|lock| !lock.n.is_empty())
        .and_then(|lock| state.binding(&(cluster.to_string(), lock.n))))
}

/// Decide one request on a slice-keyed URL (`kcp-head.md` §4.3).
pub fn authorize_slice(state: &State, a: &Attributes<'_>, kind: SliceKind) -> Decision {
    let Some(slice) = state.slice(a.key, kind) else {
        let resource = match kind {
            SliceKind::CachedResource => "cachedresourceendpointslices",
            SliceKind::ClusterCachedResource => "clustercachedresourceendpointslices",
        };
        return Decision::NotFound("cache.kcp.io", resource, a.key.1.clone());
    };
    let Ok(((export_cluster, export_name), export)) = state.slice_export(a.key, slice) else {
        let name = slice
            .spec
            .export
            .as_ref()
            .map_or_else(String::new, |e| e.name.clone());
        return Decision::NotFound("apis.kcp.io", "apiexports", name);
    };
    if let (Target::Cluster(cluster), true) = (a.target, a.resource_request) {
        let gr = State::slice_bound_resource(&export, &a.key.1);
        let binding = match bound_binding(state, cluster, gr) {
            Ok(b) => b,
            Err(decision) => return decision,
        };
        let bound = binding.is_some_and(|b| {
            state
                .binding_export(cluster, b)
                .is_some_and(|(k, _)| *k == (export_cluster.clone(), export_name.clone()))
        });
        if !bound {
            return Decision::Deny(
                "could not find suitable APIBinding in target logical cluster".into(),
            );
        }
    }
    let groups = a.user.groups.clone();
    let user = UserRef {
        name: &a.user.name,
        groups: &groups,
    };
    match content_denied(state, &user, a.verb, &export_cluster, &export_name) {
        Some(reason) => Decision::Deny(reason),
        None => Decision::Allow(format!("found {} reference", kind.slice_kind())),
    }
}
