//! What kcp's shard controllers compute, as plain functions over manifests: identity hashes
//! (§2.4), CachedResource status (§2.2), default endpoint slices and their URLs (§2.6, §3.3,
//! §3.4), APIBinding status and resource-bindings annotations (§4.3, §4.4), and CachedObject
//! wrapping (§1.3–§1.5). A later issue runs them continuously as controllers.

use super::Manifest;
use crate::model::naming::{cached_object_name, identity_hash};
use crate::model::types::*;
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// What to write, in order.
#[derive(Debug, Default)]
pub struct Plan {
    /// `(cluster, object)` in dependency order.
    pub objects: Vec<(String, Value)>,
    /// Number of CachedObjects.
    pub wrapped: usize,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn group_of(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

fn annotations_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let md = obj
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let ann = md
        .as_object_mut()?
        .entry("annotations")
        .or_insert_with(|| json!({}));
    if !ann.is_object() {
        *ann = json!({});
    }
    ann.as_object_mut()
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    let mut c = json!({"type": type_, "status": if status { "True" } else { "False" }, "lastTransitionTime": now});
    if !status {
        c["severity"] = json!("Error");
        c["reason"] = json!(reason);
        c["message"] = json!(message);
    }
    c
}

/// The bytes of a Secret's `data.key` (`stringData` wins, as the API server merges it).
pub fn secret_key(secret: &Value) -> Option<Vec<u8>> {
    if let Some(s) = secret.pointer("/stringData/key").and_then(Value::as_str) {
        return Some(s.as_bytes().to_vec());
    }
    let b64 = secret.pointer("/data/key").and_then(Value::as_str)?;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
}

/// A random identity key as kcp generates one: 32 random bytes, URL-safe base64, no padding.
pub fn random_identity_key() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether `labels` contain every `match_labels` pair.
pub fn selects(match_labels: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Wrap a source object into a CachedObject (§1.3–§1.5). `source` must carry uid and
/// resourceVersion.
pub fn wrap(source: &Value, group: &str, version: &str, resource: &str, shard: &str) -> Value {
    let ns = str_at(source, "/metadata/namespace");
    let name = str_at(source, "/metadata/name");
    let mut inner = source.clone();
    let uid = str_at(source, "/metadata/uid").to_string();
    let rv = str_at(source, "/metadata/resourceVersion").to_string();
    if let Some(a) = annotations_mut(&mut inner) {
        a.insert(ANN_SHARD.into(), json!(shard));
        a.insert(ANN_ORIGINAL_UID.into(), json!(uid));
        a.insert(ANN_ORIGINAL_RV.into(), json!(rv));
    }
    let g = if group.is_empty() { "core" } else { group };
    let mut labels: Map<String, Value> = source
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in [
        (LABEL_OBJECT_SCHEMA, format!("{version}.{resource}.{g}")),
        (LABEL_OBJECT_GROUP, g.to_string()),
        (LABEL_OBJECT_VERSION, version.to_string()),
        (LABEL_OBJECT_RESOURCE, resource.to_string()),
        (LABEL_OBJECT_NAME, name.to_string()),
        (LABEL_OBJECT_NAMESPACE, ns.to_string()),
    ] {
        labels.insert(k.into(), json!(v));
    }
    let annotations = inner
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or(json!({}));
    json!({
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "CachedObject",
        "metadata": {
            "name": cached_object_name(group, version, resource, ns, name),
            "creationTimestamp": crate::api::now_rfc3339(),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"raw": inner},
    })
}

/// The endpoint URL a server publishes for a CachedResource (§3.3).
pub fn endpoint_url(vw_url: &str, cr_cluster: &str, cr_name: &str) -> String {
    format!(
        "{}/services/replication/{cr_cluster}/{cr_name}",
        vw_url.trim_end_matches('/')
    )
}

/// The default endpoint slice of a CachedResource (§2.6).
pub fn default_endpoint_slice(cr: &Value, cluster: &str, endpoints: &[String], now: &str) -> Value {
    let name = str_at(cr, "/metadata/name");
    let path = str_at(cr, "/metadata/annotations/kcp.io~1path");
    let mut reference = json!({"name": name});
    if !path.is_empty() {
        reference["path"] = json!(path);
    }
    json!({
        "apiVersion": "cache.kcp.io/v1alpha1",
        "kind": "CachedResourceEndpointSlice",
        "metadata": {
            "name": name,
            "annotations": {ANN_CLUSTER: cluster},
            "ownerReferences": [{"apiVersion": "cache.kcp.io/v1alpha1", "kind": "CachedResource", "name": name, "uid": str_at(cr, "/metadata/uid")}],
        },
        "spec": {"cachedResource": reference},
        "status": {
            "conditions": [condition("PartitionValid", true, "", "", now), condition("ResourceValid", true, "", "", now)],
            "endpoints": endpoints.iter().map(|u| json!({"url": u})).collect::<Vec<_>>(),
        },
    })
}

struct Ctx<'a> {
    shard: &'a str,
    now: String,
    rv: u64,
}

impl Ctx<'_> {
    /// Fill what the shard's storage would: uid, resourceVersion, creationTimestamp,
    /// generation, and the replication annotations of §8.6.
    fn stamp(&mut self, obj: &mut Value, replicated: bool) {
        self.rv += 1;
        let rv = self.rv.to_string();
        let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        let uid = md
            .get("uid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        md.insert("uid".into(), json!(uid));
        md.insert("resourceVersion".into(), json!(rv));
        md.entry("creationTimestamp")
            .or_insert_with(|| json!(self.now));
        md.entry("generation").or_insert(json!(1));
        if replicated {
            let ann = md.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = ann.as_object_mut() {
                a.insert(ANN_SHARD.into(), json!(self.shard));
                a.insert(ANN_ORIGINAL_UID.into(), json!(uid));
                a.insert(ANN_ORIGINAL_RV.into(), json!(rv));
            }
        }
    }
}

fn indices(objects: &[(String, Value)], kind: &str) -> Vec<usize> {
    objects
        .iter()
        .enumerate()
        .filter(|(_, (_, o))| str_at(o, "/kind") == kind)
        .map(|(i, _)| i)
        .collect()
}

fn is_kcp_api(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "apis.kcp.io",
            "APIExport" | "APIResourceSchema" | "APIBinding"
        ) | ("core.kcp.io", "LogicalCluster" | "Shard")
            | (
                "cache.kcp.io",
                "CachedResource" | "CachedResourceEndpointSlice"
            )
            | (
                "rbac.authorization.k8s.io",
                "ClusterRole" | "ClusterRoleBinding"
            )
    )
}

/// Compute everything the shard would write for these manifests.
pub fn plan(manifests: Vec<Manifest>, shard: &str, external_url: &str) -> Plan {
    let mut ctx = Ctx {
        shard,
        now: crate::api::now_rfc3339(),
        rv: 1000,
    };
    let mut secrets: BTreeMap<(String, String, String), Value> = BTreeMap::new();
    let mut crds: Vec<(String, Value)> = Vec::new();
    let mut kcp: Vec<(String, Value)> = Vec::new();
    let mut sources: Vec<(String, Value)> = Vec::new();
    for Manifest {
        cluster,
        mut object,
    } in manifests
    {
        let (group, _) = group_of(str_at(&object, "/apiVersion"));
        let kind = str_at(&object, "/kind").to_string();
        let group = group.to_string();
        if group.is_empty() && kind == "Secret" {
            let ns = str_at(&object, "/metadata/namespace").to_string();
            let name = str_at(&object, "/metadata/name").to_string();
            secrets.insert((cluster, ns, name), object);
        } else if group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition" {
            crds.push((cluster, object));
        } else if is_kcp_api(&group, &kind) {
            ctx.stamp(&mut object, true);
            kcp.push((cluster, object));
        } else if group.is_empty() {
            tracing::debug!(%kind, "Seed: ignoring a core object.");
        } else {
            ctx.stamp(&mut object, false);
            sources.push((cluster, object));
        }
    }
    let identity_of = |cluster: &str, obj: &Value, name: &str| -> (String, Value) {
        let mut sref = obj
            .pointer("/spec/identity/secretRef")
            .cloned()
            .unwrap_or(Value::Null);
        if sref.is_null() {
            sref = json!({"namespace": "kcp-system", "name": name});
        }
        let key = secrets
            .get(&(
                cluster.to_string(),
                str_at(&sref, "/namespace").to_string(),
                str_at(&sref, "/name").to_string(),
            ))
            .and_then(secret_key)
            .unwrap_or_else(|| random_identity_key().into_bytes());
        (identity_hash(&key), sref)
    };
    // Resource plural for (cluster, group, kind): the seed's CRDs, else any APIResourceSchema.
    let plural = |cluster: &str, group: &str, kind: &str| -> Option<(String, String)> {
        for (c, crd) in &crds {
            if c == cluster
                && str_at(crd, "/spec/group") == group
                && str_at(crd, "/spec/names/kind") == kind
            {
                return Some((
                    str_at(crd, "/spec/names/plural").to_string(),
                    str_at(crd, "/spec/scope").to_string(),
                ));
            }
        }
        kcp.iter()
            .filter(|(_, o)| str_at(o, "/kind") == "APIResourceSchema")
            .find(|(_, o)| {
                str_at(o, "/spec/group") == group && str_at(o, "/spec/names/kind") == kind
            })
            .map(|(_, o)| {
                (
                    str_at(o, "/spec/names/plural").to_string(),
                    str_at(o, "/spec/scope").to_string(),
                )
            })
    };
    // Source objects with their plural resource.
    let sources: Vec<(String, Value, String)> = sources
        .into_iter()
        .map(|(cluster, o)| {
            let (group, _) = group_of(str_at(&o, "/apiVersion"));
            let kind = str_at(&o, "/kind");
            let resource = plural(&cluster, group, kind)
                .map(|p| p.0)
                .unwrap_or_else(|| format!("{}s", kind.to_ascii_lowercase()));
            (cluster, o, resource)
        })
        .collect();
    // APIExports: identity.
    for i in indices(&kcp, "APIExport") {
        let (cluster, obj) = &kcp[i];
        let name = str_at(obj, "/metadata/name").to_string();
        let (hash, sref) = identity_of(cluster, obj, &name);
        let obj = &mut kcp[i].1;
        obj["spec"]["identity"] = json!({"secretRef": sref});
        obj["status"] = json!({"identityHash": hash, "conditions": [condition("IdentityValid", true, "", "", &ctx.now)]});
    }
    // CachedResources: identity, validity, counts, phase.
    let mut wrapped: Vec<(String, Value)> = Vec::new();
    for i in indices(&kcp, "CachedResource") {
        let (cluster, obj) = kcp[i].clone();
        let name = str_at(&obj, "/metadata/name").to_string();
        let (hash, sref) = identity_of(&cluster, &obj, &name);
        let cr: CachedResource = serde_json::from_value(obj.clone()).unwrap_or_default();
        let (g, v, r) = (&cr.spec.group, &cr.spec.version, &cr.spec.resource);
        let scope = crds
            .iter()
            .find(|(c, crd)| {
                *c == cluster
                    && str_at(crd, "/spec/group") == g
                    && str_at(crd, "/spec/names/plural") == r
            })
            .map(|(_, crd)| str_at(crd, "/spec/scope").to_string());
        let cluster_scoped = scope.as_deref() != Some("Namespaced");
        let match_labels = cr
            .spec
            .label_selector
            .map(|s| s.match_labels)
            .unwrap_or_default();
        let mut local = 0;
        for (c, o, resource) in &sources {
            let (og, ov) = group_of(str_at(o, "/apiVersion"));
            if c != &cluster
                || og != g
                || resource != r
                || !selects(&match_labels, &crate::api::labels_of(o))
            {
                continue;
            }
            local += 1;
            if cluster_scoped && ov == v {
                wrapped.push((cluster.clone(), wrap(o, g, v, r, shard)));
            }
        }
        let now = ctx.now.clone();
        let resource_valid = if cluster_scoped {
            condition("ResourceValid", true, "", "", &now)
        } else {
            condition(
                "ResourceValid",
                false,
                "ResourceNotClusterScoped",
                &format!("Resource {r}.{g} is not cluster-scoped"),
                &now,
            )
        };
        let cached = if cluster_scoped { local } else { 0 };
        let o = &mut kcp[i].1;
        o["spec"]["identity"] = json!({"secretRef": sref});
        if let Some(md) = o["metadata"].as_object_mut() {
            md.insert("finalizers".into(), json!(["cachedresource.cache.kcp.dev"]));
        }
        o["status"] = json!({
            "identityHash": hash,
            "phase": if cluster_scoped { "Ready" } else { "Initializing" },
            "resourceCounts": {"cache": cached, "local": local},
            "conditions": [condition("IdentityValid", true, "", "", &now), condition("ReplicationStarted", cluster_scoped, "", "", &now), resource_valid],
        });
    }
    // APIBindings: status from the export; consumer annotations.
    let export_index: Vec<(String, Value)> = indices(&kcp, "APIExport")
        .into_iter()
        .map(|i| kcp[i].clone())
        .collect();
    let find_export = |path: &str, name: &str| {
        export_index
            .iter()
            .find(|(c, e)| {
                str_at(e, "/metadata/name") == name
                    && (c == path || str_at(e, "/metadata/annotations/kcp.io~1path") == path)
            })
            .cloned()
    };
    let schemas: Vec<(String, Value)> = indices(&kcp, "APIResourceSchema")
        .into_iter()
        .map(|i| kcp[i].clone())
        .collect();
    let mut resource_bindings: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut bound_exports: BTreeSet<(String, String)> = BTreeSet::new();
    for i in indices(&kcp, "APIBinding") {
        let (cluster, obj) = kcp[i].clone();
        let binding_name = str_at(&obj, "/metadata/name").to_string();
        let path = match str_at(&obj, "/spec/reference/export/path") {
            "" => cluster.clone(),
            p => p.to_string(),
        };
        let export_name = str_at(&obj, "/spec/reference/export/name").to_string();
        let now = ctx.now.clone();
        let status = match find_export(&path, &export_name) {
            None => json!({"phase": "Binding", "conditions": [
                condition("APIExportValid", false, "APIExportNotFound", &format!("APIExport {path}:{export_name} not found"), &now),
                condition("Ready", false, "APIExportNotFound", "", &now)]}),
            Some((ecluster, export)) => {
                bound_exports.insert((ecluster.clone(), export_name.clone()));
                let export_hash = str_at(&export, "/status/identityHash").to_string();
                let mut bound = Vec::new();
                for res in export
                    .pointer("/spec/resources")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let (g, r, sname) = (
                        str_at(&res, "/group"),
                        str_at(&res, "/name"),
                        str_at(&res, "/schema"),
                    );
                    let uid = schemas
                        .iter()
                        .find(|(c, s)| *c == ecluster && str_at(s, "/metadata/name") == sname)
                        .map(|(_, s)| str_at(s, "/metadata/uid").to_string())
                        .unwrap_or_default();
                    bound.push(json!({"group": g, "resource": r, "schema": {"name": sname, "UID": uid, "identityHash": export_hash}, "storageVersions": []}));
                    let gr = if g.is_empty() {
                        r.to_string()
                    } else {
                        format!("{r}.{g}")
                    };
                    resource_bindings
                        .entry(cluster.clone())
                        .or_default()
                        .insert(gr, json!({"n": binding_name}));
                }
                let conds: Vec<Value> = [
                    "APIExportValid",
                    "BindingUpToDate",
                    "InitialBindingCompleted",
                    "PermissionClaimsApplied",
                    "PermissionClaimsValid",
                    "Ready",
                ]
                .iter()
                .map(|t| condition(t, true, "", "", &now))
                .collect();
                json!({"apiExportClusterName": ecluster, "phase": "Bound", "boundResources": bound, "conditions": conds})
            }
        };
        kcp[i].1["status"] = status;
    }
    for i in indices(&kcp, "LogicalCluster") {
        let cluster = kcp[i].0.clone();
        if let Some(rb) = resource_bindings.get(&cluster)
            && let Some(a) = annotations_mut(&mut kcp[i].1)
        {
            let mut merged: BTreeMap<String, Value> = a
                .get(ANN_RESOURCE_BINDINGS)
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            merged.extend(rb.clone());
            a.insert(
                ANN_RESOURCE_BINDINGS.into(),
                json!(serde_json::to_string(&merged).unwrap_or_default()),
            );
        }
    }
    // Default endpoint slices, with this server's URL when the export has consumers (§3.4).
    let mut slices = Vec::new();
    for i in indices(&kcp, "CachedResource") {
        let (cluster, cr) = &kcp[i];
        let name = str_at(cr, "/metadata/name");
        if cr
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ANN_SKIP_ENDPOINTSLICE))
            .is_some()
        {
            continue;
        }
        if kcp.iter().any(|(c, o)| {
            c == cluster
                && str_at(o, "/kind") == "CachedResourceEndpointSlice"
                && str_at(o, "/metadata/name") == name
        }) {
            continue;
        }
        let hash = str_at(cr, "/status/identityHash");
        let (g, r) = (str_at(cr, "/spec/group"), str_at(cr, "/spec/resource"));
        let has_consumers = export_index.iter().any(|(ec, e)| {
            let export: ApiExport = serde_json::from_value(e.clone()).unwrap_or_default();
            export.virtual_resources(hash, g, r).next().is_some()
                && bound_exports.contains(&(ec.clone(), export.metadata.name.clone()))
        });
        let endpoints = if has_consumers {
            vec![endpoint_url(external_url, cluster, name)]
        } else {
            Vec::new()
        };
        let mut slice = default_endpoint_slice(cr, cluster, &endpoints, &ctx.now);
        ctx.stamp(&mut slice, true);
        slices.push((cluster.clone(), slice));
    }
    // The local shard itself.
    let mut shard_obj = json!({
        "apiVersion": "core.kcp.io/v1alpha1", "kind": "Shard",
        "metadata": {"name": shard, "annotations": {ANN_CLUSTER: "root"}},
        "spec": {"baseURL": external_url, "externalURL": external_url, "virtualWorkspaceURL": external_url},
    });
    ctx.stamp(&mut shard_obj, true);
    // Dependency order.
    let order = [
        "Shard",
        "LogicalCluster",
        "ClusterRole",
        "ClusterRoleBinding",
        "APIResourceSchema",
        "CachedResource",
        "APIExport",
        "CachedResourceEndpointSlice",
        "APIBinding",
    ];
    let mut objects = vec![("root".to_string(), shard_obj)];
    for kind in order {
        objects.extend(
            kcp.iter()
                .filter(|(_, o)| str_at(o, "/kind") == kind)
                .cloned(),
        );
        if kind == "CachedResourceEndpointSlice" {
            objects.append(&mut slices);
        }
    }
    let count = wrapped.len();
    objects.extend(wrapped);
    Plan {
        objects,
        wrapped: count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_names_labels_and_annotates_as_kcp_does() {
        let src = json!({"apiVersion": "cloud.example.com/v1", "kind": "CPUFlavor",
            "metadata": {"name": "cpu-small", "uid": "u-1", "resourceVersion": "1204",
                "labels": {"cloud.example.com/visibility": "Public"}, "annotations": {"kcp.io/cluster": "1p5f2x8rkq0vd7wz"}},
            "spec": {"cores": 2}});
        let w = wrap(&src, "cloud.example.com", "v1", "cpuflavors", "shard-1");
        assert_eq!(
            w["metadata"]["name"],
            "92k7fjvr2dwuyncnkt87kyf2wzsw6h421v96lrighsy0946u0"
        );
        assert_eq!(
            w["metadata"]["labels"]["cache.kcp.io/object-schema"],
            "v1.cpuflavors.cloud.example.com"
        );
        assert_eq!(
            w["metadata"]["labels"]["cache.kcp.io/object-original-namespace"],
            ""
        );
        assert_eq!(
            w["metadata"]["labels"]["cloud.example.com/visibility"],
            "Public"
        );
        assert_eq!(
            w["spec"]["raw"]["metadata"]["annotations"]["cache.kcp.io/original-resource-UID"],
            "u-1"
        );
        assert_eq!(
            w["spec"]["raw"]["metadata"]["annotations"]["cache.kcp.io/original-resource-version"],
            "1204"
        );
        assert_eq!(
            w["spec"]["raw"]["metadata"]["annotations"]["kcp.io/shard"],
            "shard-1"
        );
    }

    #[test]
    fn secret_keys_come_from_string_data_or_base64_data() {
        assert_eq!(
            secret_key(&json!({"stringData": {"key": "abc"}})).unwrap(),
            b"abc"
        );
        assert_eq!(
            secret_key(&json!({"data": {"key": "Y3B1Zmxhdm9ycy12MS1pZGVudGl0eS1rZXk="}})).unwrap(),
            b"cpuflavors-v1-identity-key"
        );
    }

    #[test]
    fn endpoint_urls_join_without_double_slashes() {
        assert_eq!(
            endpoint_url(
                "https://shard-1.kcp.example.com:6443/",
                "1p5f2x8rkq0vd7wz",
                "cpuflavors-v1"
            ),
            "https://shard-1.kcp.example.com:6443/services/replication/1p5f2x8rkq0vd7wz/cpuflavors-v1"
        );
    }

    #[test]
    fn random_identity_keys_are_43_url_safe_characters() {
        let k = random_identity_key();
        assert_eq!(k.len(), 43);
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
