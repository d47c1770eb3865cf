//! The check of the `protobuf_body` fuzz target, shared with the cargo test
//! `tests/fuzz_inputs.rs`: any Kubernetes protobuf request body
//! (`application/vnd.kubernetes.protobuf`, `k8s\0` + `runtime.Unknown`) decodes into a JSON
//! object or is refused, never a panic, and what decodes serializes to JSON that reads back as
//! the same value.

use serde_json::Value;

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    if let Ok(object) = kube_api::protobuf::decode(data) {
        let bytes = serde_json::to_vec(&object).expect("a decoded object serializes");
        let back: Value = serde_json::from_slice(&bytes).expect("a decoded object reads back");
        assert_eq!(back, object);
    }
}
