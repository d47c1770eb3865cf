//! Identity-based resources of kcp v0.32 and main (`kcp-head.md` §2.2): which resource a
//! request for `<plural>:<identityHash>` (or a bare `<plural>` in a concrete cluster) names.
//!
//! From v0.32 on, a shard stores each replicated object in the cache server as itself, under the
//! resource segment `<plural>:<identity>`. The cache server learns what such a resource looks like
//! from the publishers replicated into it: `ClusterCachedResource`s (main) and v0.32
//! `CachedResource`s that carry `status.identityHash` and both `cache.kcp.io/resource-kind` and
//! `cache.kcp.io/resource-scope` annotations (a v0.30 CachedResource has neither annotation and
//! is never a publisher). [`Publishers`] indexes them; [`resolve`] answers one request in
//! §2.2 step 3's order, and [`Synthesized`] is the schemaless resource it yields (§2.2 step 4):
//! every distinct `spec.version` of the matching publishers served, the highest one in kube's
//! version order stored, kind and scope from the annotations.

use kcp_model::types::{ANN_RESOURCE_KIND, ANN_RESOURCE_SCOPE, annotation};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Why a request names no identity-based resource. Both map to client errors at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// `<r>:` with nothing after the colon (kcp answers 500 here; a client's mistake is a 400).
    #[error("invalid resource {0:?}: missing identity")]
    MissingIdentity(String),
    /// No publisher matches: 404.
    #[error("the server could not find the requested resource")]
    NotFound,
}

/// A resource segment split at its first `:`: the plural and the identity, if any.
pub fn split_identity(segment: &str) -> Result<(&str, Option<&str>), IdentityError> {
    match segment.split_once(':') {
        None => Ok((segment, None)),
        Some((_, "")) => Err(IdentityError::MissingIdentity(segment.to_string())),
        Some((plural, identity)) => Ok((plural, Some(identity))),
    }
}

/// One publisher replicated into the cache: a `ClusterCachedResource` or a v0.32
/// `CachedResource` with its identity and both annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// The logical cluster it lives in (the provider workspace).
    pub cluster: String,
    /// Its name.
    pub name: String,
    /// `spec.group` ("" for the core group).
    pub group: String,
    /// `spec.version`.
    pub version: String,
    /// `spec.resource` (plural).
    pub resource: String,
    /// `status.identityHash`.
    pub identity: String,
    /// Kind, from [`ANN_RESOURCE_KIND`].
    pub kind: String,
    /// Namespaced, from [`ANN_RESOURCE_SCOPE`].
    pub namespaced: bool,
}

impl Publisher {
    /// Read a publisher from its stored JSON; `None` for one that lacks the identity hash, either
    /// annotation (or has a scope other than `Cluster`/`Namespaced`), or a resource.
    pub fn from_json(cluster: &str, value: &Value) -> Option<Publisher> {
        let text = |v: &Value, pointer: &str| {
            v.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let kind = annotation(value, ANN_RESOURCE_KIND);
        if kind.is_empty() {
            return None;
        }
        let kind = kind.to_string();
        let namespaced = match annotation(value, ANN_RESOURCE_SCOPE) {
            "Namespaced" => true,
            "Cluster" => false,
            _ => return None,
        };
        let identity = text(value, "/status/identityHash");
        let resource = text(value, "/spec/resource");
        if identity.is_empty() || resource.is_empty() {
            return None;
        }
        Some(Publisher {
            cluster: cluster.to_string(),
            name: text(value, "/metadata/name"),
            group: text(value, "/spec/group"),
            version: text(value, "/spec/version"),
            resource,
            identity,
            kind,
            namespaced,
        })
    }
}

/// Every publisher the cache holds (across shards and clusters).
#[derive(Debug, Clone, Default)]
pub struct Publishers {
    all: Vec<Publisher>,
}

impl Publishers {
    /// Index `publishers` (those [`Publisher::from_json`] accepted).
    pub fn new(publishers: impl IntoIterator<Item = Publisher>) -> Publishers {
        Publishers {
            all: publishers.into_iter().collect(),
        }
    }

    fn of_group_resource<'a>(
        &'a self,
        group: &'a str,
        resource: &'a str,
    ) -> impl Iterator<Item = &'a Publisher> + 'a {
        self.all
            .iter()
            .filter(move |p| p.group == group && p.resource == resource)
    }
}

/// Where a request reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster<'a> {
    /// `clusters/*`.
    Wildcard,
    /// One logical cluster.
    Concrete(&'a str),
}

/// One request for an identity-based resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// API group ("" = core).
    pub group: &'a str,
    /// The resource segment as the URL has it: `<plural>` or `<plural>:<identity>`.
    pub segment: &'a str,
    /// The cluster of the URL.
    pub cluster: Cluster<'a>,
    /// Whether the client asked for `PartialObjectMetadata` (kcp's metadata informers do, on
    /// wildcard requests without an identity).
    pub partial_metadata: bool,
}

/// What a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A resource of the cache server's own table (§2.2 step 3a: a system resource always wins).
    System,
    /// A resource synthesized from the publishers of one identity.
    Identity(Synthesized),
}

/// A schemaless resource synthesized from the publishers sharing one identity and group/resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthesized {
    /// API group.
    pub group: String,
    /// Plural.
    pub resource: String,
    /// The identity: objects live under `<resource>:<identity>`.
    pub identity: String,
    /// Kind.
    pub kind: String,
    /// Lower-cased kind.
    pub singular: String,
    /// Kind + `List`.
    pub list_kind: String,
    /// Namespaced?
    pub namespaced: bool,
    /// Every distinct `spec.version`, highest first in kube's version order.
    pub versions: Vec<String>,
    /// The storage version: the highest.
    pub storage_version: String,
}

impl Synthesized {
    /// The resource segment objects are stored under: `<plural>:<identity>`.
    pub fn storage_resource(&self) -> String {
        format!("{}:{}", self.resource, self.identity)
    }

    fn from(publishers: &[&Publisher]) -> Option<Synthesized> {
        let first = publishers.first()?;
        let versions: BTreeSet<&str> = publishers
            .iter()
            .map(|p| p.version.as_str())
            .filter(|v| !v.is_empty())
            .collect();
        let mut versions: Vec<String> = versions.into_iter().map(str::to_string).collect();
        versions.sort_by(|a, b| compare_versions(b, a));
        Some(Synthesized {
            group: first.group.clone(),
            resource: first.resource.clone(),
            identity: first.identity.clone(),
            kind: first.kind.clone(),
            singular: first.kind.to_lowercase(),
            list_kind: format!("{}List", first.kind),
            namespaced: first.namespaced,
            storage_version: versions.first().cloned().unwrap_or_default(),
            versions,
        })
    }
}

/// Resolve `request` as kcp's cache server does (§2.2 step 3): a system resource named
/// `resource.group` wins (`is_system`); a wildcard cluster with an identity takes every
/// publisher of that identity and group/resource; a wildcard cluster without one only for a
/// `PartialObjectMetadata` request, from any one publisher of the group/resource; a concrete
/// cluster takes the publisher of that group/resource in that cluster whose identity is the
/// requested one (any, when none is requested), then every publisher sharing its identity.
/// Anything else is [`IdentityError::NotFound`].
pub fn resolve(
    publishers: &Publishers,
    is_system: impl Fn(&str, &str) -> bool,
    request: Request<'_>,
) -> Result<Resolution, IdentityError> {
    let (plural, identity) = split_identity(request.segment)?;
    if is_system(request.group, plural) {
        return Ok(Resolution::System);
    }
    let group = request.group;
    let sharing = |identity: &str| -> Vec<&Publisher> {
        publishers
            .of_group_resource(group, plural)
            .filter(|p| p.identity == identity)
            .collect()
    };
    let chosen: Vec<&Publisher> = match (request.cluster, identity) {
        (Cluster::Wildcard, Some(identity)) => sharing(identity),
        (Cluster::Wildcard, None) if request.partial_metadata => {
            match publishers.of_group_resource(group, plural).next() {
                Some(any) => sharing(&any.identity),
                None => Vec::new(),
            }
        }
        (Cluster::Wildcard, None) => Vec::new(),
        (Cluster::Concrete(cluster), identity) => {
            match publishers
                .of_group_resource(group, plural)
                .find(|p| p.cluster == cluster && identity.is_none_or(|i| p.identity == i))
            {
                Some(own) => sharing(&own.identity),
                None => Vec::new(),
            }
        }
    };
    Synthesized::from(&chosen)
        .map(Resolution::Identity)
        .ok_or(IdentityError::NotFound)
}

/// Kubernetes' version order (ascending): versions shaped `v<major>[alpha|beta<minor>]` rank
/// above every other string, GA above beta above alpha, then by major and minor; other strings
/// rank among themselves in reverse lexical order (so that "a" is the highest of them), as in
/// kube's `CompareKubeAwareVersionStrings`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (kube_version(a), kube_version(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => b.cmp(a),
    }
}

/// `(stage, major, minor)` of a kube-shaped version; stage 2 = GA, 1 = beta, 0 = alpha.
fn kube_version(v: &str) -> Option<(u8, u64, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || rest.starts_with('0') {
        return None;
    }
    let major = rest[..digits].parse().ok()?;
    let tail = &rest[digits..];
    if tail.is_empty() {
        return Some((2, major, 0));
    }
    let (stage, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n)
    } else {
        return None;
    };
    if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) || minor.starts_with('0') {
        return None;
    }
    Some((stage, major, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "aaaa1111";
    const B: &str = "bbbb2222";

    fn publisher(cluster: &str, identity: &str, version: &str) -> Publisher {
        Publisher::from_json(
            cluster,
            &json!({
                "apiVersion": "cache.kcp.io/v1alpha1",
                "kind": "ClusterCachedResource",
                "metadata": {"name": "cpuflavors", "annotations": {
                    "cache.kcp.io/resource-kind": "CPUFlavor",
                    "cache.kcp.io/resource-scope": "Cluster"}},
                "spec": {"group": "cloud.example.com", "version": version, "resource": "cpuflavors"},
                "status": {"identityHash": identity}
            }),
        )
        .unwrap()
    }

    fn publishers() -> Publishers {
        Publishers::new([
            publisher("provider-1", A, "v1"),
            publisher("provider-2", A, "v1beta1"),
            publisher("provider-3", B, "v1"),
        ])
    }

    fn request<'a>(segment: &'a str, cluster: Cluster<'a>) -> Request<'a> {
        Request {
            group: "cloud.example.com",
            segment,
            cluster,
            partial_metadata: false,
        }
    }

    fn identity_of(r: Result<Resolution, IdentityError>) -> Synthesized {
        match r {
            Ok(Resolution::Identity(s)) => s,
            other => panic!("not an identity resource: {other:?}"),
        }
    }

    fn no_system(_: &str, _: &str) -> bool {
        false
    }

    #[test]
    fn a_system_resource_of_the_same_name_always_wins() {
        let r = resolve(
            &publishers(),
            |g, r| (g, r) == ("cloud.example.com", "cpuflavors"),
            request("cpuflavors:aaaa1111", Cluster::Wildcard),
        );
        assert_eq!(r, Ok(Resolution::System));
    }

    #[test]
    fn a_wildcard_request_with_an_identity_serves_every_version_its_publishers_publish() {
        let s = identity_of(resolve(
            &publishers(),
            no_system,
            request("cpuflavors:aaaa1111", Cluster::Wildcard),
        ));
        assert_eq!(s.identity, A);
        assert_eq!(s.versions, ["v1", "v1beta1"]);
        assert_eq!(s.storage_version, "v1");
        assert_eq!(
            (s.kind.as_str(), s.singular.as_str(), s.list_kind.as_str()),
            ("CPUFlavor", "cpuflavor", "CPUFlavorList")
        );
        assert!(!s.namespaced);
        assert_eq!(s.storage_resource(), "cpuflavors:aaaa1111");
    }

    #[test]
    fn a_wildcard_request_with_an_unknown_identity_is_not_found() {
        let r = resolve(
            &publishers(),
            no_system,
            request("cpuflavors:cccc", Cluster::Wildcard),
        );
        assert_eq!(r, Err(IdentityError::NotFound));
    }

    #[test]
    fn a_wildcard_request_without_an_identity_is_served_only_for_partial_metadata() {
        let plain = request("cpuflavors", Cluster::Wildcard);
        assert_eq!(
            resolve(&publishers(), no_system, plain),
            Err(IdentityError::NotFound)
        );
        let metadata = Request {
            partial_metadata: true,
            ..plain
        };
        let s = identity_of(resolve(&publishers(), no_system, metadata));
        assert_eq!(s.resource, "cpuflavors");
    }

    #[test]
    fn a_concrete_cluster_resolves_a_bare_plural_through_its_own_publisher() {
        let s = identity_of(resolve(
            &publishers(),
            no_system,
            request("cpuflavors", Cluster::Concrete("provider-3")),
        ));
        assert_eq!((s.identity.as_str(), s.versions.len()), (B, 1));
        // Its identity's other publishers count too.
        let s = identity_of(resolve(
            &publishers(),
            no_system,
            request("cpuflavors", Cluster::Concrete("provider-2")),
        ));
        assert_eq!(s.versions, ["v1", "v1beta1"]);
    }

    #[test]
    fn a_concrete_cluster_without_a_publisher_of_that_identity_is_not_found() {
        for (segment, cluster) in [
            ("cpuflavors:bbbb2222", "provider-1"),
            ("cpuflavors", "consumer"),
            ("memflavors", "provider-1"),
        ] {
            assert_eq!(
                resolve(
                    &publishers(),
                    no_system,
                    request(segment, Cluster::Concrete(cluster))
                ),
                Err(IdentityError::NotFound),
                "{segment} in {cluster}"
            );
        }
    }

    #[test]
    fn an_empty_identity_after_the_colon_is_a_client_error() {
        let r = resolve(
            &publishers(),
            no_system,
            request("cpuflavors:", Cluster::Wildcard),
        );
        assert_eq!(r, Err(IdentityError::MissingIdentity("cpuflavors:".into())));
    }

    #[test]
    fn a_publisher_without_its_identity_or_either_annotation_is_ignored() {
        let full = json!({
            "metadata": {"name": "x", "annotations": {
                "cache.kcp.io/resource-kind": "CPUFlavor",
                "cache.kcp.io/resource-scope": "Namespaced"}},
            "spec": {"group": "g", "version": "v1", "resource": "cpuflavors"},
            "status": {"identityHash": A}
        });
        assert!(Publisher::from_json("c", &full).unwrap().namespaced);
        for pointer in [
            "/metadata/annotations/cache.kcp.io~1resource-kind",
            "/metadata/annotations/cache.kcp.io~1resource-scope",
            "/status/identityHash",
        ] {
            let mut v = full.clone();
            *v.pointer_mut(pointer).unwrap() = Value::Null;
            assert_eq!(Publisher::from_json("c", &v), None, "without {pointer}");
        }
    }

    #[test]
    fn versions_order_as_kube_orders_them() {
        let mut v = vec![
            "v1alpha1",
            "v2",
            "foo10",
            "v1",
            "v1beta2",
            "v10",
            "v1beta1",
            "foo1",
            "v11alpha2",
        ];
        v.sort_by(|a, b| compare_versions(b, a));
        assert_eq!(
            v,
            [
                "v10",
                "v2",
                "v1",
                "v1beta2",
                "v1beta1",
                "v11alpha2",
                "v1alpha1",
                "foo1",
                "foo10"
            ]
        );
    }
}
