//! Fuzz target of structural-schema compilation and validation (an APIResourceSchema version's
//! `openAPIV3Schema`, and objects prepared against it). The input is a schema document,
//! optionally followed by a NUL byte and an object document (both JSON). Any schema compiles or
//! is refused, and any object is prepared (pruned, defaulted, validated with CEL rules) without
//! a panic; preparing again an object that was prepared leaves it as it is.
//!
//! The `cel` crate may panic on some rules; `schema::structural` catches those panics by design
//! (the rule is skipped or accepted), so this target's init puts back the default panic hook in
//! place of libfuzzer-sys's aborting one. A panic anywhere else still reaches libfuzzer-sys's
//! `catch_unwind` around the target and aborts, so it is still reported as a crash.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use schema::structural::Structural;
use schema::validate::Validator;
use serde_json::{Value, json};

fuzz_target!(
    init: {
        let _aborting_hook = std::panic::take_hook();
    },
    |data: &[u8]| {
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
            assert!(second.is_ok(), "a prepared, valid object became invalid: {second:?}");
        }
    }
);
