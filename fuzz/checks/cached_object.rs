//! The check of the `cached_object` fuzz target, shared with the cargo test
//! `tests/fuzz_inputs.rs`: any stored CachedObject value is unwrapped into a served object or
//! refused with a reason, never a panic; a served object, as rendered for a consumer (full
//! object and PartialObjectMetadata), is JSON naming that consumer as its `kcp.io/cluster`, the
//! object's name and the served `resourceVersion`, also after being stamped with another
//! revision; it is one line (watch events are), and its members other than `metadata` are the
//! inner object's after pruning and defaulting, whether they were encoded anew or served as
//! stored.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use kcp_model::types::{Names, PrinterColumn};
use serde_json::{Value, json};
use virtual_workspace::index::{
    MemoUse, ServedObject, cluster_literal, unwrap_object, unwrap_object_memo,
};
use virtual_workspace::memo::Memo;
use virtual_workspace::resolved::{ResolvedApi, Source};

const REVISION: u64 = 7;
const CONSUMER: &str = "consumer-1";

/// The served API: a schema with known, defaulted and free-form fields, printer columns and a
/// selectable field, so unwrapping prunes, defaults, validates and evaluates JSONPaths.
fn api() -> &'static ResolvedApi {
    static API: OnceLock<ResolvedApi> = OnceLock::new();
    API.get_or_init(|| {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "size": {"type": "integer", "default": 1, "maximum": 100},
                        "color": {"type": "string", "enum": ["red", "blue"]},
                        "tags": {"type": "array", "items": {"type": "string"},
                                 "x-kubernetes-list-type": "set"},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                },
                "data": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        });
        let validator =
            schema::structural::Structural::compile(&schema).expect("the fixed schema compiles");
        ResolvedApi {
            group: "g.io".into(),
            version: "v1".into(),
            resource: "things".into(),
            names: Names {
                plural: "things".into(),
                kind: "Thing".into(),
                ..Default::default()
            },
            namespaced: true,
            has_status: false,
            printer_columns: columns().to_vec(),
            selectable_fields: vec!["spec.color".into()],
            identity_hash: "h".into(),
            export: ("p".into(), "e".into()),
            validator: Arc::new(validator),
            fingerprint: "f".into(),
            schema: Arc::new(schema),
            source: Source::CachedObjects,
            memo_contexts: Default::default(),
        }
    })
}

fn columns() -> &'static [PrinterColumn] {
    static COLUMNS: OnceLock<Vec<PrinterColumn>> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        [
            ("Size", "integer", ".spec.size"),
            ("Color", "string", ".spec.color"),
            ("Tags", "string", ".spec.tags[*]"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
        .into_iter()
        .map(|(name, type_, path)| PrinterColumn {
            name: name.into(),
            type_: type_.into(),
            json_path: path.into(),
            ..Default::default()
        })
        .collect()
    })
}

/// The object as one consumer sees it: JSON whose metadata names the consumer, the object and
/// the revision.
fn check_served(o: &ServedObject, revision: u64, input: &[u8]) {
    let served = o.json_for(CONSUMER);
    assert_eq!(o.len_for(cluster_literal(CONSUMER).len()), served.len());
    let v: Value = serde_json::from_slice(&served).expect("a served object is JSON");
    let md = &v["metadata"];
    assert_eq!(
        md["annotations"]["kcp.io/cluster"],
        CONSUMER,
        "input {:?} served as {v}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(md["name"], &*o.name, "{v}");
    assert_eq!(
        md["resourceVersion"],
        revision.to_string(),
        "input {:?} served as {v}",
        String::from_utf8_lossy(input)
    );
    let literal = cluster_literal(CONSUMER);
    let meta: Vec<u8> = o.metadata_parts(columns(), &literal).concat();
    let meta: Value = serde_json::from_slice(&meta).expect("PartialObjectMetadata is JSON");
    assert_eq!(
        meta["metadata"]["annotations"]["kcp.io/cluster"],
        CONSUMER,
        "input {:?} has PartialObjectMetadata {meta}",
        String::from_utf8_lossy(input)
    );
}

/// The served object's members other than `metadata` are those of the stored inner object
/// after pruning and defaulting (with `apiVersion` and `kind` as stored).
fn check_members(o: &ServedObject, input: &[u8]) {
    let served = o.json_for(CONSUMER);
    assert!(
        !served.contains(&b'\n'),
        "a served object is one line: {:?}",
        String::from_utf8_lossy(&served)
    );
    let Ok(stored) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let mut inner = stored["spec"]["raw"].clone();
    let _ = api().validator.prepare(&mut inner);
    let (Value::Object(mut want), Ok(Value::Object(mut got))) =
        (inner, serde_json::from_slice::<Value>(&served))
    else {
        panic!("input {:?}: not objects", String::from_utf8_lossy(input));
    };
    want.remove("metadata");
    got.remove("metadata");
    assert_eq!(
        Value::Object(got),
        Value::Object(want),
        "input {:?}",
        String::from_utf8_lossy(input)
    );
}

/// An object the validation memo vouches for (it was validated and served with its stored
/// tail) is served after a restart exactly as when it was validated.
fn check_memo(validated: &ServedObject, stored: &Bytes) {
    let Some(digest) = validated.digest() else {
        return;
    };
    let memo = Memo::of([digest]);
    let known = MemoUse {
        known: Some(&memo),
        ..MemoUse::default()
    };
    let vouched = unwrap_object_memo(stored, REVISION, api(), known)
        .expect("an object the memo vouches for is served");
    assert_eq!(vouched.digest(), Some(digest));
    assert_eq!(vouched.json_for(CONSUMER), validated.json_for(CONSUMER));
    assert_eq!(vouched.fields, validated.fields);
    assert_eq!(
        (&vouched.namespace, &vouched.name),
        (&validated.namespace, &validated.name)
    );
    assert_eq!(
        format!("{:?}", vouched.labels),
        format!("{:?}", validated.labels)
    );
}

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let stored = Bytes::copy_from_slice(data);
    match unwrap_object(&stored, REVISION, api()) {
        Ok(o) => {
            assert_eq!(o.revision, REVISION);
            check_served(&o, REVISION, data);
            check_members(&o, data);
            let later = o.with_revision(REVISION + 1);
            check_served(&later, REVISION + 1, data);
            assert!(o.digest().is_none(), "no digest unless asked to record");
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
    let record = MemoUse {
        record: true,
        ..MemoUse::default()
    };
    if let Ok(o) = unwrap_object_memo(&stored, REVISION, api(), record) {
        check_memo(&o, &stored);
    }
}
