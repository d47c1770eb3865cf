//! The check of the `seed_yaml` fuzz target, shared with the cargo test `tests/fuzz_inputs.rs`:
//! any seed manifest text (the multi-document YAML files `--seed` loads) gives manifests or a
//! parse/document error, never a panic, and every manifest it gives has a kind, a name and a
//! workspace.

use std::path::Path;

use serde_json::Value;

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
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
}
