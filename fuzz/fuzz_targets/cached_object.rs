//! Fuzz target of CachedObject decoding and unwrapping (what the virtual workspace's index does
//! with every CachedObject it reads from the cache): any stored value is unwrapped into a served
//! object or refused with a reason, never a panic; a served object, as rendered for a consumer
//! (full object and PartialObjectMetadata), is JSON naming that consumer as its
//! `kcp.io/cluster`, the object's name and the served `resourceVersion`, also after being
//! stamped with another revision.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/cached_object.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
