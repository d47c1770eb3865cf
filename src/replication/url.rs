//! The Replication virtual workspace URL digest (`kcp-reference.md` §5.1).
//!
//! `/services/replication/<crCluster>/<crName>/clusters/<target>/<kube path>`: the first two
//! segments name the CachedResource (the API domain key), the target is a consumer logical
//! cluster name or `*`, and the remainder is served as if it were a server root.

use crate::model::is_cluster_name;

/// The consumer cluster a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `clusters/*`.
    Wildcard,
    /// One logical cluster.
    Cluster(String),
}

/// A digested Replication VW URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Logical cluster of the CachedResource.
    pub cr_cluster: String,
    /// CachedResource name.
    pub cr_name: String,
    /// Target consumer.
    pub target: Target,
    /// The path served under the virtual root (`/` for the root itself).
    pub kube_path: String,
}

/// Prefix of every Replication VW URL.
pub const PREFIX: &str = "/services/replication/";

/// Digest a request path; `None` means this virtual workspace does not handle it.
pub fn digest(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let cr_cluster = parts.next()?;
    let cr_name = parts.next()?;
    let remainder = parts.next()?;
    if cr_cluster.is_empty() || cr_name.is_empty() {
        return None;
    }
    let after = remainder.strip_prefix("clusters/")?;
    let (target, kube_path) = match after.split_once('/') {
        Some((t, p)) => (t, format!("/{p}")),
        None => (after, "/".to_string()),
    };
    let target = match target {
        "*" => Target::Wildcard,
        t if is_cluster_name(t) => Target::Cluster(t.to_string()),
        _ => return None,
    };
    Some(Digest {
        cr_cluster: cr_cluster.to_string(),
        cr_name: cr_name.to_string(),
        target,
        kube_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_digested_as_kcps_table_says() {
        let d =
            digest("/services/replication/my-cluster/my-cachedresource/clusters/my-cluster/apis")
                .unwrap();
        assert_eq!(
            (d.cr_cluster.as_str(), d.cr_name.as_str()),
            ("my-cluster", "my-cachedresource")
        );
        assert_eq!(d.target, Target::Cluster("my-cluster".into()));
        assert_eq!(d.kube_path, "/apis");
        let d = digest("/services/replication/my-cluster/my-cachedresource/clusters/my-cluster")
            .unwrap();
        assert_eq!(d.kube_path, "/");
        let d = digest("/services/replication/my-cluster/my-cachedresource/clusters/other-cluster")
            .unwrap();
        assert_eq!(d.target, Target::Cluster("other-cluster".into()));
        assert_eq!(
            digest("/services/replication/my-cluster/my-cachedresource/clusters"),
            None
        );
        let d = digest("/services/replication/c1/cr/clusters/*/apis/g/v1/things").unwrap();
        assert_eq!(d.target, Target::Wildcard);
        assert_eq!(d.kube_path, "/apis/g/v1/things");
        assert_eq!(
            digest("/services/replication/c1/cr/clusters/root:org:ws/apis"),
            None
        );
        assert_eq!(
            digest("/services/replication/c1/cr/notclusters/x/apis"),
            None
        );
    }

    #[test]
    fn system_clusters_are_names_and_empty_segments_are_rejected() {
        assert!(digest("/services/replication/c1/cr/clusters/system:admin/apis").is_some());
        assert_eq!(digest("/services/replication//cr/clusters/x/apis"), None);
    }
}
