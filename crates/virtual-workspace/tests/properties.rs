//! Property tests of the virtual workspace URL digest: any path digests or is refused without a
//! panic, and the URL of any valid domain and consumer digests back to them.

use proptest::prelude::*;
use virtual_workspace::url::{DigestError, Target, parse};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_path_digests_or_is_refused(tail in "\\PC{0,120}") {
        let _ = parse(&format!("/services/replication/{tail}"));
        let _ = parse(&tail);
    }

    #[test]
    fn a_valid_url_digests_back_to_its_parts(
        cluster in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
        key in "[a-z0-9][a-z0-9.-]{0,30}",
        consumer in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
        kube_path in "(/[a-z0-9.]{1,10}){0,5}",
    ) {
        let url = format!("/services/replication/{cluster}/{key}/clusters/{consumer}{kube_path}");
        let d = parse(&url).expect("a valid URL digests");
        prop_assert_eq!(d.cr_cluster, cluster);
        prop_assert_eq!(d.cr_name, key);
        prop_assert_eq!(d.target, Target::Cluster(consumer));
        let want = if kube_path.is_empty() { "/".to_string() } else { kube_path };
        prop_assert_eq!(d.kube_path, want);
    }

    #[test]
    fn a_workspace_path_as_a_consumer_is_refused_as_such(parts in proptest::collection::vec("[a-z][a-z0-9]{0,8}", 2..4)) {
        let path = parts.join(":");
        prop_assume!(!path.starts_with("system:"));
        let url = format!("/services/replication/c1/cr/clusters/{path}/apis");
        prop_assert_eq!(parse(&url), Err(DigestError::PathNotName(path)));
    }
}
