//! The resources the cache server stores (`kcp-reference.md` §8.5, plus APIBindings).
//!
//! Every resource is schemaless JSON; the table gives each its versions, kind and scope so that
//! requests for anything else answer 404.

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedResource {
    /// API group.
    pub group: &'static str,
    /// Plural resource.
    pub resource: &'static str,
    /// Versions served (any may be read; the stored JSON has its apiVersion rewritten).
    pub versions: &'static [&'static str],
    /// Kind.
    pub kind: &'static str,
    /// Namespaced?
    pub namespaced: bool,
}

const fn r(
    group: &'static str,
    resource: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    namespaced: bool,
) -> ServedResource {
    ServedResource {
        group,
        resource,
        versions,
        kind,
        namespaced,
    }
}

/// All served resources.
pub const RESOURCES: &[ServedResource] = &[
    r(
        "apis.kcp.io",
        "apiresourceschemas",
        &["v1alpha1"],
        "APIResourceSchema",
        false,
    ),
    r(
        "apis.kcp.io",
        "apiconversions",
        &["v1alpha1"],
        "APIConversion",
        false,
    ),
    r(
        "apis.kcp.io",
        "apiexports",
        &["v1alpha1", "v1alpha2"],
        "APIExport",
        false,
    ),
    r(
        "apis.kcp.io",
        "apiexportendpointslices",
        &["v1alpha1"],
        "APIExportEndpointSlice",
        false,
    ),
    r(
        "apis.kcp.io",
        "apibindings",
        &["v1alpha2", "v1alpha1"],
        "APIBinding",
        false,
    ),
    r(
        "core.kcp.io",
        "logicalclusters",
        &["v1alpha1"],
        "LogicalCluster",
        false,
    ),
    r("core.kcp.io", "shards", &["v1alpha1"], "Shard", false),
    r(
        "cache.kcp.io",
        "cachedobjects",
        &["v1alpha1"],
        "CachedObject",
        false,
    ),
    r(
        "cache.kcp.io",
        "cachedresources",
        &["v1alpha1"],
        "CachedResource",
        false,
    ),
    r(
        "cache.kcp.io",
        "cachedresourceendpointslices",
        &["v1alpha1"],
        "CachedResourceEndpointSlice",
        false,
    ),
    // kcp main's names (kcp-head.md §1, §6.4), beside v0.30's.
    r(
        "cache.kcp.io",
        "clustercachedresources",
        &["v1alpha1"],
        "ClusterCachedResource",
        false,
    ),
    r(
        "cache.kcp.io",
        "clustercachedresourceendpointslices",
        &["v1alpha1"],
        "ClusterCachedResourceEndpointSlice",
        false,
    ),
    r(
        "migration.kcp.io",
        "logicalclustermigrations",
        &["v1alpha1"],
        "LogicalClusterMigration",
        false,
    ),
    r(
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicies",
        &["v1beta1", "v1alpha1"],
        "MutatingAdmissionPolicy",
        false,
    ),
    r(
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
        &["v1beta1", "v1alpha1"],
        "MutatingAdmissionPolicyBinding",
        false,
    ),
    r(
        "tenancy.kcp.io",
        "workspacetypes",
        &["v1alpha1"],
        "WorkspaceType",
        false,
    ),
    r(
        "rbac.authorization.k8s.io",
        "clusterroles",
        &["v1"],
        "ClusterRole",
        false,
    ),
    r(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        &["v1"],
        "ClusterRoleBinding",
        false,
    ),
    r("rbac.authorization.k8s.io", "roles", &["v1"], "Role", true),
    r(
        "rbac.authorization.k8s.io",
        "rolebindings",
        &["v1"],
        "RoleBinding",
        true,
    ),
    r(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        &["v1"],
        "MutatingWebhookConfiguration",
        false,
    ),
    r(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        &["v1"],
        "ValidatingWebhookConfiguration",
        false,
    ),
    r(
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        &["v1"],
        "ValidatingAdmissionPolicy",
        false,
    ),
    r(
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        &["v1"],
        "ValidatingAdmissionPolicyBinding",
        false,
    ),
    r(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        &["v1"],
        "CustomResourceDefinition",
        false,
    ),
];

/// Look up a served group/version/resource.
pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ServedResource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.resource == resource && r.versions.contains(&version))
}

/// Whether the table has `resource` in `group` in any version (a system resource, which wins
/// over an identity-based one of the same name).
pub fn is_system(group: &str, resource: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.resource == resource)
}

/// The served resource of an identity-based resource: synthesized from its publishers, made
/// `'static` once per distinct shape (group, resource with identity, kind, scope, versions) and
/// shared from then on, so the handlers treat it like a table entry. The number of shapes is
/// bounded by the publishers ever seen, not by requests.
pub fn intern(s: &super::identity::Synthesized) -> &'static ServedResource {
    use std::sync::{Mutex, OnceLock};
    static INTERNED: OnceLock<Mutex<Vec<&'static ServedResource>>> = OnceLock::new();
    let storage = s.storage_resource();
    let mut interned = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let same = |r: &&&'static ServedResource| {
        r.group == s.group
            && r.resource == storage
            && r.kind == s.kind
            && r.namespaced == s.namespaced
            && r.versions
                .iter()
                .copied()
                .eq(s.versions.iter().map(String::as_str))
    };
    if let Some(found) = interned.iter().find(same) {
        return found;
    }
    let leak = |v: &str| -> &'static str { Box::leak(v.to_string().into_boxed_str()) };
    let versions: Vec<&'static str> = s.versions.iter().map(|v| leak(v)).collect();
    let res: &'static ServedResource = Box::leak(Box::new(ServedResource {
        group: leak(&s.group),
        resource: leak(&storage),
        versions: Box::leak(versions.into_boxed_slice()),
        kind: leak(&s.kind),
        namespaced: s.namespaced,
    }));
    interned.push(res);
    res
}

/// Look up by group and kind (any version), as the seed loader needs.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ServedResource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apibindings_are_served_although_kcp_does_not_replicate_them() {
        assert!(find("apis.kcp.io", "v1alpha2", "apibindings").is_some());
    }

    #[test]
    fn unknown_resources_and_versions_are_not_served() {
        assert!(find("cloud.example.com", "v1", "cpuflavors").is_none());
        assert!(find("cache.kcp.io", "v1", "cachedobjects").is_none());
    }
}
