//! The check of the `patches` fuzz target, shared with the cargo test `tests/fuzz_inputs.rs`:
//! JSON patch, JSON merge patch and strategic merge patch bodies. The first input byte picks the
//! patch type; the rest is the patch body, optionally preceded by a target object and a NUL byte
//! (else a fixed ConfigMap with finalizers and owner references). Any body patches the target or
//! is refused, never a panic, and a patched object always serializes to JSON that reads back as
//! the same value.

use kube_api::patch::{PatchType, apply};
use serde_json::{Value, json};

fn default_target() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "cm",
            "namespace": "default",
            "labels": {"app": "web"},
            "finalizers": ["a.io/x", "b.io/y"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "u1"},
                {"apiVersion": "v1", "kind": "Secret", "name": "t", "uid": "u2"}
            ]
        },
        "data": {"k": "v", "list": "1,2"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    })
}

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let kind = match which % 3 {
        0 => PatchType::Json,
        1 => PatchType::Merge,
        _ => PatchType::StrategicMerge,
    };
    let (target, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => match serde_json::from_slice::<Value>(&rest[..at]) {
            Ok(target) => (target, &rest[at + 1..]),
            Err(_) => return,
        },
        None => (default_target(), rest),
    };
    let before = target.clone();
    if let Ok(patched) = apply(kind, &target, body) {
        let bytes = serde_json::to_vec(&patched).expect("a patched object serializes");
        let back: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("a patched object does not read back ({e}): {kind:?}"));
        assert_eq!(back, patched);
    }
    assert_eq!(target, before, "apply changed its target");
}
