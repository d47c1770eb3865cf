//! The check of the `kubeconfig` fuzz target, shared with the cargo test `tests/fuzz_inputs.rs`:
//! any kubeconfig text gives the current context's server and credentials or a configuration
//! error, never a panic. File references are answered from memory (`ca.crt` exists, every other
//! file is missing), so the check touches no disk.

use std::path::Path;

use cache_client::parse_kubeconfig;

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.ends_with("ca.crt") {
        Ok(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_vec())
    } else {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/replication-vw/cache.kubeconfig");
    for server in [None, Some("https://cache.example:6443/path")] {
        if let Ok(target) = parse_kubeconfig(path, text, server, read) {
            let authority = target
                .base
                .strip_prefix("https://")
                .expect("the base URL is https");
            assert!(
                !authority.is_empty() && !authority.contains('/'),
                "{}",
                target.base
            );
            if server.is_some() {
                assert_eq!(target.base, "https://cache.example:6443");
            }
        }
    }
}
