//! Fuzz target of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`,
//! `k8s\0` + `runtime.Unknown`): any body decodes into a JSON object or is refused, never a
//! panic, and what decodes serializes to JSON that reads back as the same value.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/protobuf_body.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
