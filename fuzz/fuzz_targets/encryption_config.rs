//! Fuzz target of encryption at rest: the `EncryptionConfiguration` parser
//! (`--encryption-provider-config`, YAML or JSON) and the reading of stored values. Any text
//! gives a transformer or a configuration error, never a panic; what a parsed transformer
//! encodes it decodes back to the same plaintext, not stale. Any stored value, read through a
//! fixed configuration listing every provider type, decodes or is refused, never a panic.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/encryption_config.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
