//! The check of the `structural_schema` fuzz target, shared with the cargo test
//! `tests/fuzz_inputs.rs`: structural-schema compilation and validation (an APIResourceSchema
//! version's `openAPIV3Schema`, and objects prepared against it). The input is a schema
//! document, optionally followed by a NUL byte and an object document (both JSON). Any schema
//! compiles or is refused, and any object is prepared (pruned, defaulted, validated with CEL
//! rules) without a panic; preparing again an object that was prepared leaves it as it is.
//!
//! The `cel` crate may panic on some rules; `schema::structural` catches those panics by design
//! (the rule is skipped or accepted), so whoever runs this check keeps a panic hook that does
//! not abort (the fuzz target puts back the default one).

use schema::structural::Structural;
use schema::validate::Validator;
use serde_json::{Value, json};

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let (schema, object) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(schema) = serde_json::from_slice::<Value>(schema) else {
        return;
    };
    let object = match object.map(serde_json::from_slice::<Value>) {
        Some(Ok(object)) => object,
        Some(Err(_)) => return,
        None => json!({"apiVersion": "g.io/v1", "kind": "Thing", "metadata": {"name": "a"},
                       "spec": {"size": 3, "tags": ["a", "b"]}}),
    };
    if let Ok(validator) = Validator::compile(&schema) {
        let _ = validator.validate(&object);
    }
    let Ok(structural) = Structural::compile(&schema) else {
        return;
    };
    let _ = structural.skipped_rules();
    let mut prepared = object.clone();
    let first = structural.prepare(&mut prepared);
    let mut again = prepared.clone();
    let second = structural.prepare(&mut again);
    assert_eq!(again, prepared, "preparing a prepared object changed it");
    if first.is_ok() {
        assert!(
            second.is_ok(),
            "a prepared, valid object became invalid: {second:?}"
        );
    }
}
