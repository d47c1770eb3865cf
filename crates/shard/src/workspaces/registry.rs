//! What a workspace serves: the built-in kinds every workspace has (the few core and RBAC types
//! the CachedResource workflow needs, CustomResourceDefinitions and kcp's own types) plus the
//! custom resources of the workspace's CustomResourceDefinitions, each compiled once into a
//! [`Structural`] schema for pruning, defaulting and validation.

use rest::discovery::ApiResource;
use schema::structural::Structural;
use serde_json::Value;
use std::sync::Arc;

/// One served kind (a resource at one version).
#[derive(Debug, Clone)]
pub struct Kind {
    /// API group ("" = core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced?
    pub namespaced: bool,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// Has a `/status` subresource (status changes only there; spec changes only on the main
    /// resource).
    pub status_subresource: bool,
    /// A built-in kubectl knows: PATCH also takes strategic merge patches.
    pub strategic: bool,
    /// The compiled schema of a custom resource.
    pub schema: Option<Arc<Structural>>,
    /// The raw OpenAPI schema of a custom resource (for OpenAPI documents).
    pub raw_schema: Option<Arc<Value>>,
    /// Additional printer columns of a custom resource.
    pub printer_columns: Vec<Value>,
    /// One-line description (OpenAPI).
    pub description: String,
    /// A virtual resource an APIBinding provides: served read-only by the Replication virtual
    /// workspace of this CachedResource `(cluster, name)`.
    pub virtual_source: Option<(String, String)>,
}

impl Kind {
    /// `<group>/<version>`, or the version alone for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether this is a custom resource of a workspace CRD.
    pub fn is_custom(&self) -> bool {
        self.schema.is_some()
    }

    /// The discovery view.
    pub fn discovery(&self) -> ApiResource {
        let verbs: &[&str] = if self.virtual_source.is_some() {
            &["get", "list", "watch"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        };
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            resource: self.resource.clone(),
            singular: self.singular.clone(),
            kind: self.kind.clone(),
            namespaced: self.namespaced,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            short_names: self.short_names.clone(),
            categories: self.categories.clone(),
            subresources: if self.status_subresource && self.virtual_source.is_none() {
                vec![(
                    "status".to_string(),
                    ["get", "patch", "update"]
                        .iter()
                        .map(|v| v.to_string())
                        .collect(),
                )]
            } else {
                Vec::new()
            },
            storage_version_hash: None,
        }
    }

    /// The OpenAPI view.
    pub fn openapi(&self) -> super::openapi::ApiType {
        super::openapi::ApiType {
            group: self.group.clone(),
            version: self.version.clone(),
            kind: self.kind.clone(),
            list_kind: self.list_kind.clone(),
            plural: self.resource.clone(),
            namespaced: self.namespaced,
            strategic_merge_patch: self.strategic,
            status_subresource: self.status_subresource,
            schema: self.raw_schema.as_deref().cloned(),
            description: self.description.clone(),
        }
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    strategic: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
}

const fn b(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    strategic: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        resource,
        kind,
        namespaced,
        status,
        strategic,
        short_names: &[],
        categories: &[],
    }
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        short_names: &["ns"],
        ..b("", "v1", "namespaces", "Namespace", false, false, true)
    },
    b("", "v1", "secrets", "Secret", true, false, true),
    Builtin {
        short_names: &["cm"],
        ..b("", "v1", "configmaps", "ConfigMap", true, false, true)
    },
    Builtin {
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        ..b(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
            false,
        )
    },
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        false,
        true,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        false,
        true,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        false,
        true,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        false,
        true,
    ),
    Builtin {
        categories: &["kcp"],
        ..b(
            "cache.kcp.io",
            "v1alpha1",
            "cachedresources",
            "CachedResource",
            false,
            true,
            false,
        )
    },
    Builtin {
        categories: &["kcp"],
        ..b(
            "cache.kcp.io",
            "v1alpha1",
            "cachedresourceendpointslices",
            "CachedResourceEndpointSlice",
            false,
            true,
            false,
        )
    },
    // kcp main's names (kcp-head.md §1.1, §1.2).
    Builtin {
        categories: &["kcp"],
        ..b(
            "cache.kcp.io",
            "v1alpha1",
            "clustercachedresources",
            "ClusterCachedResource",
            false,
            true,
            false,
        )
    },
    Builtin {
        categories: &["kcp"],
        ..b(
            "cache.kcp.io",
            "v1alpha1",
            "clustercachedresourceendpointslices",
            "ClusterCachedResourceEndpointSlice",
            false,
            true,
            false,
        )
    },
    Builtin {
        categories: &["kcp"],
        ..b(
            "apis.kcp.io",
            "v1alpha2",
            "apiexports",
            "APIExport",
            false,
            true,
            false,
        )
    },
    Builtin {
        categories: &["kcp"],
        ..b(
            "apis.kcp.io",
            "v1alpha1",
            "apiresourceschemas",
            "APIResourceSchema",
            false,
            false,
            false,
        )
    },
    Builtin {
        categories: &["kcp"],
        ..b(
            "apis.kcp.io",
            "v1alpha2",
            "apibindings",
            "APIBinding",
            false,
            true,
            false,
        )
    },
    Builtin {
        categories: &["kcp"],
        ..b(
            "core.kcp.io",
            "v1alpha1",
            "logicalclusters",
            "LogicalCluster",
            false,
            true,
            false,
        )
    },
];

/// The built-in kinds of every workspace.
pub fn builtins() -> Vec<Kind> {
    let documented = super::openapi::builtin_types();
    BUILTINS
        .iter()
        .map(|x| {
            let doc = documented
                .iter()
                .find(|t| t.group == x.group && t.version == x.version && t.kind == x.kind);
            (x, doc)
        })
        .map(|(x, doc)| Kind {
            group: x.group.to_string(),
            version: x.version.to_string(),
            resource: x.resource.to_string(),
            singular: x.kind.to_ascii_lowercase(),
            kind: x.kind.to_string(),
            list_kind: format!("{}List", x.kind),
            namespaced: x.namespaced,
            short_names: x.short_names.iter().map(|s| s.to_string()).collect(),
            categories: x.categories.iter().map(|s| s.to_string()).collect(),
            status_subresource: x.status,
            strategic: x.strategic,
            schema: None,
            raw_schema: doc.and_then(|d| d.schema.clone()).map(Arc::new),
            printer_columns: builtin_columns(x.resource),
            description: doc.map(|d| d.description.clone()).unwrap_or_default(),
            virtual_source: None,
        })
        .collect()
}

/// The printer columns kcp and kube give some built-in kinds (the rest print Name and Age).
fn builtin_columns(resource: &str) -> Vec<Value> {
    let age = serde_json::json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"});
    let col = |name: &str, path: &str| serde_json::json!({"name": name, "type": "string", "jsonPath": path});
    match resource {
        "cachedresources" => vec![
            col("Resource", ".spec.resource"),
            col("Phase", ".status.phase"),
            age,
        ],
        "cachedresourceendpointslices" => {
            vec![col("CachedResource", ".spec.cachedResource.name"), age]
        }
        "clustercachedresources" => vec![
            serde_json::json!({"name": "Resource", "type": "string", "jsonPath": ".spec.resource",
                "description": "Resource type being published"}),
            age,
        ],
        "clustercachedresourceendpointslices" => vec![
            col("ClusterCachedResource", ".spec.clusterCachedResource.name"),
            age,
        ],
        "logicalclusters" => vec![
            col("Phase", ".status.phase"),
            col("Path", ".metadata.annotations['kcp.io/path']"),
            age,
        ],
        "namespaces" => vec![col("Status", ".status.phase"), age],
        "secrets" => vec![col("Type", ".type"), age],
        "apibindings" => vec![
            col("Export", ".spec.reference.export.name"),
            col("Phase", ".status.phase"),
            age,
        ],
        "customresourcedefinitions" => vec![
            serde_json::json!({"name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        ],
        _ => Vec::new(),
    }
}

/// Errors of compiling a CustomResourceDefinition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrdError {
    /// A required field is missing or malformed.
    #[error("{0}")]
    Invalid(String),
}

/// The served kinds of one CustomResourceDefinition (one per served version), with their
/// schemas compiled.
pub fn crd_kinds(crd: &Value) -> Result<Vec<Kind>, CrdError> {
    let spec = crd
        .get("spec")
        .ok_or_else(|| CrdError::Invalid("spec: Required value".into()))?;
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or("");
    let strings = |p: &str| -> Vec<String> {
        spec.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = s("/group");
    let plural = s("/names/plural");
    let kind = s("/names/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err(CrdError::Invalid(
            "spec.group, spec.names.plural and spec.names.kind are required".into(),
        ));
    }
    let singular = match s("/names/singular") {
        "" => kind.to_ascii_lowercase(),
        x => x.to_string(),
    };
    let list_kind = match s("/names/listKind") {
        "" => format!("{kind}List"),
        x => x.to_string(),
    };
    let namespaced = s("/scope") != "Cluster";
    let mut out = Vec::new();
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            return Err(CrdError::Invalid(
                "spec.versions[].name: Required value".into(),
            ));
        }
        let raw = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        let compiled = Structural::compile(&raw)
            .map_err(|e| CrdError::Invalid(format!("spec.versions[{name}].schema: {e}")))?;
        out.push(Kind {
            group: group.to_string(),
            version: name.to_string(),
            resource: plural.to_string(),
            singular: singular.clone(),
            kind: kind.to_string(),
            list_kind: list_kind.clone(),
            namespaced,
            short_names: strings("/names/shortNames"),
            categories: strings("/names/categories"),
            status_subresource: v.pointer("/subresources/status").is_some(),
            strategic: false,
            schema: Some(Arc::new(compiled)),
            raw_schema: Some(Arc::new(raw)),
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            description: String::new(),
            virtual_source: None,
        });
    }
    Ok(out)
}

/// The served kinds of an APIResourceSchema (its versions hold the OpenAPI schema directly).
pub fn schema_kinds(schema: &Value) -> Result<Vec<Kind>, CrdError> {
    let mut crd = schema.clone();
    if let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for v in versions {
            if let Some(s) = v.get("schema").cloned()
                && let Some(o) = v.as_object_mut()
            {
                o.insert("schema".into(), serde_json::json!({"openAPIV3Schema": s}));
            }
        }
    }
    crd_kinds(&crd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_workspace_serves_namespaces_secrets_crds_and_the_kcp_types() {
        let names: Vec<String> = builtins().iter().map(|k| k.resource.clone()).collect();
        for r in [
            "namespaces",
            "secrets",
            "customresourcedefinitions",
            "cachedresources",
            "cachedresourceendpointslices",
            "clustercachedresources",
            "clustercachedresourceendpointslices",
            "apiexports",
            "apiresourceschemas",
            "apibindings",
            "logicalclusters",
            "clusterroles",
        ] {
            assert!(names.iter().any(|n| n == r), "{r} missing");
        }
    }

    #[test]
    fn a_crd_serves_each_served_version_with_its_schema() {
        let crd = json!({"spec": {"group": "g.io", "scope": "Cluster",
        "names": {"plural": "things", "kind": "Thing"},
        "versions": [
            {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
             "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}}},
            {"name": "v0", "served": false, "storage": false}
        ]}});
        let kinds = crd_kinds(&crd).unwrap();
        assert_eq!(kinds.len(), 1);
        assert_eq!(kinds[0].list_kind, "ThingList");
        assert!(!kinds[0].namespaced && kinds[0].status_subresource && kinds[0].is_custom());
    }

    #[test]
    fn a_crd_without_names_is_invalid() {
        assert!(crd_kinds(&json!({"spec": {"group": "g.io"}})).is_err());
    }
}
