//! OpenAPI v3 for the served resource, shaped like kube-apiserver's documents for a CRD, so that
//! `kubectl explain` finds the kind and prints the schema's field documentation.
//!
//! `/openapi/v3` lists one group-version with a content hash; `/openapi/v3/apis/<g>/<v>` is the
//! document: list/get/watch paths carrying `x-kubernetes-group-version-kind`, the kind's schema
//! (the APIResourceSchema version's schema plus `apiVersion`, `kind`, `metadata`) and its list.
//! Documents are rendered once per resolved API and served as bytes.

use super::resolved::ResolvedApi;
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// The name kube gives a CRD kind's schema: the group reversed, then version and kind.
pub fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').filter(|s| !s.is_empty()).collect();
    parts.reverse();
    if parts.is_empty() {
        parts.push("core");
    }
    format!("{}.{version}.{kind}", parts.join("."))
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

fn meta_schemas() -> Value {
    json!({
        OBJECT_META: {
            "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
            "type": "object",
            "properties": {
                "name": {"description": "Name must be unique within a namespace.", "type": "string"},
                "namespace": {"description": "Namespace defines the space within which each name must be unique.", "type": "string"},
                "uid": {"description": "UID is the unique in time and space value for this object.", "type": "string"},
                "resourceVersion": {"description": "An opaque value that represents the internal version of this object.", "type": "string"},
                "generation": {"description": "A sequence number representing a specific generation of the desired state.", "type": "integer", "format": "int64"},
                "creationTimestamp": {"description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "type": "string", "format": "date-time"},
                "labels": {"description": "Map of string keys and values that can be used to organize and categorize objects.", "type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"description": "Annotations is an unstructured key value map stored with a resource.", "type": "object", "additionalProperties": {"type": "string"}}
            }
        },
        LIST_META: {
            "description": "ListMeta describes metadata that synthetic resources must have, including lists.",
            "type": "object",
            "properties": {
                "resourceVersion": {"description": "String that identifies the server's internal version of this object.", "type": "string"},
                "continue": {"description": "continue may be set if the user set a limit on the number of items returned.", "type": "string"},
                "remainingItemCount": {"description": "The number of subsequent items in the list which are not included in this list response.", "type": "integer", "format": "int64"}
            }
        }
    })
}

/// The per-group-version document.
pub fn document(api: &ResolvedApi) -> Value {
    let (g, v, k) = (&api.group, &api.version, &api.names.kind);
    let gvk = json!({"group": g, "version": v, "kind": k});
    let kind_name = schema_name(g, v, k);
    let list_name = schema_name(g, v, &api.list_kind());
    let mut kind_schema = match api.schema.as_ref() {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    kind_schema.entry("type").or_insert(json!("object"));
    let props = kind_schema.entry("properties").or_insert_with(|| json!({}));
    if let Value::Object(p) = props {
        p.insert("apiVersion".into(), json!({"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"}));
        p.insert("kind".into(), json!({"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"}));
        p.insert("metadata".into(), json!({"description": "Standard object's metadata.", "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}]}));
    }
    kind_schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
    let list_schema = json!({
        "description": format!("{}List is a list of {k}", k),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{kind_name}")}},
            "metadata": {"allOf": [{"$ref": format!("#/components/schemas/{LIST_META}")}]}
        },
        "x-kubernetes-group-version-kind": [{"group": g, "version": v, "kind": api.list_kind()}]
    });
    let base = if api.namespaced {
        format!("/apis/{g}/{v}/namespaces/{{namespace}}/{}", api.resource)
    } else {
        format!("/apis/{g}/{v}/{}", api.resource)
    };
    let op = |action: &str, schema: &str| {
        json!({
            "description": format!("{action} {k}"),
            "operationId": format!("{action}{}{}", pascal(g), k),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        })
    };
    let mut paths = Map::new();
    paths.insert(base.clone(), json!({"get": op("list", &list_name)}));
    paths.insert(
        format!("{base}/{{name}}"),
        json!({"get": op("get", &kind_name)}),
    );
    let mut schemas = match meta_schemas() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    schemas.insert(kind_name, Value::Object(kind_schema));
    schemas.insert(list_name, list_schema);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn pascal(group: &str) -> String {
    group
        .split(['.', '-'])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The rendered document and its hash.
pub fn render(api: &ResolvedApi) -> (Bytes, String) {
    use sha2::Digest as _;
    // invariant: a document built from JSON values serializes.
    let body = serde_json::to_vec(&document(api)).expect("invariant: OpenAPI document serializes");
    let hash = hex::encode_upper(&sha2::Sha256::digest(&body)[..16]);
    (Bytes::from(body), hash)
}

/// The `/openapi/v3` index for the served group-version.
pub fn index(api: &ResolvedApi, hash: &str) -> Value {
    let key = format!("apis/{}/{}", api.group, api.version);
    json!({"paths": {key.clone(): {"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_reverse_the_group_like_kube() {
        assert_eq!(
            schema_name("cloud.example.com", "v1", "CPUFlavor"),
            "com.example.cloud.v1.CPUFlavor"
        );
        assert_eq!(pascal("cloud.example.com"), "CloudExampleCom");
    }
}
