//! Fuzz target of the Replication virtual workspace URL digest
//! (`/services/replication/<cluster>/<cachedresource>/clusters/<consumer>/<kube path>`): any path,
//! raw or percent-decoded as the server decodes it, digests or is refused without a panic, and a
//! digested URL rebuilt from its parts digests to the same parts.

#![no_main]
#![forbid(unsafe_code)]

#[path = "../checks/vw_url.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
