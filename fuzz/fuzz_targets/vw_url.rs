//! Fuzz target of the Replication virtual workspace URL digest
//! (`/services/replication/<cluster>/<cachedresource>/clusters/<consumer>/<kube path>`): any path,
//! raw or percent-decoded as the server decodes it, digests or is refused without a panic, and a
//! digested URL rebuilt from its parts digests to the same parts.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use virtual_workspace::url::{self, PREFIX, Target};

fn check(path: &str) {
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

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    check(path);
    check(&kube_api::params::decoded_path(path));
    if !path.starts_with(PREFIX) {
        check(&format!("{PREFIX}{path}"));
    }
});
