//! Fuzz target of seed manifests (the multi-document YAML files `--seed` loads): any text gives
//! manifests or a parse/document error, never a panic, and every manifest it gives has a kind,
//! a name and a workspace.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/seed_yaml.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
