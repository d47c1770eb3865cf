//! Fuzz target of PATCH bodies: JSON patch, JSON merge patch and strategic merge patch. The
//! first input byte picks the patch type; the rest is the patch body, optionally preceded by a
//! target object and a NUL byte (else a fixed ConfigMap with finalizers and owner references).
//! Any body patches the target or is refused with a client error, never a panic, and a patched
//! object always serializes to JSON that reads back as the same value.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/patches.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
