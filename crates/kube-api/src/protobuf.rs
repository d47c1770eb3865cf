//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! the equivalent JSON object, with the message types that `k8s-pb` generates from Kubernetes'
//! own `.proto` files (decoded by `prost`). This module owns the `k8s\0` magic, the dispatch on
//! the `runtime.Unknown` envelope's apiVersion and kind, and the mapping of each typed object to
//! the JSON its Go type would marshal to: field names from the Go `json` tags, empty `omitempty`
//! fields left out and required ones always present, `[]byte` maps as base64, meta/v1 `Time` as
//! `YYYY-MM-DDTHH:MM:SSZ` with Go's zero time left out, and `fieldsV1` embedded as the JSON it
//! holds, so the result equals what the same client would have sent as JSON.
//!
//! `k8s-pb` has a type for every built-in kind, but only the kinds the shard serves are mapped to
//! JSON: core/v1 Namespace, Secret, ConfigMap and ServiceAccount, and rbac/v1 ClusterRole, Role,
//! ClusterRoleBinding and RoleBinding (with meta/v1 ObjectMeta, OwnerReference,
//! ManagedFieldsEntry, LabelSelector and Time), the kinds kubectl's typed `create` commands send.
//! Any other built-in kind is answered [`ProtoError::Unsupported`], since the shard has no such
//! resource to write it to. Kinds defined by CustomResourceDefinitions never travel as
//! protobuf (clients send them as JSON), so they need no mapping here.
//!
//! `prost` checks that every string field is UTF-8, so a body with one that is not is
//! [`ProtoError::Malformed`]; the apiserver would keep the bytes (and its JSON encoder would write
//! U+FFFD for them). kubectl does not send such strings: file contents that are not UTF-8 go to
//! a ConfigMap's `binaryData`, which is bytes.

use base64::Engine as _;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
const MAGIC: [u8; 4] = *b"k8s\0";

/// Seconds since the Unix epoch of Go's zero `time.Time` (0001-01-01T00:00:00Z), which
/// Kubernetes treats as "no timestamp".
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The bytes are not a well-formed Kubernetes protobuf message (bad magic, truncated data,
    /// invalid tags, wrong wire types, strings that are not UTF-8, out-of-range values).
    #[error("{0}")]
    Malformed(String),
    /// The envelope names an object this decoder does not map to JSON; the payload is the
    /// Go-style group/version/kind, e.g. `apps/v1, Kind=Deployment`.
    #[error("protobuf decoding is not supported for {0}")]
    Unsupported(String),
    /// The envelope declares a content encoding (such as compression) this decoder cannot undo.
    #[error("unsupported protobuf content encoding {0:?}")]
    Encoding(String),
}

type Result<T> = std::result::Result<T, ProtoError>;

fn malformed(msg: impl Into<String>) -> ProtoError {
    ProtoError::Malformed(msg.into())
}

/// Decode a Kubernetes protobuf body (with its `k8s\0` magic) into the object's JSON.
pub fn decode(body: &[u8]) -> Result<Value> {
    if body.is_empty() {
        return Err(malformed("empty data"));
    }
    let Some(rest) = body.strip_prefix(&MAGIC) else {
        // The prefix is printed the way Go prints a byte slice, as Kubernetes does.
        return Err(malformed(
            "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]",
        ));
    };
    if rest.is_empty() {
        return Err(malformed("empty body"));
    }
    let unknown = Unknown::decode(rest).map_err(|e| malformed(format!("runtime.Unknown: {e}")))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if let Some(enc) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtoError::Encoding(enc));
    }
    if kind.is_empty() {
        return Err(malformed("object kind missing from the protobuf envelope"));
    }
    let raw = unknown.raw.unwrap_or_default();
    let mut out = Obj::default();
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(typed(&kind, &raw, &mut out)?, &mut out)?,
        ("v1", "Secret") => secret(typed(&kind, &raw, &mut out)?, &mut out),
        ("v1", "ConfigMap") => config_map(typed(&kind, &raw, &mut out)?, &mut out),
        ("v1", "ServiceAccount") => service_account(typed(&kind, &raw, &mut out)?, &mut out),
        (RBAC_V1, "ClusterRole") => cluster_role(typed(&kind, &raw, &mut out)?, &mut out),
        (RBAC_V1, "Role") => {
            let role: rbac::Role = typed(&kind, &raw, &mut out)?;
            rules(role.rules, &mut out);
        }
        (RBAC_V1, "ClusterRoleBinding") => {
            let b: rbac::ClusterRoleBinding = typed(&kind, &raw, &mut out)?;
            role_binding(b.subjects, b.role_ref, &mut out);
        }
        (RBAC_V1, "RoleBinding") => {
            let b: rbac::RoleBinding = typed(&kind, &raw, &mut out)?;
            role_binding(b.subjects, b.role_ref, &mut out);
        }
        _ => {
            return Err(ProtoError::Unsupported(format!(
                "{api_version}, Kind={kind}"
            )));
        }
    }
    out.put("kind", Value::String(kind));
    out.put("apiVersion", Value::String(api_version));
    Ok(Value::Object(out.0))
}

/// Decode `raw` as the object type `T` (named `kind` in errors) and put its metadata into `out`;
/// the rest of the object is the caller's to map.
fn typed<T>(kind: &str, raw: &[u8], out: &mut Obj) -> Result<T>
where
    T: Message + Default + k8s_pb::Metadata<Ty = meta::ObjectMeta>,
{
    let mut object = T::decode(raw).map_err(|e| malformed(format!("{kind}: {e}")))?;
    let metadata = object.metadata_mut().map(std::mem::take);
    out.put(
        "metadata",
        Value::Object(object_meta(metadata.unwrap_or_default())?),
    );
    Ok(object)
}

// ---------------------------------------------------------------------------------------------
// JSON building
// ---------------------------------------------------------------------------------------------

/// A JSON object under construction with `omitempty`-style helpers.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_string(), value);
    }

    /// A string with `omitempty`.
    fn opt_str(&mut self, key: &str, value: Option<String>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.put(key, Value::String(v));
        }
    }

    /// A string without `omitempty`: always present, `""` when unset.
    fn req_str(&mut self, key: &str, value: Option<String>) {
        self.put(key, Value::String(value.unwrap_or_default()));
    }

    /// A list of strings with `omitempty`.
    fn opt_strs(&mut self, key: &str, values: Vec<String>) {
        if !values.is_empty() {
            self.put(key, Value::from(values));
        }
    }

    /// A list of strings without `omitempty`: `null` when empty, as Go encodes a nil slice.
    fn req_strs(&mut self, key: &str, values: Vec<String>) {
        let value = if values.is_empty() {
            Value::Null
        } else {
            Value::from(values)
        };
        self.put(key, value);
    }

    /// An array or map with `omitempty`.
    fn opt_value(&mut self, key: &str, value: Value) {
        let empty = match &value {
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Null => true,
            _ => false,
        };
        if !empty {
            self.put(key, value);
        }
    }

    /// A pointer field (`*bool`, `*int64`): present whenever it was on the wire.
    fn ptr(&mut self, key: &str, value: Option<impl Into<Value>>) {
        if let Some(v) = value {
            self.put(key, v.into());
        }
    }

    /// A meta/v1 `Time` with `omitempty`.
    fn time(&mut self, key: &str, value: Option<meta::Time>) -> Result<()> {
        if let Some(t) = time(value)? {
            self.put(key, Value::String(t));
        }
        Ok(())
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// A `map[string]string`.
fn string_map(map: BTreeMap<String, String>) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// A `map[string][]byte`: Go's JSON encoder writes `[]byte` as standard base64.
fn bytes_map(map: BTreeMap<String, Vec<u8>>) -> Value {
    let b64 = &base64::engine::general_purpose::STANDARD;
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(b64.encode(v))))
            .collect(),
    )
}

fn list<T>(items: Vec<T>, each: fn(T) -> Value) -> Value {
    Value::Array(items.into_iter().map(each).collect())
}

fn try_list<T>(items: Vec<T>, each: fn(T) -> Result<Value>) -> Result<Value> {
    Ok(Value::Array(
        items.into_iter().map(each).collect::<Result<Vec<_>>>()?,
    ))
}

// ---------------------------------------------------------------------------------------------
// meta/v1
// ---------------------------------------------------------------------------------------------

/// A meta/v1 `Time` as its RFC 3339 string; `None` when absent, empty or Go's zero time. Like
/// Kubernetes, only whole seconds are kept (`nanos` is decoded and ignored).
fn time(t: Option<meta::Time>) -> Result<Option<String>> {
    let Some(t) = t else {
        return Ok(None);
    };
    if t.seconds.is_none() && t.nanos.is_none() {
        return Ok(None);
    }
    let seconds = t.seconds.unwrap_or(0);
    if seconds == GO_ZERO_TIME_UNIX {
        return Ok(None);
    }
    format_rfc3339(seconds).map(Some)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC), for years 0 through 9999 (the
/// `time` crate does the calendar).
fn format_rfc3339(seconds: i64) -> Result<String> {
    let outside = || {
        malformed(format!(
            "Time: {seconds} seconds is outside the years 0 to 9999"
        ))
    };
    let at = ::time::OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| outside())?;
    if !(0..=9999).contains(&at.year()) {
        return Err(outside());
    }
    let fmt = ::time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.format(&fmt).map_err(|_| outside())
}

fn object_meta(m: meta::ObjectMeta) -> Result<Map<String, Value>> {
    let mut o = Obj::default();
    o.opt_str("name", m.name);
    o.opt_str("generateName", m.generate_name);
    o.opt_str("namespace", m.namespace);
    o.opt_str("selfLink", m.self_link);
    o.opt_str("uid", m.uid);
    o.opt_str("resourceVersion", m.resource_version);
    o.ptr("generation", m.generation.filter(|g| *g != 0));
    o.time("creationTimestamp", m.creation_timestamp)?;
    o.time("deletionTimestamp", m.deletion_timestamp)?;
    o.ptr(
        "deletionGracePeriodSeconds",
        m.deletion_grace_period_seconds,
    );
    o.opt_value("labels", string_map(m.labels));
    o.opt_value("annotations", string_map(m.annotations));
    o.opt_value("ownerReferences", list(m.owner_references, owner_reference));
    o.opt_strs("finalizers", m.finalizers);
    o.opt_value(
        "managedFields",
        try_list(m.managed_fields, managed_fields_entry)?,
    );
    Ok(o.0)
}

fn owner_reference(r: meta::OwnerReference) -> Value {
    let mut o = Obj::default();
    o.req_str("apiVersion", r.api_version);
    o.req_str("kind", r.kind);
    o.req_str("name", r.name);
    o.req_str("uid", r.uid);
    o.ptr("controller", r.controller);
    o.ptr("blockOwnerDeletion", r.block_owner_deletion);
    o.done()
}

fn managed_fields_entry(e: meta::ManagedFieldsEntry) -> Result<Value> {
    let mut o = Obj::default();
    o.opt_str("manager", e.manager);
    o.opt_str("operation", e.operation);
    o.opt_str("apiVersion", e.api_version);
    o.time("time", e.time)?;
    o.opt_str("fieldsType", e.fields_type);
    if let Some(raw) = e.fields_v1.and_then(|f| f.raw).filter(|r| !r.is_empty()) {
        let v: Value = serde_json::from_slice(&raw)
            .map_err(|e| malformed(format!("FieldsV1: raw is not JSON: {e}")))?;
        o.put("fieldsV1", v);
    }
    o.opt_str("subresource", e.subresource);
    Ok(o.done())
}

fn label_selector(s: meta::LabelSelector) -> Value {
    let mut o = Obj::default();
    o.opt_value("matchLabels", string_map(s.match_labels));
    o.opt_value(
        "matchExpressions",
        list(s.match_expressions, label_selector_requirement),
    );
    o.done()
}

fn label_selector_requirement(r: meta::LabelSelectorRequirement) -> Value {
    let mut o = Obj::default();
    o.req_str("key", r.key);
    o.req_str("operator", r.operator);
    o.opt_strs("values", r.values);
    o.done()
}

// ---------------------------------------------------------------------------------------------
// core/v1
// ---------------------------------------------------------------------------------------------

/// `spec` and `status` are structs without `omitempty`: always present, `{}` when unset.
fn namespace(ns: core::Namespace, out: &mut Obj) -> Result<()> {
    let mut spec = Obj::default();
    if let Some(s) = ns.spec {
        spec.opt_strs("finalizers", s.finalizers);
    }
    out.put("spec", spec.done());
    let mut status = Obj::default();
    if let Some(s) = ns.status {
        status.opt_str("phase", s.phase);
        status.opt_value("conditions", try_list(s.conditions, namespace_condition)?);
    }
    out.put("status", status.done());
    Ok(())
}

fn namespace_condition(c: core::NamespaceCondition) -> Result<Value> {
    let mut o = Obj::default();
    o.req_str("type", c.r#type);
    o.req_str("status", c.status);
    o.time("lastTransitionTime", c.last_transition_time)?;
    o.opt_str("reason", c.reason);
    o.opt_str("message", c.message);
    Ok(o.done())
}

fn secret(s: core::Secret, out: &mut Obj) {
    out.ptr("immutable", s.immutable);
    out.opt_value("data", bytes_map(s.data));
    out.opt_value("stringData", string_map(s.string_data));
    out.opt_str("type", s.r#type);
}

fn config_map(c: core::ConfigMap, out: &mut Obj) {
    out.ptr("immutable", c.immutable);
    out.opt_value("data", string_map(c.data));
    out.opt_value("binaryData", bytes_map(c.binary_data));
}

fn service_account(sa: core::ServiceAccount, out: &mut Obj) {
    out.opt_value("secrets", list(sa.secrets, object_reference));
    out.opt_value(
        "imagePullSecrets",
        list(sa.image_pull_secrets, |r| {
            let mut o = Obj::default();
            o.opt_str("name", r.name);
            o.done()
        }),
    );
    out.ptr(
        "automountServiceAccountToken",
        sa.automount_service_account_token,
    );
}

fn object_reference(r: core::ObjectReference) -> Value {
    let mut o = Obj::default();
    o.opt_str("kind", r.kind);
    o.opt_str("namespace", r.namespace);
    o.opt_str("name", r.name);
    o.opt_str("uid", r.uid);
    o.opt_str("apiVersion", r.api_version);
    o.opt_str("resourceVersion", r.resource_version);
    o.opt_str("fieldPath", r.field_path);
    o.done()
}

// ---------------------------------------------------------------------------------------------
// rbac/v1
// ---------------------------------------------------------------------------------------------

/// `rules` has no `omitempty`: an empty list is `null`, as Go encodes a nil slice.
fn rules(rules: Vec<rbac::PolicyRule>, out: &mut Obj) {
    let value = if rules.is_empty() {
        Value::Null
    } else {
        list(rules, policy_rule)
    };
    out.put("rules", value);
}

fn policy_rule(r: rbac::PolicyRule) -> Value {
    let mut o = Obj::default();
    // `verbs` has no `omitempty` either.
    o.req_strs("verbs", r.verbs);
    o.opt_strs("apiGroups", r.api_groups);
    o.opt_strs("resources", r.resources);
    o.opt_strs("resourceNames", r.resource_names);
    o.opt_strs("nonResourceURLs", r.non_resource_ur_ls);
    o.done()
}

fn cluster_role(cr: rbac::ClusterRole, out: &mut Obj) {
    rules(cr.rules, out);
    if let Some(agg) = cr.aggregation_rule {
        let mut o = Obj::default();
        o.opt_value(
            "clusterRoleSelectors",
            list(agg.cluster_role_selectors, label_selector),
        );
        out.put("aggregationRule", o.done());
    }
}

/// A ClusterRoleBinding's or RoleBinding's fields; `roleRef` is required, so always present.
fn role_binding(subjects: Vec<rbac::Subject>, role_ref: Option<rbac::RoleRef>, out: &mut Obj) {
    out.opt_value("subjects", list(subjects, subject));
    let r = role_ref.unwrap_or_default();
    let mut o = Obj::default();
    o.req_str("apiGroup", r.api_group);
    o.req_str("kind", r.kind);
    o.req_str("name", r.name);
    out.put("roleRef", o.done());
}

fn subject(s: rbac::Subject) -> Value {
    let mut o = Obj::default();
    o.req_str("kind", s.kind);
    o.opt_str("apiGroup", s.api_group);
    o.req_str("name", s.name);
    o.opt_str("namespace", s.namespace);
    o.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // -- a tiny encoder for building test bodies ----------------------------------------------

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A message under construction.
    #[derive(Default, Clone)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn tag(mut self, n: u64, wire: u64) -> Self {
            varint(n << 3 | wire, &mut self.0);
            self
        }
        fn bytes(self, n: u64, b: &[u8]) -> Self {
            let mut s = self.tag(n, 2);
            varint(b.len() as u64, &mut s.0);
            s.0.extend_from_slice(b);
            s
        }
        fn str(self, n: u64, v: &str) -> Self {
            self.bytes(n, v.as_bytes())
        }
        fn msg(self, n: u64, m: Enc) -> Self {
            self.bytes(n, &m.0)
        }
        fn int(self, n: u64, v: u64) -> Self {
            let mut s = self.tag(n, 0);
            varint(v, &mut s.0);
            s
        }
        fn entry(self, n: u64, k: &str, v: &[u8]) -> Self {
            self.msg(n, Enc::default().str(1, k).bytes(2, v))
        }
    }

    /// The full body: magic, then `runtime.Unknown` wrapping `raw`.
    fn body(api_version: &str, kind: &str, raw: Enc) -> Vec<u8> {
        let unknown = Enc::default()
            .msg(1, Enc::default().str(1, api_version).str(2, kind))
            .msg(2, raw)
            .str(3, "")
            .str(4, "");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&unknown.0);
        out
    }

    fn meta(name: &str) -> Enc {
        Enc::default().str(1, name)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect()
    }

    // -- bodies captured from kubectl v1.34.5 `create` commands --------------------------------

    /// `kubectl create namespace ns2`
    const REAL_NAMESPACE: &str = "6b3873000a0f0a02763112094e616d657370616365121b0a130a036e733212001a0022002a0032003800420012001a020a001a002200";
    /// `kubectl create secret generic s1 --from-literal=key=abc --from-literal=other=xyz`
    const REAL_SECRET: &str = "6b3873000a0c0a027631120653656372657412300a120a02733112001a0022002a00320038004200120a0a036b65791203616263120c0a056f74686572120378797a1a001a002200";
    /// `kubectl -n other create secret generic lbl --from-literal=k=v --type=Opaque`
    const REAL_SECRET_NAMESPACED: &str = "6b3873000a0c0a0276311206536563726574122a0a180a036c626c12001a056f7468657222002a0032003800420012060a016b1201761a064f70617175651a002200";
    /// `kubectl create configmap cm1 --from-literal=a=b`
    const REAL_CONFIGMAP: &str = "6b3873000a0f0a0276311209436f6e6669674d6170121d0a130a03636d3112001a0022002a0032003800420012060a01611201621a002200";
    /// `kubectl create serviceaccount sa1`
    const REAL_SERVICEACCOUNT: &str = "6b3873000a140a027631120e536572766963654163636f756e7412150a130a0373613112001a0022002a003200380042001a002200";
    /// `kubectl create clusterrole cr1 --verb=get,list --resource=pods,deployments.apps --resource-name=p1`
    const REAL_CLUSTERROLE: &str = "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c7573746572526f6c6512520a130a0363723112001a0022002a0032003800420012170a036765740a046c69737412001a04706f64732202703112220a036765740a046c6973741204617070731a0b6465706c6f796d656e7473220270311a002200";
    /// `kubectl create clusterrole cr2 --verb=get --non-resource-url=/healthz`
    const REAL_CLUSTERROLE_NONRESOURCE: &str = "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c7573746572526f6c6512260a130a0363723212001a0022002a00320038004200120f0a036765742a082f6865616c74687a1a002200";
    /// `kubectl create clusterrole agg --aggregation-rule="a=b"`
    const REAL_CLUSTERROLE_AGGREGATED: &str = "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c7573746572526f6c6512210a130a0361676712001a0022002a003200380042001a0a0a080a060a01611201621a002200";
    /// `kubectl create clusterrolebinding crb1 --clusterrole=cr1 --user=alice --group=devs --serviceaccount=default:sa1`
    const REAL_CLUSTERROLEBINDING: &str = "6b3873000a320a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311212436c7573746572526f6c6542696e64696e6712bf010a140a046372623112001a0022002a00320038004200122a0a04557365721219726261632e617574686f72697a6174696f6e2e6b38732e696f1a05616c6963652200122a0a0547726f75701219726261632e617574686f72697a6174696f6e2e6b38732e696f1a0464657673220012200a0e536572766963654163636f756e7412001a03736131220764656661756c741a2d0a19726261632e617574686f72697a6174696f6e2e6b38732e696f120b436c7573746572526f6c651a036372311a002200";
    /// `kubectl create role r1 --verb=get --resource=pods`
    const REAL_ROLE: &str = "6b3873000a240a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311204526f6c6512230a120a02723112001a0022002a00320038004200120d0a0367657412001a04706f64731a002200";
    /// `kubectl create rolebinding rb1 --role=r1 --user=bob`
    const REAL_ROLEBINDING: &str = "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b526f6c6542696e64696e6712660a130a0372623112001a0022002a0032003800420012280a04557365721219726261632e617574686f72697a6174696f6e2e6b38732e696f1a03626f6222001a250a19726261632e617574686f72697a6174696f6e2e6b38732e696f1204526f6c651a0272311a002200";

    fn real(h: &str) -> Value {
        let bytes = hex(h);
        match decode(&bytes) {
            Ok(v) => v,
            Err(e) => panic!("real body failed to decode: {e}"),
        }
    }

    #[test]
    fn kubectl_create_namespace_decodes_to_the_json_kubectl_would_send() {
        assert_eq!(
            real(REAL_NAMESPACE),
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ns2"},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn kubectl_create_secret_generic_has_base64_data() {
        assert_eq!(
            real(REAL_SECRET),
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s1"},
                   "data": {"key": "YWJj", "other": "eHl6"}})
        );
        assert_eq!(
            real(REAL_SECRET_NAMESPACED),
            json!({"kind": "Secret", "apiVersion": "v1",
                   "metadata": {"name": "lbl", "namespace": "other"},
                   "data": {"k": "dg=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn kubectl_create_configmap_and_serviceaccount_decode() {
        assert_eq!(
            real(REAL_CONFIGMAP),
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cm1"},
                   "data": {"a": "b"}})
        );
        assert_eq!(
            real(REAL_SERVICEACCOUNT),
            json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "sa1"}})
        );
    }

    #[test]
    fn kubectl_create_clusterrole_keeps_every_rule_list() {
        assert_eq!(
            real(REAL_CLUSTERROLE),
            json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
                   "metadata": {"name": "cr1"},
                   "rules": [
                       {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
                        "resourceNames": ["p1"]},
                       {"verbs": ["get", "list"], "apiGroups": ["apps"],
                        "resources": ["deployments"], "resourceNames": ["p1"]}]})
        );
        assert_eq!(
            real(REAL_CLUSTERROLE_NONRESOURCE)["rules"],
            json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}])
        );
    }

    #[test]
    fn kubectl_create_aggregated_clusterrole_has_selectors_and_null_rules() {
        assert_eq!(
            real(REAL_CLUSTERROLE_AGGREGATED),
            json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
                   "metadata": {"name": "agg"}, "rules": null,
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}})
        );
    }

    #[test]
    fn kubectl_create_bindings_have_subjects_and_role_ref() {
        assert_eq!(
            real(REAL_CLUSTERROLEBINDING),
            json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
                   "metadata": {"name": "crb1"},
                   "subjects": [
                       {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                       {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"},
                       {"kind": "ServiceAccount", "name": "sa1", "namespace": "default"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "cr1"}})
        );
        assert_eq!(
            real(REAL_ROLEBINDING),
            json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
                   "metadata": {"name": "rb1"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                                 "name": "bob"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "r1"}})
        );
    }

    #[test]
    fn kubectl_create_role_decodes() {
        assert_eq!(
            real(REAL_ROLE),
            json!({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
                   "metadata": {"name": "r1"},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]})
        );
    }

    // -- hand-built bodies ---------------------------------------------------------------------

    fn decoded(b: &[u8]) -> Value {
        match decode(b) {
            Ok(v) => v,
            Err(e) => panic!("decode failed: {e}"),
        }
    }

    #[test]
    fn namespace_named_ns2_decodes_with_finalizers_and_phase() {
        let raw = Enc::default()
            .msg(1, meta("ns2"))
            .msg(2, Enc::default().str(1, "kubernetes"))
            .msg(3, Enc::default().str(1, "Active"));
        assert_eq!(
            decoded(&body("v1", "Namespace", raw)),
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ns2"},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        );
    }

    #[test]
    fn object_meta_fields_all_come_through() {
        let owner = Enc::default()
            .str(1, "ConfigMap")
            .str(3, "owner")
            .str(4, "u-1")
            .str(5, "v1")
            .int(6, 1)
            .int(7, 0);
        let m = Enc::default()
            .str(1, "n")
            .str(2, "gen-")
            .str(3, "ns")
            .str(5, "uid-1")
            .str(6, "42")
            .int(7, 3)
            .msg(8, Enc::default().int(1, 1_709_210_096).int(2, 999))
            .int(10, 30)
            .entry(11, "app", b"web")
            .entry(11, "tier", b"front")
            .entry(12, "note", b"hi")
            .msg(13, owner)
            .str(14, "f1")
            .str(14, "f2");
        let v = decoded(&body("v1", "ConfigMap", Enc::default().msg(1, m)));
        assert_eq!(
            v["metadata"],
            json!({"name": "n", "generateName": "gen-", "namespace": "ns", "uid": "uid-1",
                   "resourceVersion": "42", "generation": 3,
                   "creationTimestamp": "2024-02-29T12:34:56Z",
                   "deletionGracePeriodSeconds": 30,
                   "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "hi"},
                   "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                        "uid": "u-1", "controller": true,
                                        "blockOwnerDeletion": false}],
                   "finalizers": ["f1", "f2"]})
        );
    }

    #[test]
    fn timestamps_render_as_rfc3339_and_zero_times_are_omitted() {
        let at = |t: Enc| {
            let v = decoded(&body(
                "v1",
                "Namespace",
                Enc::default().msg(1, Enc::default().msg(8, t)),
            ));
            v["metadata"].get("creationTimestamp").cloned()
        };
        assert_eq!(at(Enc::default()), None);
        assert_eq!(at(Enc::default().int(1, GO_ZERO_TIME_UNIX as u64)), None);
        assert_eq!(
            at(Enc::default().int(1, 0)),
            Some(json!("1970-01-01T00:00:00Z"))
        );
        assert_eq!(
            at(Enc::default().int(1, 253_402_300_799)),
            Some(json!("9999-12-31T23:59:59Z"))
        );
        assert_eq!(
            at(Enc::default().int(1, (-1i64) as u64)),
            Some(json!("1969-12-31T23:59:59Z"))
        );
        let too_late = body(
            "v1",
            "Namespace",
            Enc::default().msg(1, Enc::default().msg(8, Enc::default().int(1, 1 << 40))),
        );
        assert!(matches!(decode(&too_late), Err(ProtoError::Malformed(_))));
        for extreme in [i64::MIN, i64::MAX, -62_167_219_201] {
            let b = body(
                "v1",
                "Namespace",
                Enc::default().msg(
                    1,
                    Enc::default().msg(8, Enc::default().int(1, extreme as u64)),
                ),
            );
            assert!(matches!(decode(&b), Err(ProtoError::Malformed(_))));
        }
        assert_eq!(
            at(Enc::default().int(1, (-62_167_219_200i64) as u64)),
            Some(json!("0000-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn secret_data_is_base64_and_other_fields_survive() {
        let raw = Enc::default()
            .msg(1, meta("s"))
            .entry(2, "key", b"abc")
            .entry(2, "bin", &[0, 255, 1])
            .str(3, "kubernetes.io/tls")
            .entry(4, "plain", b"text")
            .int(5, 1);
        assert_eq!(
            decoded(&body("v1", "Secret", raw)),
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"},
                   "data": {"key": "YWJj", "bin": "AP8B"}, "stringData": {"plain": "text"},
                   "type": "kubernetes.io/tls", "immutable": true})
        );
    }

    #[test]
    fn configmap_binary_data_is_base64_and_immutable_false_is_kept() {
        let raw = Enc::default()
            .msg(1, meta("c"))
            .entry(2, "a", b"1")
            .entry(3, "blob", b"abc")
            .int(4, 0);
        assert_eq!(
            decoded(&body("v1", "ConfigMap", raw)),
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"},
                   "data": {"a": "1"}, "binaryData": {"blob": "YWJj"}, "immutable": false})
        );
    }

    #[test]
    fn serviceaccount_secrets_and_pull_secrets_decode() {
        let raw = Enc::default()
            .msg(1, meta("sa"))
            .msg(2, Enc::default().str(3, "tok").str(2, "ns"))
            .msg(3, Enc::default().str(1, "regcred"))
            .int(4, 0);
        assert_eq!(
            decoded(&body("v1", "ServiceAccount", raw)),
            json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "sa"},
                   "secrets": [{"name": "tok", "namespace": "ns"}],
                   "imagePullSecrets": [{"name": "regcred"}],
                   "automountServiceAccountToken": false})
        );
    }

    #[test]
    fn clusterrolebinding_with_a_subject_and_role_ref_decodes() {
        let raw = Enc::default()
            .msg(1, meta("crb"))
            .msg(
                2,
                Enc::default()
                    .str(1, "ServiceAccount")
                    .str(3, "default")
                    .str(4, "kube-system"),
            )
            .msg(
                3,
                Enc::default()
                    .str(1, "rbac.authorization.k8s.io")
                    .str(2, "ClusterRole")
                    .str(3, "admin"),
            );
        assert_eq!(
            decoded(&body(RBAC_V1, "ClusterRoleBinding", raw)),
            json!({"kind": "ClusterRoleBinding", "apiVersion": RBAC_V1,
                   "metadata": {"name": "crb"},
                   "subjects": [{"kind": "ServiceAccount", "name": "default",
                                 "namespace": "kube-system"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "admin"}})
        );
    }

    #[test]
    fn aggregation_selectors_keep_match_expressions() {
        let req = Enc::default()
            .str(1, "tier")
            .str(2, "In")
            .str(3, "a")
            .str(3, "b");
        let raw = Enc::default()
            .msg(1, meta("agg"))
            .msg(3, Enc::default().msg(1, Enc::default().msg(2, req)));
        assert_eq!(
            decoded(&body(RBAC_V1, "ClusterRole", raw))["aggregationRule"],
            json!({"clusterRoleSelectors": [{"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]}]}]})
        );
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        fn noise(e: Enc) -> Enc {
            let mut with_fixed64 = e.int(900, 7).tag(901, 1);
            with_fixed64.0.extend_from_slice(&[1; 8]);
            let mut with_fixed32 = with_fixed64.str(902, "ignored").tag(903, 5);
            with_fixed32.0.extend_from_slice(&[2; 4]);
            with_fixed32
        }
        let raw = noise(Enc::default())
            .msg(1, noise(meta("ns2")))
            .msg(2, noise(Enc::default()));
        let mut b = MAGIC.to_vec();
        let unknown = noise(Enc::default())
            .msg(1, noise(Enc::default()).str(1, "v1").str(2, "Namespace"))
            .msg(2, raw);
        b.extend_from_slice(&noise(unknown).0);
        assert_eq!(
            decoded(&b),
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ns2"},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn split_metadata_is_merged_and_repeated_scalars_keep_the_last() {
        let raw = Enc::default()
            .msg(1, meta("first").entry(11, "a", b"1"))
            .msg(1, meta("second").entry(11, "b", b"2"));
        let v = decoded(&body("v1", "ConfigMap", raw));
        assert_eq!(
            v["metadata"],
            json!({"name": "second", "labels": {"a": "1", "b": "2"}})
        );
    }

    fn malformed_message(r: Result<Value>) -> String {
        match r {
            Err(ProtoError::Malformed(m)) => m,
            other => panic!("expected a malformed error, got {other:?}"),
        }
    }

    #[test]
    fn wrong_magic_empty_and_magic_only_bodies_are_errors() {
        assert_eq!(
            malformed_message(decode(b"{\"kind\":\"Namespace\"}")),
            "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
        );
        assert_eq!(malformed_message(decode(b"")), "empty data");
        assert_eq!(malformed_message(decode(b"k8s\0")), "empty body");
        assert!(decode(b"k8s").is_err());
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let full = hex(REAL_SECRET);
        // Byte 18 is where `raw` starts; any cut inside it leaves a length pointing past the end.
        for cut in 19..full.len() - 4 {
            assert!(
                decode(&full[..cut]).is_err(),
                "a body cut at {cut} bytes decoded"
            );
        }
        let mut bad_varint = MAGIC.to_vec();
        bad_varint.extend_from_slice(&[0x08, 0xff, 0xff]);
        assert!(decode(&bad_varint).is_err());
    }

    #[test]
    fn groups_bad_tags_and_wrong_wire_types_are_rejected() {
        let with_raw = |raw: Vec<u8>| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(
                &Enc::default()
                    .msg(1, Enc::default().str(1, "v1").str(2, "Namespace"))
                    .bytes(2, &raw)
                    .0,
            );
            b
        };
        // metadata (field 1) sent as a group, a group never ended, and a stray end group.
        assert!(decode(&with_raw(vec![0x0b, 0x0c])).is_err());
        assert!(decode(&with_raw(vec![0x2b])).is_err());
        assert!(decode(&with_raw(vec![0x2c])).is_err());
        // Field number zero and wire types 6 and 7.
        assert!(decode(&with_raw(vec![0x00, 0x00])).is_err());
        assert!(decode(&with_raw(vec![0x0e])).is_err());
        assert!(decode(&with_raw(vec![0x0f])).is_err());
        // metadata (a message) sent as a varint.
        assert!(decode(&with_raw(Enc::default().int(1, 5).0)).is_err());
        // generation (a varint) sent as a string.
        let bad_generation = Enc::default().msg(1, Enc::default().str(7, "3"));
        assert!(decode(&with_raw(bad_generation.0)).is_err());
        // Field numbers above the protobuf maximum.
        assert!(decode(&with_raw(Enc::default().int(1 << 29, 1).0)).is_err());
    }

    #[test]
    fn a_whole_group_in_an_unknown_field_is_skipped_like_any_unknown_field() {
        // Field 5 of a Namespace, started and ended as a group around a varint field; the
        // apiserver's generated decoders skip such a group too.
        let raw = Enc::default()
            .msg(1, meta("ns2"))
            .tag(5, 3)
            .int(1, 1)
            .tag(5, 4)
            .msg(2, Enc::default());
        assert_eq!(
            decoded(&body("v1", "Namespace", raw)),
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ns2"},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn a_string_that_is_not_utf8_is_malformed_and_the_error_names_the_field() {
        let raw = Enc::default().msg(1, Enc::default().bytes(1, &[b'a', 0xff]));
        let m = malformed_message(decode(&body("v1", "ConfigMap", raw)));
        assert!(m.starts_with("ConfigMap: "), "{m}");
        assert!(m.contains("ObjectMeta.name"), "{m}");
        let mut envelope = MAGIC.to_vec();
        envelope.extend_from_slice(
            &Enc::default()
                .msg(1, Enc::default().str(1, "v1").bytes(2, &[0xc3]))
                .0,
        );
        let m = malformed_message(decode(&envelope));
        assert!(m.starts_with("runtime.Unknown: "), "{m}");
    }

    #[test]
    fn unknown_kinds_and_encodings_are_unsupported() {
        let deploy = body("apps/v1", "Deployment", Enc::default());
        match decode(&deploy) {
            Err(ProtoError::Unsupported(k)) => assert_eq!(k, "apps/v1, Kind=Deployment"),
            other => panic!("expected unsupported, got {other:?}"),
        }
        let mut gz = MAGIC.to_vec();
        gz.extend_from_slice(
            &Enc::default()
                .msg(1, Enc::default().str(1, "v1").str(2, "Secret"))
                .str(3, "gzip")
                .0,
        );
        assert!(matches!(decode(&gz), Err(ProtoError::Encoding(e)) if e == "gzip"));
        let no_kind = body("v1", "", Enc::default());
        assert!(matches!(decode(&no_kind), Err(ProtoError::Malformed(_))));
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = [
            REAL_NAMESPACE,
            REAL_SECRET,
            REAL_CLUSTERROLE,
            REAL_CLUSTERROLE_AGGREGATED,
            REAL_CLUSTERROLEBINDING,
            REAL_SERVICEACCOUNT,
        ]
        .iter()
        .map(|h| hex(h))
        .collect();
        let mut decoded_ok = 0;
        for i in 0..30_000u64 {
            let bytes = if i % 3 == 0 {
                let len = (next() % 64) as usize;
                let mut b = MAGIC.to_vec();
                b.extend((0..len).map(|_| next() as u8));
                b
            } else {
                let mut b = seeds[(next() % seeds.len() as u64) as usize].clone();
                for _ in 0..1 + next() % 3 {
                    let at = 4 + (next() as usize) % (b.len() - 4);
                    b[at] = next() as u8;
                }
                b
            };
            if decode(&bytes).is_ok() {
                decoded_ok += 1;
            }
        }
        // Many single-byte mutations still form valid messages; the point is no panic.
        assert!(decoded_ok > 0);
    }
}
