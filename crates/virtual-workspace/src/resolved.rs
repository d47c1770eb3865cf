//! The API a virtual workspace URL serves — a CachedResource's (`kcp-reference.md` §5.4) or a
//! slice's (`kcp-head.md` §4.2) — resolved by the index once per catalog change and read by the
//! handlers and the OpenAPI renderer.

use kcp_model::types::{Names, PrinterColumn};
use schema::structural::Structural as Validator;
use serde_json::Value;
use std::sync::Arc;

/// `(logical cluster, name)` of a cluster-scoped object.
pub type ObjKey = (String, String);

/// The API a CachedResource is served as (§5.4), resolved once per catalog change.
#[derive(Debug)]
pub struct ResolvedApi {
    /// Group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Schema names.
    pub names: Names,
    /// Namespaced (the VW follows the schema's scope).
    pub namespaced: bool,
    /// Whether the version declares a status subresource.
    pub has_status: bool,
    /// The printer columns of the served version.
    pub printer_columns: Vec<PrinterColumn>,
    /// Selectable fields (`spec.color` for `.spec.color`).
    pub selectable_fields: Vec<String>,
    /// The CachedResource's identity hash.
    pub identity_hash: String,
    /// The chosen export `(cluster, name)`.
    pub export: ObjKey,
    /// Compiled schema of the served version: prunes, defaults and validates at ingest.
    pub validator: Arc<Validator>,
    /// Changes whenever the schema or the chosen export changes.
    pub fingerprint: String,
    /// The served version's OpenAPI v3 schema (as in the APIResourceSchema).
    pub schema: Arc<Value>,
    /// Where the served objects come from.
    pub source: Source,
    /// The validation contexts of [`crate::memo`] (unwrapped, wrapped), made on first use.
    pub memo_contexts: std::sync::OnceLock<[crate::memo::Context; 2]>,
}

/// Where the objects of a served API are stored in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// kcp v0.30: CachedObjects in the CachedResource's cluster, matched by their labels.
    CachedObjects,
    /// kcp v0.32 and main: the objects themselves, under `<plural>:<identity>` in the
    /// (Cluster)CachedResource's shard and cluster.
    Identity(IdentitySource),
}

/// The cache location of identity-stored objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySource {
    /// API group of the stored objects.
    pub group: String,
    /// `<plural>:<identity>`.
    pub resource: String,
    /// The (Cluster)CachedResource's shard.
    pub shard: String,
    /// The (Cluster)CachedResource's logical cluster.
    pub cluster: String,
}

impl ResolvedApi {
    /// The validation context of this API's objects for the memo: `wrapped` for the inner
    /// objects of CachedObjects, otherwise objects stored as themselves.
    pub fn memo_context(&self, wrapped: bool) -> &crate::memo::Context {
        let both = self.memo_contexts.get_or_init(|| {
            let (api_version, kind) = (self.api_version(), &self.names.kind);
            [
                crate::memo::context(&self.schema, &api_version, kind, false),
                crate::memo::context(&self.schema, &api_version, kind, true),
            ]
        });
        &both[usize::from(wrapped)]
    }

    /// Whether watches follow kube's selector semantics (an object entering a label selector
    /// arrives as ADDED) rather than kcp v0.30's (MODIFIED): the slice-keyed generations do.
    pub fn kube_watch(&self) -> bool {
        matches!(self.source, Source::Identity(_))
    }

    /// `<group>/<version>`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The list kind.
    pub fn list_kind(&self) -> String {
        if self.names.list_kind.is_empty() {
            format!("{}List", self.names.kind)
        } else {
            self.names.list_kind.clone()
        }
    }
}
