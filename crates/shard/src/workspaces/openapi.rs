//! OpenAPI v3 documents of the workspaces API (`/clusters/<cluster>/api/v1/...`,
//! `/clusters/<cluster>/apis/<g>/<v>/...`): one document per group-version, built from the kinds a
//! workspace serves, plus the `/openapi/v3` index pointing at them.
//!
//! The documents are shaped the way kubectl reads kube-apiserver's: every PATCH operation carries
//! the kind's `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter (so
//! `kubectl apply/create/edit` send `?fieldValidation=Strict` instead of validating client-side),
//! PATCH lists `application/strategic-merge-patch+json` only for the built-in kinds kubectl can
//! compute strategic merge patches for, and `components.schemas` holds each kind's schema (with its
//! patch metadata) and list, so `kubectl explain` and `kubectl apply` find what they look for.
//! [`builtin_types`] describes the built-in and kcp kinds; custom resources come from their CRDs.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// One kind served in a workspace.
#[derive(Debug, Clone)]
pub struct ApiType {
    /// API group; empty for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// Kind of the list, e.g. `SecretList`.
    pub list_kind: String,
    /// Plural resource name used in URLs, e.g. `secrets`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Built-in kind kubectl knows: PATCH also offers strategic merge patch.
    pub strategic_merge_patch: bool,
    /// Has a /status subresource.
    pub status_subresource: bool,
    /// The kind's OpenAPI v3 schema (what a CRD has under `schema.openAPIV3Schema`); None = an open object.
    pub schema: Option<Value>,
    /// One-line description of the kind.
    pub description: String,
}

const REF_PREFIX: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const OWNER_REFERENCE: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference";
const MANAGED_FIELDS_ENTRY: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

const JSON: &str = "application/json";
const JSON_PATCH: &str = "application/json-patch+json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
const WATCH_STREAM: &str = "application/json;stream=watch";

/// `api/v1` for the core group, `apis/<g>/<v>` otherwise.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `components.schemas` name of a kind, following kube's naming: `io.k8s.api.core.v1.Secret`,
/// `io.k8s.api.rbac.v1.ClusterRole`,
/// `io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition`, and for
/// every other group the group reversed, e.g. `io.kcp.cache.v1alpha1.CachedResource`.
pub fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let prefix = match group {
        "" => "io.k8s.api.core".to_string(),
        "rbac.authorization.k8s.io" => "io.k8s.api.rbac".to_string(),
        "apiextensions.k8s.io" => {
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions".to_string()
        }
        _ => {
            let mut parts: Vec<&str> = group.split('.').filter(|s| !s.is_empty()).collect();
            parts.reverse();
            parts.join(".")
        }
    };
    format!("{prefix}.{version}.{kind}")
}

/// The OpenAPI v3 document of one group-version (all `types` share group and version).
///
/// Paths are relative to the workspace (`/api/v1/...`, `/apis/<g>/<v>/...`), as kubectl expects;
/// the GVK of every operation is built from `group` and `version`, not from the types' own fields.
pub fn document(group: &str, version: &str, types: &[ApiType]) -> Value {
    let mut paths = Map::new();
    let mut schemas = shared_schemas();
    for t in types {
        add_paths(&mut paths, group, version, t);
        let kind_name = schema_name(group, version, &t.kind);
        let list_name = schema_name(group, version, &t.list_kind);
        schemas.insert(kind_name.clone(), kind_schema(group, version, t));
        schemas.insert(
            list_name,
            list_schema(group, version, &t.kind, &t.list_kind, &kind_name),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {
            "title": "kcp workspaces API",
            "description": format!("Resources served under {} in a workspace.", gv_path(group, version)),
            "version": "v0.1.0",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// One document per group-version of `types`, keyed by [`gv_path`], in that key's order.
pub fn documents(types: &[ApiType]) -> BTreeMap<String, Value> {
    let mut grouped: BTreeMap<(String, String), Vec<ApiType>> = BTreeMap::new();
    for t in types {
        grouped
            .entry((t.group.clone(), t.version.clone()))
            .or_default()
            .push(t.clone());
    }
    grouped
        .into_iter()
        .map(|((g, v), ts)| (gv_path(&g, &v), document(&g, &v, &ts)))
        .collect()
}

/// Serialized document plus its content hash (upper-case hex, as kube's `?hash=` uses).
///
/// The hash is the upper-case hex SHA-512 of the serialized bytes, like kube-apiserver's; the
/// same document always renders to the same bytes and hash.
pub fn render(doc: &Value) -> (Bytes, String) {
    use sha2::Digest as _;
    // Serializing a `serde_json::Value` cannot fail (all map keys are strings).
    let body = serde_json::to_vec(doc).unwrap_or_default();
    let hash = hex::encode_upper(sha2::Sha512::digest(&body));
    (Bytes::from(body), hash)
}

/// The `/openapi/v3` index: `{"paths": {"<gv path>": {"serverRelativeURL": "/openapi/v3/<gv path>?hash=<hash>"}}}` for each (gv path, hash).
///
/// The URLs carry no `/clusters/<cluster>` prefix: client-go re-adds its own prefix to URLs that
/// start with `/openapi/v3`.
pub fn index(entries: &[(String, String)]) -> Value {
    let mut paths = Map::new();
    for (gv, hash) in entries {
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

// ---------------------------------------------------------------------------------------------
// Paths and operations

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn pascal(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The group-version part of operation ids: `CoreV1`, `RbacAuthorizationV1`, `CacheKcpIoV1alpha1`.
fn operation_prefix(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let words: String = group
        .split(['.', '-'])
        .filter(|s| !s.is_empty())
        .map(pascal)
        .collect();
    format!("{words}{}", pascal(version))
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": {"type": "string"},
    })
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": ty},
    })
}

fn dry_run_param() -> Value {
    query_param(
        "dryRun",
        "string",
        "When set to All, the request is checked and answered but nothing is persisted.",
    )
}

/// `dryRun`, `fieldManager` and `fieldValidation`: what create, replace and patch accept.
fn write_params() -> Vec<Value> {
    vec![
        dry_run_param(),
        query_param(
            "fieldManager",
            "string",
            "Name of the actor making the change, recorded in managedFields.",
        ),
        query_param(
            "fieldValidation",
            "string",
            "How unknown or duplicate fields in the body are treated: Ignore drops them, Warn \
             reports them as warnings, Strict rejects the request.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query_param(
            "allowWatchBookmarks",
            "boolean",
            "With watch, lets the server send BOOKMARK events carrying only a resourceVersion.",
        ),
        query_param(
            "continue",
            "string",
            "Token from a previous paged list response to fetch the next page.",
        ),
        query_param(
            "fieldSelector",
            "string",
            "Restricts the result to objects whose fields match, e.g. metadata.name=x.",
        ),
        query_param(
            "labelSelector",
            "string",
            "Restricts the result to objects whose labels match.",
        ),
        query_param(
            "limit",
            "integer",
            "Maximum number of items in one response; more are reachable with continue.",
        ),
        query_param(
            "resourceVersion",
            "string",
            "Which version of the collection to read or to start watching from.",
        ),
        query_param(
            "resourceVersionMatch",
            "string",
            "How resourceVersion is interpreted: Exact or NotOlderThan.",
        ),
        query_param(
            "sendInitialEvents",
            "boolean",
            "With watch, starts the stream with ADDED events for the current state.",
        ),
        query_param(
            "timeoutSeconds",
            "integer",
            "Upper bound on the duration of the list or watch call.",
        ),
        query_param(
            "watch",
            "boolean",
            "Streams add, update and delete events instead of returning a list.",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run_param(),
        query_param(
            "gracePeriodSeconds",
            "integer",
            "Seconds to wait before the object is deleted; zero deletes at once.",
        ),
        query_param(
            "propagationPolicy",
            "string",
            "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
        ),
    ]
}

fn content(media: &[&str], schema: &str) -> Value {
    let mut m = Map::new();
    for t in media {
        m.insert((*t).to_string(), json!({"schema": schema_ref(schema)}));
    }
    Value::Object(m)
}

fn responses(codes: &[(&str, &str)], media: &[&str], schema: &str) -> Value {
    let mut m = Map::new();
    for (code, description) in codes {
        m.insert(
            (*code).to_string(),
            json!({"description": description, "content": content(media, schema)}),
        );
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

fn request_body(media: &[&str], schema: &str, required: bool) -> Value {
    json!({"content": content(media, schema), "required": required})
}

/// Everything the operations of one kind share.
struct KindOps {
    gvk: Value,
    kind: String,
    kind_ref: String,
    list_ref: String,
    /// Operation id stem, e.g. `CoreV1NamespacedSecret`.
    id_stem: String,
    prefix: String,
    strategic_merge_patch: bool,
}

impl KindOps {
    fn op(
        &self,
        action: &str,
        id: String,
        description: String,
        params: Vec<Value>,
        body: Option<Value>,
        responses: Value,
    ) -> Value {
        let mut op = Map::new();
        op.insert("description".into(), json!(description));
        op.insert("operationId".into(), json!(id));
        op.insert("parameters".into(), Value::Array(params));
        if let Some(body) = body {
            op.insert("requestBody".into(), body);
        }
        op.insert("responses".into(), responses);
        op.insert("x-kubernetes-action".into(), json!(action));
        op.insert("x-kubernetes-group-version-kind".into(), self.gvk.clone());
        Value::Object(op)
    }

    fn patch_media(&self) -> Vec<&'static str> {
        let mut media = vec![JSON_PATCH, MERGE_PATCH];
        if self.strategic_merge_patch {
            media.push(STRATEGIC_MERGE_PATCH);
        }
        media
    }

    fn get(&self, params: &[Value], id: String, what: &str) -> Value {
        self.op(
            "get",
            id,
            format!("Reads {what} of the specified {}.", self.kind),
            params.to_vec(),
            None,
            responses(&[("200", "OK")], &[JSON], &self.kind_ref),
        )
    }

    fn put(&self, params: &[Value], id: String, what: &str) -> Value {
        let mut all = params.to_vec();
        all.extend(write_params());
        self.op(
            "put",
            id,
            format!("Replaces {what} of the specified {}.", self.kind),
            all,
            Some(request_body(&[JSON], &self.kind_ref, true)),
            responses(
                &[("200", "OK"), ("201", "Created")],
                &[JSON],
                &self.kind_ref,
            ),
        )
    }

    fn patch(&self, params: &[Value], id: String, what: &str) -> Value {
        let mut all = params.to_vec();
        all.extend(write_params());
        all.push(query_param(
            "force",
            "boolean",
            "Lets an apply request take over fields owned by other managers.",
        ));
        self.op(
            "patch",
            id,
            format!("Partially updates {what} of the specified {}.", self.kind),
            all,
            Some(request_body(&self.patch_media(), PATCH, true)),
            responses(
                &[("200", "OK"), ("201", "Created")],
                &[JSON],
                &self.kind_ref,
            ),
        )
    }
}

fn add_paths(paths: &mut Map<String, Value>, group: &str, version: &str, t: &ApiType) {
    let prefix = operation_prefix(group, version);
    let scope = if t.namespaced { "Namespaced" } else { "" };
    let ops = KindOps {
        gvk: json!({"group": group, "version": version, "kind": t.kind}),
        kind: t.kind.clone(),
        kind_ref: schema_name(group, version, &t.kind),
        list_ref: schema_name(group, version, &t.list_kind),
        id_stem: format!("{prefix}{scope}{}", t.kind),
        prefix: prefix.clone(),
        strategic_merge_patch: t.strategic_merge_patch,
    };
    let base = format!("/{}", gv_path(group, version));
    let namespace = path_param("namespace", "Namespace of the objects.");
    let name = path_param("name", &format!("Name of the {}.", t.kind));
    let (collection, scope_params) = if t.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", t.plural),
            vec![namespace],
        )
    } else {
        (format!("{base}/{}", t.plural), Vec::new())
    };
    let mut item_params = scope_params.clone();
    item_params.push(name);
    let stem = &ops.id_stem;

    // Collection: list, create, delete collection.
    let mut list_all = scope_params.clone();
    list_all.extend(list_params());
    let list = ops.op(
        "list",
        format!("list{stem}"),
        format!("Lists or watches objects of kind {}.", t.kind),
        list_all,
        None,
        responses(&[("200", "OK")], &[JSON, WATCH_STREAM], &ops.list_ref),
    );
    let mut create_params = scope_params.clone();
    create_params.extend(write_params());
    let create = ops.op(
        "post",
        format!("create{stem}"),
        format!("Creates a {}.", t.kind),
        create_params,
        Some(request_body(&[JSON], &ops.kind_ref, true)),
        responses(
            &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
            &[JSON],
            &ops.kind_ref,
        ),
    );
    let mut delete_collection_params = scope_params.clone();
    delete_collection_params.extend(delete_params());
    delete_collection_params.extend(list_params().into_iter().filter(|p| {
        !matches!(
            p.get("name").and_then(Value::as_str),
            Some("watch" | "allowWatchBookmarks" | "sendInitialEvents")
        )
    }));
    let delete_collection = ops.op(
        "deletecollection",
        format!("delete{}Collection{scope}{}", ops.prefix, t.kind),
        format!("Deletes a collection of {} objects.", t.kind),
        delete_collection_params,
        Some(request_body(&[JSON], DELETE_OPTIONS, false)),
        responses(&[("200", "OK")], &[JSON], STATUS),
    );
    paths.insert(
        collection.clone(),
        json!({"get": list, "post": create, "delete": delete_collection}),
    );

    // Namespaced kinds can also be listed across all namespaces.
    if t.namespaced {
        let all = ops.op(
            "list",
            format!("list{}{}ForAllNamespaces", ops.prefix, t.kind),
            format!(
                "Lists or watches objects of kind {} in all namespaces.",
                t.kind
            ),
            list_params(),
            None,
            responses(&[("200", "OK")], &[JSON, WATCH_STREAM], &ops.list_ref),
        );
        paths.insert(format!("{base}/{}", t.plural), json!({"get": all}));
    }

    // Item: read, replace, patch, delete.
    let mut delete_item_params = item_params.clone();
    delete_item_params.extend(delete_params());
    let delete_item = ops.op(
        "delete",
        format!("delete{stem}"),
        format!("Deletes the specified {}.", t.kind),
        delete_item_params,
        Some(request_body(&[JSON], DELETE_OPTIONS, false)),
        responses(&[("200", "OK"), ("202", "Accepted")], &[JSON], STATUS),
    );
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({
            "get": ops.get(&item_params, format!("read{stem}"), "the object"),
            "put": ops.put(&item_params, format!("replace{stem}"), "the object"),
            "patch": ops.patch(&item_params, format!("patch{stem}"), "the object"),
            "delete": delete_item,
        }),
    );

    if t.status_subresource {
        paths.insert(
            format!("{collection}/{{name}}/status"),
            json!({
                "get": ops.get(&item_params, format!("read{stem}Status"), "the status"),
                "put": ops.put(&item_params, format!("replace{stem}Status"), "the status"),
                "patch": ops.patch(&item_params, format!("patch{stem}Status"), "the status"),
            }),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Component schemas

fn api_version_property() -> Value {
    json!({
        "type": "string",
        "description": "The versioned schema of this representation, as <group>/<version> (just <version> for the core group).",
    })
}

fn kind_property() -> Value {
    json!({
        "type": "string",
        "description": "The REST resource kind this object represents, in CamelCase.",
    })
}

fn kind_schema(group: &str, version: &str, t: &ApiType) -> Value {
    let mut schema = match &t.schema {
        Some(Value::Object(m)) => m.clone(),
        _ => {
            let mut open = Map::new();
            open.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
            open
        }
    };
    schema.insert("type".into(), json!("object"));
    if !schema.contains_key("description") && !t.description.is_empty() {
        schema.insert("description".into(), json!(t.description));
    }
    let props = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if !props.is_object() {
        *props = Value::Object(Map::new());
    }
    if let Value::Object(p) = props {
        p.insert("apiVersion".into(), api_version_property());
        p.insert("kind".into(), kind_property());
        p.insert(
            "metadata".into(),
            json!({
                "description": "Standard object metadata.",
                "allOf": [schema_ref(OBJECT_META)],
                "default": {},
            }),
        );
    }
    schema.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{"group": group, "version": version, "kind": t.kind}]),
    );
    Value::Object(schema)
}

fn list_schema(group: &str, version: &str, kind: &str, list_kind: &str, item: &str) -> Value {
    json!({
        "description": format!("A list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": api_version_property(),
            "kind": kind_property(),
            "items": {
                "description": format!("The {kind} objects."),
                "type": "array",
                "items": {"allOf": [schema_ref(item)], "default": {}},
            },
            "metadata": {
                "description": "Standard list metadata.",
                "allOf": [schema_ref(LIST_META)],
                "default": {},
            },
        },
        "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": list_kind}],
    })
}

/// The apimachinery schemas every document carries (metadata, delete options, status, patch).
fn shared_schemas() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        OBJECT_META.into(),
        json!({
            "description": "Metadata every persisted object has: identity, labels, annotations, ownership and lifecycle.",
            "type": "object",
            "properties": {
                "name": string("Name of the object, unique within its namespace (or the workspace for cluster-scoped kinds)."),
                "generateName": string("Prefix from which the server generates a unique name when name is empty."),
                "namespace": string("Namespace the object lives in; empty for cluster-scoped kinds."),
                "selfLink": string("Deprecated and not set."),
                "uid": string("Identifier unique over the object's lifetime, set by the server."),
                "resourceVersion": string("Opaque version of the object, changed on every write; used for optimistic concurrency and watches."),
                "generation": int64("Sequence number of the desired state, incremented by the server when spec changes."),
                "creationTimestamp": time("Server time when the object was created."),
                "deletionTimestamp": time("Server time after which the object is removed; set when deletion is requested."),
                "deletionGracePeriodSeconds": int64("Seconds the object is given to terminate gracefully once deletion is requested."),
                "labels": string_map("Key/value pairs used to organise and select objects."),
                "annotations": string_map("Key/value pairs for arbitrary non-identifying data."),
                "ownerReferences": {
                    "description": "Objects this object depends on; it is garbage collected once all owners are gone.",
                    "type": "array",
                    "items": {"allOf": [schema_ref(OWNER_REFERENCE)], "default": {}},
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["uid"],
                    "x-kubernetes-patch-merge-key": "uid",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "finalizers": {
                    "description": "Names of pending clean-up steps; the object is removed only after all are cleared.",
                    "type": "array",
                    "items": {"type": "string", "default": ""},
                    "x-kubernetes-list-type": "set",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "managedFields": {
                    "description": "Which manager owns which fields; maintained by the server.",
                    "type": "array",
                    "items": {"allOf": [schema_ref(MANAGED_FIELDS_ENTRY)], "default": {}},
                    "x-kubernetes-list-type": "atomic",
                },
            },
        }),
    );
    m.insert(
        OWNER_REFERENCE.into(),
        json!({
            "description": "Points at an owner object in the same namespace (or cluster-scoped).",
            "type": "object",
            "required": ["apiVersion", "kind", "name", "uid"],
            "properties": {
                "apiVersion": string("API version of the owner."),
                "kind": string("Kind of the owner."),
                "name": string("Name of the owner."),
                "uid": string("UID of the owner."),
                "controller": boolean("Whether this owner is the managing controller."),
                "blockOwnerDeletion": boolean("Whether foreground deletion of the owner waits for this object."),
            },
            "x-kubernetes-map-type": "atomic",
        }),
    );
    m.insert(
        MANAGED_FIELDS_ENTRY.into(),
        json!({
            "description": "The set of fields one manager owns, for one API version.",
            "type": "object",
            "properties": {
                "manager": string("Name of the manager."),
                "operation": string("Apply or Update."),
                "apiVersion": string("API version the field set refers to."),
                "time": time("When the entry last changed."),
                "fieldsType": string("Format of fieldsV1; always FieldsV1."),
                "fieldsV1": {
                    "description": "The owned fields, as a trie.",
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                },
                "subresource": string("Subresource the entry was written through, if any."),
            },
        }),
    );
    m.insert(
        LIST_META.into(),
        json!({
            "description": "Metadata of a list response.",
            "type": "object",
            "properties": {
                "resourceVersion": string("Version of the collection the list was read at."),
                "continue": string("Token for the next page when the list was limited."),
                "remainingItemCount": int64("Approximate number of items left after this page."),
                "selfLink": string("Deprecated and not set."),
            },
        }),
    );
    m.insert(
        DELETE_OPTIONS.into(),
        json!({
            "description": "Options of a delete request.",
            "type": "object",
            "properties": {
                "apiVersion": api_version_property(),
                "kind": kind_property(),
                "dryRun": atomic_strings("When All, the deletion is checked but not persisted."),
                "gracePeriodSeconds": int64("Seconds to wait before deleting; zero deletes at once."),
                "propagationPolicy": string("Orphan, Background or Foreground garbage collection of dependents."),
                "orphanDependents": boolean("Deprecated: orphan dependents instead of deleting them."),
                "preconditions": {
                    "description": "Conditions the object must meet for the deletion to proceed.",
                    "type": "object",
                    "properties": {
                        "resourceVersion": string("Required resourceVersion."),
                        "uid": string("Required UID."),
                    },
                },
            },
            "x-kubernetes-preserve-unknown-fields": true,
        }),
    );
    m.insert(
        STATUS.into(),
        json!({
            "description": "Outcome of a call that does not return an object.",
            "type": "object",
            "properties": {
                "apiVersion": api_version_property(),
                "kind": kind_property(),
                "metadata": {"allOf": [schema_ref(LIST_META)], "default": {}},
                "status": string("Success or Failure."),
                "message": string("Human-readable description of the outcome."),
                "reason": string("Machine-readable reason of a failure."),
                "code": {"description": "HTTP status code.", "type": "integer", "format": "int32"},
                "details": {
                    "description": "Extra data about the failure.",
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                },
            },
            "x-kubernetes-preserve-unknown-fields": true,
        }),
    );
    m.insert(
        PATCH.into(),
        json!({
            "description": "Body of a PATCH request; its form depends on the Content-Type (JSON patch, merge patch or strategic merge patch).",
            "type": "object",
        }),
    );
    m
}

// ---------------------------------------------------------------------------------------------
// Schema building blocks for the built-in and kcp kinds (CRD-style: no `$ref`, so each schema is
// also usable on its own like a CRD's openAPIV3Schema).

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

fn int64(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "description": description})
}

fn time(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "description": description})
}

fn string_map(description: &str) -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}, "description": description})
}

fn byte_map(description: &str) -> Value {
    json!({
        "type": "object",
        "additionalProperties": {"type": "string", "format": "byte"},
        "description": description,
    })
}

fn atomic_strings(description: &str) -> Value {
    json!({
        "type": "array",
        "items": {"type": "string"},
        "x-kubernetes-list-type": "atomic",
        "description": description,
    })
}

fn object(description: &str, properties: Value) -> Value {
    json!({"type": "object", "description": description, "properties": properties})
}

/// An object with the listed fields that also keeps any field not listed.
fn open_object(description: &str, properties: Value) -> Value {
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn open(description: &str) -> Value {
    json!({"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": true})
}

/// Adds `required` to an object schema.
fn requiring(mut schema: Value, fields: &[&str]) -> Value {
    if let Value::Object(m) = &mut schema {
        m.insert("required".into(), json!(fields));
    }
    schema
}

/// Marks an object schema as replaced as a whole by merges.
fn atomic_map(mut schema: Value) -> Value {
    if let Value::Object(m) = &mut schema {
        m.insert("x-kubernetes-map-type".into(), json!("atomic"));
    }
    schema
}

fn label_selector(description: &str) -> Value {
    atomic_map(object(
        description,
        json!({
            "matchLabels": string_map("Labels an object must carry, all of them, with these values."),
            "matchExpressions": {
                "description": "Requirements on labels, all of which must hold.",
                "type": "array",
                "x-kubernetes-list-type": "atomic",
                "items": requiring(object("One requirement on a label.", json!({
                    "key": string("Label key the requirement applies to."),
                    "operator": string("In, NotIn, Exists or DoesNotExist."),
                    "values": atomic_strings("Values for In and NotIn; empty for Exists and DoesNotExist."),
                })), &["key", "operator"]),
            },
        }),
    ))
}

/// kcp's condition list (`{type, status, severity, lastTransitionTime, reason, message}`).
fn kcp_conditions() -> Value {
    json!({
        "description": "Observations of the object's state, one per condition type.",
        "type": "array",
        "items": requiring(object("One observation.", json!({
            "type": string("Condition type, e.g. Ready."),
            "status": string("True, False or Unknown."),
            "severity": string("Error, Warning or Info; set only when status is False."),
            "lastTransitionTime": time("When status last changed."),
            "reason": string("One-word CamelCase cause of the last transition."),
            "message": string("Human-readable details about the last transition."),
        })), &["type", "status"]),
    })
}

fn secret_ref() -> Value {
    object(
        "Secret holding the identity key.",
        json!({
            "namespace": string("Namespace of the secret."),
            "name": string("Name of the secret."),
        }),
    )
}

fn crd_names(description: &str) -> Value {
    requiring(
        object(
            description,
            json!({
                "plural": string("Lower-case plural name used in URLs."),
                "singular": string("Lower-case singular name."),
                "kind": string("CamelCase kind of the objects."),
                "listKind": string("CamelCase kind of lists; defaults to <kind>List."),
                "shortNames": atomic_strings("Short aliases accepted by clients such as kubectl."),
                "categories": atomic_strings("Groupings the resource belongs to, e.g. all."),
            }),
        ),
        &["plural", "kind"],
    )
}

fn printer_columns() -> Value {
    json!({
        "description": "Extra columns shown by kubectl get.",
        "type": "array",
        "x-kubernetes-list-type": "atomic",
        "items": requiring(object("One column.", json!({
            "name": string("Column header."),
            "type": string("OpenAPI type of the column's values."),
            "format": string("Optional OpenAPI format of the values."),
            "description": string("Help text of the column."),
            "priority": {"type": "integer", "format": "int32", "description": "Zero for the standard view, higher for wide views."},
            "jsonPath": string("JSON path into each object giving the column's value."),
        })), &["name", "type", "jsonPath"]),
    })
}

fn policy_rules() -> Value {
    json!({
        "description": "The permissions, one rule each.",
        "type": "array",
        "x-kubernetes-list-type": "atomic",
        "items": requiring(object("Actions allowed on a set of resources or non-resource URLs.", json!({
            "verbs": atomic_strings("Verbs allowed, e.g. get, list, watch; * means all."),
            "apiGroups": atomic_strings("API groups of the resources; empty string is the core group, * means all."),
            "resources": atomic_strings("Resources (and subresources as resource/subresource) the rule covers; * means all."),
            "resourceNames": atomic_strings("Optional names restricting the rule to specific objects."),
            "nonResourceURLs": atomic_strings("URL paths (not resources) the rule covers; only in cluster roles."),
        })), &["verbs"]),
    })
}

fn role_ref() -> Value {
    atomic_map(requiring(
        object(
            "The role whose permissions are granted; cannot be changed once set.",
            json!({
                "apiGroup": string("Group of the role, rbac.authorization.k8s.io."),
                "kind": string("Role or ClusterRole."),
                "name": string("Name of the role."),
            }),
        ),
        &["apiGroup", "kind", "name"],
    ))
}

fn subjects() -> Value {
    json!({
        "description": "Who receives the role's permissions.",
        "type": "array",
        "x-kubernetes-list-type": "atomic",
        "items": atomic_map(requiring(object("A user, group or service account.", json!({
            "kind": string("User, Group or ServiceAccount."),
            "apiGroup": string("rbac.authorization.k8s.io for users and groups, empty for service accounts."),
            "name": string("Name of the subject."),
            "namespace": string("Namespace of a service account."),
        })), &["kind", "name"])),
    })
}

/// The properties of a CachedResource and of kcp main's ClusterCachedResource (one schema).
fn cached_resource_properties() -> Value {
    json!({
        "spec": requiring(open_object("What to replicate.", json!({
            "group": string("API group of the resource; empty for the core group."),
            "version": string("Version of the resource to replicate."),
            "resource": string("Plural name of the resource."),
            "identity": open_object("Identity of the replicated data.", json!({
                "secretRef": secret_ref(),
            })),
            "labelSelector": label_selector("Replicates only objects matching these labels (matchLabels only)."),
        })), &["resource"]),
        "status": open_object("Progress of the replication.", json!({
            "identityHash": string("SHA-256 (hex) of the identity key; fixed once set."),
            "phase": string("Initializing, Ready, Deleting or Deleted."),
            "resourceCounts": open_object("How many objects exist.", json!({
                "cache": int64("Objects in the cache server."),
                "local": int64("Objects in the workspace."),
            })),
            "conditions": kcp_conditions(),
        })),
    })
}

/// The properties of an endpoint slice whose resource reference is `reference` (a `kind`); the
/// APIExport reference `spec.export` is optional (v0.32's CachedResourceEndpointSlice) or
/// required (kcp main's ClusterCachedResourceEndpointSlice).
fn slice_properties(reference: &str, kind: &str, export_required: bool) -> Value {
    let fields = json!({
        reference: requiring(object(&format!("Reference to the {kind}; cannot be changed."), json!({
            "path": string(&format!("Logical cluster path of the {kind}'s workspace; empty for this workspace.")),
            "name": string(&format!("Name of the {kind}.")),
        })), &["name"]),
        "export": requiring(object("The APIExport whose virtual resource references this slice (kcp v0.32 and later; the virtual workspace URL then names the slice); cannot be changed.", json!({
            "path": string("Logical cluster path of the APIExport's workspace; empty for this workspace."),
            "name": string("Name of the APIExport."),
        })), &["name"]),
        "partition": string("Partition of shards to list endpoints of; empty for all shards."),
    });
    let required: &[&str] = if export_required {
        &[reference, "export"]
    } else {
        &[reference]
    };
    let spec = requiring(
        open_object(&format!("Which {kind} the endpoints are for."), fields),
        required,
    );
    json!({
        "spec": spec,
        "status": open_object("The computed endpoints.", json!({
            "endpoints": {
                "description": "One entry per serving virtual workspace.",
                "type": "array",
                "items": requiring(object("One endpoint.", json!({
                    "url": string("Base URL of the virtual workspace."),
                    "shards": open_object("Which shards use this URL: matchAll, or a selector over Shard labels (not both); absent for every shard under the URL (kcp main).", json!({
                        "matchAll": boolean("This URL serves every shard."),
                        "selector": label_selector("Shards whose labels match use this URL."),
                    })),
                })), &["url"]),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["url"],
            },
            "shardSelector": string("Label selector over shards derived from the partition; empty for all shards."),
            "conditions": kcp_conditions(),
        })),
    })
}

fn builtin(
    (group, version, kind, plural): (&str, &str, &str, &str),
    namespaced: bool,
    strategic_merge_patch: bool,
    status_subresource: bool,
    description: &str,
    properties: Value,
) -> ApiType {
    ApiType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        namespaced,
        strategic_merge_patch,
        status_subresource,
        schema: Some(
            json!({"type": "object", "description": description, "properties": properties}),
        ),
        description: description.into(),
    }
}

/// The ApiTypes of the built-in and kcp kinds a workspace serves: core/v1 Namespace, Secret and
/// ConfigMap; rbac.authorization.k8s.io/v1 ClusterRole, ClusterRoleBinding, Role and RoleBinding;
/// apiextensions.k8s.io/v1 CustomResourceDefinition; cache.kcp.io/v1alpha1 CachedResource and
/// CachedResourceEndpointSlice; apis.kcp.io APIExport (v1alpha2), APIResourceSchema (v1alpha1) and
/// APIBinding (v1alpha2); core.kcp.io/v1alpha1 LogicalCluster.
///
/// Namespace, Secret, ConfigMap and the RBAC kinds offer strategic merge patch and spell out every
/// field with kube's list and map types and patch metadata (kubectl apply computes their patches
/// from these schemas). CustomResourceDefinition and the kcp kinds spell out the fields clients
/// use and keep every other field (`x-kubernetes-preserve-unknown-fields`) in spec and status and
/// wherever they are left open, so no real object is rejected.
pub fn builtin_types() -> Vec<ApiType> {
    const RBAC: &str = "rbac.authorization.k8s.io";
    const CACHE: &str = "cache.kcp.io";
    const APIS: &str = "apis.kcp.io";
    vec![
        builtin(
            ("", "v1", "Namespace", "namespaces"),
            false,
            true,
            true,
            "A namespace groups the names of namespaced objects of a workspace.",
            json!({
                "spec": object("Desired behaviour of the namespace.", json!({
                    "finalizers": atomic_strings("Clean-up steps that must finish before the namespace is removed from storage."),
                })),
                "status": object("Observed state of the namespace.", json!({
                    "phase": string("Active, or Terminating while the namespace is being deleted."),
                    "conditions": {
                        "description": "Latest observations of the namespace's state.",
                        "type": "array",
                        "items": requiring(object("One observation.", json!({
                            "type": string("Condition type."),
                            "status": string("True, False or Unknown."),
                            "lastTransitionTime": time("When status last changed."),
                            "reason": string("One-word CamelCase cause of the last transition."),
                            "message": string("Human-readable details."),
                        })), &["type", "status"]),
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                        "x-kubernetes-patch-merge-key": "type",
                        "x-kubernetes-patch-strategy": "merge",
                    },
                })),
            }),
        ),
        builtin(
            ("", "v1", "Secret", "secrets"),
            true,
            true,
            false,
            "A secret holds a small amount of sensitive data such as a password, token or key.",
            json!({
                "data": byte_map("The secret's values, base64-encoded in JSON; keys are letters, digits, '-', '_' or '.'."),
                "stringData": string_map("Write-only convenience: plain-text values merged into data on write, overriding keys there; never returned."),
                "type": string("Hint for programmatic handling of the data, e.g. Opaque or kubernetes.io/tls."),
                "immutable": boolean("When true, data cannot be changed any more; only deletion is possible."),
            }),
        ),
        builtin(
            ("", "v1", "ConfigMap", "configmaps"),
            true,
            true,
            false,
            "A config map holds non-confidential configuration as key/value pairs.",
            json!({
                "data": string_map("UTF-8 values; keys are letters, digits, '-', '_' or '.' and must not also appear in binaryData."),
                "binaryData": byte_map("Binary values, base64-encoded in JSON; keys must not also appear in data."),
                "immutable": boolean("When true, data and binaryData cannot be changed any more."),
            }),
        ),
        builtin(
            (RBAC, "v1", "ClusterRole", "clusterroles"),
            false,
            true,
            false,
            "A workspace-wide set of permissions, grantable by RoleBindings and ClusterRoleBindings.",
            json!({
                "rules": policy_rules(),
                "aggregationRule": object("Makes this role the union of the rules of other cluster roles; rules is then maintained by the server.", json!({
                    "clusterRoleSelectors": {
                        "description": "Cluster roles matching any of these selectors are aggregated.",
                        "type": "array",
                        "x-kubernetes-list-type": "atomic",
                        "items": label_selector("Selects cluster roles by label."),
                    },
                })),
            }),
        ),
        builtin(
            (RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings"),
            false,
            true,
            false,
            "Grants the permissions of a ClusterRole to subjects throughout the workspace.",
            json!({"roleRef": role_ref(), "subjects": subjects()}),
        ),
        builtin(
            (RBAC, "v1", "Role", "roles"),
            true,
            true,
            false,
            "A set of permissions within one namespace, grantable by RoleBindings.",
            json!({"rules": policy_rules()}),
        ),
        builtin(
            (RBAC, "v1", "RoleBinding", "rolebindings"),
            true,
            true,
            false,
            "Grants the permissions of a Role or ClusterRole to subjects within one namespace.",
            json!({"roleRef": role_ref(), "subjects": subjects()}),
        ),
        builtin(
            (
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
            ),
            false,
            false,
            true,
            "Defines a custom resource served by the workspace: its group, names, scope and versioned schemas.",
            json!({
                "spec": requiring(open_object("How the custom resource is served.", json!({
                    "group": string("API group of the resource, e.g. example.com."),
                    "names": crd_names("Names of the resource and its kind."),
                    "scope": string("Namespaced or Cluster."),
                    "versions": {
                        "description": "The served versions, exactly one of which is stored.",
                        "type": "array",
                        "x-kubernetes-list-type": "atomic",
                        "items": requiring(open_object("One version of the resource.", json!({
                            "name": string("Version name, e.g. v1 or v1beta2."),
                            "served": boolean("Whether the version is served."),
                            "storage": boolean("Whether objects are stored in this version; true for exactly one version."),
                            "deprecated": boolean("Whether clients are warned that the version is deprecated."),
                            "deprecationWarning": string("Custom warning returned to clients of a deprecated version."),
                            "schema": open_object("Validation schema of this version.", json!({
                                "openAPIV3Schema": open("OpenAPI v3 schema of the objects, as a structural schema."),
                            })),
                            "subresources": open_object("Subresources of this version.", json!({
                                "status": open("Present to serve a /status subresource."),
                                "scale": open("Present to serve a /scale subresource."),
                            })),
                            "additionalPrinterColumns": printer_columns(),
                            "selectableFields": {
                                "description": "Fields usable in field selectors.",
                                "type": "array",
                                "x-kubernetes-list-type": "atomic",
                                "items": open("A selectable field, by JSON path."),
                            },
                        })), &["name", "served", "storage"]),
                    },
                    "conversion": open("How objects are converted between versions."),
                    "preserveUnknownFields": boolean("Deprecated; must be false."),
                })), &["group", "names", "scope", "versions"]),
                "status": open_object("Observed state of the definition.", json!({
                    "conditions": {
                        "description": "Latest observations, e.g. Established and NamesAccepted.",
                        "type": "array",
                        "items": open("One observation."),
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                    },
                    "acceptedNames": open("The names actually being served."),
                    "storedVersions": atomic_strings("Versions objects have ever been stored in."),
                })),
            }),
        ),
        builtin(
            (CACHE, "v1alpha1", "CachedResource", "cachedresources"),
            false,
            false,
            true,
            "Replicates the objects of one cluster-scoped resource of its workspace into the cache server.",
            cached_resource_properties(),
        ),
        builtin(
            (
                CACHE,
                "v1alpha1",
                "CachedResourceEndpointSlice",
                "cachedresourceendpointslices",
            ),
            false,
            false,
            true,
            "Lists the URLs of the Replication virtual workspace serving a CachedResource.",
            slice_properties("cachedResource", "CachedResource", false),
        ),
        builtin(
            (
                CACHE,
                "v1alpha1",
                "ClusterCachedResource",
                "clustercachedresources",
            ),
            false,
            false,
            true,
            "Replicates the objects of one cluster-scoped resource of its workspace into the cache server, stored as themselves under the resource's identity (kcp main).",
            cached_resource_properties(),
        ),
        builtin(
            (
                CACHE,
                "v1alpha1",
                "ClusterCachedResourceEndpointSlice",
                "clustercachedresourceendpointslices",
            ),
            false,
            false,
            true,
            "Lists the URLs of the Replication virtual workspace serving a ClusterCachedResource through an APIExport (kcp main).",
            slice_properties("clusterCachedResource", "ClusterCachedResource", true),
        ),
        builtin(
            (APIS, "v1alpha2", "APIExport", "apiexports"),
            false,
            false,
            true,
            "Offers resources of its workspace for other workspaces to bind.",
            json!({
                "spec": open_object("What is exported.", json!({
                    "resources": {
                        "description": "The exported resources.",
                        "type": "array",
                        "items": requiring(open_object("One exported resource.", json!({
                            "name": string("Plural name of the resource."),
                            "group": string("API group of the resource; empty for the core group."),
                            "schema": string("Name of the APIResourceSchema in this workspace describing the resource."),
                            "storage": open_object("Where objects are stored: exactly one of crd or virtual.", json!({
                                "crd": open("Stored like a custom resource in the binding workspaces."),
                                "virtual": requiring(open_object("Served by a virtual workspace.", json!({
                                    "reference": requiring(object("Object listing the virtual workspace endpoints, e.g. a CachedResourceEndpointSlice.", json!({
                                        "apiGroup": string("Group of the referenced object."),
                                        "kind": string("Kind of the referenced object."),
                                        "name": string("Name of the referenced object."),
                                    })), &["kind", "name"]),
                                    "identityHash": string("Identity hash of the served data, e.g. a CachedResource's status.identityHash."),
                                })), &["reference"]),
                            })),
                        })), &["name", "schema"]),
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name", "group"],
                    },
                    "identity": open_object("Identity of the export.", json!({"secretRef": secret_ref()})),
                    "maximalPermissionPolicy": open_object("Upper bound on what binders may do with the exported resources.", json!({
                        "local": open("Set to {} to check permissions against RBAC in this workspace."),
                    })),
                    "permissionClaims": {
                        "description": "Access to other resources the export asks binders for.",
                        "type": "array",
                        "items": open_object("One claimed resource.", json!({
                            "group": string("API group of the claimed resource."),
                            "resource": string("Plural name of the claimed resource."),
                            "verbs": atomic_strings("Verbs claimed."),
                            "identityHash": string("Identity hash of the claimed resource, when it is exported."),
                        })),
                    },
                })),
                "status": open_object("Observed state of the export.", json!({
                    "identityHash": string("SHA-256 (hex) of the export's identity key."),
                    "conditions": kcp_conditions(),
                })),
            }),
        ),
        builtin(
            (APIS, "v1alpha1", "APIResourceSchema", "apiresourceschemas"),
            false,
            false,
            false,
            "An immutable description of one resource, referenced by APIExports.",
            json!({
                "spec": requiring(open_object("The resource, described like a CustomResourceDefinition.", json!({
                    "group": string("API group of the resource."),
                    "names": crd_names("Names of the resource and its kind."),
                    "scope": string("Namespaced or Cluster."),
                    "versions": {
                        "description": "The versions, exactly one of which is stored.",
                        "type": "array",
                        "items": requiring(open_object("One version.", json!({
                            "name": string("Version name, e.g. v1."),
                            "served": boolean("Whether the version is served."),
                            "storage": boolean("Whether objects are stored in this version."),
                            "deprecated": boolean("Whether the version is deprecated."),
                            "deprecationWarning": string("Custom warning for a deprecated version."),
                            "schema": open("The OpenAPI v3 schema of the objects."),
                            "subresources": open("Subresources (status, scale) of this version."),
                            "additionalPrinterColumns": printer_columns(),
                        })), &["name"]),
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                    },
                    "nameValidation": string("DNS1123Subdomain or PathSegmentName."),
                    "conversion": open("How objects are converted between versions."),
                })), &["group", "names", "scope", "versions"]),
            }),
        ),
        builtin(
            (APIS, "v1alpha2", "APIBinding", "apibindings"),
            false,
            false,
            true,
            "Binds the resources of an APIExport into its workspace.",
            json!({
                "spec": open_object("Which export is bound.", json!({
                    "reference": requiring(open_object("Reference to the APIExport; cannot be changed.", json!({
                        "export": requiring(object("The APIExport.", json!({
                            "path": string("Logical cluster path of the export's workspace; empty for this workspace."),
                            "name": string("Name of the APIExport."),
                        })), &["name"]),
                    })), &["export"]),
                    "permissionClaims": {
                        "description": "Accepted or rejected permission claims of the export.",
                        "type": "array",
                        "items": open("One claim and its state."),
                    },
                })),
                "status": open_object("Observed state of the binding.", json!({
                    "apiExportClusterName": string("Logical cluster name of the export's workspace."),
                    "phase": string("Binding or Bound."),
                    "boundResources": {
                        "description": "The resources bound.",
                        "type": "array",
                        "items": open_object("One bound resource.", json!({
                            "group": string("API group."),
                            "resource": string("Plural name."),
                            "schema": open_object("Schema the resource is served with.", json!({
                                "name": string("APIResourceSchema name."),
                                "UID": string("APIResourceSchema UID."),
                                "identityHash": string("Identity hash of the APIExport."),
                            })),
                            "storageVersions": atomic_strings("Versions objects have been stored in."),
                        })),
                    },
                    "conditions": kcp_conditions(),
                })),
            }),
        ),
        builtin(
            (
                "core.kcp.io",
                "v1alpha1",
                "LogicalCluster",
                "logicalclusters",
            ),
            false,
            false,
            true,
            "The logical cluster behind a workspace; its one object is always named cluster.",
            json!({
                "spec": open_object("Desired state of the logical cluster.", json!({
                    "directlyDeletable": boolean("Whether the object may be deleted directly rather than through its workspace."),
                    "owner": open("The object (usually a Workspace) owning this logical cluster."),
                    "initializers": atomic_strings("Initializers that must finish before the cluster is ready."),
                    "terminators": atomic_strings("Terminators that must finish before the cluster is deleted."),
                })),
                "status": open_object("Observed state of the logical cluster.", json!({
                    "URL": string("URL at which the logical cluster is served."),
                    "phase": string("Scheduling, Initializing, Ready or Unavailable."),
                    "initializers": atomic_strings("Initializers still pending."),
                    "terminators": atomic_strings("Terminators still pending."),
                    "conditions": kcp_conditions(),
                })),
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_named<'a>(types: &'a [ApiType], kind: &str) -> &'a ApiType {
        types
            .iter()
            .find(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no type {kind}"))
    }

    fn doc_for(types: &[ApiType], kind: &str) -> Value {
        let t = type_named(types, kind);
        let same: Vec<ApiType> = types
            .iter()
            .filter(|o| o.group == t.group && o.version == t.version)
            .cloned()
            .collect();
        document(&t.group, &t.version, &same)
    }

    fn gvk_of(op: &Value) -> Option<(String, String, String)> {
        let g = op.get("x-kubernetes-group-version-kind")?;
        Some((
            g.get("group")?.as_str()?.to_string(),
            g.get("version")?.as_str()?.to_string(),
            g.get("kind")?.as_str()?.to_string(),
        ))
    }

    /// The PATCH operations of a document carrying the given GVK (what kubectl iterates over).
    fn patch_ops<'a>(doc: &'a Value, g: &str, v: &str, k: &str) -> Vec<&'a Value> {
        let want = (g.to_string(), v.to_string(), k.to_string());
        doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
            .filter_map(|item| item.get("patch"))
            .filter(|op| gvk_of(op).as_ref() == Some(&want))
            .collect()
    }

    /// kubectl's server-side field validation check: the first matching PATCH must have a
    /// `fieldValidation` query parameter. Requires it of every match, since kubectl's map order is random.
    fn supports_field_validation(doc: &Value, g: &str, v: &str, k: &str) -> bool {
        let ops = patch_ops(doc, g, v, k);
        !ops.is_empty()
            && ops.iter().all(|op| {
                op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
                })
            })
    }

    fn offers_strategic_merge_patch(doc: &Value, g: &str, v: &str, k: &str) -> Vec<bool> {
        patch_ops(doc, g, v, k)
            .iter()
            .map(|op| {
                op["requestBody"]["content"]
                    .get(STRATEGIC_MERGE_PATCH)
                    .is_some()
            })
            .collect()
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        if let Some(s) = x.as_str() {
                            out.push(s.to_string());
                        }
                    } else {
                        collect_refs(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }

    fn custom_type() -> ApiType {
        ApiType {
            group: "cloud.example.com".into(),
            version: "v1".into(),
            kind: "CPUFlavor".into(),
            list_kind: "CPUFlavorList".into(),
            plural: "cpuflavors".into(),
            namespaced: false,
            strategic_merge_patch: false,
            status_subresource: true,
            schema: Some(json!({
                "type": "object",
                "properties": {
                    "metadata": {"type": "object"},
                    "spec": {"type": "object", "description": "Flavor sizing.", "properties": {
                        "cores": {"type": "integer", "description": "Number of cores."}
                    }},
                },
            })),
            description: "A CPU flavor.".into(),
        }
    }

    #[test]
    fn field_validation_is_found_for_every_builtin_kind() {
        let types = builtin_types();
        assert_eq!(types.len(), 16);
        for t in &types {
            let doc = doc_for(&types, &t.kind);
            assert!(
                supports_field_validation(&doc, &t.group, &t.version, &t.kind),
                "{}",
                t.kind
            );
        }
    }

    #[test]
    fn field_validation_is_found_for_a_crd_kind_with_a_schema() {
        let t = custom_type();
        let doc = document(&t.group, &t.version, std::slice::from_ref(&t));
        assert!(supports_field_validation(
            &doc,
            "cloud.example.com",
            "v1",
            "CPUFlavor"
        ));
        assert!(!supports_field_validation(
            &doc,
            "cloud.example.com",
            "v1",
            "Other"
        ));
    }

    #[test]
    fn strategic_merge_patch_is_offered_only_for_builtin_kinds() {
        let types = builtin_types();
        let smp: Vec<&str> = types
            .iter()
            .filter(|t| t.strategic_merge_patch)
            .map(|t| t.kind.as_str())
            .collect();
        assert_eq!(
            smp,
            [
                "Namespace",
                "Secret",
                "ConfigMap",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding"
            ]
        );
        for t in &types {
            let doc = doc_for(&types, &t.kind);
            let offered = offers_strategic_merge_patch(&doc, &t.group, &t.version, &t.kind);
            assert!(!offered.is_empty());
            assert!(
                offered.iter().all(|o| *o == t.strategic_merge_patch),
                "{}",
                t.kind
            );
        }
        let crd = custom_type();
        let doc = document(&crd.group, &crd.version, std::slice::from_ref(&crd));
        let offered = offers_strategic_merge_patch(&doc, "cloud.example.com", "v1", "CPUFlavor");
        assert_eq!(offered, [false, false]);
        let item = &doc["paths"]["/apis/cloud.example.com/v1/cpuflavors/{name}"]["patch"];
        assert!(item["requestBody"]["content"].get(MERGE_PATCH).is_some());
        assert!(item["requestBody"]["content"].get(JSON_PATCH).is_some());
    }

    #[test]
    fn core_group_documents_use_api_v1_paths() {
        assert_eq!(gv_path("", "v1"), "api/v1");
        assert_eq!(
            gv_path("apis.kcp.io", "v1alpha2"),
            "apis/apis.kcp.io/v1alpha2"
        );
        let docs = documents(&builtin_types());
        let keys: Vec<&str> = docs.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "api/v1",
                "apis/apiextensions.k8s.io/v1",
                "apis/apis.kcp.io/v1alpha1",
                "apis/apis.kcp.io/v1alpha2",
                "apis/cache.kcp.io/v1alpha1",
                "apis/core.kcp.io/v1alpha1",
                "apis/rbac.authorization.k8s.io/v1",
            ]
        );
        let core = &docs["api/v1"];
        let mut paths: Vec<&str> = core["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys().map(String::as_str))
            .collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api/v1/configmaps",
                "/api/v1/namespaces",
                "/api/v1/namespaces/{namespace}/configmaps",
                "/api/v1/namespaces/{namespace}/configmaps/{name}",
                "/api/v1/namespaces/{namespace}/secrets",
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                "/api/v1/namespaces/{name}",
                "/api/v1/namespaces/{name}/status",
                "/api/v1/secrets",
            ]
        );
        let secret = &core["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["get"];
        assert_eq!(
            secret["responses"]["200"]["content"][JSON]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Secret"
        );
        assert_eq!(secret["operationId"], "readCoreV1NamespacedSecret");
        let params: Vec<&str> = secret["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path" && p["required"] == true)
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(params, ["namespace", "name"]);
        let all = &core["paths"]["/api/v1/secrets"];
        assert_eq!(all.as_object().map(|m| m.len()), Some(1));
        assert_eq!(all["get"]["x-kubernetes-action"], "list");
    }

    #[test]
    fn every_operation_carries_gvk_action_and_write_parameters() {
        let types = builtin_types();
        for (_, doc) in documents(&types) {
            for (path, item) in doc["paths"].as_object().into_iter().flatten() {
                for (method, op) in item.as_object().into_iter().flatten() {
                    assert!(gvk_of(op).is_some(), "{method} {path}");
                    assert!(op["x-kubernetes-action"].is_string(), "{method} {path}");
                    assert!(op["operationId"].is_string(), "{method} {path}");
                    let names: Vec<&str> = op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["name"].as_str())
                        .collect();
                    for placeholder in ["name", "namespace"] {
                        if path.contains(&format!("{{{placeholder}}}")) {
                            assert!(names.contains(&placeholder), "{method} {path}");
                        }
                    }
                    if matches!(method.as_str(), "post" | "put" | "patch") {
                        for q in ["dryRun", "fieldManager", "fieldValidation"] {
                            assert!(names.contains(&q), "{method} {path} lacks {q}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn operation_ids_are_unique_within_a_document() {
        for (gv, doc) in documents(&builtin_types()) {
            let mut ids: Vec<&str> = doc["paths"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.values())
                .flat_map(|item| item.as_object().into_iter().flat_map(|m| m.values()))
                .filter_map(|op| op["operationId"].as_str())
                .collect();
            let n = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), n, "{gv}");
        }
    }

    #[test]
    fn index_points_at_the_hashed_group_version_document() {
        let doc = doc_for(&builtin_types(), "Secret");
        let (body, hash) = render(&doc);
        assert_eq!(hash.len(), 128);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(render(&doc).1, hash, "rendering is stable");
        let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(parsed, doc);
        let idx = index(&[
            ("api/v1".into(), hash.clone()),
            ("apis/cache.kcp.io/v1alpha1".into(), "ABC".into()),
        ]);
        assert_eq!(
            idx["paths"]["api/v1"]["serverRelativeURL"],
            format!("/openapi/v3/api/v1?hash={hash}")
        );
        assert_eq!(
            idx["paths"]["apis/cache.kcp.io/v1alpha1"]["serverRelativeURL"],
            "/openapi/v3/apis/cache.kcp.io/v1alpha1?hash=ABC"
        );
    }

    #[test]
    fn a_crd_schema_appears_under_the_kind_schema() {
        let t = custom_type();
        let doc = document(&t.group, &t.version, std::slice::from_ref(&t));
        let schemas = &doc["components"]["schemas"];
        let kind = &schemas["com.example.cloud.v1.CPUFlavor"];
        assert_eq!(
            kind["properties"]["spec"]["properties"]["cores"]["description"],
            "Number of cores."
        );
        assert_eq!(kind["description"], "A CPU flavor.");
        assert_eq!(
            kind["properties"]["metadata"]["allOf"][0]["$ref"],
            format!("{REF_PREFIX}{OBJECT_META}")
        );
        assert_eq!(
            kind["x-kubernetes-group-version-kind"],
            json!([{"group": "cloud.example.com", "version": "v1", "kind": "CPUFlavor"}])
        );
        let list = &schemas["com.example.cloud.v1.CPUFlavorList"];
        assert_eq!(
            list["properties"]["items"]["items"]["allOf"][0]["$ref"],
            "#/components/schemas/com.example.cloud.v1.CPUFlavor"
        );
        assert!(
            doc["paths"]
                .get("/apis/cloud.example.com/v1/cpuflavors/{name}/status")
                .is_some()
        );
        // Without a schema the kind is an open object.
        let open = ApiType {
            schema: None,
            ..custom_type()
        };
        let doc = document(&open.group, &open.version, std::slice::from_ref(&open));
        let kind = &doc["components"]["schemas"]["com.example.cloud.v1.CPUFlavor"];
        assert_eq!(kind["x-kubernetes-preserve-unknown-fields"], true);
        assert!(kind["properties"]["kind"].is_object());
    }

    #[test]
    fn every_ref_resolves_to_a_component_schema() {
        let mut types = builtin_types();
        types.push(custom_type());
        for (gv, doc) in documents(&types) {
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let name = r.strip_prefix(REF_PREFIX).unwrap_or(&r);
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{gv}: {r} does not resolve"
                );
            }
        }
    }

    #[test]
    fn schema_names_follow_kube_naming() {
        assert_eq!(schema_name("", "v1", "Secret"), "io.k8s.api.core.v1.Secret");
        assert_eq!(
            schema_name("rbac.authorization.k8s.io", "v1", "ClusterRole"),
            "io.k8s.api.rbac.v1.ClusterRole"
        );
        assert_eq!(
            schema_name("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
        );
        assert_eq!(
            schema_name("cache.kcp.io", "v1alpha1", "CachedResource"),
            "io.kcp.cache.v1alpha1.CachedResource"
        );
        assert_eq!(
            operation_prefix("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(operation_prefix("", "v1"), "CoreV1");
    }

    /// Follows kubectl's strategic-merge metadata lookup: a property, then `allOf[0]` / `$ref`.
    fn patch_meta<'a>(
        doc: &'a Value,
        schema: &'a Value,
        key: &str,
        slice: bool,
    ) -> (&'a Value, Value) {
        let field = schema["properties"]
            .get(key)
            .unwrap_or_else(|| panic!("unable to find api field {key}"));
        let meta = json!([
            field.get("x-kubernetes-patch-strategy"),
            field.get("x-kubernetes-patch-merge-key")
        ]);
        let mut next = field;
        if slice && next.get("items").is_some() {
            next = &next["items"];
        }
        if let Some(first) = next.get("allOf").and_then(|a| a.get(0)) {
            next = first;
        }
        if let Some(r) = next.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix(REF_PREFIX).unwrap_or(r);
            next = &doc["components"]["schemas"][name];
        }
        (next, meta)
    }

    #[test]
    fn strategic_merge_patch_metadata_resolves_for_fields_kubectl_apply_diffs() {
        let types = builtin_types();
        let doc = doc_for(&types, "Secret");
        let secret = &doc["components"]["schemas"]["io.k8s.api.core.v1.Secret"];
        let (meta, _) = patch_meta(&doc, secret, "metadata", false);
        for key in ["labels", "annotations"] {
            patch_meta(&doc, meta, key, false);
        }
        let (_, finalizers) = patch_meta(&doc, meta, "finalizers", true);
        assert_eq!(finalizers, json!(["merge", null]));
        let (owner, owners) = patch_meta(&doc, meta, "ownerReferences", true);
        assert_eq!(owners, json!(["merge", "uid"]));
        assert!(owner["properties"]["uid"].is_object());
        for key in ["data", "stringData"] {
            patch_meta(&doc, secret, key, false);
        }

        let doc = doc_for(&types, "ClusterRoleBinding");
        let crb = &doc["components"]["schemas"]["io.k8s.api.rbac.v1.ClusterRoleBinding"];
        patch_meta(&doc, crb, "roleRef", false);
        let (subject, subjects) = patch_meta(&doc, crb, "subjects", true);
        assert_eq!(subjects, json!([null, null]), "subjects are replaced whole");
        assert!(subject["properties"]["namespace"].is_object());

        let doc = doc_for(&types, "ClusterRole");
        let cr = &doc["components"]["schemas"]["io.k8s.api.rbac.v1.ClusterRole"];
        let (rule, _) = patch_meta(&doc, cr, "rules", true);
        assert!(rule["properties"]["verbs"].is_object());
        let (agg, _) = patch_meta(&doc, cr, "aggregationRule", false);
        let (sel, _) = patch_meta(&doc, agg, "clusterRoleSelectors", true);
        patch_meta(&doc, sel, "matchLabels", false);

        let doc = doc_for(&types, "Namespace");
        let ns = &doc["components"]["schemas"]["io.k8s.api.core.v1.Namespace"];
        let (status, _) = patch_meta(&doc, ns, "status", false);
        let (_, conditions) = patch_meta(&doc, status, "conditions", true);
        assert_eq!(conditions, json!(["merge", "type"]));
    }

    #[test]
    fn kcp_kinds_keep_fields_they_do_not_spell_out() {
        let types = builtin_types();
        let export = type_named(&types, "APIExport");
        let schema = export.schema.clone().unwrap_or_default();
        assert_eq!(
            schema["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        let virt = &schema["properties"]["spec"]["properties"]["resources"]["items"]["properties"]
            ["storage"]["properties"]["virtual"];
        assert!(virt["properties"]["identityHash"].is_object());
        let cr = type_named(&types, "CachedResource");
        let status = &cr
            .schema
            .as_ref()
            .map(|s| s["properties"]["status"].clone());
        assert_eq!(
            status
                .as_ref()
                .map(|s| s["properties"]["resourceCounts"]["properties"]["cache"]["type"].clone()),
            Some(json!("integer"))
        );
    }
}
