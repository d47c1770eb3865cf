//! Read views of the kcp and Kubernetes objects the read path consults.
//!
//! These structs decode only the fields the cache server, the virtual workspace and the seed
//! loader look at; unknown fields are ignored, missing ones default. Writers keep working on
//! the original JSON so nothing is lost on a round trip.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Annotation: the logical cluster an object lives in.
pub const ANN_CLUSTER: &str = "kcp.io/cluster";
/// Annotation: the shard that wrote an object.
pub const ANN_SHARD: &str = "kcp.io/shard";
/// Annotation: the workspace path.
pub const ANN_PATH: &str = "kcp.io/path";
/// Inner annotation: the source object's uid.
pub const ANN_ORIGINAL_UID: &str = "cache.kcp.io/original-resource-UID";
/// Inner annotation: the source object's resourceVersion.
pub const ANN_ORIGINAL_RV: &str = "cache.kcp.io/original-resource-version";
/// LogicalCluster annotation: bound resources, JSON `{"<r>.<g>": {"n": "<binding>"}}`.
pub const ANN_RESOURCE_BINDINGS: &str = "internal.apis.kcp.io/resource-bindings";
/// Annotation: replicate this object to the cache.
pub const ANN_REPLICATE: &str = "internal.kcp.io/replicate";
/// CachedResource annotation: do not create the default endpoint slice.
pub const ANN_SKIP_ENDPOINTSLICE: &str = "cachedresources.cache.kcp.io/skip-endpointslice";
/// CachedObject labels (§1.4).
pub const LABEL_OBJECT_SCHEMA: &str = "cache.kcp.io/object-schema";
/// Wrapped object's group (`core` for "").
pub const LABEL_OBJECT_GROUP: &str = "cache.kcp.io/object-group";
/// Wrapped object's version.
pub const LABEL_OBJECT_VERSION: &str = "cache.kcp.io/object-version";
/// Wrapped object's resource.
pub const LABEL_OBJECT_RESOURCE: &str = "cache.kcp.io/object-resource";
/// Wrapped object's name.
pub const LABEL_OBJECT_NAME: &str = "cache.kcp.io/object-original-name";
/// Wrapped object's namespace ("" when cluster-scoped).
pub const LABEL_OBJECT_NAMESPACE: &str = "cache.kcp.io/object-original-namespace";

/// `metadata` fields the read path uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Uid.
    pub uid: String,
    /// resourceVersion.
    pub resource_version: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Set while the object is being deleted.
    pub deletion_timestamp: Option<String>,
    /// Creation time.
    pub creation_timestamp: Option<String>,
    /// Finalizers.
    pub finalizers: Vec<String>,
}

impl ObjectMeta {
    /// The `kcp.io/cluster` annotation, or "".
    pub fn cluster(&self) -> &str {
        self.annotation(ANN_CLUSTER)
    }

    /// An annotation's value, or "".
    pub fn annotation(&self, key: &str) -> &str {
        self.annotations.get(key).map(String::as_str).unwrap_or("")
    }
}

/// `{namespace, name}` reference to a Secret.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct SecretRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A kcp condition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// `cache.kcp.io/v1alpha1` CachedResource.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CachedResource {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: CachedResourceSpec,
    /// Status.
    pub status: CachedResourceStatus,
}

/// The annotation a v0.32/main CachedResource controller sets with the resource's Kind
/// (`kcp-head.md` §1.1); v0.30 never sets it.
pub const ANN_RESOURCE_KIND: &str = "cache.kcp.io/resource-kind";
/// The annotation with the published resource's scope (`Cluster` or `Namespaced`), set next to
/// [`ANN_RESOURCE_KIND`].
pub const ANN_RESOURCE_SCOPE: &str = "cache.kcp.io/resource-scope";
/// The annotation that makes a CachedResource follow kcp v0.32 (`v0.32`) when it is created
/// with it; fixed afterwards.
pub const ANN_GENERATION: &str = "replication-vw.dev/generation";

/// The value of annotation `key` of a JSON object, or "".
pub fn annotation<'a>(object: &'a serde_json::Value, key: &str) -> &'a str {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

/// The finalizer of a v0.32 CachedResource (v0.30's is `cachedresource.cache.kcp.dev`).
pub const FINALIZER_CACHED_RESOURCE_V032: &str = "cache.kcp.io/cachedresource";

impl CachedResource {
    /// Whether this CachedResource belongs to the v0.32 generation (objects stored as
    /// themselves, served on slice-keyed URLs): it carries the resource-kind annotation or the
    /// v0.32 finalizer. Such a CachedResource is never served on v0.30's CachedResource-keyed URL.
    pub fn is_identity_generation(&self) -> bool {
        self.metadata.annotations.contains_key(ANN_RESOURCE_KIND)
            || self
                .metadata
                .finalizers
                .iter()
                .any(|f| f == FINALIZER_CACHED_RESOURCE_V032)
    }
}

/// CachedResource spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CachedResourceSpec {
    /// API group ("" = core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Identity secret.
    pub identity: Option<Identity>,
    /// Label selector (only matchLabels is honoured).
    pub label_selector: Option<MatchLabels>,
}

/// `spec.identity`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Identity {
    /// The Secret holding `data.key`.
    pub secret_ref: Option<SecretRef>,
}

/// A LabelSelector of which only `matchLabels` matters here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MatchLabels {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
}

/// CachedResource status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CachedResourceStatus {
    /// Identity hash.
    pub identity_hash: String,
    /// Phase.
    pub phase: String,
    /// Conditions.
    pub conditions: Vec<Condition>,
}

impl CachedResource {
    /// Whether condition `type_` is True.
    pub fn condition_true(&self, type_: &str) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    }
}

/// `cache.kcp.io/v1alpha1` CachedResourceEndpointSlice.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointSlice {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: EndpointSliceSpec,
    /// Status.
    pub status: EndpointSliceStatus,
}

/// Endpoint slice spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSliceSpec {
    /// The CachedResource reference (v0.30, v0.32).
    pub cached_resource: PathName,
    /// The ClusterCachedResource reference (kcp main's ClusterCachedResourceEndpointSlice).
    pub cluster_cached_resource: PathName,
    /// The APIExport whose virtual resource references this slice (v0.32 and main; absent on
    /// v0.30, where the URL is keyed by the CachedResource instead of the slice).
    pub export: Option<PathName>,
    /// The partition limiting the shards that publish.
    pub partition: String,
}

impl EndpointSlice {
    /// The referenced (Cluster)CachedResource, whichever field names it.
    pub fn resource_ref(&self) -> &PathName {
        if self.spec.cluster_cached_resource.name.is_empty() {
            &self.spec.cached_resource
        } else {
            &self.spec.cluster_cached_resource
        }
    }
}

/// Endpoint slice status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointSliceStatus {
    /// Published URLs.
    pub endpoints: Vec<Endpoint>,
    /// Conditions (`ResourceValid`, `APIExportValid`, `PartitionValid`).
    pub conditions: Vec<Condition>,
}

impl EndpointSlice {
    /// Whether condition `type_` is True.
    pub fn condition_true(&self, type_: &str) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    }
}

/// One published URL (with kcp main's optional `shards` selector).
pub use crate::endpoints::Endpoint;

/// `{path?, name}` reference.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PathName {
    /// Logical cluster path ("" = the referrer's own workspace).
    pub path: String,
    /// Name.
    pub name: String,
}

/// `apis.kcp.io/v1alpha2` APIExport.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiExport {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ApiExportSpec,
    /// Status.
    pub status: ApiExportStatus,
}

/// APIExport spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiExportSpec {
    /// Exported resources.
    pub resources: Vec<ExportResource>,
    /// Identity secret.
    pub identity: Option<Identity>,
}

/// APIExport status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiExportStatus {
    /// The export's own identity hash.
    pub identity_hash: String,
}

/// One `spec.resources[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExportResource {
    /// Plural resource.
    pub name: String,
    /// Group.
    pub group: String,
    /// APIResourceSchema name in the export's workspace.
    pub schema: String,
    /// Storage.
    pub storage: ExportStorage,
}

/// `storage`: exactly one of crd / virtual.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExportStorage {
    /// Virtual storage.
    #[serde(rename = "virtual")]
    pub virtual_: Option<VirtualStorage>,
}

/// `storage.virtual`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualStorage {
    /// Reference to the endpoint slice.
    pub reference: TypedReference,
    /// The CachedResource's identity hash.
    pub identity_hash: String,
}

/// TypedLocalObjectReference.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TypedReference {
    /// API group.
    pub api_group: Option<String>,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl ApiExport {
    /// The virtual resource entries with identity `hash` and group-resource (`group`, `resource`).
    pub fn virtual_resources<'a>(
        &'a self,
        hash: &'a str,
        group: &'a str,
        resource: &'a str,
    ) -> impl Iterator<Item = (&'a ExportResource, &'a VirtualStorage)> + 'a {
        self.spec.resources.iter().filter_map(move |r| {
            let v = r.storage.virtual_.as_ref()?;
            (v.identity_hash == hash && r.group == group && r.name == resource).then_some((r, v))
        })
    }
}

/// `apis.kcp.io/v1alpha1` APIResourceSchema.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiResourceSchema {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: SchemaSpec,
}

/// APIResourceSchema spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SchemaSpec {
    /// Group.
    pub group: String,
    /// Names.
    pub names: Names,
    /// `Cluster` or `Namespaced`.
    pub scope: String,
    /// Versions.
    pub versions: Vec<SchemaVersion>,
}

/// CRD names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Names {
    /// Plural.
    pub plural: String,
    /// Singular.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
}

/// One schema version.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaVersion {
    /// Version name.
    #[serde(default)]
    pub name: String,
    /// Served (default true).
    #[serde(default = "yes")]
    pub served: bool,
    /// Storage version.
    #[serde(default)]
    pub storage: bool,
    /// The OpenAPI v3 schema itself.
    #[serde(default)]
    pub schema: serde_json::Value,
    /// Subresources.
    #[serde(default)]
    pub subresources: Subresources,
    /// Printer columns.
    #[serde(default)]
    pub additional_printer_columns: Vec<PrinterColumn>,
    /// Fields usable in field selectors besides `metadata.name`/`metadata.namespace`.
    #[serde(default)]
    pub selectable_fields: Vec<SelectableField>,
}

/// A `selectableFields` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectableField {
    /// JSONPath of the field, e.g. `.spec.color`.
    pub json_path: String,
}

fn yes() -> bool {
    true
}

/// Subresources of a version.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Subresources {
    /// Present when the version has a status subresource.
    pub status: Option<serde_json::Value>,
}

/// An additional printer column.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PrinterColumn {
    /// Column name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Format.
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority.
    pub priority: i32,
    /// JSONPath.
    pub json_path: String,
}

/// `apis.kcp.io/v1alpha2` APIBinding.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiBinding {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ApiBindingSpec,
}

/// APIBinding spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiBindingSpec {
    /// Reference.
    pub reference: BindingReference,
}

/// `spec.reference`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BindingReference {
    /// The export.
    pub export: Option<PathName>,
}

/// `core.kcp.io/v1alpha1` LogicalCluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LogicalCluster {
    /// Metadata.
    pub metadata: ObjectMeta,
}

/// One entry of the resource-bindings annotation.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct BindingLock {
    /// APIBinding name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub n: String,
    /// Owned by a local CRD.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub c: bool,
    /// CRD lock expiry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e: String,
}

impl LogicalCluster {
    /// The resource-bindings of a LogicalCluster given as JSON (none when it does not decode).
    pub fn bindings_of(lc: &serde_json::Value) -> BTreeMap<String, BindingLock> {
        LogicalCluster::deserialize(lc)
            .ok()
            .and_then(|l| l.resource_bindings().ok())
            .unwrap_or_default()
    }

    /// The parsed resource-bindings annotation (missing or empty = none; invalid JSON = error).
    pub fn resource_bindings(&self) -> Result<BTreeMap<String, BindingLock>, serde_json::Error> {
        match self.metadata.annotations.get(ANN_RESOURCE_BINDINGS) {
            None => Ok(BTreeMap::new()),
            Some(s) if s.trim().is_empty() => Ok(BTreeMap::new()),
            Some(s) => serde_json::from_str(s),
        }
    }
}

/// Whether a cluster name is a logical cluster name (not a workspace path): `:` only with the
/// `system:` prefix.
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty() && (!name.contains(':') || name.starts_with("system:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_each_generation_name_their_resource_and_export() {
        let decode = |v: serde_json::Value| serde_json::from_value::<EndpointSlice>(v).unwrap();
        let v030 = decode(serde_json::json!({
            "spec": {"cachedResource": {"name": "cpuflavors-v1"}},
            "status": {"endpoints": [{"url": "https://vw/services/replication/c/cpuflavors-v1"}]}}));
        assert_eq!(v030.resource_ref().name, "cpuflavors-v1");
        assert_eq!(v030.spec.export, None);
        assert_eq!(v030.status.endpoints[0].shards, None);
        let v032 = decode(serde_json::json!({
            "spec": {"cachedResource": {"name": "cpuflavors"}, "export": {"path": "root:cloudco", "name": "compute"}}}));
        assert_eq!(
            v032.spec.export,
            Some(PathName {
                path: "root:cloudco".into(),
                name: "compute".into()
            })
        );
        let main = decode(serde_json::json!({
            "spec": {"clusterCachedResource": {"name": "sheriffs"}, "export": {"name": "wildwest"}},
            "status": {"endpoints": [{"url": "https://vw", "shards": {"matchAll": true}}]}}));
        assert_eq!(main.resource_ref().name, "sheriffs");
        assert!(
            main.status.endpoints[0]
                .shards
                .as_ref()
                .is_some_and(|s| s.match_all)
        );
    }

    #[test]
    fn a_cached_resource_with_the_resource_kind_annotation_or_the_v032_finalizer_is_of_the_v032_generation()
     {
        let decode = |v: serde_json::Value| serde_json::from_value::<CachedResource>(v).unwrap();
        assert!(
            !decode(
                serde_json::json!({"metadata": {"finalizers": ["cachedresource.cache.kcp.dev"]}})
            )
            .is_identity_generation()
        );
        assert!(
            decode(
                serde_json::json!({"metadata": {"finalizers": ["cache.kcp.io/cachedresource"]}})
            )
            .is_identity_generation()
        );
        assert!(decode(serde_json::json!({"metadata": {"annotations": {"cache.kcp.io/resource-kind": "X"}}})).is_identity_generation());
    }

    #[test]
    fn resource_bindings_annotation_parses_binding_and_crd_locks() {
        let lc: LogicalCluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cluster", "annotations": {
                ANN_RESOURCE_BINDINGS: "{\"cpuflavors.cloud.example.com\":{\"n\":\"compute\"},\"widgets.example.org\":{\"c\":true}}"
            }}
        }))
        .unwrap();
        let b = lc.resource_bindings().unwrap();
        assert_eq!(b["cpuflavors.cloud.example.com"].n, "compute");
        assert!(b["widgets.example.org"].c);
    }

    #[test]
    fn workspace_paths_are_not_cluster_names() {
        assert!(is_cluster_name("1p5f2x8rkq0vd7wz"));
        assert!(is_cluster_name("system:admin"));
        assert!(!is_cluster_name("root:org:ws"));
        assert!(!is_cluster_name(""));
    }
}
