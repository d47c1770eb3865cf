//! Object semantics of the workspaces API, independent of HTTP: what kube-apiserver (and kcp's
//! admission) do to an object on create, update, patch and delete.
//!
//! [`Workspaces`] owns the local shard's store. Writes get `uid`, `creationTimestamp`,
//! `generation` (bumped when anything but metadata and status changes), `resourceVersion` from
//! the store; kinds with a status subresource keep status and spec changes apart; deletion
//! honours finalizers (`deletionTimestamp` first, removal when the last finalizer goes);
//! namespaces and CRDs take their contents with them. Admission: the workspace (its
//! `LogicalCluster`) and the namespace must exist; Secrets fold `stringData` into `data`; CRDs
//! are compiled and marked Established; custom resources are pruned, defaulted and validated
//! against their CRD; CachedResources follow `kcp-reference.md` §2.5; kcp objects get the
//! workspace's `kcp.io/path`; annotations over 256 KiB and ConfigMap or Secret data over 1 MiB
//! are invalid, as kube-apiserver's size rules say. Controllers and the seed loader write
//! through these same functions.

use super::registry::{self, Kind};
use bytes::Bytes;
use kcp_model::{ANN_CLUSTER, ANN_PATH};
use kube_api::child_map;
pub use kube_api::metadata_mut;
use kube_api::patch::{self, PatchType};
use kube_api::status::{Status, StatusCause, StatusDetails, qualified};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use store::{GroupResource, Key, Record, Scope, Store, StoreError};

/// How often a PATCH is applied again after losing its write to another one (see
/// [`Workspaces::patch`]).
pub const PATCH_ATTEMPTS: usize = 100;

/// The shard name under which the workspaces' objects are stored (and replicated).
pub const SHARD: &str = "root";

/// Errors of object handling, mapped to a Status at the edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WsError {
    /// The object does not exist.
    #[error("{} \"{name}\" not found", qualified(group, resource))]
    NotFound {
        /// Group.
        group: String,
        /// Resource.
        resource: String,
        /// Name.
        name: String,
    },
    /// The object exists already.
    #[error("{} \"{name}\" already exists", qualified(group, resource))]
    AlreadyExists {
        /// Group.
        group: String,
        /// Resource.
        resource: String,
        /// Name.
        name: String,
    },
    /// Stale resourceVersion or failed precondition.
    #[error("conflict on {} \"{name}\": {message}", qualified(group, resource))]
    Conflict {
        /// Group.
        group: String,
        /// Resource.
        resource: String,
        /// Name.
        name: String,
        /// Empty for the usual stale-version message.
        message: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The object is invalid (422) with field causes.
    #[error("{kind} \"{name}\" is invalid")]
    Invalid {
        /// `<Kind>.<group>`.
        kind: String,
        /// Kind alone (details).
        bare_kind: String,
        /// Group.
        group: String,
        /// Name.
        name: String,
        /// (reason, field, message).
        causes: Vec<(String, String, String)>,
    },
    /// Admission refused the object (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is too large (413), e.g. a JSON patch with too many operations.
    #[error("{0}")]
    TooLarge(String),
    /// No such resource in this workspace.
    #[error("the server could not find the requested resource")]
    UnknownResource,
    /// The workspace does not exist.
    #[error("workspace {0} not found")]
    NoWorkspace(String),
    /// Storage failure.
    #[error("storage: {0}")]
    Store(StoreError),
}

impl WsError {
    /// The Status for this error.
    pub fn to_status(&self) -> Status {
        match self {
            WsError::NotFound {
                group,
                resource,
                name,
            } => Status::not_found(group, resource, name),
            WsError::AlreadyExists {
                group,
                resource,
                name,
            } => Status::already_exists(group, resource, name),
            WsError::Conflict {
                group,
                resource,
                name,
                message,
            } if message.is_empty() => Status::conflict(group, resource, name),
            WsError::Conflict {
                group,
                resource,
                name,
                message,
            } => Status::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {message}",
                    qualified(group, resource)
                ),
            )
            .with_details(name, group, resource),
            WsError::BadRequest(m) => Status::bad_request(m.clone()),
            WsError::Invalid {
                kind,
                bare_kind,
                group,
                name,
                causes,
            } => {
                let rendered: Vec<String> = causes
                    .iter()
                    .map(|(_, f, m)| {
                        if f.is_empty() {
                            m.clone()
                        } else {
                            format!("{f}: {m}")
                        }
                    })
                    .collect();
                let body = if rendered.len() == 1 {
                    rendered[0].clone()
                } else {
                    format!("[{}]", rendered.join(", "))
                };
                let mut st = Status::invalid(format!("{kind} \"{name}\" is invalid: {body}"));
                st.details = Some(Box::new(StatusDetails {
                    name: name.clone(),
                    group: group.clone(),
                    kind: bare_kind.clone(),
                    causes: causes
                        .iter()
                        .map(|(r, f, m)| StatusCause {
                            reason: r.clone(),
                            message: m.clone(),
                            field: f.clone(),
                        })
                        .collect(),
                }));
                st
            }
            WsError::Forbidden(m) => Status::forbidden(m.clone()),
            WsError::TooLarge(m) => Status::new(413, "RequestEntityTooLarge", m.clone()),
            WsError::UnknownResource => Status::path_not_found(),
            WsError::NoWorkspace(c) => {
                Status::forbidden(format!("access denied: workspace \"{c}\" does not exist"))
            }
            WsError::Store(e) => rest::backend_status(e),
        }
    }

    fn invalid(kind: &Kind, name: &str, field: &str, message: impl Into<String>) -> WsError {
        let message = message.into();
        let reason = schema::validate::FieldError {
            path: field.to_string(),
            message: message.clone(),
        }
        .reason()
        .to_string();
        WsError::Invalid {
            kind: kind_qualified(kind),
            bare_kind: kind.kind.clone(),
            group: kind.group.clone(),
            name: name.to_string(),
            causes: vec![(reason, field.to_string(), message)],
        }
    }
}

fn kind_qualified(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.kind.clone()
    } else {
        format!("{}.{}", kind.kind, kind.group)
    }
}

fn not_found(kind: &Kind, name: &str) -> WsError {
    WsError::NotFound {
        group: kind.group.clone(),
        resource: kind.resource.clone(),
        name: name.to_string(),
    }
}

fn conflict(kind: &Kind, name: &str, message: &str) -> WsError {
    WsError::Conflict {
        group: kind.group.clone(),
        resource: kind.resource.clone(),
        name: name.to_string(),
        message: message.to_string(),
    }
}

fn store_err(kind: &Kind, name: &str, e: StoreError) -> WsError {
    match e {
        StoreError::NotFound => not_found(kind, name),
        StoreError::AlreadyExists => WsError::AlreadyExists {
            group: kind.group.clone(),
            resource: kind.resource.clone(),
            name: name.to_string(),
        },
        StoreError::Conflict { .. } => conflict(kind, name, ""),
        other => WsError::Store(other),
    }
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource (status changes ignored when the kind has a status subresource).
    Main,
    /// The `/status` subresource (only status changes).
    Status,
}

/// The outcome of a delete.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The object's last state.
    pub record: Record,
    /// False when finalizers keep it (it now carries a deletionTimestamp).
    pub gone: bool,
}

type CrdCache = HashMap<(String, String), (u64, Arc<Vec<Kind>>)>;

/// The local shard: every workspace's objects in one store.
pub struct Workspaces {
    /// The store.
    pub store: Arc<dyn Store>,
    builtins: Vec<Kind>,
    crds: Mutex<CrdCache>,
    /// The cache server, for what other shards hold (a provider's export, slice and schema
    /// behind a binding of this shard); unset when every workspace is on this shard.
    elsewhere: std::sync::OnceLock<Arc<dyn cache_client::CacheWrite>>,
    /// Collections read from the cache lately, by (resource, cluster): requests in a consumer
    /// workspace look them up every time, the cache is asked at most every [`ELSEWHERE_TTL`].
    elsewhere_seen: Mutex<HashMap<(String, String), ElsewhereRead>>,
}

/// When a collection was read from the cache, and what it held.
type ElsewhereRead = (std::time::Instant, Arc<Vec<store::Record>>);

/// How long what was read of other shards through the cache is reused.
const ELSEWHERE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

fn crd_gr() -> GroupResource {
    GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions")
}

fn encode(body: &Value) -> Result<Bytes, WsError> {
    serde_json::to_vec(body)
        .map(store::exact_bytes)
        .map_err(|e| WsError::BadRequest(e.to_string()))
}

/// How readers see a stored workspace object: `apiVersion` of the request, `resourceVersion`
/// = the record's revision, `kcp.io/cluster` from the key.
pub fn present(value: &[u8], key: &Key, revision: u64, api_version: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(value).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("apiVersion".into(), Value::String(api_version.to_string()));
    let md = metadata_mut(obj);
    md.insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
    child_map(md, "annotations").insert(ANN_CLUSTER.into(), Value::String(key.cluster.to_string()));
    Some(v)
}

/// Present a record with the apiVersion it was stored with.
pub fn present_stored(record: &Record) -> Option<Value> {
    let api_version = serde_json::from_slice::<Value>(&record.value)
        .ok()?
        .get("apiVersion")?
        .as_str()?
        .to_string();
    present(&record.value, &record.key, record.revision, &api_version)
}

fn strings_at<'a>(v: &'a Value, pointer: &str) -> Vec<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Everything but metadata (and status, when it has its own subresource): a change here
/// bumps `metadata.generation`.
fn spec_part(v: &Value, status_sub: bool) -> Value {
    let mut m = v.as_object().cloned().unwrap_or_default();
    for k in ["metadata", "apiVersion", "kind"] {
        m.remove(k);
    }
    if status_sub {
        m.remove("status");
    }
    Value::Object(m)
}

impl Workspaces {
    /// Serve workspaces from `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Workspaces {
            store,
            builtins: registry::builtins(),
            crds: Mutex::new(HashMap::new()),
            elsewhere: std::sync::OnceLock::new(),
            elsewhere_seen: Mutex::new(HashMap::new()),
        }
    }

    /// Look up what this shard does not hold (other shards' exports, slices, schemas and
    /// workspace paths) in `cache`.
    pub fn set_elsewhere(&self, cache: Arc<dyn cache_client::CacheWrite>) {
        let _ = self.elsewhere.set(cache);
    }

    /// A cluster-scoped kcp object another shard replicated into the cache.
    async fn elsewhere_value(
        &self,
        group: &str,
        resource: &str,
        cluster: &str,
        name: &str,
    ) -> Option<Value> {
        let cache = self.elsewhere.get()?;
        let version = match resource {
            "apiexports" | "apibindings" => "v1alpha2",
            _ => "v1alpha1",
        };
        let slot = (resource.to_string(), cluster.to_string());
        let fresh = self
            .elsewhere_seen
            .lock()
            .get(&slot)
            .filter(|(at, _)| at.elapsed() < ELSEWHERE_TTL)
            .map(|(_, r)| r.clone());
        let records = match fresh {
            Some(r) => r,
            None => {
                let r = Arc::new(
                    cache
                        .list(cache_client::Collection {
                            group,
                            version,
                            resource,
                            shard: None,
                            cluster: Some(cluster),
                        })
                        .await
                        .ok()?,
                );
                let mut seen = self.elsewhere_seen.lock();
                seen.retain(|_, (at, _)| at.elapsed() < ELSEWHERE_TTL);
                seen.insert(slot, (std::time::Instant::now(), r.clone()));
                r
            }
        };
        records
            .iter()
            .find(|r| r.key.name == name)
            .and_then(|r| serde_json::from_slice(&r.value).ok())
    }

    /// A kcp object of this shard, else of another shard (through the cache).
    async fn value_anywhere(
        &self,
        group: &str,
        resource: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Option<Value>, WsError> {
        if let Some(v) = self.builtin_value(group, resource, cluster, name).await? {
            return Ok(Some(v));
        }
        Ok(self.elsewhere_value(group, resource, cluster, name).await)
    }

    /// The store key of an object.
    pub fn key(kind: &Kind, cluster: &str, namespace: &str, name: &str) -> Key {
        Key {
            group: kind.group.as_str().into(),
            resource: kind.resource.as_str().into(),
            shard: SHARD.into(),
            cluster: cluster.into(),
            namespace: if kind.namespaced { namespace } else { "" }.into(),
            name: name.into(),
        }
    }

    /// The list scope of a kind in a cluster (`None` = every cluster) and namespace.
    pub fn scope(kind: &Kind, cluster: Option<&str>, namespace: Option<&str>) -> Scope {
        Scope {
            resource: Some(GroupResource::new(&kind.group, &kind.resource)),
            shard: Some(SHARD.to_string()),
            cluster: cluster.map(str::to_string),
            namespace: namespace.filter(|n| !n.is_empty()).map(str::to_string),
        }
    }

    /// The built-in kinds every workspace serves.
    pub fn builtins(&self) -> &[Kind] {
        &self.builtins
    }

    /// The built-in kind of a group and resource.
    pub fn builtin(&self, group: &str, resource: &str) -> Option<&Kind> {
        self.builtins
            .iter()
            .find(|k| k.group == group && k.resource == resource)
    }

    /// Every kind served in `cluster`: built-ins, then the custom resources of its CRDs.
    pub async fn kinds(&self, cluster: &str) -> Result<Vec<Kind>, WsError> {
        let mut out = self.builtins.clone();
        let scope = Scope {
            resource: Some(crd_gr()),
            shard: Some(SHARD.to_string()),
            cluster: Some(cluster.to_string()),
            namespace: None,
        };
        let listing = self.store.list(&scope).await.map_err(WsError::Store)?;
        for record in listing.records {
            let cache_key = (cluster.to_string(), record.key.name.to_string());
            let cached = self
                .crds
                .lock()
                .get(&cache_key)
                .filter(|(rev, _)| *rev == record.revision)
                .map(|(_, k)| k.clone());
            let kinds = match cached {
                Some(k) => k,
                None => {
                    let Ok(crd) = serde_json::from_slice::<Value>(&record.value) else {
                        continue;
                    };
                    let established = crd
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|cs| {
                            cs.iter().any(|c| {
                                c.get("type").and_then(Value::as_str) == Some("Established")
                                    && c.get("status").and_then(Value::as_str) == Some("True")
                            })
                        });
                    let kinds = if established {
                        Arc::new(registry::crd_kinds(&crd).unwrap_or_default())
                    } else {
                        Arc::new(Vec::new())
                    };
                    self.crds
                        .lock()
                        .insert(cache_key, (record.revision, kinds.clone()));
                    kinds
                }
            };
            for k in kinds.iter() {
                if !out
                    .iter()
                    .any(|b| b.group == k.group && b.resource == k.resource)
                {
                    out.push(k.clone());
                }
            }
        }
        for k in self.bound_kinds(cluster).await? {
            if !out
                .iter()
                .any(|b| b.group == k.group && b.resource == k.resource)
            {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// The virtual resources APIBindings provide in `cluster`: read-only kinds served by the
    /// Replication virtual workspace of the CachedResource behind the export's endpoint slice.
    pub async fn bound_kinds(&self, cluster: &str) -> Result<Vec<Kind>, WsError> {
        let Some(lc) = self.logical_cluster(cluster).await? else {
            return Ok(Vec::new());
        };
        let locks = kcp_model::types::LogicalCluster::bindings_of(&lc);
        let mut out = Vec::new();
        for (gr, lock) in locks {
            if lock.n.is_empty() {
                continue;
            }
            if let Some(k) = self.bound_kind(cluster, &gr, &lock.n).await? {
                out.extend(k);
            }
        }
        Ok(out)
    }

    async fn builtin_value(
        &self,
        group: &str,
        resource: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Option<Value>, WsError> {
        let Some(k) = self.builtin(group, resource).cloned() else {
            return Ok(None);
        };
        Ok(self.get_value(&k, cluster, "", name).await?.map(|(v, _)| v))
    }

    async fn bound_kind(
        &self,
        cluster: &str,
        gr: &str,
        binding: &str,
    ) -> Result<Option<Vec<Kind>>, WsError> {
        let s = |v: &Value, p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let Some(b) = self
            .builtin_value("apis.kcp.io", "apibindings", cluster, binding)
            .await?
        else {
            return Ok(None);
        };
        let export_cluster = s(&b, "/status/apiExportClusterName");
        let Some(bound) = b
            .pointer("/status/boundResources")
            .and_then(Value::as_array)
            .and_then(|rs| {
                rs.iter().find(|r| {
                    qualified(
                        r.get("group").and_then(Value::as_str).unwrap_or(""),
                        r.get("resource").and_then(Value::as_str).unwrap_or(""),
                    ) == gr
                })
            })
            .cloned()
        else {
            return Ok(None);
        };
        let export_name = s(&b, "/spec/reference/export/name");
        let Some(export) = self
            .value_anywhere("apis.kcp.io", "apiexports", &export_cluster, &export_name)
            .await?
        else {
            return Ok(None);
        };
        let (group, resource) = (s(&bound, "/group"), s(&bound, "/resource"));
        let Some(reference) = export
            .pointer("/spec/resources")
            .and_then(Value::as_array)
            .and_then(|rs| {
                rs.iter().find(|r| {
                    r.get("group").and_then(Value::as_str).unwrap_or("") == group
                        && r.get("name").and_then(Value::as_str).unwrap_or("") == resource
                })
            })
            .and_then(|r| r.pointer("/storage/virtual/reference"))
        else {
            return Ok(None);
        };
        let slice_name = s(reference, "/name");
        let slice_resource = if s(reference, "/kind") == "ClusterCachedResourceEndpointSlice" {
            "clustercachedresourceendpointslices"
        } else {
            "cachedresourceendpointslices"
        };
        let Some(slice) = self
            .value_anywhere("cache.kcp.io", slice_resource, &export_cluster, &slice_name)
            .await?
        else {
            return Ok(None);
        };
        // kcp v0.32 and main key the virtual workspace URL by the slice (kcp-head.md §4.1),
        // v0.30 by the CachedResource.
        let keyed_by_slice = slice_resource == "clustercachedresourceendpointslices"
            || slice.pointer("/spec/export").is_some();
        let path = s(&slice, "/spec/cachedResource/path");
        let cr_cluster = if keyed_by_slice || path.is_empty() {
            export_cluster.clone()
        } else {
            match self.resolve_anywhere(&path).await {
                Ok(c) => c,
                Err(_) => return Ok(None),
            }
        };
        let cr_name = if keyed_by_slice {
            slice_name
        } else {
            s(&slice, "/spec/cachedResource/name")
        };
        let schema_name = s(&bound, "/schema/name");
        let Some(schema) = self
            .value_anywhere(
                "apis.kcp.io",
                "apiresourceschemas",
                &export_cluster,
                &schema_name,
            )
            .await?
        else {
            return Ok(None);
        };
        let mut kinds = registry::schema_kinds(&schema).unwrap_or_default();
        for k in &mut kinds {
            k.virtual_source = Some((cr_cluster.clone(), cr_name.clone()));
        }
        Ok(Some(kinds))
    }

    /// The kind of `group/version/resource` in `cluster`.
    pub async fn find(
        &self,
        cluster: &str,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Result<Kind, WsError> {
        if let Some(k) = self
            .builtins
            .iter()
            .find(|k| k.group == group && k.version == version && k.resource == resource)
        {
            return Ok(k.clone());
        }
        self.kinds(cluster)
            .await?
            .into_iter()
            .find(|k| k.group == group && k.version == version && k.resource == resource)
            .ok_or(WsError::UnknownResource)
    }

    /// The kind of an object's `apiVersion` and `kind` in `cluster`.
    pub async fn find_kind(
        &self,
        cluster: &str,
        api_version: &str,
        kind: &str,
    ) -> Result<Kind, WsError> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.kinds(cluster)
            .await?
            .into_iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
            .ok_or_else(|| {
                WsError::BadRequest(format!(
                    "no matches for kind \"{kind}\" in version \"{api_version}\""
                ))
            })
    }

    /// The LogicalCluster of a workspace.
    pub async fn logical_cluster(&self, cluster: &str) -> Result<Option<Value>, WsError> {
        let Some(k) = self.builtin("core.kcp.io", "logicalclusters") else {
            return Ok(None);
        };
        let rec = self
            .store
            .get(&Self::key(k, cluster, "", "cluster"))
            .await
            .map_err(WsError::Store)?;
        Ok(rec.and_then(|r| serde_json::from_slice(&r.value).ok()))
    }

    /// Resolve a workspace reference (a logical cluster name, or a path such as
    /// `root:cloudco` matched against the LogicalClusters' `kcp.io/path`).
    pub async fn resolve(&self, reference: &str) -> Result<String, WsError> {
        if !reference.contains(':') || reference.starts_with("system:") {
            return Ok(reference.to_string());
        }
        let Some(k) = self.builtin("core.kcp.io", "logicalclusters") else {
            return Err(WsError::NoWorkspace(reference.to_string()));
        };
        let listing = self
            .store
            .list(&Self::scope(k, None, None))
            .await
            .map_err(WsError::Store)?;
        listing
            .records
            .iter()
            .find(|r| {
                serde_json::from_slice::<Value>(&r.value)
                    .ok()
                    .is_some_and(|v| {
                        v.pointer("/metadata/annotations/kcp.io~1path")
                            .and_then(Value::as_str)
                            == Some(reference)
                    })
            })
            .map(|r| r.key.cluster.to_string())
            .ok_or_else(|| WsError::NoWorkspace(reference.to_string()))
    }

    /// Like [`Workspaces::resolve`], then among the workspaces of other shards (through the
    /// cache): for references this shard follows, never for requests to its own API.
    pub async fn resolve_anywhere(&self, reference: &str) -> Result<String, WsError> {
        let local = self.resolve(reference).await;
        let Some(cache) = self.elsewhere.get().filter(|_| local.is_err()) else {
            return local;
        };
        let records = cache
            .list(cache_client::Collection {
                group: "core.kcp.io",
                version: "v1alpha1",
                resource: "logicalclusters",
                shard: None,
                cluster: None,
            })
            .await
            .map_err(|_| WsError::NoWorkspace(reference.to_string()))?;
        records
            .iter()
            .find(|r| {
                serde_json::from_slice::<Value>(&r.value)
                    .ok()
                    .is_some_and(|v| {
                        v.pointer("/metadata/annotations/kcp.io~1path")
                            .and_then(Value::as_str)
                            == Some(reference)
                    })
            })
            .map(|r| r.key.cluster.to_string())
            .ok_or_else(|| WsError::NoWorkspace(reference.to_string()))
    }

    /// Read one object.
    pub async fn get(
        &self,
        kind: &Kind,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Record, WsError> {
        self.store
            .get(&Self::key(kind, cluster, namespace, name))
            .await
            .map_err(WsError::Store)?
            .ok_or_else(|| not_found(kind, name))
    }

    /// Read one object, presented (None when absent).
    pub async fn get_value(
        &self,
        kind: &Kind,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(Value, u64)>, WsError> {
        match self.get(kind, cluster, namespace, name).await {
            Ok(r) => {
                Ok(present(&r.value, &r.key, r.revision, &kind.api_version())
                    .map(|v| (v, r.revision)))
            }
            Err(WsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object of a kind in a cluster (`None` = all clusters), presented.
    pub async fn list_values(
        &self,
        kind: &Kind,
        cluster: Option<&str>,
    ) -> Result<Vec<(Value, Arc<Key>, u64)>, WsError> {
        let listing = self
            .store
            .list(&Self::scope(kind, cluster, None))
            .await
            .map_err(WsError::Store)?;
        Ok(listing
            .records
            .into_iter()
            .filter_map(|r| {
                present(&r.value, &r.key, r.revision, &kind.api_version())
                    .map(|v| (v, r.key.clone(), r.revision))
            })
            .collect())
    }

    fn check_body(kind: &Kind, namespace: &str, body: &mut Value) -> Result<(), WsError> {
        let obj = body
            .as_object_mut()
            .ok_or_else(|| WsError::BadRequest("the body must be a JSON object".into()))?;
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && !av.is_empty()
        {
            let (g, _) = av.split_once('/').unwrap_or(("", av));
            if g != kind.group {
                return Err(WsError::BadRequest(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    kind.api_version()
                )));
            }
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && !k.is_empty()
            && k != kind.kind
        {
            return Err(WsError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        obj.insert("apiVersion".into(), Value::String(kind.api_version()));
        obj.insert("kind".into(), Value::String(kind.kind.clone()));
        let md = metadata_mut(obj);
        if kind.namespaced {
            match md.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != namespace => {
                    return Err(WsError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
                }
                _ => {}
            }
            md.insert("namespace".into(), Value::String(namespace.to_string()));
        } else {
            md.remove("namespace");
        }
        if let Some(Value::Object(a)) = md.get_mut("annotations") {
            a.remove(ANN_CLUSTER);
        }
        Ok(())
    }

    async fn require_workspace(
        &self,
        kind: &Kind,
        cluster: &str,
    ) -> Result<Option<Value>, WsError> {
        let lc = self.logical_cluster(cluster).await?;
        if lc.is_none() && kind.resource != "logicalclusters" {
            return Err(WsError::NoWorkspace(cluster.to_string()));
        }
        Ok(lc)
    }

    async fn require_namespace(
        &self,
        kind: &Kind,
        cluster: &str,
        namespace: &str,
    ) -> Result<(), WsError> {
        if !kind.namespaced {
            return Ok(());
        }
        if namespace.is_empty() {
            return Err(WsError::BadRequest(
                "the namespace of the object is required".into(),
            ));
        }
        let Some(ns_kind) = self.builtin("", "namespaces") else {
            return Ok(());
        };
        match self.get(ns_kind, cluster, "", namespace).await {
            Ok(_) => Ok(()),
            Err(WsError::NotFound { .. }) => Err(WsError::NotFound {
                group: String::new(),
                resource: "namespaces".into(),
                name: namespace.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Create an object (POST).
    pub async fn create(
        &self,
        kind: &Kind,
        cluster: &str,
        namespace: &str,
        mut body: Value,
    ) -> Result<Record, WsError> {
        Self::check_body(kind, namespace, &mut body)?;
        let lc = self.require_workspace(kind, cluster).await?;
        self.require_namespace(kind, cluster, namespace).await?;
        let Some(obj) = body.as_object_mut() else {
            return Err(WsError::BadRequest("the body must be a JSON object".into()));
        };
        let md = metadata_mut(obj);
        let Some(name) = kube_api::name_or_generate(md) else {
            return Err(WsError::invalid(
                kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        };
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            md.remove(k);
        }
        md.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        md.insert(
            "creationTimestamp".into(),
            Value::String(kube_api::now_rfc3339()),
        );
        md.insert("generation".into(), Value::from(1));
        if kind.status_subresource {
            obj.remove("status");
        }
        self.admit(kind, cluster, &name, lc.as_ref(), None, &mut body)
            .await?;
        let rec = self
            .store
            .create(Self::key(kind, cluster, namespace, &name), encode(&body)?)
            .await
            .map_err(|e| store_err(kind, &name, e))?;
        if kind.resource == "logicalclusters"
            && let Some(ns) = self.builtin("", "namespaces").cloned()
        {
            let default =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
            match Box::pin(self.create(&ns, cluster, "", default)).await {
                Ok(_) | Err(WsError::AlreadyExists { .. }) => {}
                Err(e) => {
                    tracing::warn!(cluster, error = %e, "Could not create the default namespace.")
                }
            }
        }
        Ok(rec)
    }

    /// Admission and defaulting for one kind (create: `old` = None).
    async fn admit(
        &self,
        kind: &Kind,
        cluster: &str,
        name: &str,
        lc: Option<&Value>,
        old: Option<&Value>,
        body: &mut Value,
    ) -> Result<(), WsError> {
        let path = lc
            .and_then(|l| l.pointer("/metadata/annotations/kcp.io~1path"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match (kind.group.as_str(), kind.resource.as_str()) {
            ("", "secrets") => fold_string_data(body),
            ("", "namespaces") => {
                if body.pointer("/status/phase").is_none()
                    && let Some(o) = body.as_object_mut()
                {
                    o.insert("status".into(), json!({"phase": "Active"}));
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                admit_crd(kind, name, lc, body)?;
            }
            ("core.kcp.io", "logicalclusters") => {
                if name != "cluster" {
                    return Err(WsError::invalid(
                        kind,
                        name,
                        "metadata.name",
                        "Invalid value: the LogicalCluster of a workspace must be named \"cluster\"",
                    ));
                }
                if old.is_none()
                    && let Some(o) = body.as_object_mut()
                {
                    o.insert("status".into(), json!({"phase": "Ready"}));
                }
            }
            ("cache.kcp.io", "cachedresources") | ("cache.kcp.io", "clustercachedresources") => {
                match old {
                    None => {
                        self.admit_cached_resource(kind, cluster, name, body)
                            .await?
                    }
                    Some(old) => {
                        let generation = |v: &Value| {
                            kcp_model::types::annotation(v, kcp_model::types::ANN_GENERATION)
                                .to_string()
                        };
                        if generation(old) != generation(body) {
                            return Err(WsError::invalid(
                                kind,
                                name,
                                "metadata.annotations[replication-vw.dev/generation]",
                                "Invalid value: the generation a CachedResource follows is chosen when it is created and cannot be changed",
                            ));
                        }
                    }
                }
                set_path(body, path.as_deref());
            }
            ("cache.kcp.io", "cachedresourceendpointslices")
            | ("cache.kcp.io", "clustercachedresourceendpointslices") => {
                admit_slice(kind, name, old, body)?;
                set_path(body, path.as_deref())
            }
            ("apis.kcp.io", "apiexports") | ("apis.kcp.io", "apibindings") => {
                set_path(body, path.as_deref())
            }
            _ => {}
        }
        check_size_limits(kind, name, body)?;
        if let Some(schema) = &kind.schema
            && let Err(errors) = schema.prepare(body)
        {
            return Err(WsError::Invalid {
                kind: kind_qualified(kind),
                bare_kind: kind.kind.clone(),
                group: kind.group.clone(),
                name: name.to_string(),
                causes: errors
                    .iter()
                    .map(|e| (e.reason().to_string(), e.path.clone(), e.message.clone()))
                    .collect(),
            });
        }
        Ok(())
    }

    /// §2.5: one CachedResource per GVR per workspace; the resource must be cluster-scoped
    /// when it can be mapped.
    async fn admit_cached_resource(
        &self,
        kind: &Kind,
        cluster: &str,
        name: &str,
        body: &Value,
    ) -> Result<(), WsError> {
        let s = |p: &str| {
            body.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (group, version, resource) =
            (s("/spec/group"), s("/spec/version"), s("/spec/resource"));
        // kcp main's admission (kcp-head §1.1) skips an object of the same name (its create is
        // then the usual 409) and only counts objects that have been reconciled (identity and
        // both annotations), so a duplicate created before the first is reconciled passes.
        let main = kind.resource == "clustercachedresources";
        let (label, qualified_kind) = (
            kind.kind.as_str(),
            format!("{}.{}", kind.resource, kind.group),
        );
        for (other, key, _) in self.list_values(kind, Some(cluster)).await? {
            let o = |p: &str| {
                other
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            if main
                && (key.name == name
                    || o("/status/identityHash").is_empty()
                    || kcp_model::types::annotation(&other, kcp_model::types::ANN_RESOURCE_KIND)
                        .is_empty()
                    || kcp_model::types::annotation(&other, kcp_model::types::ANN_RESOURCE_SCOPE)
                        .is_empty())
            {
                continue;
            }
            if o("/spec/group") == group
                && o("/spec/version") == version
                && o("/spec/resource") == resource
            {
                return Err(WsError::Forbidden(format!(
                    "{qualified_kind} \"{name}\" is forbidden: spec: Invalid value: \"{group}.{version}.{resource}\": {label} with this GVR already exists in the \"{cluster}\" workspace"
                )));
            }
        }
        if let Ok(target) = self.find(cluster, &group, &version, &resource).await
            && target.namespaced
        {
            return Err(WsError::Forbidden(format!(
                "{qualified_kind} \"{name}\" is forbidden: spec: Invalid value: \"{}\": Resource referenced in {label} must be cluster-scoped",
                qualified(&group, &resource)
            )));
        }
        Ok(())
    }

    /// Replace an object (PUT) or its status.
    pub async fn update(
        &self,
        kind: &Kind,
        cluster: &str,
        namespace: &str,
        name: &str,
        mut body: Value,
        part: Part,
    ) -> Result<Deleted, WsError> {
        Self::check_body(kind, namespace, &mut body)?;
        let md = body
            .get("metadata")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        match md.get("name").and_then(Value::as_str) {
            Some(n) if n == name => {}
            None | Some("") => {}
            Some(n) => {
                return Err(WsError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let expected = match md.get("resourceVersion").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {
                Some(s.parse::<u64>().map_err(|_| conflict(kind, name, ""))?)
            }
            _ => None,
        };
        for _ in 0..8 {
            let current = self.get(kind, cluster, namespace, name).await?;
            if expected.is_some_and(|e| e != current.revision) {
                return Err(conflict(kind, name, ""));
            }
            match self
                .write_over(kind, cluster, name, &current, body.clone(), part)
                .await
            {
                Err(WsError::Conflict { message, .. })
                    if expected.is_none() && message.is_empty() =>
                {
                    continue;
                }
                other => return other,
            }
        }
        Err(conflict(kind, name, ""))
    }

    /// Write `body` over `current` (which must still be current).
    async fn write_over(
        &self,
        kind: &Kind,
        cluster: &str,
        name: &str,
        current: &Record,
        body: Value,
        part: Part,
    ) -> Result<Deleted, WsError> {
        let old: Value = serde_json::from_slice(&current.value)
            .map_err(|e| WsError::Store(StoreError::Internal(e.to_string())))?;
        let mut new = match part {
            Part::Status => {
                let mut n = old.clone();
                if let Some(o) = n.as_object_mut() {
                    match body.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                n
            }
            Part::Main => {
                let mut n = body;
                if kind.status_subresource
                    && let Some(o) = n.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                n
            }
        };
        let Some(obj) = new.as_object_mut() else {
            return Err(WsError::BadRequest("the body must be a JSON object".into()));
        };
        let md = metadata_mut(obj);
        md.insert("name".into(), Value::String(name.to_string()));
        md.remove("resourceVersion");
        md.remove("managedFields");
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old.pointer(&format!("/metadata/{field}")) {
                Some(v) => md.insert(field.into(), v.clone()),
                None => md.remove(field),
            };
        }
        let old_gen = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        md.insert("generation".into(), Value::from(old_gen));
        if part == Part::Main {
            let lc = self.logical_cluster(cluster).await?;
            self.admit(kind, cluster, name, lc.as_ref(), Some(&old), &mut new)
                .await?;
        } else if let Err(e) = admit_slice_status(kind, name, &new) {
            return Err(e);
        } else if let Some(schema) = &kind.schema
            && let Err(errors) = schema.prepare(&mut new)
        {
            return Err(WsError::Invalid {
                kind: kind_qualified(kind),
                bare_kind: kind.kind.clone(),
                group: kind.group.clone(),
                name: name.to_string(),
                causes: errors
                    .iter()
                    .map(|e| (e.reason().to_string(), e.path.clone(), e.message.clone()))
                    .collect(),
            });
        }
        if spec_part(&new, kind.status_subresource) != spec_part(&old, kind.status_subresource)
            && let Some(o) = new.as_object_mut()
        {
            metadata_mut(o).insert("generation".into(), Value::from(old_gen + 1));
        }
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        if deleting && strings_at(&new, "/metadata/finalizers").is_empty() {
            let rec = self
                .store
                .delete(&current.key, Some(current.revision))
                .await
                .map_err(|e| store_err(kind, name, e))?;
            return Ok(Deleted {
                record: rec,
                gone: true,
            });
        }
        // An unchanged object is not written again, unless its stored bytes are stale (under
        // an older encryption provider or key): then the update rewrites them, as
        // kube-apiserver does.
        if new == old && !self.store.is_stale(&current.key) {
            return Ok(Deleted {
                record: current.clone(),
                gone: false,
            });
        }
        let rec = self
            .store
            .update(
                (*current.key).clone(),
                encode(&new)?,
                Some(current.revision),
            )
            .await
            .map_err(|e| store_err(kind, name, e))?;
        Ok(Deleted {
            record: rec,
            gone: false,
        })
    }

    /// Patch an object (PATCH) or its status; with `strict`, a result with fields the schema
    /// does not know is refused. A write that came first between reading and writing makes the
    /// patch apply again to what it wrote (up to [`PATCH_ATTEMPTS`] times).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        kind: &Kind,
        cluster: &str,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch_body: &[u8],
        part: Part,
        strict: bool,
    ) -> Result<Deleted, WsError> {
        // kube-apiserver retries a patch for as long as other writes keep coming first; a
        // bound keeps a pathological writer from holding the request forever. Each lost round
        // means another write succeeded, so N writers racing on one object need at most N - 1.
        for _ in 0..PATCH_ATTEMPTS {
            let current = self.get(kind, cluster, namespace, name).await?;
            let shown = present(
                &current.value,
                &current.key,
                current.revision,
                &kind.api_version(),
            )
            .ok_or_else(|| {
                WsError::Store(StoreError::Internal("stored object does not decode".into()))
            })?;
            let patched = patch::apply(patch_type, &shown, patch_body).map_err(|e| match e {
                patch::PatchError::Malformed(m) => WsError::BadRequest(m),
                patch::PatchError::TooLarge(m) => WsError::TooLarge(m),
                other => WsError::invalid(kind, name, "", other.to_string()),
            })?;
            let mut patched = patched;
            Self::check_body(kind, namespace, &mut patched)?;
            if strict {
                check_strict(kind, &patched)?;
            }
            // The patch applies to the object as shown, resourceVersion included: a patch that
            // sets another one asks for that revision (a conflict unless it is current).
            let asked = patched
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !asked.is_empty() && asked != current.revision.to_string() {
                return Err(conflict(kind, name, ""));
            }
            match self
                .write_over(kind, cluster, name, &current, patched, part)
                .await
            {
                // Another write came first: apply the patch again to what it wrote, as
                // kube-apiserver does. A patch that named the revision it read fails then.
                Err(WsError::Conflict { message, .. }) if message.is_empty() => continue,
                other => return other,
            }
        }
        Err(conflict(kind, name, ""))
    }

    /// Delete an object: with finalizers it gets a deletionTimestamp and stays; namespaces and
    /// CRDs delete their contents first.
    pub async fn delete(
        &self,
        kind: &Kind,
        cluster: &str,
        namespace: &str,
        name: &str,
        preconditions: (Option<u64>, Option<String>),
    ) -> Result<Deleted, WsError> {
        let current = self.get(kind, cluster, namespace, name).await?;
        let old: Value = serde_json::from_slice(&current.value)
            .map_err(|e| WsError::Store(StoreError::Internal(e.to_string())))?;
        if let Some(uid) = &preconditions.1 {
            let have = old
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if have != uid {
                return Err(conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                    ),
                ));
            }
        }
        if let Some(rv) = preconditions.0
            && rv != current.revision
        {
            return Err(conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.revision
                ),
            ));
        }
        if !strings_at(&old, "/metadata/finalizers").is_empty() {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(Deleted {
                    record: current,
                    gone: false,
                });
            }
            let mut new = old.clone();
            if let Some(o) = new.as_object_mut() {
                let md = metadata_mut(o);
                md.insert(
                    "deletionTimestamp".into(),
                    Value::String(kube_api::now_rfc3339()),
                );
                md.insert("deletionGracePeriodSeconds".into(), Value::from(0));
            }
            let rec = self
                .store
                .update(
                    (*current.key).clone(),
                    encode(&new)?,
                    Some(current.revision),
                )
                .await
                .map_err(|e| store_err(kind, name, e))?;
            return Ok(Deleted {
                record: rec,
                gone: false,
            });
        }
        match (kind.group.as_str(), kind.resource.as_str()) {
            ("", "namespaces") => {
                self.purge(Scope {
                    cluster: Some(cluster.to_string()),
                    namespace: Some(name.to_string()),
                    shard: Some(SHARD.to_string()),
                    resource: None,
                })
                .await?;
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Ok(kinds) = registry::crd_kinds(&old)
                    && let Some(k) = kinds.first()
                {
                    self.purge(Self::scope(k, Some(cluster), None)).await?;
                }
            }
            _ => {}
        }
        let rec = self
            .store
            .delete(&current.key, Some(current.revision))
            .await
            .map_err(|e| store_err(kind, name, e))?;
        Ok(Deleted {
            record: rec,
            gone: true,
        })
    }

    async fn purge(&self, scope: Scope) -> Result<(), WsError> {
        let listing = self.store.list(&scope).await.map_err(WsError::Store)?;
        for r in listing.records {
            match self.store.delete(&r.key, None).await {
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(WsError::Store(e)),
            }
        }
        Ok(())
    }
}

/// Fields of `body` its kind's schema does not know (what pruning would drop), as kube names
/// them in strict field validation (`spec.foo`, `spec.items[0].bar`). Built-in kinds are
/// stored as sent and have none.
pub fn unknown_fields(kind: &Kind, body: &Value) -> Vec<String> {
    let Some(schema) = &kind.schema else {
        return Vec::new();
    };
    let mut pruned = body.clone();
    // Errors are reported by the write itself; only the pruning matters here.
    let _ = schema.prepare(&mut pruned);
    let mut out = Vec::new();
    if let (Value::Object(a), Value::Object(b)) = (body, &pruned) {
        for (k, v) in a {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            dropped(v, b.get(k), k, &mut out);
        }
    }
    out
}

fn dropped(original: &Value, kept: Option<&Value>, path: &str, out: &mut Vec<String>) {
    let Some(kept) = kept else {
        out.push(path.to_string());
        return;
    };
    match (original, kept) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                dropped(v, b.get(k), &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, v) in a.iter().enumerate() {
                dropped(v, b.get(i), &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `fieldValidation=Strict`: a body with fields its kind's schema does not know is refused,
/// as kube-apiserver refuses it (kubectl sends Strict by default).
pub fn check_strict(kind: &Kind, body: &Value) -> Result<(), WsError> {
    let unknown = unknown_fields(kind, body);
    if unknown.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Err(WsError::BadRequest(format!(
        "strict decoding error: {}",
        listed.join(", ")
    )))
}

fn set_path(body: &mut Value, path: Option<&str>) {
    let Some(path) = path else { return };
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let md = metadata_mut(obj);
    let ann = md
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(a) = ann
        && !a.contains_key(ANN_PATH)
    {
        a.insert(ANN_PATH.into(), Value::String(path.to_string()));
    }
}

/// kube folds a Secret's `stringData` into `data` (base64) when it is written.
fn fold_string_data(body: &mut Value) {
    use base64::Engine;
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let Some(Value::Object(sd)) = obj.remove("stringData") else {
        return;
    };
    let data = obj
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(d) = data {
        for (k, v) in sd {
            if let Some(s) = v.as_str() {
                d.insert(
                    k,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(s)),
                );
            }
        }
    }
}

/// Total bytes (keys and values) kube-apiserver allows in one object's annotations.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Bytes kube-apiserver allows in a ConfigMap's `data` and `binaryData` together, or in a
/// Secret's `data` (decoded values).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Bytes a base64 text decodes to.
fn base64_decoded_len(text: &str) -> usize {
    text.trim_end_matches('=').len() * 3 / 4
}

/// kube-apiserver's size rules for every object's annotations and for ConfigMap and Secret
/// data: over them the object is invalid (422), as kube words it.
fn check_size_limits(kind: &Kind, name: &str, body: &Value) -> Result<(), WsError> {
    let too_long = |field: &str, limit: usize| {
        WsError::invalid(
            kind,
            name,
            field,
            format!("Too long: must have at most {limit} bytes"),
        )
    };
    if let Some(Value::Object(annotations)) = body.pointer("/metadata/annotations") {
        let total: usize = annotations
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if total > MAX_ANNOTATIONS_BYTES {
            return Err(too_long("metadata.annotations", MAX_ANNOTATIONS_BYTES));
        }
    }
    let values = |field: &str, decode: bool| -> usize {
        match body.get(field) {
            Some(Value::Object(m)) => m
                .values()
                .filter_map(Value::as_str)
                .map(|v| {
                    if decode {
                        base64_decoded_len(v)
                    } else {
                        v.len()
                    }
                })
                .sum(),
            _ => 0,
        }
    };
    let data = match (kind.group.as_str(), kind.resource.as_str()) {
        ("", "configmaps") => values("data", false) + values("binaryData", true),
        ("", "secrets") => values("data", true),
        _ => 0,
    };
    if data > MAX_DATA_BYTES {
        return Err(too_long("data", MAX_DATA_BYTES));
    }
    Ok(())
}

/// A CRD must be named `<plural>.<group>` and compile; it is then Established at once.
/// The endpoint slices' required references and their CEL immutability rules (`self ==
/// oldSelf`, `kcp-head.md` §1.2): the (Cluster)CachedResource reference always, `spec.export`
/// once set. A ClusterCachedResourceEndpointSlice must name its export.
fn admit_slice(kind: &Kind, name: &str, old: Option<&Value>, body: &Value) -> Result<(), WsError> {
    let (reference, resource_kind) = if kind.resource == "clustercachedresourceendpointslices" {
        ("clusterCachedResource", "ClusterCachedResource")
    } else {
        ("cachedResource", "CachedResource")
    };
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if text(body, &format!("/spec/{reference}/name")).is_empty() {
        return Err(WsError::invalid(
            kind,
            name,
            &format!("spec.{reference}.name"),
            "Required value",
        ));
    }
    let export = body.pointer("/spec/export");
    let export_required = kind.resource == "clustercachedresourceendpointslices";
    if (export_required || export.is_some()) && text(body, "/spec/export/name").is_empty() {
        return Err(WsError::invalid(
            kind,
            name,
            "spec.export.name",
            "Required value",
        ));
    }
    admit_slice_status(kind, name, body)?;
    let Some(old) = old else {
        return Ok(());
    };
    let field = |v: &Value, f: &str| {
        let at = |p: &str| text(v, &format!("/spec/{f}/{p}"));
        (at("path"), at("name"))
    };
    if field(old, reference) != field(body, reference) {
        return Err(WsError::invalid(
            kind,
            name,
            &format!("spec.{reference}"),
            format!("Invalid value: \"object\": {resource_kind} reference must not be changed"),
        ));
    }
    if old.pointer("/spec/export").is_some()
        && export.is_some()
        && field(old, "export") != field(body, "export")
    {
        return Err(WsError::invalid(
            kind,
            name,
            "spec.export",
            "Invalid value: \"object\": APIExport reference must not be changed",
        ));
    }
    Ok(())
}

/// A slice's status endpoints: `shards.matchAll` and `shards.selector` are mutually exclusive
/// (kcp's CEL rule on the shared `Endpoint` type, `kcp-head.md` §3.1).
fn admit_slice_status(kind: &Kind, name: &str, body: &Value) -> Result<(), WsError> {
    if !matches!(
        kind.resource.as_str(),
        "cachedresourceendpointslices" | "clustercachedresourceendpointslices"
    ) || kind.group != "cache.kcp.io"
    {
        return Ok(());
    }
    if let Ok(endpoints) = kcp_model::endpoints::endpoints_of(body)
        && let Some((i, _)) = kcp_model::endpoints::both_set(&endpoints)
    {
        return Err(WsError::invalid(
            kind,
            name,
            &format!("status.endpoints[{i}].shards"),
            "Invalid value: \"object\": matchAll and selector are mutually exclusive",
        ));
    }
    Ok(())
}

fn admit_crd(kind: &Kind, name: &str, lc: Option<&Value>, body: &mut Value) -> Result<(), WsError> {
    let kinds = registry::crd_kinds(body)
        .map_err(|e| WsError::invalid(kind, name, "spec", e.to_string()))?;
    let s = |p: &str| {
        body.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let expected = format!("{}.{}", s("/spec/names/plural"), s("/spec/group"));
    if name != expected {
        return Err(WsError::invalid(
            kind,
            name,
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if kinds.is_empty() {
        return Err(WsError::invalid(
            kind,
            name,
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    let now = kube_api::now_rfc3339();
    // A resource an APIBinding provides in this workspace cannot also come from a CRD.
    let bound_by = lc
        .map(kcp_model::types::LogicalCluster::bindings_of)
        .and_then(|mut b| b.remove(name))
        .map(|lock| lock.n)
        .filter(|n| !n.is_empty());
    if let Some(binding) = bound_by {
        let message = format!("{name} is already provided by APIBinding \"{binding}\"");
        if let Some(o) = body.as_object_mut() {
            o.insert(
                "status".into(),
                json!({
                    "acceptedNames": {},
                    "conditions": [
                        {"type": "NamesAccepted", "status": "False", "reason": "NameConflict", "message": message, "lastTransitionTime": now},
                        {"type": "Established", "status": "False", "reason": "NotAccepted", "message": "not all names are accepted", "lastTransitionTime": now},
                    ],
                }),
            );
        }
        return Ok(());
    }
    let names = body.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let stored: Vec<Value> = body
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.insert(
            "status".into(),
            json!({
                "acceptedNames": names,
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
            }),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::memory::MemoryStore;

    async fn ws() -> Workspaces {
        let w = Workspaces::new(Arc::new(MemoryStore::default()));
        let lc = w.builtin("core.kcp.io", "logicalclusters").unwrap().clone();
        w.create(
            &lc,
            "c1",
            "",
            json!({"metadata": {"name": "cluster", "annotations": {"kcp.io/path": "root:org"}}}),
        )
        .await
        .unwrap();
        w
    }

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.g.io"},
            "spec": {"group": "g.io", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1, "default": 2}}},
                        "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}}}]}})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_patches_without_a_resource_version_all_apply() {
        let w = Arc::new(ws().await);
        let cm = w.builtin("", "configmaps").unwrap().clone();
        w.create(
            &cm,
            "c1",
            "default",
            json!({"metadata": {"name": "m"}, "data": {}}),
        )
        .await
        .unwrap();
        let patches = (0..16).map(|i| {
            let (w, cm) = (w.clone(), cm.clone());
            tokio::spawn(async move {
                let body = serde_json::to_vec(&json!({"data": {format!("k{i}"): "v"}})).unwrap();
                w.patch(
                    &cm,
                    "c1",
                    "default",
                    "m",
                    PatchType::Merge,
                    &body,
                    Part::Main,
                    false,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_status().code)
            })
        });
        for p in patches.collect::<Vec<_>>() {
            assert_eq!(p.await.unwrap(), Ok(()));
        }
        let rec = w.get(&cm, "c1", "default", "m").await.unwrap();
        let v: Value = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(v["data"].as_object().unwrap().len(), 16, "{v}");
        // A patch naming a revision that is no longer current is still a conflict.
        let stale =
            serde_json::to_vec(&json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}}))
                .unwrap();
        let err = w
            .patch(
                &cm,
                "c1",
                "default",
                "m",
                PatchType::Merge,
                &stale,
                Part::Main,
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(err.to_status().code, 409);
    }

    #[tokio::test]
    async fn a_workspace_has_a_default_namespace_and_resolves_by_path() {
        let w = ws().await;
        let ns = w.builtin("", "namespaces").unwrap().clone();
        assert!(w.get(&ns, "c1", "", "default").await.is_ok());
        assert_eq!(w.resolve("root:org").await.unwrap(), "c1");
        assert!(matches!(
            w.resolve("root:nope").await,
            Err(WsError::NoWorkspace(_))
        ));
    }

    #[tokio::test]
    async fn writes_into_a_missing_workspace_are_refused() {
        let w = ws().await;
        let ns = w.builtin("", "namespaces").unwrap().clone();
        let err = w
            .create(&ns, "nowhere", "", json!({"metadata": {"name": "x"}}))
            .await
            .unwrap_err();
        assert_eq!(err.to_status().code, 403);
    }

    #[tokio::test]
    async fn custom_resources_are_defaulted_validated_and_keep_status_apart() {
        let w = ws().await;
        let crd_kind = w
            .builtin("apiextensions.k8s.io", "customresourcedefinitions")
            .unwrap()
            .clone();
        w.create(&crd_kind, "c1", "", crd()).await.unwrap();
        let thing = w.find("c1", "g.io", "v1", "things").await.unwrap();
        let rec = w
            .create(
                &thing,
                "c1",
                "",
                json!({"metadata": {"name": "a"}, "spec": {"junk": 1}, "status": {"ok": true}}),
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(v["spec"], json!({"size": 2}));
        assert!(v.get("status").is_none(), "status is dropped on create");
        let err = w
            .create(
                &thing,
                "c1",
                "",
                json!({"metadata": {"name": "b"}, "spec": {"size": 0}}),
            )
            .await
            .unwrap_err();
        let st = err.to_status();
        assert_eq!(st.code, 422);
        assert!(
            st.message
                .starts_with("Thing.g.io \"b\" is invalid: spec.size"),
            "{}",
            st.message
        );
        let d = w
            .patch(
                &thing,
                "c1",
                "",
                "a",
                PatchType::Merge,
                br#"{"status":{"ok":true}}"#,
                Part::Status,
                false,
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&d.record.value).unwrap();
        assert_eq!(v["status"]["ok"], true);
        assert_eq!(
            v["metadata"]["generation"], 1,
            "a status change keeps the generation"
        );
        let d = w
            .patch(
                &thing,
                "c1",
                "",
                "a",
                PatchType::Merge,
                br#"{"spec":{"size":5}}"#,
                Part::Main,
                false,
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&d.record.value).unwrap();
        assert_eq!(v["metadata"]["generation"], 2);
        assert_eq!(v["status"]["ok"], true);
    }

    #[tokio::test]
    async fn unknown_fields_are_named_as_strict_validation_names_them() {
        let w = ws().await;
        let crd_kind = w
            .builtin("apiextensions.k8s.io", "customresourcedefinitions")
            .unwrap()
            .clone();
        w.create(&crd_kind, "c1", "", crd()).await.unwrap();
        let thing = w.find("c1", "g.io", "v1", "things").await.unwrap();
        let body = json!({"metadata": {"name": "a", "junk": 1}, "spec": {"size": 3, "colour": "red"}, "extra": [1]});
        let mut got = unknown_fields(&thing, &body);
        got.sort();
        assert_eq!(got, ["extra", "spec.colour"]);
        let secret = w.builtin("", "secrets").unwrap().clone();
        assert!(unknown_fields(&secret, &body).is_empty());
    }

    #[tokio::test]
    async fn a_crd_for_a_resource_an_apibinding_provides_is_not_accepted() {
        let w = Workspaces::new(Arc::new(MemoryStore::default()));
        let lc = w.builtin("core.kcp.io", "logicalclusters").unwrap().clone();
        let bindings = r#"{"things.g.io":{"n":"cached-things"}}"#;
        w.create(
            &lc,
            "c2",
            "",
            json!({"metadata": {"name": "cluster", "annotations": {"internal.apis.kcp.io/resource-bindings": bindings}}}),
        )
        .await
        .unwrap();
        let crd_kind = w
            .builtin("apiextensions.k8s.io", "customresourcedefinitions")
            .unwrap()
            .clone();
        let rec = w.create(&crd_kind, "c2", "", crd()).await.unwrap();
        let v: Value = serde_json::from_slice(&rec.value).unwrap();
        let names = v["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "NamesAccepted")
            .unwrap()
            .clone();
        assert_eq!(names["status"], "False");
        assert!(w.find("c2", "g.io", "v1", "things").await.is_err());
    }

    #[tokio::test]
    async fn finalizers_hold_a_deleted_object_until_they_are_removed() {
        let w = ws().await;
        let ns = w.builtin("", "configmaps").unwrap().clone();
        w.create(
            &ns,
            "c1",
            "default",
            json!({"metadata": {"name": "x", "finalizers": ["a/b"]}, "data": {"k": "v"}}),
        )
        .await
        .unwrap();
        let d = w
            .delete(&ns, "c1", "default", "x", (None, None))
            .await
            .unwrap();
        assert!(!d.gone);
        let v: Value = serde_json::from_slice(&d.record.value).unwrap();
        assert!(v["metadata"]["deletionTimestamp"].is_string());
        let d = w
            .patch(
                &ns,
                "c1",
                "default",
                "x",
                PatchType::Merge,
                br#"{"metadata":{"finalizers":null}}"#,
                Part::Main,
                false,
            )
            .await
            .unwrap();
        assert!(d.gone);
        assert!(w.get(&ns, "c1", "default", "x").await.is_err());
    }

    #[tokio::test]
    async fn secrets_fold_string_data_into_data() {
        let w = ws().await;
        let s = w.builtin("", "secrets").unwrap().clone();
        let rec = w
            .create(
                &s,
                "c1",
                "default",
                json!({"metadata": {"name": "k"}, "stringData": {"key": "abc"}}),
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(v["data"]["key"], "YWJj");
        assert!(v.get("stringData").is_none());
    }

    #[tokio::test]
    async fn a_second_cached_resource_for_the_same_gvr_is_forbidden() {
        let w = ws().await;
        let cr = w
            .builtin("cache.kcp.io", "cachedresources")
            .unwrap()
            .clone();
        let body = |n: &str| json!({"metadata": {"name": n}, "spec": {"group": "g.io", "version": "v1", "resource": "things"}});
        let rec = w.create(&cr, "c1", "", body("one")).await.unwrap();
        let v: Value = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(v["metadata"]["annotations"]["kcp.io/path"], "root:org");
        let st = w
            .create(&cr, "c1", "", body("two"))
            .await
            .unwrap_err()
            .to_status();
        assert_eq!(st.code, 403);
        assert!(
            st.message
                .ends_with("CachedResource with this GVR already exists in the \"c1\" workspace"),
            "{}",
            st.message
        );
    }

    #[tokio::test]
    async fn cached_resources_of_namespaced_resources_are_forbidden() {
        let w = ws().await;
        let cr = w
            .builtin("cache.kcp.io", "cachedresources")
            .unwrap()
            .clone();
        let st = w
            .create(&cr, "c1", "", json!({"metadata": {"name": "s"}, "spec": {"group": "", "version": "v1", "resource": "secrets"}}))
            .await
            .unwrap_err()
            .to_status();
        assert!(
            st.message
                .ends_with("Resource referenced in CachedResource must be cluster-scoped"),
            "{}",
            st.message
        );
    }

    #[tokio::test]
    async fn deleting_a_namespace_deletes_what_it_holds() {
        let w = ws().await;
        let ns = w.builtin("", "namespaces").unwrap().clone();
        let s = w.builtin("", "secrets").unwrap().clone();
        w.create(&ns, "c1", "", json!({"metadata": {"name": "tmp"}}))
            .await
            .unwrap();
        w.create(&s, "c1", "tmp", json!({"metadata": {"name": "k"}}))
            .await
            .unwrap();
        assert!(
            w.delete(&ns, "c1", "", "tmp", (None, None))
                .await
                .unwrap()
                .gone
        );
        assert!(w.get(&s, "c1", "tmp", "k").await.is_err());
    }
}
