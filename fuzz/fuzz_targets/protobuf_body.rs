//! Fuzz target of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`,
//! `k8s\0` + `runtime.Unknown`): any body decodes into a JSON object or is refused, never a
//! panic, and what decodes serializes to JSON that reads back as the same value.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = kube_api::protobuf::decode(data) {
        let bytes = serde_json::to_vec(&object).expect("a decoded object serializes");
        let back: Value = serde_json::from_slice(&bytes).expect("a decoded object reads back");
        assert_eq!(back, object);
    }
});
