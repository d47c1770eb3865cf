//! The check of the `vw_url` fuzz target, shared with the cargo test `tests/fuzz_inputs.rs`:
//! any path, raw or percent-decoded as the server decodes it, digests as a Replication virtual
//! workspace URL or is refused without a panic, and a digested URL rebuilt from its parts
//! digests to the same parts.

use virtual_workspace::url::{self, PREFIX, Target};

/// One path digests or is refused, and what digests rebuilds to itself.
fn check_path(path: &str) {
    let Ok(d) = url::parse(path) else {
        assert!(url::digest(path).is_none());
        return;
    };
    assert!(url::is_logical_cluster_name(&d.cr_cluster), "{d:?}");
    let target = match &d.target {
        Target::Wildcard => "*",
        Target::Cluster(c) => {
            assert!(url::is_logical_cluster_name(c), "{d:?}");
            c.as_str()
        }
    };
    assert!(d.kube_path.starts_with('/'), "{d:?}");
    let rebuilt = format!(
        "{PREFIX}{}/{}/clusters/{target}{}",
        d.cr_cluster, d.cr_name, d.kube_path
    );
    assert_eq!(url::parse(&rebuilt).as_ref(), Ok(&d), "{rebuilt}");
}

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    check_path(path);
    check_path(&kube_api::params::decoded_path(path));
    if !path.starts_with(PREFIX) {
        check_path(&format!("{PREFIX}{path}"));
    }
}
