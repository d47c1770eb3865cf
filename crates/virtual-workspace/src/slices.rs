//! The slice-keyed URLs of kcp v0.32 and main (`kcp-head.md` §4): which URL domains a slice
//! owns, how a slice resolves to the API it serves, who consumes it, and how an object the
//! cache stores as itself (under `<plural>:<identity>`) becomes the served object.
//!
//! Precedence of `/services/replication/<a>/<b>/…`, decided per catalog change: a
//! ClusterCachedResourceEndpointSlice `<b>` in cluster `<a>` (main); else a
//! CachedResourceEndpointSlice `<b>` with `spec.export` (v0.32); else the CachedResource `<b>`
//! (v0.30). A v0.30 default slice never has `spec.export`, so it never hides its
//! CachedResource. Unlike kcp, which resolves a slice only when the slice changes (§4.2), the
//! resolution here is redone on every change of the slice, its resource, its export or its
//! schema.

use super::index::{MemoUse, ObjKey, ServedObject, State};
use super::resolved::{IdentitySource, ResolvedApi, Source};
use bytes::Bytes;
use kcp_model::types::{ANN_PATH, ApiExport, CachedResource, EndpointSlice};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a URL domain `(<a>, <b>)` is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// kcp v0.30: the CachedResource `<b>`.
    CachedResource,
    /// kcp v0.32 and main: the slice `<b>`.
    Slice(SliceKind),
}

/// The two slice kinds that key URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SliceKind {
    /// v0.32: a CachedResourceEndpointSlice with `spec.export`, referencing a CachedResource.
    CachedResource,
    /// main: a ClusterCachedResourceEndpointSlice, referencing a ClusterCachedResource.
    ClusterCachedResource,
}

impl SliceKind {
    /// The slice's kind, as export virtual references name it.
    pub fn slice_kind(self) -> &'static str {
        match self {
            SliceKind::CachedResource => "CachedResourceEndpointSlice",
            SliceKind::ClusterCachedResource => "ClusterCachedResourceEndpointSlice",
        }
    }

    /// The plural of the resource kind the slice references.
    pub fn resource_plural(self) -> &'static str {
        match self {
            SliceKind::CachedResource => "cachedresources",
            SliceKind::ClusterCachedResource => "clustercachedresources",
        }
    }
}

/// A v0.32 CachedResource or a ClusterCachedResource, with where the cache keeps it.
#[derive(Debug, Clone)]
pub struct IdentityResource {
    /// Cache revision of the object.
    pub revision: u64,
    /// The shard that replicated it (its objects live under the same shard).
    pub shard: String,
    /// The object (both kinds share the CachedResource shape).
    pub resource: Arc<CachedResource>,
}

/// Key of an identity-based resource: (plural of its kind, cluster, name).
pub type IdentityResourceKey = (&'static str, String, String);

/// Key of an object stored as itself: group, `<plural>:<identity>`, cluster, shard,
/// namespace, name — ordered so that one (Cluster)CachedResource's objects are one range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityObjectKey {
    /// API group.
    pub group: String,
    /// `<plural>:<identity>`.
    pub resource: String,
    /// Logical cluster.
    pub cluster: String,
    /// Shard.
    pub shard: String,
    /// Namespace ("" when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl IdentityObjectKey {
    /// The key of a store key.
    pub fn of(key: &store::Key) -> Self {
        IdentityObjectKey {
            group: key.group.to_string(),
            resource: key.resource.to_string(),
            cluster: key.cluster.to_string(),
            shard: key.shard.to_string(),
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
        }
    }

    /// The first key of a source's range.
    pub fn start(source: &IdentitySource) -> Self {
        IdentityObjectKey {
            group: source.group.clone(),
            resource: source.resource.clone(),
            cluster: source.cluster.clone(),
            shard: source.shard.clone(),
            namespace: String::new(),
            name: String::new(),
        }
    }

    /// Whether the object belongs to `source`.
    pub fn in_source(&self, source: &IdentitySource) -> bool {
        self.group == source.group
            && self.resource == source.resource
            && self.cluster == source.cluster
            && self.shard == source.shard
    }

    /// The origin name a served resource remembers this object by.
    pub fn origin(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Whether a store resource segment names identity-based storage (`<plural>:<identity>`).
pub fn is_identity_resource(resource: &str) -> bool {
    resource.contains(':')
}

impl State {
    /// Every URL domain and what keys it, with the precedence in this module's header.
    pub fn domains(&self) -> BTreeMap<ObjKey, Domain> {
        let mut out: BTreeMap<ObjKey, Domain> = self
            .cached_resources
            .keys()
            .map(|k| (k.clone(), Domain::CachedResource))
            .collect();
        for (k, s) in &self.slices {
            if s.spec.export.is_some() {
                out.insert(k.clone(), Domain::Slice(SliceKind::CachedResource));
            }
        }
        for k in self.cc_slices.keys() {
            out.insert(k.clone(), Domain::Slice(SliceKind::ClusterCachedResource));
        }
        out
    }

    /// The slice of a slice-keyed domain.
    pub fn slice(&self, key: &ObjKey, kind: SliceKind) -> Option<&Arc<EndpointSlice>> {
        match kind {
            SliceKind::CachedResource => self.slices.get(key).filter(|s| s.spec.export.is_some()),
            SliceKind::ClusterCachedResource => self.cc_slices.get(key),
        }
    }

    /// The cluster a `{path, name}` reference made from `cluster` points into: the path's
    /// logical cluster when some object carries that `kcp.io/path`, the path itself otherwise
    /// (a cluster name), or `cluster` when there is no path.
    fn referenced_cluster(&self, cluster: &str, path: &str) -> String {
        if path.is_empty() {
            return cluster.to_string();
        }
        self.logical_clusters
            .iter()
            .find(|(_, lc)| lc.metadata.annotation(ANN_PATH) == path)
            .map_or_else(|| path.to_string(), |(c, _)| c.clone())
    }

    /// The APIExport a slice names in `spec.export` (§4.3 step 4), or the 404 message.
    pub fn slice_export(
        &self,
        key: &ObjKey,
        slice: &EndpointSlice,
    ) -> Result<(ObjKey, Arc<ApiExport>), String> {
        let reference = slice.spec.export.clone().unwrap_or_default();
        let path = if reference.path.is_empty() {
            key.0.as_str()
        } else {
            reference.path.as_str()
        };
        self.export_by_path(path, &reference.name)
            .map(|(k, e)| (k.clone(), e.clone()))
            .ok_or_else(|| format!("apiexports.apis.kcp.io \"{}\" not found", reference.name))
    }

    /// The (Cluster)CachedResource a slice references and its cluster, if the cache holds it.
    fn slice_resource(
        &self,
        key: &ObjKey,
        slice: &EndpointSlice,
        kind: SliceKind,
    ) -> Option<(String, IdentityResource)> {
        let r = slice.resource_ref();
        let cluster = self.referenced_cluster(&key.0, &r.path);
        self.identity_resources
            .get(&(kind.resource_plural(), cluster.clone(), r.name.clone()))
            .map(|ir| (cluster, ir.clone()))
    }

    /// The group-resource consumers bind for a slice (§4.3 step 5): that of the export's first
    /// virtual resource whose reference names the slice.
    pub fn slice_bound_resource(export: &ApiExport, slice_name: &str) -> Option<String> {
        export
            .spec
            .resources
            .iter()
            .find(|r| {
                r.storage
                    .virtual_
                    .as_ref()
                    .is_some_and(|v| v.reference.name == slice_name)
            })
            .map(|r| kube_api::status::qualified(&r.group, &r.name))
    }

    /// Consumers of a slice-keyed domain: clusters whose LogicalCluster binds the slice's
    /// group-resource to an existing APIBinding of the slice's export. (kcp's authorizer does not
    /// check that the binding points at the export; we do, as for v0.30.)
    pub fn slice_consumers(&self, export_key: &ObjKey, bound_resource: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for ((cluster, name), binding) in self.all_bindings() {
            if self
                .binding_export(cluster, binding)
                .is_none_or(|(k, _)| k != export_key)
            {
                continue;
            }
            let bound = self
                .logical_cluster(cluster)
                .and_then(|lc| lc.resource_bindings().ok())
                .and_then(|b| b.get(bound_resource).cloned())
                .is_some_and(|lock| lock.n == *name);
            if bound {
                out.insert(cluster.clone());
            }
        }
        out
    }

    /// Resolve the API a slice serves (§4.2). Every error is answered 404 by the handlers.
    pub(crate) fn resolve_slice(
        &mut self,
        key: &ObjKey,
        kind: SliceKind,
    ) -> Result<Arc<ResolvedApi>, String> {
        let slice_kind = kind.slice_kind();
        let slice = self
            .slice(key, kind)
            .cloned()
            .ok_or_else(|| format!("{slice_kind} {}|{} not found", key.0, key.1))?;
        for condition in ["ResourceValid", "APIExportValid"] {
            if !slice.condition_true(condition) {
                return Err(format!(
                    "{slice_kind} {}|{} is not ready: {condition} is not True",
                    key.0, key.1
                ));
            }
        }
        let Some((resource_cluster, resource)) = self.slice_resource(key, &slice, kind) else {
            return Err(format!(
                "the {} of {slice_kind} {}|{} is not in the cache",
                kind.resource_plural(),
                key.0,
                key.1
            ));
        };
        let cr = &resource.resource;
        let hash = &cr.status.identity_hash;
        if hash.is_empty() {
            return Err(format!("{} has no identity yet", cr.metadata.name));
        }
        let (export_key, export) = self.slice_export(key, &slice)?;
        let export_rev = self.exports.get(&export_key).map_or(0, |(rev, _)| *rev);
        let Some(export_resource) = export.spec.resources.iter().find(|r| {
            r.storage.virtual_.as_ref().is_some_and(|v| {
                v.reference.api_group.as_deref() == Some("cache.kcp.io")
                    && v.reference.kind == slice_kind
                    && v.reference.name == key.1
            })
        }) else {
            return Err(format!(
                "APIExport {}|{} does not reference {slice_kind} {}",
                export_key.0, export_key.1, key.1
            ));
        };
        let (g, v, r) = (&cr.spec.group, &cr.spec.version, &cr.spec.resource);
        let skey = (export_key.0.clone(), export_resource.schema.clone());
        let Some((schema_rev, schema)) = self.schemas.get(&skey).cloned() else {
            return Err(format!(
                "apiresourceschemas.apis.kcp.io \"{}\" not found",
                export_resource.schema
            ));
        };
        let Some(version) = schema
            .spec
            .versions
            .iter()
            .find(|sv| sv.name == *v && sv.served)
        else {
            return Err(format!(
                "APIResourceSchema {}|{} doesn't serve {r}.{v}.{g}",
                skey.0, skey.1
            ));
        };
        let source = IdentitySource {
            group: g.clone(),
            resource: format!("{r}:{hash}"),
            shard: resource.shard.clone(),
            cluster: resource_cluster,
        };
        let fingerprint = format!(
            "{}@{}|export {}/{}@{export_rev}",
            kind.resource_plural(),
            resource.revision,
            export_key.0,
            export_key.1
        );
        self.build_api(
            (g, v, r),
            (&schema, version),
            (&skey, schema_rev),
            (hash, &export_key),
            Source::Identity(source),
            &fingerprint,
        )
    }

    /// Consumers of a slice-keyed domain, from its current slice and export.
    pub(crate) fn consumers_of_slice(&self, key: &ObjKey, kind: SliceKind) -> BTreeSet<String> {
        let Some(slice) = self.slice(key, kind) else {
            return BTreeSet::new();
        };
        let Ok((export_key, export)) = self.slice_export(key, slice) else {
            return BTreeSet::new();
        };
        match Self::slice_bound_resource(&export, &key.1) {
            Some(gr) => self.slice_consumers(&export_key, &gr),
            None => BTreeSet::new(),
        }
    }
}

/// The served form of an object stored as itself (§4.5): `kcp.io/cluster` set per consumer;
/// `kcp.io/shard` and the `cache.kcp.io/original-*` annotations removed; `uid` kept (the
/// cache's); `resourceVersion` the cache revision; validated against the served schema.
pub fn serve_identity_object(
    value: &Bytes,
    revision: u64,
    api: &ResolvedApi,
) -> Result<ServedObject, String> {
    serve_identity_object_memo(value, revision, api, MemoUse::default())
}

/// [`serve_identity_object`], using the validation memo as `memo` says.
pub fn serve_identity_object_memo(
    value: &Bytes,
    revision: u64,
    api: &ResolvedApi,
    memo: MemoUse<'_>,
) -> Result<ServedObject, String> {
    let text = simdutf8::basic::from_utf8(value)
        .or_else(|_| std::str::from_utf8(value))
        .map_err(|e| format!("failed to decode object: {e}"))?;
    super::index::derive_text(
        value,
        text.trim(),
        ("object", "it"),
        revision,
        api,
        false,
        memo,
        true,
    )
}
