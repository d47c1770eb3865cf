//! The check of the `continue_token` fuzz target, shared with the cargo test
//! `tests/fuzz_inputs.rs`: any `continue` token decodes or is refused with a client error (4xx
//! Status), and a decoded token encodes back to a token that decodes to the same revision and
//! key.

use kube_api::continuation::{decode, encode};

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    // One key part (cache server), two (namespaced keys) and three (the virtual workspace's
    // namespace, name and cluster).
    for n in 1..=3 {
        match decode(token, n) {
            Ok((rv, parts)) => {
                assert_eq!(parts.len(), n);
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                let again = encode(rv, &refs);
                let back = decode(&again, n).expect("a token we encoded decodes");
                assert_eq!(back, (rv, parts));
            }
            Err(status) => assert!(status.code < 500, "{token:?}: {}", status.message),
        }
    }
}
