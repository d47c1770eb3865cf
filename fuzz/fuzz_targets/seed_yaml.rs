//! Fuzz target of seed manifests (the multi-document YAML files `--seed` loads): any text gives
//! manifests or a parse/document error, never a panic, and every manifest it gives has a kind,
//! a name and a workspace.

#![no_main]
#![forbid(unsafe_code)]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifests) = shard::seed::parse_manifests(Path::new("seed.yaml"), text) else {
        return;
    };
    for m in manifests {
        assert!(!m.cluster.is_empty());
        assert!(
            m.object
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| !k.is_empty())
        );
        assert!(
            m.object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
        );
    }
});
