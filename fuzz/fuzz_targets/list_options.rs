//! Fuzz target of list and watch query options (`?labelSelector=…&limit=…&continue=…`): any
//! query string gives options or a client error (4xx Status), never a panic or a 5xx.

#![no_main]
#![forbid(unsafe_code)]

use kube_api::params::{ListOptions, parse_query, parse_revision};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
