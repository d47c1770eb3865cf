//! The generic replication of kcp API objects into the cache server (`kcp-reference.md` §8.6),
//! so the virtual workspace reads only the cache, as it would behind a real kcp.
//!
//! Replicated: APIExports, APIResourceSchemas, CachedResources, CachedResourceEndpointSlices,
//! ClusterCachedResources and ClusterCachedResourceEndpointSlices (kcp main's names),
//! ClusterRoles that grant `apis.kcp.io` `apiexports/content` or `bind` (or carry
//! `internal.kcp.io/replicate`) and the ClusterRoleBindings of such roles — and, unlike kcp,
//! every LogicalCluster and APIBinding: our virtual workspace has no shard informer and reads
//! consumers from the cache (§11.1). Write protocol: create a copy with `resourceVersion`
//! cleared and `kcp.io/shard`, `cache.kcp.io/original-resource-version` and
//! `cache.kcp.io/original-resource-UID` added (uid and creationTimestamp kept); replace it when
//! anything else differs; delete it when the source is gone or terminating.

use super::*;
use cache_client::{CacheError, Collection};
use std::collections::{BTreeMap, BTreeSet};

/// (group, resource, version) replicated to the cache.
const REPLICATED: &[(&str, &str, &str)] = &[
    ("apis.kcp.io", "apiexports", "v1alpha2"),
    ("apis.kcp.io", "apiresourceschemas", "v1alpha1"),
    ("apis.kcp.io", "apibindings", "v1alpha2"),
    ("cache.kcp.io", "cachedresources", "v1alpha1"),
    ("cache.kcp.io", "cachedresourceendpointslices", "v1alpha1"),
    ("cache.kcp.io", "clustercachedresources", "v1alpha1"),
    (
        "cache.kcp.io",
        "clustercachedresourceendpointslices",
        "v1alpha1",
    ),
    ("core.kcp.io", "logicalclusters", "v1alpha1"),
    ("rbac.authorization.k8s.io", "clusterroles", "v1"),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "v1"),
];

/// Whether a ClusterRole grants `apiexports/content` or `apiexports` `bind` in `apis.kcp.io`.
fn grants_export_access(role: &Value) -> bool {
    role.pointer("/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|rule| {
            let has = |field: &str, want: &[&str]| {
                rule.get(field)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|s| s == "*" || want.contains(&s))
            };
            has("apiGroups", &["apis.kcp.io"])
                && (has("resources", &["apiexports/content"])
                    || (has("resources", &["apiexports"]) && has("verbs", &["bind"])))
        })
}

fn marked(v: &Value) -> bool {
    !str_at(
        v,
        &format!("/metadata/annotations/{}", ANN_REPLICATE.replace('/', "~1")),
    )
    .is_empty()
}

/// The cache copy of a source object, and the same view of a stored copy for comparison.
fn copy_of(source: &Value, shard: &str) -> Value {
    let mut v = source.clone();
    let rv = str_at(source, "/metadata/resourceVersion").to_string();
    let uid = str_at(source, "/metadata/uid").to_string();
    if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("resourceVersion");
        let ann = md.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.remove(ANN_CLUSTER);
            a.insert(ANN_SHARD.into(), json!(shard));
            a.insert(ANN_ORIGINAL_RV.into(), json!(rv));
            a.insert(ANN_ORIGINAL_UID.into(), json!(uid));
        }
    }
    v
}

/// What must match between a source and its copy: everything but the resourceVersion and
/// the annotations the write protocol adds.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("resourceVersion");
        if let Some(a) = md.get_mut("annotations").and_then(Value::as_object_mut) {
            for k in [ANN_CLUSTER, ANN_SHARD, ANN_ORIGINAL_RV, ANN_ORIGINAL_UID] {
                a.remove(k);
            }
            if a.is_empty() {
                md.remove("annotations");
            }
        }
    }
    v
}

/// Replicate every replicated kind.
pub async fn all(c: &Controllers, pass: &mut Pass) -> Result<(), ControllerError> {
    // ClusterRoles granting export access, by cluster, so their bindings follow them.
    let roles_kind = c.kind("rbac.authorization.k8s.io", "clusterroles")?;
    let mut replicated_roles: BTreeSet<(String, String)> = BTreeSet::new();
    for (role, key, _) in c.ws.list_values(&roles_kind, None).await? {
        if marked(&role) || grants_export_access(&role) {
            replicated_roles.insert((key.cluster.to_string(), key.name.to_string()));
        }
    }
    for (group, resource, version) in REPLICATED {
        let kind = c.kind(group, resource)?;
        let mut desired: BTreeMap<(String, String), Value> = BTreeMap::new();
        for (source, key, _) in c.ws.list_values(&kind, None).await? {
            if key.cluster.starts_with("system:")
                || source.pointer("/metadata/deletionTimestamp").is_some()
            {
                continue;
            }
            let wanted = match *resource {
                "clusterroles" => {
                    replicated_roles.contains(&(key.cluster.to_string(), key.name.to_string()))
                }
                "clusterrolebindings" => {
                    marked(&source)
                        || (str_at(&source, "/roleRef/kind") == "ClusterRole"
                            && replicated_roles.contains(&(
                                key.cluster.to_string(),
                                str_at(&source, "/roleRef/name").to_string(),
                            )))
                }
                _ => true,
            };
            if wanted {
                desired.insert(
                    (key.cluster.to_string(), key.name.to_string()),
                    copy_of(&source, &c.shard),
                );
            }
        }
        let mine = Collection {
            group,
            version,
            resource,
            shard: Some(&c.shard),
            cluster: None,
        };
        let mut existing: BTreeMap<(String, String), (store::Record, Value)> = BTreeMap::new();
        for r in c.cache.list(mine).await? {
            if let Ok(v) = serde_json::from_slice::<Value>(&r.value) {
                existing.insert((r.key.cluster.to_string(), r.key.name.to_string()), (r, v));
            }
        }
        for ((cluster, name), copy) in desired {
            let at = Collection {
                cluster: Some(&cluster),
                ..mine
            };
            match existing.remove(&(cluster.clone(), name.clone())) {
                Some((_, stored)) if comparable(&stored) == comparable(&copy) => {}
                Some(_) => match c.cache.update(at, &name, copy).await {
                    Ok(_) | Err(CacheError::Conflict) | Err(CacheError::NotFound) => pass.wrote(),
                    Err(e) => return Err(e.into()),
                },
                None => match c.cache.create(at, copy).await {
                    Ok(_) | Err(CacheError::AlreadyExists) => pass.wrote(),
                    Err(e) => return Err(e.into()),
                },
            }
        }
        for (_, (r, _)) in existing {
            let at = Collection {
                cluster: Some(&r.key.cluster),
                ..mine
            };
            match c.cache.delete(at, &r.key.name).await {
                Ok(_) => pass.wrote(),
                Err(CacheError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_granting_export_content_or_bind_are_replicated() {
        let content = json!({"rules": [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexports/content"], "verbs": ["get"]}]});
        let bind = json!({"rules": [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexports"], "verbs": ["bind"]}]});
        let other =
            json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
        assert!(grants_export_access(&content));
        assert!(grants_export_access(&bind));
        assert!(!grants_export_access(&other));
    }

    #[test]
    fn a_copy_differs_from_its_source_only_in_the_protocol_annotations() {
        let source = json!({"metadata": {"name": "x", "uid": "u", "resourceVersion": "7",
            "annotations": {"kcp.io/cluster": "c1", "a": "b"}}, "spec": {"k": 1}});
        let copy = copy_of(&source, "root");
        assert_eq!(
            copy["metadata"]["annotations"]["cache.kcp.io/original-resource-version"],
            "7"
        );
        assert_eq!(copy["metadata"]["annotations"]["kcp.io/shard"], "root");
        assert!(copy["metadata"].get("resourceVersion").is_none());
        assert_eq!(comparable(&copy), comparable(&source));
    }
}
