//! The API a CachedResource is served as (`kcp-reference.md` §5.4), resolved by the index once
//! per catalog change and read by the handlers and the OpenAPI renderer.

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
}

impl ResolvedApi {
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
