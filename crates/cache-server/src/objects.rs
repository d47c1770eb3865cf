//! Object semantics of the cache server, independent of HTTP: how a written body becomes a
//! stored record and how a record is shown to readers (`kcp-reference.md` §8.4).
//!
//! Writes strip `resourceVersion` (the store's revision is the only one), generate `uid` and
//! `creationTimestamp` unless the object is annotated `kcp.io/shard` (replicated objects keep the
//! values they were sent with, `generation` included). Reads stamp `resourceVersion` and report
//! `kcp.io/cluster` and `kcp.io/shard` from the key. The seed loader writes through these same
//! functions, as a shard writes through the HTTP API. [`check_annotations`] is kube's 256 KiB
//! rule on annotations, applied to bodies written over HTTP.

use super::resources::ServedResource;
use bytes::Bytes;
use kcp_model::{ANN_CLUSTER, ANN_SHARD};
use kube_api::{Status, child_map, metadata_mut};
use serde_json::{Map, Value};
use store::{Key, Record, Store, StoreError};

/// Errors of object handling, mapped to a Status at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The body is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The object exists already.
    #[error("already exists")]
    AlreadyExists,
    /// Stale resourceVersion.
    #[error("conflict")]
    Conflict,
    /// Storage failure.
    #[error(transparent)]
    Store(StoreError),
}

impl ObjectError {
    /// The Status for this error about `name` of `res`.
    pub fn to_status(&self, res: &ServedResource, name: &str) -> Status {
        match self {
            ObjectError::BadRequest(m) => Status::bad_request(m.clone()),
            ObjectError::NotFound => Status::not_found(res.group, res.resource, name),
            ObjectError::AlreadyExists => Status::already_exists(res.group, res.resource, name),
            ObjectError::Conflict => Status::conflict(res.group, res.resource, name),
            ObjectError::Store(e) => rest::backend_status(e),
        }
    }
}

impl From<StoreError> for ObjectError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ObjectError::NotFound,
            StoreError::AlreadyExists => ObjectError::AlreadyExists,
            StoreError::Conflict { .. } => ObjectError::Conflict,
            other => ObjectError::Store(other),
        }
    }
}

/// Where a write goes.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    /// The resource.
    pub res: &'static ServedResource,
    /// Requested version (becomes the stored apiVersion).
    pub version: &'a str,
    /// Shard.
    pub shard: &'a str,
    /// Logical cluster.
    pub cluster: &'a str,
    /// Namespace ("" for cluster-scoped).
    pub namespace: &'a str,
}

impl Location<'_> {
    /// The store key of `name` here.
    pub fn key(&self, name: &str) -> Key {
        Key {
            group: self.res.group.into(),
            resource: self.res.resource.into(),
            shard: self.shard.into(),
            cluster: self.cluster.into(),
            namespace: self.namespace.into(),
            name: name.into(),
        }
    }

    fn api_version(&self) -> String {
        if self.res.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.res.group, self.version)
        }
    }
}

fn check_body(loc: &Location<'_>, body: &mut Value) -> Result<(), ObjectError> {
    let obj = body
        .as_object_mut()
        .ok_or_else(|| ObjectError::BadRequest("the body must be a JSON object".into()))?;
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != loc.res.kind
    {
        return Err(ObjectError::BadRequest(format!(
            "the kind \"{kind}\" does not match the resource {} (kind {})",
            loc.res.resource, loc.res.kind
        )));
    }
    obj.insert("kind".into(), Value::String(loc.res.kind.to_string()));
    obj.insert("apiVersion".into(), Value::String(loc.api_version()));
    let ns = loc.namespace;
    let md = metadata_mut(obj);
    match md.get("namespace").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != ns => {
            return Err(ObjectError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".to_string(),
            ));
        }
        _ => {}
    }
    if ns.is_empty() {
        md.remove("namespace");
    } else {
        md.insert("namespace".into(), Value::String(ns.to_string()));
    }
    Ok(())
}

/// Total bytes (keys and values) kube-apiserver allows in one object's annotations.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// kube-apiserver's rule on annotations (keys and values together at most 256 KiB), checked on
/// a written body: the 422 Status naming `name` of `res` when it is broken.
pub fn check_annotations(res: &ServedResource, name: &str, body: &Value) -> Result<(), Status> {
    let Some(Value::Object(annotations)) = body.pointer("/metadata/annotations") else {
        return Ok(());
    };
    let total: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if total <= MAX_ANNOTATIONS_BYTES {
        return Ok(());
    }
    let kind = if res.group.is_empty() {
        res.kind.to_string()
    } else {
        format!("{}.{}", res.kind, res.group)
    };
    let field = "metadata.annotations";
    let message = format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes");
    let mut st = Status::invalid(format!("{kind} \"{name}\" is invalid: {field}: {message}"));
    st.details = Some(Box::new(kube_api::status::StatusDetails {
        name: name.to_string(),
        group: res.group.to_string(),
        kind: res.kind.to_string(),
        causes: vec![kube_api::status::StatusCause {
            reason: "FieldValueTooLong".into(),
            message,
            field: field.into(),
        }],
    }));
    Err(st)
}

fn is_replicated(md: &Map<String, Value>) -> bool {
    md.get("annotations")
        .and_then(|a| a.get(ANN_SHARD))
        .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
}

fn encode(body: &Value) -> Result<Bytes, ObjectError> {
    // Stored values live long: do not keep the encoder's spare capacity.
    serde_json::to_vec(body)
        .map(store::exact_bytes)
        .map_err(|e| ObjectError::BadRequest(e.to_string()))
}

/// Create an object (POST). Returns the stored record.
pub async fn create(
    store: &dyn Store,
    loc: &Location<'_>,
    mut body: Value,
) -> Result<Record, ObjectError> {
    check_body(loc, &mut body)?;
    let Some(obj) = body.as_object_mut() else {
        return Err(ObjectError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let md = metadata_mut(obj);
    let Some(name) = kube_api::name_or_generate(md) else {
        return Err(ObjectError::BadRequest(
            "metadata.name: Required value: name or generateName is required".into(),
        ));
    };
    md.remove("resourceVersion");
    let replicated = is_replicated(md);
    let keep = |md: &Map<String, Value>, k: &str| {
        replicated && md.get(k).is_some_and(|v| !v.is_null() && v != "")
    };
    if !keep(md, "uid") {
        md.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
    }
    if !keep(md, "creationTimestamp") {
        md.insert(
            "creationTimestamp".into(),
            Value::String(kube_api::now_rfc3339()),
        );
    }
    if !keep(md, "generation") {
        md.insert("generation".into(), Value::from(1));
    }
    Ok(store.create(loc.key(&name), encode(&body)?).await?)
}

/// Replace an object (PUT). A non-empty `metadata.resourceVersion` must equal the current one.
pub async fn update(
    store: &dyn Store,
    loc: &Location<'_>,
    name: &str,
    mut body: Value,
) -> Result<Record, ObjectError> {
    check_body(loc, &mut body)?;
    let key = loc.key(name);
    let current = store.get(&key).await?.ok_or(ObjectError::NotFound)?;
    let old = Carried::of(&current.value);
    let Some(obj) = body.as_object_mut() else {
        return Err(ObjectError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let md = metadata_mut(obj);
    match md.get("name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        None | Some("") => {
            md.insert("name".into(), Value::String(name.to_string()));
        }
        Some(n) => {
            return Err(ObjectError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let expected = match md.remove("resourceVersion") {
        Some(Value::String(s)) if !s.is_empty() => {
            Some(s.parse::<u64>().map_err(|_| ObjectError::Conflict)?)
        }
        _ => None,
    };
    let replicated = is_replicated(md);
    let [old_uid, old_created, old_generation] = old.0;
    for (field, old) in [("uid", old_uid), ("creationTimestamp", old_created)] {
        let sent = md.get(field).is_some_and(|v| !v.is_null() && v != "");
        if !(replicated && sent)
            && let Some(v) = old
        {
            md.insert(field.into(), v);
        }
    }
    if !(replicated && md.contains_key("generation")) {
        md.insert(
            "generation".into(),
            old_generation.unwrap_or(Value::from(1)),
        );
    }
    Ok(store.update(key, encode(&body)?, expected).await?)
}

/// What an update carries over from the stored object: its `metadata.uid`,
/// `metadata.creationTimestamp` and `metadata.generation`, each when present. Read without
/// decoding the whole object: the stored text is read up to the end of its `metadata` only (a
/// parse of the whole CachedObject into a value was a tenth of a cache-API write's instructions
/// in callgrind). Text that is not a JSON object, or whose `metadata` is not one, carries
/// nothing, as before.
#[derive(Debug, Default, PartialEq)]
struct Carried([Option<Value>; 3]);

impl Carried {
    const FIELDS: [&'static str; 3] = ["uid", "creationTimestamp", "generation"];

    fn of(stored: &[u8]) -> Carried {
        use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
        struct Top<'a>(&'a mut Option<Carried>);
        impl<'de> Visitor<'de> for Top<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "metadata" {
                        *self.0 = Some(map.next_value_seed(Meta)?);
                        // Nothing after `metadata` is needed: stop reading here.
                        return Err(A::Error::custom("metadata read"));
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(())
            }
        }
        struct Meta;
        impl<'de> DeserializeSeed<'de> for Meta {
            type Value = Carried;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Carried, D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for Meta {
            type Value = Carried;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("metadata")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Carried, A::Error> {
                let mut out = Carried::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match Carried::FIELDS.iter().position(|f| *f == key) {
                        // A repeated member: the last one counts, as in a decoded value.
                        Some(i) => out.0[i] = Some(map.next_value()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        let mut found = None;
        let mut de = serde_json::Deserializer::from_slice(stored);
        let _ = serde::Deserializer::deserialize_map(&mut de, Top(&mut found));
        found.unwrap_or_default()
    }
}

/// Delete an object, optionally only at a given revision.
pub async fn delete(
    store: &dyn Store,
    key: &Key,
    expected: Option<u64>,
) -> Result<Record, ObjectError> {
    Ok(store.delete(key, expected).await?)
}

/// How readers see a stored object: `resourceVersion` = `revision`, `kcp.io/cluster` and
/// `kcp.io/shard` from the key, `apiVersion` = the requested one.
pub fn present(
    value: &[u8],
    key: &Key,
    revision: u64,
    api_version: &str,
) -> Result<Value, ObjectError> {
    let mut v: Value = serde_json::from_slice(value).map_err(|e| {
        ObjectError::Store(StoreError::Internal(format!(
            "stored object {key} does not decode: {e}"
        )))
    })?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ObjectError::Store(StoreError::Internal(format!(
            "stored object {key} is not a JSON object"
        ))));
    };
    obj.insert("apiVersion".into(), Value::String(api_version.to_string()));
    let md = metadata_mut(obj);
    md.insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
    let a = child_map(md, "annotations");
    a.insert(ANN_CLUSTER.into(), Value::String(key.cluster.to_string()));
    a.insert(ANN_SHARD.into(), Value::String(key.shard.to_string()));
    Ok(v)
}

/// [`present`] straight into JSON bytes, appended to `out`, without decoding the object into a
/// `Value`: only the top level and `metadata` are read as members of raw JSON text, the
/// annotations are re-encoded, and every other member (`spec` with its embedded object, say) is
/// copied as stored. The result is the same object as [`present`] gives, with the members of each
/// re-encoded map in key order as `serde_json` writes them; stored values are written by
/// `serde_json` in the first place, so the bytes are the same too. On error `out` is unchanged.
pub fn present_json(
    value: &[u8],
    key: &Key,
    revision: u64,
    api_version: &str,
    out: &mut Vec<u8>,
) -> Result<(), ObjectError> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    let internal = |what: &str| {
        ObjectError::Store(StoreError::Internal(format!("stored object {key} {what}")))
    };
    let top: BTreeMap<String, &RawValue> = serde_json::from_slice(value)
        .map_err(|e| internal(&format!("is not a JSON object: {e}")))?;
    // `metadata` as members; absent or not an object: created, as `metadata_mut` does.
    let mut md: BTreeMap<String, Box<RawValue>> = top
        .get("metadata")
        .and_then(|m| serde_json::from_str::<BTreeMap<String, &RawValue>>(m.get()).ok())
        .map(|m| m.into_iter().map(|(k, v)| (k, v.to_owned())).collect())
        .unwrap_or_default();
    let mut annotations: Map<String, Value> = md
        .get("annotations")
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or_default();
    annotations.insert(ANN_CLUSTER.into(), Value::String(key.cluster.to_string()));
    annotations.insert(ANN_SHARD.into(), Value::String(key.shard.to_string()));
    let raw = |v: &Value| {
        serde_json::value::to_raw_value(v).map_err(|e| internal(&format!("does not encode: {e}")))
    };
    md.insert("annotations".into(), raw(&Value::Object(annotations))?);
    md.insert(
        "resourceVersion".into(),
        raw(&Value::String(revision.to_string()))?,
    );
    let api_version = raw(&Value::String(api_version.to_string()))?;
    let metadata = serde_json::value::to_raw_value(&md)
        .map_err(|e| internal(&format!("does not encode: {e}")))?;
    let mut members: BTreeMap<&str, &RawValue> =
        top.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    members.insert("apiVersion", &api_version);
    members.insert("metadata", &metadata);
    let start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, &members) {
        out.truncate(start);
        return Err(internal(&format!("does not encode: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;
    use store::memory::MemoryStore;

    fn loc() -> Location<'static> {
        Location {
            res: find("cache.kcp.io", "v1alpha1", "cachedobjects").unwrap(),
            version: "v1alpha1",
            shard: "shard-1",
            cluster: "c1",
            namespace: "",
        }
    }

    #[test]
    fn an_update_carries_over_the_stored_uid_creation_time_and_generation() {
        let carried = |text: &str| Carried::of(text.as_bytes()).0;
        assert_eq!(
            carried(
                r#"{"kind":"K","metadata":{"name":"x","uid":"u1","creationTimestamp":"2026-01-01T00:00:00Z","generation":3},"spec":{"a":1}}"#
            ),
            [
                Some(json!("u1")),
                Some(json!("2026-01-01T00:00:00Z")),
                Some(json!(3))
            ]
        );
        // Wherever `metadata` stands, whatever follows it; the last of a repeated member.
        assert_eq!(
            carried(r#"{"spec":{"uid":"no"},"metadata":{"uid":"a","uid":"b"},"status":"#),
            [Some(json!("b")), None, None]
        );
        for nothing in ["", "[1]", "{\"metadata\":5}", "not json", "{\"spec\":{}}"] {
            assert_eq!(carried(nothing), [None, None, None], "{nothing}");
        }
    }

    #[test]
    fn objects_presented_as_bytes_are_the_objects_present_gives_byte_for_byte() {
        let key = Key {
            group: "cache.kcp.io".into(),
            resource: "cachedobjects".into(),
            shard: "shard-1".into(),
            cluster: "c1".into(),
            namespace: Default::default(),
            name: "x".into(),
        };
        let stored = [
            json!({"kind": "CachedObject", "metadata": {"name": "x", "uid": "u",
                "annotations": {"a": "b", "kcp.io/cluster": "stale"}, "labels": {"l": "v"}},
                "spec": {"raw": {"metadata": {"resourceVersion": "5", "name": "in"},
                    "spec": {"n": 1.5, "s": "é\"q\"\u{1}", "deep": [{"z": 1, "a": null}]}}}}),
            json!({"metadata": {"name": "no-annotations"}}),
            json!({"metadata": "not an object", "zzz": true, "aaa": []}),
            json!({"spec": {}}),
            json!({}),
        ];
        for v in stored {
            let value = serde_json::to_vec(&v).unwrap();
            let want =
                serde_json::to_vec(&present(&value, &key, 42, "cache.kcp.io/v1alpha1").unwrap())
                    .unwrap();
            let mut out = b"prefix".to_vec();
            present_json(&value, &key, 42, "cache.kcp.io/v1alpha1", &mut out).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out[6..]),
                String::from_utf8_lossy(&want),
                "{v}"
            );
        }
        // Not an object: an error, and nothing appended.
        for bad in [&b"[1]"[..], b"\"s\"", b"{", b""] {
            let mut out = b"kept".to_vec();
            assert!(present_json(bad, &key, 1, "v1", &mut out).is_err());
            assert!(present(bad, &key, 1, "v1").is_err());
            assert_eq!(out, b"kept");
        }
    }

    #[tokio::test]
    async fn replicated_objects_keep_uid_creation_timestamp_and_generation() {
        let store = MemoryStore::default();
        let body = json!({"metadata": {"name": "x", "uid": "u-1", "creationTimestamp": "2020-01-01T00:00:00Z",
            "generation": 7, "resourceVersion": "99", "annotations": {"kcp.io/shard": "shard-1"}}});
        let rec = create(&store, &loc(), body).await.unwrap();
        let v = present(&rec.value, &rec.key, rec.revision, "cache.kcp.io/v1alpha1").unwrap();
        assert_eq!(v["metadata"]["uid"], "u-1");
        assert_eq!(v["metadata"]["creationTimestamp"], "2020-01-01T00:00:00Z");
        assert_eq!(v["metadata"]["generation"], 7);
        assert_eq!(v["metadata"]["resourceVersion"], rec.revision.to_string());
        assert_eq!(v["metadata"]["annotations"]["kcp.io/cluster"], "c1");
        assert_eq!(v["kind"], "CachedObject");
    }

    #[tokio::test]
    async fn ordinary_objects_get_fresh_system_fields() {
        let store = MemoryStore::default();
        let body = json!({"metadata": {"name": "x", "uid": "mine"}});
        let rec = create(&store, &loc(), body).await.unwrap();
        let v: Value = serde_json::from_slice(&rec.value).unwrap();
        assert_ne!(v["metadata"]["uid"], "mine");
        assert!(v["metadata"]["creationTimestamp"].is_string());
    }

    #[tokio::test]
    async fn a_put_with_a_stale_resource_version_conflicts() {
        let store = MemoryStore::default();
        let rec = create(&store, &loc(), json!({"metadata": {"name": "x"}}))
            .await
            .unwrap();
        let put = |rv: u64| json!({"metadata": {"name": "x", "resourceVersion": rv.to_string()}, "spec": {"a": rv}});
        let updated = update(&store, &loc(), "x", put(rec.revision))
            .await
            .unwrap();
        assert!(updated.revision > rec.revision);
        let err = update(&store, &loc(), "x", put(rec.revision))
            .await
            .unwrap_err();
        assert!(matches!(err, ObjectError::Conflict));
    }

    #[tokio::test]
    async fn a_mismatched_kind_is_a_bad_request() {
        let store = MemoryStore::default();
        let err = create(
            &store,
            &loc(),
            json!({"kind": "Secret", "metadata": {"name": "x"}}),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ObjectError::BadRequest(_)));
    }
}
