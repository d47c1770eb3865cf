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

#[path = "../checks/structural_schema.rs"]
mod check;

libfuzzer_sys::fuzz_target!(
    init: {
        let _aborting_hook = std::panic::take_hook();
    },
    |data: &[u8]| check::check(data)
);
