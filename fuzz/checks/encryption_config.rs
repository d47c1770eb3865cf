//! The check of the `encryption_config` fuzz target, shared with the cargo test
//! `tests/fuzz_inputs.rs`: any `EncryptionConfiguration` text (YAML or JSON) gives a
//! transformer or a configuration error, never a panic; what a parsed transformer encodes it
//! decodes back to the same plaintext, not stale. Any stored value, read through a fixed
//! configuration listing every provider type, decodes or is refused, never a panic.

use std::sync::OnceLock;

use store::encryption::Transformer;

const STORAGE_KEY: &[u8] = b"/registry/secrets/default/s";

/// Group/resources probed: the core group, a named group, and one no rule is likely to name.
const RESOURCES: [(&str, &str); 3] = [
    ("", "secrets"),
    ("awesome.bears.example", "pandas"),
    ("apps", "deployments"),
];

/// A configuration with every provider type, some with two keys.
fn every_provider() -> &'static Transformer {
    static T: OnceLock<Transformer> = OnceLock::new();
    T.get_or_init(|| {
        Transformer::from_config(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, pandas.awesome.bears.example]
    providers:
      - aesgcm:
          keys:
            - {name: key1, secret: MDEyMzQ1Njc4OWFiY2RlZg==}
            - {name: key2, secret: ZmVkY2JhOTg3NjU0MzIxMA==}
      - aescbc:
          keys:
            - {name: key1, secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}
      - secretbox:
          keys:
            - {name: key1, secret: ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=}
      - identity: {}
",
        )
        .expect("the fixed configuration parses")
    })
}

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    for (group, resource) in RESOURCES {
        let _ = every_provider().decode(group, resource, STORAGE_KEY, data);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(transformer) = Transformer::from_config(text) else {
        return;
    };
    let _ = transformer.is_identity();
    let _ = format!("{transformer:?}");
    for (group, resource) in RESOURCES {
        let plaintext = br#"{"kind":"Secret","data":{"k":"dg=="}}"#;
        let stored = transformer
            .encode(group, resource, STORAGE_KEY, plaintext)
            .expect("a small value encodes");
        let decoded = transformer
            .decode(group, resource, STORAGE_KEY, &stored)
            .expect("an encoded value decodes");
        assert_eq!(decoded.value, plaintext, "{group}/{resource}");
        assert!(!decoded.stale, "{group}/{resource}: a fresh value is stale");
        let _ = transformer.decode(group, resource, STORAGE_KEY, data);
    }
}
