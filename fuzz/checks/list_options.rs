//! The check of the `list_options` fuzz target, shared with the cargo test
//! `tests/fuzz_inputs.rs`: any list or watch query string (`?labelSelector=…&limit=…&continue=…`)
//! gives options or a client error (4xx Status), never a panic or a 5xx.

use kube_api::params::{ListOptions, parse_query, parse_revision};

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let pairs = parse_query(Some(query));
    for watch_path in [false, true] {
        match ListOptions::from_pairs(&pairs, watch_path) {
            Ok(opts) => {
                if let Err(status) = opts.revision() {
                    assert!(status.code < 500, "{query:?}: {}", status.message);
                }
            }
            Err(status) => assert!(status.code < 500, "{query:?}: {}", status.message),
        }
    }
    if let Err(status) = parse_revision(Some(query)) {
        assert!(status.code < 500, "{query:?}: {}", status.message);
    }
}
